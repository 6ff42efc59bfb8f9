import Foundation
import LeadMagnets
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// What an unverified form post can and cannot do to a known contact, and what a save in the admin does to the
/// stock that confirmations take.
extension LeadFlowTests {
    /// A stranger posts a subscriber's address with their own postal address: nothing ships before the subscriber
    /// confirms, and burst posts leave one pending signup, one confirmation mail and no shipment.
    @Test(arguments: Engine.available)
    func aKnownSubscribersAddressShipsNothingUnconfirmed(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let guide = try await magnet(kit)
            try await signup(kit, guide, "cara@example.org")
            _ = try await confirm(kit, "cara@example.org")
            let sample = try await magnet(kit, kind: .sample, slug: "probe")
            let stranger = PostalAddress(
                name: "Mallory", street: "Fremdweg 1", postalCode: "99999", city: "Anderswo", country: "DE")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<5 {
                    group.addTask { try await signup(kit, sample, "cara@example.org", address: stranger) }
                }
                try await group.waitForAll()
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_shipments") == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_signups WHERE magnet_id = \(sample.id)") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 2)
            // The confirmation page names the address the sample would go to.
            let token = try await doiToken(kit, "cara@example.org")
            guard case .pending(let pending, _, _) = try await kit.leads.service.open(token: token) else {
                Issue.record("a pending signup expected")
                return
            }
            #expect(pending.shippingAddress == stranger)
            #expect(pending.confirmation == nil, "not confirmed by the post")
        }
    }

    /// Confirmations take stock while the admin's form is open; saving the form changes the stock by what the
    /// editor changed, not back to what the form showed.
    @Test(arguments: Engine.available)
    func savingTheFormKeepsTheStockConfirmationsTook(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var m = try await magnet(kit, kind: .sample, slug: "probe")
            m.sampleStock = 100
            m = try await kit.store.updateLeadMagnet(m, actor: "test")
            try await kit.store.db.execute("UPDATE lead_magnets SET sample_stock = 70 WHERE id = ?", m.id)
            m.headline = "Neue Überschrift"
            let left = try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 100)
            #expect(left.sampleStock == 70 && left.headline == "Neue Überschrift")
            m.sampleStock = 150
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 100).sampleStock == 120)
            m.sampleStock = 0
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 150).sampleStock == 0)
            // The API's PUT sets it.
            m.sampleStock = 40
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test").sampleStock == 40)
        }
    }
}

extension LeadFlowTests {
    /// A stranger's unconfirmed request for a customer's address expires without a trace in the customer's
    /// history: no request event with their IP, and a consent withdrawn before is withdrawn again with the request
    /// it had.
    @Test(arguments: Engine.available)
    func anExpiredRequestLeavesNoStrangersAddressBehind(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            // A customer (kept: they have an order) who once consented and then withdrew.
            _ = try await kit.store.put(kit.shop, "K-1", samplePayload(email: "kundin@example.org", status: "paid"))
            let customer = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("kundin@example.org")))
            for action in [ConsentChange.Action.request, .grant, .withdraw] {
                try await kit.store.db.transaction { tx in
                    _ = try await kit.store.applyConsent(
                        tx, workspaceID: kit.shop.id, contactID: customer.id,
                        change: ConsentChange(
                            purpose: .newsletter, action: action, text: action == .withdraw ? nil : Self.consentText,
                            source: "test",
                            evidence: ConsentEvidence(at: kit.clock.now(), ip: "198.51.100.1", userAgent: "Kundin")))
                }
                kit.clock.advance(by: 1)
            }
            try await kit.leads.service.signup(
                workspace: kit.shop, magnet: m, input: SignupInput(email: "kundin@example.org", firstName: "X"),
                locale: "de", context: context(kit, ip: "192.0.2.66"))
            #expect(try await count(kit, "SELECT COUNT(*) FROM consent_events WHERE ip = '192.0.2.66'") == 1)
            kit.clock.advance(by: m.pendingLifetime + 1)
            #expect(try await kit.leads.service.expire() == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM consent_events WHERE ip = '192.0.2.66'") == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM consents WHERE requested_ip = '192.0.2.66'") == 0)
            let consent = try #require(
                try await kit.store.db.first(
                    "SELECT state, requested_ip FROM consents WHERE contact_id = ? AND purpose = 'newsletter'",
                    customer.id))
            #expect(consent.text("state") == "withdrawn")
            #expect(consent.optionalText("requested_ip") == "198.51.100.1")
            // The customer's own trail stays: their request, grant and withdrawal.
            #expect(try await count(kit, "SELECT COUNT(*) FROM consent_events WHERE contact_id = \(customer.id)") == 3)
        }
    }
}

extension LeadFlowTests {
    /// Whatever is typed as the name goes into no confirmation mail: the address owner has not confirmed anything
    /// yet, and the mail is signed by the shop.
    @Test(arguments: Engine.available)
    func theConfirmationMailCarriesNoTypedName(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            try await kit.leads.service.signup(
                workspace: kit.shop, magnet: m,
                input: SignupInput(email: "opfer@example.org", firstName: "Sie haben 1000 Euro gewonnen"),
                locale: "de", context: context(kit))
            let mail = try #require(
                try await kit.store.db.first(
                    "SELECT message FROM outbox WHERE kind = 'doi_confirmation' AND recipient = 'opfer@example.org'"))
            let text = mail.text("message").replacingOccurrences(of: "=\r\n", with: "")
            #expect(!text.contains("gewonnen"))
            #expect(text.contains("Guten Tag,"))
        }
    }
}

extension LeadFlowTests {
    /// A post for a subscriber's address does not touch the evidence of the consent that stands.
    @Test(arguments: Engine.available)
    func aPostLeavesAStandingConsentsEvidenceAlone(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let guide = try await magnet(kit)
            try await signup(kit, guide, "dora@example.org")
            _ = try await confirm(kit, "dora@example.org")
            let before = try #require(
                try await kit.store.db.first(
                    "SELECT requested_ip, requested_at, source, form_id, page_url FROM consents WHERE purpose = 'newsletter'"
                ))
            let other = try await magnet(kit, kind: .link, slug: "webinar")
            kit.clock.advance(by: 60)
            try await kit.leads.service.signup(
                workspace: kit.shop, magnet: other, input: SignupInput(email: "dora@example.org"), locale: "de",
                context: SignupContext(
                    formID: "lead_magnet:webinar", pageURL: "https://elsewhere.example/",
                    evidence: ConsentEvidence(at: kit.clock.now(), ip: "192.0.2.66", userAgent: "Fremd")))
            let after = try #require(
                try await kit.store.db.first(
                    "SELECT requested_ip, requested_at, source, form_id, page_url FROM consents WHERE purpose = 'newsletter'"
                ))
            for column in ["requested_ip", "requested_at", "source", "form_id", "page_url"] {
                #expect(after[column] == before[column], "\(column)")
            }
        }
    }
}
