import Foundation
import Mail
import Messaging
import ReciprocityCore
import Storage

/// `reciprocity demo`: a realistic German demo shop, so a new user sees real data. Deterministic for a given seed.
/// Orders go through the same upsert as the API, so events, jobs and consents are real too.
public enum Demo {
    struct Product {
        var sku: String
        var name: String
        var price: String
        var category: String
    }

    static let products: [Product] = [
        Product(sku: "KAF-ESP-500", name: "Espresso Bohnenglück, 500 g", price: "14.90", category: "kaffee"),
        Product(sku: "KAF-FIL-500", name: "Filterkaffee Morgenrot, 500 g", price: "12.50", category: "kaffee"),
        Product(sku: "KAF-ENT-250", name: "Entkoffeiniert Abendruhe, 250 g", price: "8.90", category: "kaffee"),
        Product(sku: "KAF-PROBE-3", name: "Probierset 3 × 100 g", price: "11.00", category: "kaffee"),
        Product(sku: "ZUB-HAND-01", name: "Handfilter aus Porzellan", price: "24.00", category: "zubehoer"),
        Product(sku: "ZUB-MUEHLE", name: "Handmühle Kegelmahlwerk", price: "59.00", category: "zubehoer"),
        Product(sku: "ZUB-FILTER", name: "Filterpapier Gr. 4, 100 Stück", price: "4.50", category: "zubehoer"),
        Product(sku: "ABO-MONAT", name: "Kaffee-Abo, ein Monat", price: "19.90", category: "abo"),
        Product(sku: "BUCH-KAFFEE", name: "Buch: Die Kunst des Röstens", price: "28.00", category: "buecher"),
        Product(sku: "GUT-25", name: "Geschenkgutschein 25 €", price: "25.00", category: "gutschein"),
    ]

    static let firstNames = [
        "Anna", "Lukas", "Marie", "Felix", "Sophie", "Jonas", "Emma", "Leon", "Mia", "Paul", "Lena", "Finn", "Hannah",
        "Elias", "Lea", "Noah", "Clara", "Ben", "Ida", "Jakob", "Greta", "Moritz", "Frieda", "Anton", "Jürgen",
        "Özlem", "Björn", "Käthe", "Sören", "Zoë",
    ]
    static let lastNames = [
        "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
        "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger",
        "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Krause", "Meier", "Lehmann", "Schmid", "Yılmaz",
    ]
    static let cities = [
        ("10115", "Berlin"), ("20095", "Hamburg"), ("80331", "München"), ("50667", "Köln"),
        ("60311", "Frankfurt am Main"),
        ("70173", "Stuttgart"), ("04109", "Leipzig"), ("28195", "Bremen"), ("01067", "Dresden"), ("90402", "Nürnberg"),
    ]
    static let streets = [
        "Hauptstraße", "Schulstraße", "Gartenweg", "Bahnhofstraße", "Lindenallee", "Am Markt", "Bergstraße",
    ]

    public struct Summary: Sendable {
        public var workspace: Workspace
        public var customers: Int
        public var orders: Int
    }

    public static func seed(_ rt: Runtime, slug: String = "demo", customers: Int = 200, seed: UInt64 = 2026)
        async throws
        -> Summary
    {
        let random = SeededRandom(seed: seed)
        let workspace: Workspace
        if let existing = try await rt.store.workspace(slug: slug) {
            workspace = existing
        } else {
            workspace = try await rt.store.createWorkspace(
                NewWorkspace(
                    slug: slug, name: "Kaffeerösterei Bohnenglück", senderName: "Bohnenglück",
                    senderEmail: "hallo@bohnenglueck.example", imprintURL: "https://bohnenglueck.example/impressum",
                    privacyURL: "https://bohnenglueck.example/datenschutz"))
        }
        // Every user of the installation may look at the demo.
        for userID in try await rt.store.allUserIDs() {
            try await rt.store.addMembership(workspaceID: workspace.id, userID: userID, role: .owner)
        }
        let now = rt.clock.now()
        let statuses: [OrderStatus] = [
            .placed, .paid, .shipped, .delivered, .delivered, .delivered, .delivered, .partiallyReturned, .returned,
            .cancelled,
        ]
        var orderCount = 0
        for i in 0..<customers {
            let first = random.pick(firstNames)
            let last = random.pick(lastNames)
            let local = "\(first).\(last)".lowercased().folding(options: .diacriticInsensitive, locale: nil)
                .replacingOccurrences(of: "ı", with: "i")
            let email = "\(local).\(i)@\(random.pick(["example.com", "example.org", "example.net"]))"
            let (postal, city) = random.pick(cities)
            let orders = 1 + random.int(below: 3)
            for n in 0..<orders {
                let status = orderCount < statuses.count ? statuses[orderCount] : random.pick(statuses)
                let placed = now.addingTimeInterval(
                    -Double(1 + random.int(below: 120)) * 86400 - Double(random.int(below: 86400)))
                var times: [String: String] = ["placed": ISO8601.format(placed)]
                let steps: [(OrderStatus, Double)] = [(.paid, 0.1), (.shipped, 1.5), (.delivered, 3.5)]
                for (s, days) in steps where status != .placed && status != .cancelled {
                    times[s.rawValue] = ISO8601.format(placed.addingTimeInterval(days * 86400))
                    if s == status { break }
                }
                if status == .returned || status == .partiallyReturned {
                    times[status.rawValue] = ISO8601.format(placed.addingTimeInterval(9 * 86400))
                } else if status == .cancelled {
                    times["cancelled"] = ISO8601.format(placed.addingTimeInterval(3600))
                }
                var items: [OrderPayload.Item] = []
                var total: Int64 = 0
                for _ in 0..<(1 + random.int(below: 3)) {
                    let p = random.pick(products)
                    let q = 1 + random.int(below: 2)
                    items.append(.init(sku: p.sku, name: p.name, quantity: q, unitPrice: p.price, category: p.category))
                    total += (try Money(decimal: p.price, currency: .eur, field: "price")).minor * Int64(q)
                }
                // What came back, item by item: everything for a return, part of the order for a partial one.
                if status == .returned {
                    for k in items.indices { items[k].returnedQuantity = items[k].quantity }
                } else if status == .partiallyReturned {
                    if items.count == 1 && items[0].quantity == 1 {
                        // One unit cannot come back in part: this customer bought two.
                        items[0].quantity = 2
                        total += (try Money(decimal: items[0].unitPrice ?? "0", currency: .eur, field: "price")).minor
                    }
                    items[0].returnedQuantity = items.count > 1 ? items[0].quantity : 1
                }
                let shipping: Int64 = total >= 3900 ? 0 : 490
                let consents: [OrderPayload.CheckoutConsent] =
                    random.unit() < 0.45
                    ? [
                        .init(
                            purpose: "review_request",
                            text:
                                "Ja, bitten Sie mich nach der Lieferung um eine Bewertung. Ich kann jederzeit widersprechen.",
                            grantedAt: times["placed"])
                    ]
                    : []
                let payload = OrderPayload(
                    customer: .init(email: email, firstName: first, lastName: last, locale: "de-DE"), currency: "EUR",
                    items: items,
                    totals: .init(
                        shipping: Money(minor: shipping, currency: .eur).decimalString,
                        total: Money(minor: total + shipping, currency: .eur).decimalString),
                    status: status.rawValue, statusTimes: times,
                    shippingAddress: .init(
                        name: "\(first) \(last)", street: "\(random.pick(streets)) \(1 + random.int(below: 120))",
                        postalCode: postal, city: city, country: "DE"),
                    consents: consents,
                    existingCustomerNotice:
                        "Wir nutzen Ihre E-Mail-Adresse für Informationen zu ähnlichen Produkten. Sie können dem jederzeit widersprechen, ohne dass andere als die Übermittlungskosten nach den Basistarifen entstehen."
                )
                let externalID = "BG-\(10000 + i * 3 + n)"
                let submission = try OrderSubmission.validate(externalID: externalID, payload: payload, receivedAt: now)
                _ = try await rt.store.upsertOrder(
                    workspaceID: workspace.id, submission: submission, fingerprint: Store.fingerprint(payload))
                orderCount += 1
            }
            if random.unit() < 0.3,
                let c = try await rt.store.contact(workspaceID: workspace.id, email: try EmailAddress(email))
            {
                try await rt.db.transaction { tx in
                    try await rt.store.applyConsent(
                        tx, workspaceID: workspace.id, contactID: c.id,
                        change: ConsentChange(
                            purpose: .newsletter, action: .grant,
                            text: "Ich möchte den Bohnenglück-Newsletter erhalten. Abmeldung jederzeit möglich.",
                            source: "lead_magnet", formID: "kaffee-guide",
                            pageURL: "https://bohnenglueck.example/guide",
                            evidence: ConsentEvidence(
                                at: now.addingTimeInterval(-86400 * 30), ip: "203.0.113.\(i % 250)",
                                userAgent: "Mozilla/5.0")))
                }
            }
        }
        try await seedMail(rt, workspace: workspace)
        return Summary(workspace: workspace, customers: customers, orders: orderCount)
    }

    /// A DKIM key and a dozen thank-you mails, so that the outbox shows the pipeline at work: the worker sends
    /// those with a newsletter consent and holds back the rest, with the reason. Only on the first run.
    static func seedMail(_ rt: Runtime, workspace: Workspace) async throws {
        guard try await rt.store.outboxMails(workspaceID: workspace.id, limit: 1).isEmpty else { return }
        if try await rt.store.activeDKIMKey(workspaceID: workspace.id) == nil {
            let domain = String(workspace.senderEmail.split(separator: "@").last ?? "example.com")
            let key = try DKIMKey.generate(.ed25519SHA256)
            try await rt.store.addDKIMKey(
                workspaceID: workspace.id, domain: IDNA.toASCII(domain) ?? domain, selector: "demo",
                algorithm: key.algorithm.rawValue, privateKey: key.storedForm, actor: "demo")
        }
        for contact in try await rt.store.contacts(workspaceID: workspace.id, limit: 12).items {
            try await rt.mailer.enqueue(
                workspace: workspace, kind: .thankYou, to: try MailRecipient(contact),
                values: [
                    "message":
                        "Danke, dass Sie bei uns bestellt haben. Wir rösten jede Woche frisch und freuen uns, wenn es Ihnen schmeckt."
                ])
        }
    }
}
