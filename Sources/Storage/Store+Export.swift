import Foundation
import ReciprocityCore

/// Art. 15 / Art. 20 DSGVO: everything stored about one person, as one machine-readable document.
public struct ContactExport: Sendable, Codable {
    public struct ContactData: Sendable, Codable {
        public var id: Int64
        public var email: String
        public var firstName: String?
        public var lastName: String?
        public var locale: String
        public var source: String
        public var sourceRef: String?
        public var createdAt: Date
        public var updatedAt: Date
        public var erasedAt: Date?
    }
    public struct ConsentData: Sendable, Codable {
        public var purpose: String
        public var state: String
        public var legalBasis: String
        public var source: String
        public var formId: String?
        public var pageUrl: String?
        public var textVersion: Int?
        public var text: String?
        public var requested: ConsentEvidence?
        public var granted: ConsentEvidence?
        public var withdrawnAt: Date?
    }
    public struct ConsentEventData: Sendable, Codable {
        public var purpose: String
        public var action: String
        public var state: String
        public var legalBasis: String
        public var source: String
        public var textVersion: Int?
        public var text: String?
        public var ip: String?
        public var userAgent: String?
        public var at: Date
    }
    public struct OrderData: Sendable, Codable {
        public var externalId: String
        public var status: String
        public var currency: String
        public var total: String
        public var items: [ItemData]
        public var shippingAddress: PostalAddress?
        public var couponCode: String?
        public var referralCode: String?
        /// Who the buyer said recommended the shop (the checkout's "referred by" answer).
        public var referredBy: String?
        /// The shop's keyed fingerprint of the payment means, and the device hash the shop sent (fraud checks).
        public var paymentFingerprint: String?
        public var clientDevice: String?
        public var statusTimes: [String: Date]
    }
    /// A mail sent, or to be sent, to the person: what, when, how it went, and the message itself while it is kept
    /// (`RECIPROCITY_MAIL_BODY_RETENTION_DAYS` after its delivery ended).
    public struct MailData: Sendable, Codable {
        public var kind: String
        public var recipient: String?
        public var subject: String
        public var state: String
        public var createdAt: Date
        public var sentAt: Date?
        public var message: String?
    }
    public struct ItemData: Sendable, Codable {
        public var sku: String
        public var name: String
        public var quantity: Int
        public var unitPrice: String
    }

    public var exportedAt: Date
    public var workspace: String
    public var contact: ContactData
    public var consents: [ConsentData]
    public var consentHistory: [ConsentEventData]
    public var orders: [OrderData]
    public var suppressed: Bool
    /// The person's reviews (with their text: it is their personal data), review requests and recorded favours.
    public var reviews: [ReviewData] = []
    public var reviewRequests: [ReviewRequestData] = []
    public var favours: [FavourData] = []
    /// The mails to the person, oldest first.
    public var mails: [MailData] = []
    /// Lead magnet signups, each with its double opt-in evidence.
    public var leadSignups: [LeadSignupData] = []
    /// The referral programme: the person as advocate (code, payout details), the referrals they made and were
    /// made through, their rewards and their credit ledger. Other people appear only as counts and states.
    public var referrals: ReferralData = ReferralData()
    /// What was done about the person and recorded in the audit log (consent withdrawals, objection, erasure,
    /// credit spent, joining and leaving the referral programme, the moderation of their reviews): the action, its
    /// detail and time, and who did it (`Store.exportedActor`).
    public var auditLog: [AuditData] = []

    public struct AuditData: Sendable, Codable {
        public var action: String
        public var by: String
        public var detail: String
        public var at: Date
    }

    public struct ReferralData: Sendable, Codable {
        public var advocate: AdvocateData?
        /// Orders of friends attributed to this person's code: their states, without the friends.
        public var referralsMade: [ReferralMade] = []
        /// This person's own orders that were attributed to someone's referral.
        public var referredOrders: [ReferredOrder] = []
        public var rewards: [RewardData] = []
        public var credit: [CreditData] = []
    }
    public struct AdvocateData: Sendable, Codable {
        public var code: String
        public var state: String
        public var joinedAt: Date
        public var leftAt: Date?
        public var payoutName: String?
        public var payoutIban: String?
    }
    public struct ReferralMade: Sendable, Codable {
        public var status: String
        public var via: String
        public var createdAt: Date
    }
    public struct ReferredOrder: Sendable, Codable {
        public var orderExternalId: String
        public var status: String
        public var createdAt: Date
    }
    public struct RewardData: Sendable, Codable {
        public var beneficiary: String
        public var reason: String
        public var type: String
        public var valueMinor: Int64
        public var currency: String
        public var state: String
        public var voucherCode: String?
        public var issuedAt: Date?
        public var createdAt: Date
    }
    public struct CreditData: Sendable, Codable {
        public var kind: String
        public var deltaMinor: Int64
        public var currency: String
        public var orderExternalId: String?
        public var at: Date
    }

    public struct LeadSignupData: Sendable, Codable {
        public var magnet: String
        public var state: String
        public var textVersion: Int
        public var formId: String
        public var pageUrl: String?
        public var fields: [String: String]
        public var signup: ConsentEvidence
        public var confirmation: ConsentEvidence?
        public var downloads: Int64
    }

    public struct ReviewData: Sendable, Codable {
        public var id: Int64
        public var sku: String
        public var productName: String
        public var rating: Int
        public var title: String
        public var body: String
        public var displayName: String
        public var source: String
        public var status: String
        public var orderExternalId: String?
        public var photos: Int
        public var reply: String?
        public var createdAt: Date
        public var updatedAt: Date
    }
    public struct ReviewRequestData: Sendable, Codable {
        public var orderExternalId: String
        public var state: String
        public var dueAt: Date
        public var sentAt: Date?
        public var remindedAt: Date?
        public var skipReason: String?
    }
    public struct FavourData: Sendable, Codable {
        public var kind: String
        public var at: Date
    }
}

extension Store {
    public func exportContact(workspaceID: WorkspaceID, contactID: ContactID) async throws -> ContactExport {
        guard let workspace = try await workspace(id: workspaceID),
            let c = try await contact(workspaceID: workspaceID, id: contactID)
        else { throw DomainError.notFound("Contact") }
        let (consents, history) = try await consentRecord(workspaceID: workspaceID, contactID: contactID)
        // What the order model does not carry: the device hash the shop sent.
        let devices = Dictionary(
            try await db.query(
                "SELECT external_id, client_device FROM orders WHERE workspace_id = ? AND contact_id = ?", workspaceID,
                contactID
            ).map { ($0.text("external_id"), $0.optionalText("client_device")) }, uniquingKeysWith: { a, _ in a })
        var orders: [ContactExport.OrderData] = []
        var offset = 0
        while true {
            let page = try await self.orders(workspaceID: workspaceID, contactID: contactID, limit: 500, offset: offset)
            orders += page.items.map { o in
                ContactExport.OrderData(
                    externalId: o.externalID, status: o.status.rawValue, currency: o.totals.total.currency.code,
                    total: o.totals.total.decimalString,
                    items: o.items.map {
                        .init(sku: $0.sku, name: $0.name, quantity: $0.quantity, unitPrice: $0.unitPrice.decimalString)
                    }, shippingAddress: o.shippingAddress, couponCode: o.couponCode, referralCode: o.referralCode,
                    referredBy: o.referredBy, paymentFingerprint: o.paymentFingerprint,
                    clientDevice: devices[o.externalID] ?? nil,
                    statusTimes: Dictionary(uniqueKeysWithValues: o.statusTimes.map { ($0.key.rawValue, $0.value) }))
            }
            offset += page.items.count
            if page.items.isEmpty || offset >= page.total { break }
        }
        let suppressed = try await isSuppressed(c)
        var export = ContactExport(
            exportedAt: now, workspace: workspace.name,
            contact: .init(c),
            consents: consents, consentHistory: history, orders: orders, suppressed: suppressed)
        for r in try await db.query(
            "SELECT \(Self.reviewColumns) FROM \(Self.reviewFrom) WHERE r.workspace_id = ? AND r.contact_id = ? ORDER BY r.id",
            workspaceID, contactID
        ).map(Self.review) {
            let photos = try await db.scalar("SELECT COUNT(*) FROM review_photos WHERE review_id = ?", r.id)
            export.reviews.append(
                .init(
                    id: r.id, sku: r.sku, productName: r.productName, rating: r.rating, title: r.title, body: r.body,
                    displayName: r.displayName, source: r.source.rawValue, status: r.status.rawValue,
                    orderExternalId: r.orderExternalID, photos: Int(photos), reply: r.reply, createdAt: r.createdAt,
                    updatedAt: r.updatedAt))
        }
        export.reviewRequests = try await db.query(
            """
            SELECT o.external_id, q.state, q.due_at, q.sent_at, q.reminded_at, q.skip_reason
            FROM review_requests q JOIN orders o ON o.id = q.order_id
            WHERE q.workspace_id = ? AND q.contact_id = ? ORDER BY q.id
            """, workspaceID, contactID
        ).map {
            .init(
                orderExternalId: $0.text("external_id"), state: $0.text("state"), dueAt: $0.date("due_at"),
                sentAt: $0.optionalDate("sent_at"), remindedAt: $0.optionalDate("reminded_at"),
                skipReason: $0.optionalText("skip_reason"))
        }
        export.mails = try await db.query(
            """
            SELECT kind, recipient, subject, state, created_at, sent_at, message FROM outbox
            WHERE workspace_id = ? AND contact_id = ? AND is_test = 0 ORDER BY id
            """, workspaceID, contactID
        ).map {
            .init(
                kind: $0.text("kind"), recipient: $0.optionalText("recipient"), subject: $0.text("subject"),
                state: $0.text("state"), createdAt: $0.date("created_at"), sentAt: $0.optionalDate("sent_at"),
                message: $0.optionalText("message"))
        }
        export.favours = try await favours(workspaceID: workspaceID, contactID: contactID).map {
            .init(kind: $0.kind, at: $0.at)
        }
        export.leadSignups = try await signupProofs(workspaceID: workspaceID, contactID: contactID).map {
            .init(
                magnet: $0.magnetSlug, state: $0.signup.state.rawValue, textVersion: $0.text.version,
                formId: $0.signup.formID, pageUrl: $0.signup.pageURL, fields: $0.signup.fields,
                signup: $0.signup.signup, confirmation: $0.signup.confirmation, downloads: $0.signup.downloads)
        }
        export.referrals = try await referralExport(workspaceID: workspaceID, contactID: contactID)
        // Entries about the person (`contact:`), about them as advocate (`advocate:`), and about their reviews
        // (`review:`: the merchant's moderation of them).
        export.auditLog = try await db.query(
            """
            SELECT actor, action, detail, at FROM audit_log
            WHERE workspace_id = ? AND (subject = ?
              OR subject IN (SELECT 'advocate:' || id FROM advocates WHERE workspace_id = ? AND contact_id = ?)
              OR subject IN (SELECT 'review:' || id FROM reviews WHERE workspace_id = ? AND contact_id = ?))
            ORDER BY id
            """, workspaceID, "contact:\(contactID)", workspaceID, contactID, workspaceID, contactID
        ).map {
            .init(
                action: $0.text("action"), by: Self.exportedActor($0.text("actor")), detail: $0.text("detail"),
                at: $0.date("at"))
        }
        return export
    }

    /// Who acted, as the export names it: the shop's staff (`user:ID`) and its integrations (`apikey:ID`) by role
    /// only, so that one person's export does not identify another; the product's own parts (`preference_centre`,
    /// `cli`, …) as they are.
    public static func exportedActor(_ actor: String) -> String {
        if actor.hasPrefix("user:") || actor.contains("@") { return "staff" }
        if actor.hasPrefix("apikey:") { return "shop_system" }
        return actor
    }

    func referralExport(workspaceID: WorkspaceID, contactID: ContactID) async throws -> ContactExport.ReferralData {
        var data = ContactExport.ReferralData()
        data.advocate = try await db.first(
            """
            SELECT code, state, joined_at, left_at, payout_name, payout_iban FROM advocates
            WHERE workspace_id = ? AND contact_id = ?
            """, workspaceID, contactID
        ).map {
            .init(
                code: $0.text("code"), state: $0.text("state"), joinedAt: $0.date("joined_at"),
                leftAt: $0.optionalDate("left_at"), payoutName: $0.optionalText("payout_name"),
                payoutIban: $0.optionalText("payout_iban"))
        }
        data.referralsMade = try await db.query(
            """
            SELECT r.status, r.via, r.created_at FROM referrals r JOIN advocates a ON a.id = r.advocate_id
            WHERE r.workspace_id = ? AND a.contact_id = ? ORDER BY r.id
            """, workspaceID, contactID
        ).map { .init(status: $0.text("status"), via: $0.text("via"), createdAt: $0.date("created_at")) }
        data.referredOrders = try await db.query(
            """
            SELECT o.external_id, r.status, r.created_at FROM referrals r JOIN orders o ON o.id = r.order_id
            WHERE r.workspace_id = ? AND r.friend_contact_id = ? ORDER BY r.id
            """, workspaceID, contactID
        ).map {
            .init(orderExternalId: $0.text("external_id"), status: $0.text("status"), createdAt: $0.date("created_at"))
        }
        data.rewards = try await db.query(
            """
            SELECT beneficiary, reason, type, value_minor, currency, state, voucher_code, issued_at, created_at
            FROM referral_rewards WHERE workspace_id = ? AND contact_id = ? ORDER BY id
            """, workspaceID, contactID
        ).map {
            .init(
                beneficiary: $0.text("beneficiary"), reason: $0.text("reason"), type: $0.text("type"),
                valueMinor: $0.int("value_minor"), currency: $0.text("currency"), state: $0.text("state"),
                voucherCode: $0.optionalText("voucher_code"), issuedAt: $0.optionalDate("issued_at"),
                createdAt: $0.date("created_at"))
        }
        data.credit = try await db.query(
            """
            SELECT kind, delta_minor, currency, order_ref, at FROM referral_credit
            WHERE workspace_id = ? AND contact_id = ? ORDER BY id
            """, workspaceID, contactID
        ).map {
            .init(
                kind: $0.text("kind"), deltaMinor: $0.int("delta_minor"), currency: $0.text("currency"),
                orderExternalId: $0.optionalText("order_ref"), at: $0.date("at"))
        }
        return data
    }

    /// A contact's consents and their history, each with the text version shown: the consent part of the export,
    /// and of the proof of consent.
    public func consentRecord(workspaceID: WorkspaceID, contactID: ContactID) async throws -> (
        consents: [ContactExport.ConsentData], history: [ContactExport.ConsentEventData]
    ) {
        let texts = Dictionary(
            uniqueKeysWithValues: try await db.query(
                "SELECT id, version, body FROM consent_texts WHERE workspace_id = ?", workspaceID
            ).map { ($0.int("id"), (Int($0.int("version")), $0.text("body"))) })
        let consents = try await consents(workspaceID: workspaceID, contactID: contactID).map { k in
            ContactExport.ConsentData(
                purpose: k.purpose.rawValue, state: k.state.rawValue, legalBasis: k.legalBasis.rawValue,
                source: k.source, formId: k.formID, pageUrl: k.pageURL, textVersion: k.textID.flatMap { texts[$0]?.0 },
                text: k.textID.flatMap { texts[$0]?.1 }, requested: k.requested, granted: k.granted,
                withdrawnAt: k.withdrawnAt)
        }
        let history = try await db.query(
            """
            SELECT purpose, action, state, legal_basis, source, text_id, ip, user_agent, at FROM consent_events
            WHERE workspace_id = ? AND contact_id = ? ORDER BY at, id
            """, workspaceID, contactID
        ).map { r in
            let textID = r.optionalInt("text_id")
            return ContactExport.ConsentEventData(
                purpose: r.text("purpose"), action: r.text("action"), state: r.text("state"),
                legalBasis: r.text("legal_basis"), source: r.text("source"),
                textVersion: textID.flatMap { texts[$0]?.0 }, text: textID.flatMap { texts[$0]?.1 },
                ip: r.optionalText("ip"), userAgent: r.optionalText("user_agent"), at: r.date("at"))
        }
        return (consents, history)
    }
}

extension ContactExport.ContactData {
    public init(_ c: Contact) {
        self.init(
            id: c.id, email: c.email, firstName: c.firstName, lastName: c.lastName, locale: c.locale, source: c.source,
            sourceRef: c.sourceRef, createdAt: c.createdAt, updatedAt: c.updatedAt, erasedAt: c.erasedAt)
    }
}
