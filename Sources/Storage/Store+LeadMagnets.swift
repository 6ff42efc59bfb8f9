import Foundation
import ReciprocityCore

/// A signup for a lead magnet: the double opt-in's state and its proof (what was shown, when, from where, and
/// which confirmation mail went out).
public struct LeadSignup: Sendable, Equatable {
    public enum State: String, Sendable, Codable { case pending, confirmed }
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var magnetID: LeadMagnetID
    public var contactID: ContactID
    public var state: State
    public var purpose: ConsentPurpose
    public var textID: Int64
    public var formID: String
    public var pageURL: String?
    public var fields: [String: String]
    public var signup: ConsentEvidence
    public var confirmOutboxID: Int64?
    public var confirmMailAt: Date?
    public var confirmation: ConsentEvidence?
    public var expiresAt: Date?
    public var deliveryOutboxID: Int64?
    public var deliveryMailAt: Date?
    public var downloads: Int64
    public var followUpStopped: String?
    public var erasedAt: Date?

    /// Where a sample goes: the address the form carried (shown on the confirmation page, so the person confirms
    /// it too).
    public var shippingAddress: PostalAddress? {
        Store.decodeJSON(PostalAddress.self, fields["_address"] ?? "")
    }
}

/// Where a signup's form came from and what it showed: the proof's "where" and "what".
public struct SignupContext: Sendable {
    public var formID: String
    public var pageURL: String?
    public var evidence: ConsentEvidence
    /// The consent text version the form showed (signed into its token), if known.
    public var shownTextID: Int64?
    public init(formID: String, pageURL: String?, evidence: ConsentEvidence, shownTextID: Int64? = nil) {
        self.formID = formID
        self.pageURL = pageURL
        self.evidence = evidence
        self.shownTextID = shownTextID
    }
}

/// A sample to send, for the fulfilment list.
public struct LeadShipment: Sendable, Equatable {
    public var signupID: Int64
    public var state: String
    public var email: String
    public var address: PostalAddress?
    public var createdAt: Date
    public var shippedAt: Date?
}

extension Store {
    public static let leadFollowUpJob = "leads.follow_up"
    public static let leadExpireJob = "leads.expire"

    // MARK: Magnets

    static let leadMagnetColumns = """
        id, workspace_id, slug, name, locale, headline, body, image_url, gift_kind, gift_title, gift_url, sample_stock,
        consent_text, purpose, ask_name, fields, allowed_origins, currency, unit_cost_minor, fixed_cost_minor,
        download_link_seconds, pending_seconds, resend_window_seconds, min_fill_seconds, voucher_low_water, follow_ups,
        active, file_key, file_name, file_type, file_size, file_sha256, created_at, updated_at
        """

    static func leadMagnet(_ r: SQLRow) -> LeadMagnet {
        let currency = Currency(stored: r.text("currency"))
        let file: LeadMagnet.StoredFile? = r.optionalText("file_key").map {
            .init(
                key: $0, name: r.text("file_name"), contentType: r.text("file_type"), size: r.int("file_size"),
                sha256: r.text("file_sha256"))
        }
        return LeadMagnet(
            id: r.int("id"), workspaceID: r.int("workspace_id"), slug: r.text("slug"), name: r.text("name"),
            locale: r.text("locale"), headline: r.text("headline"), body: r.text("body"),
            imageURL: r.optionalText("image_url"), giftKind: GiftKind(rawValue: r.text("gift_kind")) ?? .link,
            giftTitle: r.text("gift_title"), giftURL: r.optionalText("gift_url"),
            sampleStock: r.optionalInt("sample_stock").map(Int.init), consentText: r.text("consent_text"),
            purpose: ConsentPurpose(rawValue: r.text("purpose")) ?? .newsletter, askName: r.bool("ask_name"),
            fields: decodeJSON([LeadField].self, r.text("fields")) ?? [],
            allowedOrigins: decodeJSON([String].self, r.text("allowed_origins")) ?? [],
            unitCost: Money(minor: r.int("unit_cost_minor"), currency: currency),
            fixedCost: Money(minor: r.int("fixed_cost_minor"), currency: currency),
            downloadLinkLifetime: TimeInterval(r.int("download_link_seconds")),
            pendingLifetime: TimeInterval(r.int("pending_seconds")),
            resendWindow: TimeInterval(r.int("resend_window_seconds")),
            minimumFillTime: TimeInterval(r.int("min_fill_seconds")),
            voucherLowWater: Int(r.int("voucher_low_water")),
            followUps: decodeJSON([FollowUpStep].self, r.text("follow_ups")) ?? [], active: r.bool("active"),
            file: file, createdAt: r.date("created_at"), updatedAt: r.date("updated_at"))
    }

    static func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) -> T? {
        try? JSONDecoder().decode(type, from: Data(text.utf8))
    }

    static func encodeJSON(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    /// The values of a magnet's editable columns, in `leadMagnetEditable` order.
    private func editableValues(_ m: LeadMagnet) -> [any SQLBindable] {
        [
            m.slug, m.name, m.locale, m.headline, m.body, m.imageURL, m.giftKind.rawValue, m.giftTitle, m.giftURL,
            m.sampleStock.map(Int64.init), m.consentText, m.purpose.rawValue, m.askName, Self.encodeJSON(m.fields),
            Self.encodeJSON(m.allowedOrigins), m.unitCost.currency.code, m.unitCost.minor, m.fixedCost.minor,
            Int64(m.downloadLinkLifetime), Int64(m.pendingLifetime), Int64(m.resendWindow), Int64(m.minimumFillTime),
            Int64(m.voucherLowWater), Self.encodeJSON(m.followUps), m.active,
        ]
    }
    private static let leadMagnetEditable = [
        "slug", "name", "locale", "headline", "body", "image_url", "gift_kind", "gift_title", "gift_url",
        "sample_stock", "consent_text", "purpose", "ask_name", "fields", "allowed_origins", "currency",
        "unit_cost_minor", "fixed_cost_minor", "download_link_seconds", "pending_seconds", "resend_window_seconds",
        "min_fill_seconds", "voucher_low_water", "follow_ups", "active",
    ]

    public func createLeadMagnet(_ m: LeadMagnet, actor: String) async throws -> LeadMagnet {
        try m.validate()
        do {
            return try await db.transaction { tx in
                let cols = Self.leadMagnetEditable.joined(separator: ", ")
                let marks = Array(repeating: "?", count: Self.leadMagnetEditable.count + 3).joined(separator: ", ")
                let row = try await tx.query(
                    """
                    INSERT INTO lead_magnets (\(cols), workspace_id, created_at, updated_at) VALUES (\(marks))
                    RETURNING \(Self.leadMagnetColumns)
                    """, self.editableValues(m) + [m.workspaceID, self.now, self.now])[0]
                let created = Self.leadMagnet(row)
                try await self.versionConsentText(tx, created)
                try await self.audit(
                    tx, workspaceID: m.workspaceID, actor: actor, action: "lead_magnet.create",
                    subject: "lead_magnet:\(created.id)")
                return created
            }
        } catch StorageError.uniqueViolation {
            throw DomainError.conflict("slug_taken", "Another lead magnet already uses this slug.", field: "slug")
        }
    }

    /// Saves the editable fields. The consent text may change: signups keep the version they showed.
    ///
    /// `stockSeen`: the sample stock the editor's form showed. Confirmations take stock while the form is open, so
    /// with it the stock changes by what the editor changed (150 typed over 100 shown adds 50 to what is left;
    /// left alone, what was taken stays taken), never below zero. Without it (the API's PUT), the stock is set.
    public func updateLeadMagnet(_ m: LeadMagnet, actor: String, stockSeen: Int? = nil) async throws -> LeadMagnet {
        try m.validate()
        do {
            return try await db.transaction { tx in
                var values = self.editableValues(m)
                var sets = Self.leadMagnetEditable.map { "\($0) = ?" }
                if let stockSeen, let stock = m.sampleStock,
                    let i = Self.leadMagnetEditable.firstIndex(of: "sample_stock")
                {
                    let delta = Int64(stock - stockSeen)
                    sets[i] =
                        "sample_stock = CASE WHEN sample_stock + ? < 0 THEN 0 ELSE COALESCE(sample_stock + ?, ?) END"
                    values[i] = delta
                    values.insert(contentsOf: [delta, Int64(stock)] as [any SQLBindable], at: i + 1)
                }
                guard
                    let row = try await tx.query(
                        """
                        UPDATE lead_magnets SET \(sets.joined(separator: ", ")), updated_at = ?
                        WHERE workspace_id = ? AND id = ? RETURNING \(Self.leadMagnetColumns)
                        """, values + [self.now, m.workspaceID, m.id]
                    ).first
                else { throw DomainError.notFound("Lead magnet") }
                try await self.versionConsentText(tx, m)
                try await self.audit(
                    tx, workspaceID: m.workspaceID, actor: actor, action: "lead_magnet.update",
                    subject: "lead_magnet:\(m.id)")
                return Self.leadMagnet(row)
            }
        } catch StorageError.uniqueViolation {
            throw DomainError.conflict("slug_taken", "Another lead magnet already uses this slug.", field: "slug")
        }
    }

    /// The magnet's consent text gets its version when saved, so the page can name the version it shows.
    func versionConsentText(_ tx: any SQLExecutor, _ m: LeadMagnet) async throws {
        _ = try await consentTextVersion(
            tx, workspaceID: m.workspaceID, purpose: m.purpose.rawValue, locale: m.locale, body: m.consentText)
    }

    /// The version number of the consent text the magnet shows now (nil if it was never saved).
    public func consentTextVersionNumber(_ m: LeadMagnet) async throws -> Int? {
        try await currentConsentText(m)?.version
    }

    /// The consent text version the magnet shows now (nil if it was never saved).
    public func currentConsentText(_ m: LeadMagnet) async throws -> ConsentText? {
        try await db.first(
            """
            SELECT id, workspace_id, purpose, version, locale, body, created_at FROM consent_texts
            WHERE workspace_id = ? AND purpose = ? AND locale = ? AND body_hash = ?
            """, m.workspaceID, m.purpose.rawValue, m.locale, Hex.sha256(m.consentText)
        ).map(Self.consentText)
    }

    public func consentText(id: Int64) async throws -> ConsentText? {
        try await db.first(
            "SELECT id, workspace_id, purpose, version, locale, body, created_at FROM consent_texts WHERE id = ?", id
        ).map(Self.consentText)
    }

    public func leadMagnet(workspaceID: WorkspaceID, id: LeadMagnetID, in tx: (any SQLExecutor)? = nil) async throws
        -> LeadMagnet?
    {
        try await (tx ?? db).first(
            "SELECT \(Self.leadMagnetColumns) FROM lead_magnets WHERE workspace_id = ? AND id = ?", workspaceID, id
        ).map(Self.leadMagnet)
    }

    public func leadMagnet(workspaceID: WorkspaceID, slug: String) async throws -> LeadMagnet? {
        try await db.first(
            "SELECT \(Self.leadMagnetColumns) FROM lead_magnets WHERE workspace_id = ? AND slug = ?", workspaceID, slug
        ).map(Self.leadMagnet)
    }

    public func leadMagnets(workspaceID: WorkspaceID) async throws -> [LeadMagnet] {
        try await db.query(
            "SELECT \(Self.leadMagnetColumns) FROM lead_magnets WHERE workspace_id = ? ORDER BY id", workspaceID
        ).map(Self.leadMagnet)
    }

    public func setLeadMagnetFile(
        workspaceID: WorkspaceID, id: LeadMagnetID, file: LeadMagnet.StoredFile, actor: String
    ) async throws -> LeadMagnet {
        try await db.transaction { tx in
            guard
                let row = try await tx.query(
                    """
                    UPDATE lead_magnets SET file_key = ?, file_name = ?, file_type = ?, file_size = ?, file_sha256 = ?,
                      updated_at = ? WHERE workspace_id = ? AND id = ? RETURNING \(Self.leadMagnetColumns)
                    """, file.key, file.name, file.contentType, file.size, file.sha256, self.now, workspaceID, id
                ).first
            else { throw DomainError.notFound("Lead magnet") }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "lead_magnet.file",
                subject: "lead_magnet:\(id)", detail: "\(file.name) \(file.size) bytes sha256=\(file.sha256)")
            return Self.leadMagnet(row)
        }
    }

    // MARK: Signups

    static let signupColumns = """
        id, workspace_id, magnet_id, contact_id, state, purpose, text_id, form_id, page_url, fields, signup_at,
        signup_ip, signup_user_agent, confirm_outbox_id, confirm_mail_at, confirmed_at, confirmed_ip,
        confirmed_user_agent, expires_at, delivery_outbox_id, delivery_mail_at, downloads, follow_up_stopped, erased_at
        """

    static func signup(_ r: SQLRow) -> LeadSignup {
        LeadSignup(
            id: r.int("id"), workspaceID: r.int("workspace_id"), magnetID: r.int("magnet_id"),
            contactID: r.int("contact_id"), state: LeadSignup.State(rawValue: r.text("state")) ?? .pending,
            purpose: ConsentPurpose(rawValue: r.text("purpose")) ?? .newsletter, textID: r.int("text_id"),
            formID: r.text("form_id"), pageURL: r.optionalText("page_url"),
            fields: decodeJSON([String: String].self, r.text("fields")) ?? [:],
            signup: ConsentEvidence(
                at: r.date("signup_at"), ip: r.optionalText("signup_ip"),
                userAgent: r.optionalText("signup_user_agent")),
            confirmOutboxID: r.optionalInt("confirm_outbox_id"), confirmMailAt: r.optionalDate("confirm_mail_at"),
            confirmation: r.optionalDate("confirmed_at").map {
                ConsentEvidence(
                    at: $0, ip: r.optionalText("confirmed_ip"), userAgent: r.optionalText("confirmed_user_agent"))
            }, expiresAt: r.optionalDate("expires_at"), deliveryOutboxID: r.optionalInt("delivery_outbox_id"),
            deliveryMailAt: r.optionalDate("delivery_mail_at"), downloads: r.int("downloads"),
            followUpStopped: r.optionalText("follow_up_stopped"), erasedAt: r.optionalDate("erased_at"))
    }

    public func leadSignup(id: Int64, in tx: (any SQLExecutor)? = nil) async throws -> LeadSignup? {
        try await (tx ?? db).first("SELECT \(Self.signupColumns) FROM lead_signups WHERE id = ?", id).map(Self.signup)
    }

    /// What a signup needs to happen next, decided inside the signup's transaction.
    public enum SignupStep: Sendable, Equatable {
        /// A new or renewed pending signup: send the confirmation mail.
        case confirm(LeadSignup)
        /// The gift was confirmed before and its consent stands: its delivery mail again (a lost link).
        case deliver(LeadSignup)
        /// Within the resend window, or the address is blocked: send nothing (the answer looks the same).
        case nothing
    }

    /// The signup's transaction: the contact, the signup row and the pending consent, each at most once. Two
    /// identical submissions meet the unique indexes; the loser's transaction fails and the caller retries it, and
    /// the retry finds the row and stays within the resend window.
    ///
    /// A pending signup gets `nonce`, the key of its confirmation link (the newest link counts), and the time of
    /// its confirmation mail, which the caller writes into the outbox in the same transaction.
    public func beginSignup(
        _ tx: any SQLExecutor, magnet: LeadMagnet, input: ValidSignup, locale: String, context: SignupContext,
        nonce: String
    ) async throws -> SignupStep {
        let t = now
        // An unconfirmed form post never changes a known contact (name, language): anyone can type any address.
        let known = try await tx.first(
            "SELECT id FROM contacts WHERE workspace_id = ? AND email_normalized = ?", magnet.workspaceID,
            input.email.normalized
        ).map { $0.int("id") }
        let contactID: ContactID
        if let known {
            contactID = known
        } else {
            contactID = try await upsertContact(
                tx, workspaceID: magnet.workspaceID, email: input.email, firstName: input.firstName, lastName: nil,
                locale: locale, source: "lead_magnet", sourceRef: "lead_magnet:\(magnet.slug)")
        }
        let text = try await shownText(tx, magnet: magnet, id: context.shownTextID)
        let consent = try await tx.first(
            "SELECT state FROM consents WHERE workspace_id = ? AND contact_id = ? AND purpose = ?",
            magnet.workspaceID, contactID, magnet.purpose.rawValue
        ).map { $0.text("state") }
        // At most one pending signup per person and magnet (a partial unique index); confirmed ones stay as proof.
        let signups = try await tx.query(
            """
            SELECT \(Self.signupColumns) FROM lead_signups WHERE workspace_id = ? AND magnet_id = ? AND contact_id = ?
            ORDER BY id DESC
            """, magnet.workspaceID, magnet.id, contactID
        ).map(Self.signup)
        let pending = signups.first { $0.state == .pending }
        let confirmed = signups.first { $0.state == .confirmed }
        let e = context.evidence
        var given = input.custom
        if let address = input.address { given["_address"] = Self.encodeJSON(address) }
        let fields = Self.encodeJSON(given)
        let windowStart = t.addingTimeInterval(-magnet.resendWindow)

        if consent == ConsentState.granted.rawValue, let confirmed {
            // This gift was confirmed before: its delivery mail again (a lost link), to the confirmed mailbox, with
            // nothing new handed out. Claimed with a condition: of two identical posts at once, one sends.
            guard let claimed = try await claimDeliveryMail(tx, signupID: confirmed.id, notSince: windowStart)
            else { return .nothing }
            return .deliver(claimed)
        }
        // Everything else goes through a double opt-in, also for a contact whose consent to the purpose is on
        // record: the post is unverified (anyone can type any address), so neither a new gift, nor the address a
        // sample ships to, nor a proof of confirmation may rest on it.

        if let pending {
            // A new link only after the resend window and only while still pending: conditional, so two identical
            // posts, or a confirmation in between, leave the row alone.
            guard
                let row = try await tx.first(
                    """
                    UPDATE lead_signups SET text_id = ?, form_id = ?, page_url = ?, fields = ?, signup_at = ?,
                      signup_ip = ?, signup_user_agent = ?, expires_at = ?, doi_nonce = ?, confirm_mail_at = ?
                    WHERE id = ? AND state = 'pending' AND (confirm_mail_at IS NULL OR confirm_mail_at <= ?)
                    RETURNING \(Self.signupColumns)
                    """, text.id, context.formID, context.pageURL, fields, e.at, e.ip, e.userAgent,
                    t.addingTimeInterval(magnet.pendingLifetime), nonce, t, pending.id, windowStart)
            else { return .nothing }
            try await requestConsent(tx, magnet, text: text, contactID: contactID, context: context)
            return .confirm(Self.signup(row))
        }
        // New, or confirmed once but the consent was withdrawn since: a new row and a new double opt-in; the
        // earlier confirmed signup keeps its proof.
        let row = try await tx.query(
            """
            INSERT INTO lead_signups (workspace_id, magnet_id, contact_id, state, purpose, text_id, form_id,
              page_url, fields, signup_at, signup_ip, signup_user_agent, expires_at, doi_nonce, confirm_mail_at)
            VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING \(Self.signupColumns)
            """, magnet.workspaceID, magnet.id, contactID, magnet.purpose.rawValue, text.id, context.formID,
            context.pageURL, fields, e.at, e.ip, e.userAgent, t.addingTimeInterval(magnet.pendingLifetime), nonce, t)[0]
        try await requestConsent(tx, magnet, text: text, contactID: contactID, context: context)
        try await bumpLeadStats(tx, magnetID: magnet.id, signups: 1)
        return .confirm(Self.signup(row))
    }

    /// The consent text the form showed: the version signed into its token if it belongs to this workspace and
    /// purpose (an embedded copy or an open page may show an older one), else the magnet's current text.
    func shownText(_ tx: any SQLExecutor, magnet: LeadMagnet, id: Int64?) async throws -> ConsentText {
        if let id,
            let row = try await tx.first(
                """
                SELECT id, workspace_id, purpose, version, locale, body, created_at FROM consent_texts
                WHERE id = ? AND workspace_id = ? AND purpose = ?
                """, id, magnet.workspaceID, magnet.purpose.rawValue)
        {
            return Self.consentText(row)
        }
        return try await consentTextVersion(
            tx, workspaceID: magnet.workspaceID, purpose: magnet.purpose.rawValue, locale: magnet.locale,
            body: magnet.consentText)
    }

    private func requestConsent(
        _ tx: any SQLExecutor, _ magnet: LeadMagnet, text: ConsentText, contactID: ContactID, context: SignupContext
    ) async throws {
        try await applyConsent(
            tx, workspaceID: magnet.workspaceID, contactID: contactID,
            change: ConsentChange(
                purpose: magnet.purpose, action: .request, text: text.body, textLocale: text.locale,
                source: "lead_magnet", formID: context.formID, pageURL: context.pageURL, evidence: context.evidence))
    }

    /// Claims the next delivery mail of a signup, unless one went out after `notSince`: a conditional UPDATE, so of
    /// two claims at once only one wins. Returns the signup when claimed.
    public func claimDeliveryMail(_ tx: any SQLExecutor, signupID: Int64, notSince: Date) async throws -> LeadSignup? {
        try await tx.first(
            """
            UPDATE lead_signups SET delivery_mail_at = ?
            WHERE id = ? AND (delivery_mail_at IS NULL OR delivery_mail_at <= ?) RETURNING \(Self.signupColumns)
            """, now, signupID, notSince
        ).map(Self.signup)
    }

    /// Records the confirmation mail that went into the outbox for a pending signup.
    public func noteConfirmationMail(_ tx: any SQLExecutor, signupID: Int64, outboxID: Int64) async throws {
        try await tx.execute("UPDATE lead_signups SET confirm_outbox_id = ? WHERE id = ?", outboxID, signupID)
    }

    /// The signup a confirmation link points to; nil when the link was superseded or the signup expired.
    public func leadSignup(workspaceID: WorkspaceID, doiNonce: String) async throws -> LeadSignup? {
        try await db.first(
            "SELECT \(Self.signupColumns) FROM lead_signups WHERE workspace_id = ? AND doi_nonce = ?", workspaceID,
            doiNonce
        ).map(Self.signup)
    }

    /// `at`: when the mail's link started to count (its expiry is `at` + the link lifetime), so that a renewal can
    /// tell exactly when the link in the last mail died.
    public func noteDeliveryMail(_ tx: any SQLExecutor, signupID: Int64, outboxID: Int64, at: Date) async throws {
        try await tx.execute(
            "UPDATE lead_signups SET delivery_outbox_id = ?, delivery_mail_at = ? WHERE id = ?", outboxID, at, signupID)
    }

    /// pending → confirmed, at most once and only before expiry, and only by the newest link (`nonce`: a new post
    /// in between may have changed the text or the address the page showed); grants the consent with the
    /// confirmation's evidence and hands out the gift. Returns nil when the signup was not pending (already
    /// confirmed, expired, deleted, or re-sent with a new link).
    public func confirmSignup(_ tx: any SQLExecutor, signupID: Int64, nonce: String, evidence: ConsentEvidence)
        async throws -> LeadSignup?
    {
        let t = now
        guard
            let row = try await tx.query(
                """
                UPDATE lead_signups SET state = 'confirmed', confirmed_at = ?, confirmed_ip = ?,
                  confirmed_user_agent = ?, expires_at = NULL
                WHERE id = ? AND doi_nonce = ? AND state = 'pending' AND expires_at > ? AND erased_at IS NULL
                RETURNING \(Self.signupColumns)
                """, evidence.at, evidence.ip, evidence.userAgent, signupID, nonce, t
            ).first
        else { return nil }
        let signup = Self.signup(row)
        guard
            let text = try await tx.first("SELECT body, locale FROM consent_texts WHERE id = ?", signup.textID),
            let magnet = try await leadMagnet(workspaceID: signup.workspaceID, id: signup.magnetID, in: tx)
        else { throw DomainError.notFound("Lead magnet") }
        try await applyConsent(
            tx, workspaceID: signup.workspaceID, contactID: signup.contactID,
            change: ConsentChange(
                purpose: signup.purpose, action: .grant, text: text.text("body"), textLocale: text.text("locale"),
                source: "lead_magnet_doi", formID: signup.formID, pageURL: signup.pageURL, evidence: evidence))
        try await bumpLeadStats(tx, magnetID: signup.magnetID, confirmations: 1)
        try await handOutGift(tx, magnet: magnet, signup: signup)
        return signup
    }

    /// The part of the gift that is counted: a voucher code, or a unit of sample stock with its shipment.
    public func handOutGift(_ tx: any SQLExecutor, magnet: LeadMagnet, signup: LeadSignup) async throws {
        switch magnet.giftKind {
        case .voucher:
            _ = try await assignVoucher(tx, magnet: magnet, signupID: signup.id)
        case .sample:
            let address = signup.shippingAddress
            let inserted = try await tx.execute(
                """
                INSERT INTO lead_shipments (signup_id, workspace_id, magnet_id, state, name, street, postal_code, city,
                  country, created_at) VALUES (?, ?, ?, 'out_of_stock', ?, ?, ?, ?, ?, ?)
                ON CONFLICT (signup_id) DO NOTHING
                """, signup.id, magnet.workspaceID, magnet.id, address?.name, address?.street, address?.postalCode,
                address?.city, address?.country, now)
            // Stock goes down once per shipment, never for a repeated confirmation.
            if inserted == 1,
                try await tx.execute(
                    "UPDATE lead_magnets SET sample_stock = sample_stock - 1 WHERE id = ? AND sample_stock > 0",
                    magnet.id) == 1
            {
                try await tx.execute("UPDATE lead_shipments SET state = 'queued' WHERE signup_id = ?", signup.id)
            }
        case .file, .link: break
        }
    }

    /// Hands out one free code to the signup, exactly once: the signup column is unique, and on PostgreSQL
    /// concurrent confirmations skip each other's locked rows instead of queueing for the same one.
    public func assignVoucher(_ tx: any SQLExecutor, magnet: LeadMagnet, signupID: Int64) async throws -> String? {
        if let code = try await tx.first("SELECT code FROM lead_vouchers WHERE signup_id = ?", signupID) {
            return code.text("code")
        }
        let code = try await tx.first(
            """
            UPDATE lead_vouchers SET signup_id = ?, assigned_at = ?
            WHERE id = (SELECT id FROM lead_vouchers WHERE magnet_id = ? AND signup_id IS NULL ORDER BY id LIMIT 1
              \(db.dialect.skipLockedClause)) AND signup_id IS NULL
            RETURNING code
            """, signupID, now, magnet.id
        ).map { $0.text("code") }
        let left = try await tx.scalar(
            "SELECT COUNT(*) FROM lead_vouchers WHERE magnet_id = ? AND signup_id IS NULL", magnet.id)
        if left == Int64(magnet.voucherLowWater) || (code == nil && left == 0) {
            try await audit(
                tx, workspaceID: magnet.workspaceID, actor: "system", action: "lead_magnet.vouchers_low",
                subject: "lead_magnet:\(magnet.id)", detail: "\(left) codes left")
        }
        return code
    }

    public func voucherCode(signupID: Int64) async throws -> String? {
        try await db.first("SELECT code FROM lead_vouchers WHERE signup_id = ?", signupID).map { $0.text("code") }
    }

    public func availableVouchers(magnetID: LeadMagnetID) async throws -> Int64 {
        try await db.scalar("SELECT COUNT(*) FROM lead_vouchers WHERE magnet_id = ? AND signup_id IS NULL", magnetID)
    }

    /// Adds codes to a magnet's pool in one transaction; codes already in the pool are counted, not added twice.
    public func addVouchers(workspaceID: WorkspaceID, magnetID: LeadMagnetID, codes: [String], actor: String)
        async throws -> (added: Int, duplicates: Int)
    {
        try await db.transaction { tx in
            guard try await self.leadMagnet(workspaceID: workspaceID, id: magnetID, in: tx) != nil else {
                throw DomainError.notFound("Lead magnet")
            }
            var added = 0
            for code in codes {
                added += try await tx.execute(
                    """
                    INSERT INTO lead_vouchers (workspace_id, magnet_id, code, created_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (magnet_id, code) DO NOTHING
                    """, workspaceID, magnetID, code, self.now)
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "lead_magnet.vouchers_add",
                subject: "lead_magnet:\(magnetID)", detail: "\(added) added")
            return (added, codes.count - added)
        }
    }

    public func shipment(signupID: Int64) async throws -> LeadShipment? {
        try await shipments(where: "s.signup_id = ?", signupID).first
    }

    public func shipments(workspaceID: WorkspaceID, magnetID: LeadMagnetID) async throws -> [LeadShipment] {
        try await shipments(where: "s.workspace_id = ? AND s.magnet_id = ?", workspaceID, magnetID)
    }

    private func shipments(where condition: String, _ binds: any SQLBindable...) async throws -> [LeadShipment] {
        try await db.query(
            """
            SELECT s.signup_id, s.state, s.name, s.street, s.postal_code, s.city, s.country, s.created_at,
              s.shipped_at, c.email FROM lead_shipments s JOIN lead_signups g ON g.id = s.signup_id
              JOIN contacts c ON c.id = g.contact_id WHERE \(condition) ORDER BY s.signup_id
            """, binds
        ).map { r in
            LeadShipment(
                signupID: r.int("signup_id"), state: r.text("state"), email: r.text("email"),
                address: r.optionalText("street").map {
                    PostalAddress(
                        name: r.optionalText("name"), street: $0, postalCode: r.text("postal_code"),
                        city: r.text("city"), country: r.text("country"))
                }, createdAt: r.date("created_at"), shippedAt: r.optionalDate("shipped_at"))
        }
    }

    public func markShipped(workspaceID: WorkspaceID, magnetID: LeadMagnetID, signupIDs: [Int64], actor: String)
        async throws
    {
        try await db.transaction { tx in
            for id in signupIDs {
                try await tx.execute(
                    """
                    UPDATE lead_shipments SET state = 'shipped', shipped_at = ?
                    WHERE workspace_id = ? AND magnet_id = ? AND signup_id = ? AND state = 'queued'
                    """, self.now, workspaceID, magnetID, id)
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "lead_magnet.shipped",
                subject: "lead_magnet:\(magnetID)", detail: "\(signupIDs.count) shipments")
        }
    }

    public func recordDownload(signupID: Int64, magnetID: LeadMagnetID) async throws {
        try await db.transaction { tx in
            try await tx.execute("UPDATE lead_signups SET downloads = downloads + 1 WHERE id = ?", signupID)
            try await self.bumpLeadStats(tx, magnetID: magnetID, downloads: 1)
        }
    }

    public func stopFollowUps(signupID: Int64, reason: String) async throws {
        try await db.execute(
            "UPDATE lead_signups SET follow_up_stopped = ? WHERE id = ? AND follow_up_stopped IS NULL", reason,
            signupID)
    }

    /// Whether the contact placed an order (not cancelled) since `since`: the sequence stops at a purchase.
    public func hasOrdered(workspaceID: WorkspaceID, contactID: ContactID, since: Date) async throws -> Bool {
        try await db.scalar(
            """
            SELECT COUNT(*) FROM orders WHERE workspace_id = ? AND contact_id = ? AND status <> 'cancelled'
              AND COALESCE(placed_at, created_at) >= ?
            """, workspaceID, contactID, since) > 0
    }

    // MARK: Expiry

    /// Deletes unconfirmed signups past their expiry. A contact that exists only because of such a signup is
    /// deleted with its pending consent, its consent history and its confirmation mail; the daily counters keep
    /// the count. Returns how many signups were deleted.
    public func expirePendingSignups(limit: Int = 500) async throws -> Int {
        let due = try await db.query(
            "SELECT id FROM lead_signups WHERE state = 'pending' AND expires_at <= ? ORDER BY id LIMIT ?", now, limit)
        var deleted = 0
        for row in due {
            deleted += try await db.transaction { tx in
                guard
                    let s = try await tx.first(
                        "SELECT \(Self.signupColumns) FROM lead_signups WHERE id = ? AND state = 'pending' AND expires_at <= ?",
                        row.int("id"), self.now
                    ).map(Self.signup)
                else { return 0 }
                guard
                    try await tx.execute(
                        "DELETE FROM lead_signups WHERE id = ? AND state = 'pending' AND expires_at <= ?", s.id,
                        self.now) == 1
                else { return 0 }
                let otherPending = try await tx.scalar(
                    """
                    SELECT COUNT(*) FROM lead_signups WHERE workspace_id = ? AND contact_id = ? AND purpose = ?
                      AND state = 'pending'
                    """, s.workspaceID, s.contactID, s.purpose.rawValue)
                if otherPending == 0 {
                    // The requests nobody confirmed go with the signup: whoever typed the address, their IP and
                    // browser are not kept in this person's history (the proof, the Art. 15 export). Requests
                    // answered by a grant or a withdrawal stay as the proof of those.
                    try await tx.execute(
                        """
                        DELETE FROM consent_events WHERE workspace_id = ? AND contact_id = ? AND purpose = ?
                          AND action = 'request' AND at > COALESCE((SELECT MAX(e.at) FROM consent_events e
                            WHERE e.workspace_id = ? AND e.contact_id = ? AND e.purpose = ? AND e.action <> 'request'),
                          -1)
                        """, s.workspaceID, s.contactID, s.purpose.rawValue, s.workspaceID, s.contactID,
                        s.purpose.rawValue)
                    // A consent withdrawn before this signup goes back to withdrawn, with the request it had before
                    // (from the log); one that only this signup asked for goes.
                    let withdrawnBefore = try await tx.scalar(
                        """
                        SELECT COUNT(*) FROM consent_events WHERE workspace_id = ? AND contact_id = ? AND purpose = ?
                          AND action = 'withdraw'
                        """, s.workspaceID, s.contactID, s.purpose.rawValue)
                    if withdrawnBefore > 0 {
                        let earlier = try await tx.first(
                            """
                            SELECT text_id, source, ip, user_agent, at FROM consent_events
                            WHERE workspace_id = ? AND contact_id = ? AND purpose = ? AND action = 'request'
                            ORDER BY at DESC, id DESC LIMIT 1
                            """, s.workspaceID, s.contactID, s.purpose.rawValue)
                        try await tx.execute(
                            """
                            UPDATE consents SET state = 'withdrawn', text_id = COALESCE(?, text_id), source = COALESCE(?, source),
                              requested_at = ?, requested_ip = ?, requested_user_agent = ?, updated_at = ?
                            WHERE workspace_id = ? AND contact_id = ? AND purpose = ? AND state = 'pending'
                            """, earlier?.optionalInt("text_id"), earlier?.optionalText("source"),
                            earlier?.optionalDate("at"), earlier?.optionalText("ip"),
                            earlier?.optionalText("user_agent"), self.now, s.workspaceID, s.contactID,
                            s.purpose.rawValue)
                    } else {
                        try await tx.execute(
                            "DELETE FROM consents WHERE workspace_id = ? AND contact_id = ? AND purpose = ? AND state = 'pending'",
                            s.workspaceID, s.contactID, s.purpose.rawValue)
                    }
                }
                try await self.deleteContactIfUnused(tx, workspaceID: s.workspaceID, contactID: s.contactID)
                return 1
            }
        }
        return deleted
    }

    /// Deletes a contact that has nothing left: no order, signup, consent, review, request or favour.
    func deleteContactIfUnused(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws {
        let uses = try await tx.scalar(
            """
            SELECT (SELECT COUNT(*) FROM orders WHERE contact_id = ?) + (SELECT COUNT(*) FROM lead_signups WHERE contact_id = ?)
              + (SELECT COUNT(*) FROM consents WHERE contact_id = ?) + (SELECT COUNT(*) FROM reviews WHERE contact_id = ?)
              + (SELECT COUNT(*) FROM review_requests WHERE contact_id = ?) + (SELECT COUNT(*) FROM favours WHERE contact_id = ?)
            """, contactID, contactID, contactID, contactID, contactID, contactID)
        guard uses == 0 else { return }
        try await tx.execute(
            "DELETE FROM mail_events WHERE outbox_id IN (SELECT id FROM outbox WHERE contact_id = ?)", contactID)
        try await tx.execute("DELETE FROM outbox WHERE workspace_id = ? AND contact_id = ?", workspaceID, contactID)
        try await tx.execute(
            "DELETE FROM consent_events WHERE workspace_id = ? AND contact_id = ?", workspaceID, contactID)
        try await tx.execute("DELETE FROM contacts WHERE workspace_id = ? AND id = ?", workspaceID, contactID)
    }

    /// Art. 17: the signups stay (for the counts and the buyer attribution) without anything that identifies the
    /// person; sample addresses go.
    func eraseLeadSignups(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws {
        try await tx.execute(
            """
            UPDATE lead_signups SET signup_ip = NULL, signup_user_agent = NULL, confirmed_ip = NULL,
              confirmed_user_agent = NULL, page_url = NULL, fields = '{}', doi_nonce = NULL, erased_at = ?
            WHERE workspace_id = ? AND contact_id = ?
            """, now, workspaceID, contactID)
        try await tx.execute(
            """
            UPDATE lead_shipments SET name = NULL, street = NULL, postal_code = NULL, city = NULL, country = NULL
            WHERE signup_id IN (SELECT id FROM lead_signups WHERE workspace_id = ? AND contact_id = ?)
            """, workspaceID, contactID)
    }

    // MARK: Counters and figures

    /// Adds to a magnet's counters for today (UTC day). One upsert; concurrent writers add, never overwrite.
    public func bumpLeadStats(
        _ tx: any SQLExecutor, magnetID: LeadMagnetID, views: Int64 = 0, signups: Int64 = 0,
        confirmations: Int64 = 0, downloads: Int64 = 0, day: String? = nil
    ) async throws {
        try await tx.execute(
            """
            INSERT INTO lead_stats (magnet_id, day, views, signups, confirmations, downloads) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (magnet_id, day) DO UPDATE SET views = lead_stats.views + excluded.views,
              signups = lead_stats.signups + excluded.signups,
              confirmations = lead_stats.confirmations + excluded.confirmations,
              downloads = lead_stats.downloads + excluded.downloads
            """, magnetID, day ?? Self.utcDay(now), views, signups, confirmations, downloads)
    }

    public static func utcDay(_ date: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }

    /// The days with any activity, oldest first, from `since` (a UTC day) on.
    public func leadDays(magnetID: LeadMagnetID, since: String) async throws -> [LeadDay] {
        try await db.query(
            "SELECT day, views, signups, confirmations, downloads FROM lead_stats WHERE magnet_id = ? AND day >= ? ORDER BY day",
            magnetID, since
        ).map {
            LeadDay(
                day: $0.text("day"), views: $0.int("views"), signups: $0.int("signups"),
                confirmations: $0.int("confirmations"), downloads: $0.int("downloads"))
        }
    }

    /// The funnel and economics of a magnet. Buyers: confirmed contacts with an order (not cancelled or returned)
    /// within 30 / 90 days after confirming, attributed to the magnet they confirmed last before the order.
    public func leadStats(_ magnet: LeadMagnet) async throws -> LeadStats {
        // PostgreSQL sums BIGINT to NUMERIC: cast back, both engines then return integers.
        let totals = try await db.first(
            """
            SELECT CAST(COALESCE(SUM(views), 0) AS BIGINT) AS views, CAST(COALESCE(SUM(signups), 0) AS BIGINT) AS signups,
              CAST(COALESCE(SUM(confirmations), 0) AS BIGINT) AS confirmations, CAST(COALESCE(SUM(downloads), 0) AS BIGINT) AS downloads
            FROM lead_stats WHERE magnet_id = ?
            """, magnet.id)
        let day: Int64 = 86_400_000
        let buyers = try await db.first(
            """
            SELECT COUNT(DISTINCT CASE WHEN at < s.confirmed_at + ? THEN s.contact_id END) AS b30,
              COUNT(DISTINCT s.contact_id) AS b90, CAST(COALESCE(SUM(total), 0) AS BIGINT) AS revenue
            FROM lead_signups s JOIN (
              SELECT contact_id, workspace_id, total_minor AS total, COALESCE(placed_at, created_at) AS at
              FROM orders WHERE status NOT IN ('cancelled', 'returned') AND currency = ?
            ) o ON o.contact_id = s.contact_id AND o.workspace_id = s.workspace_id
            WHERE s.magnet_id = ? AND s.state = 'confirmed' AND o.at >= s.confirmed_at AND o.at < s.confirmed_at + ?
              AND NOT EXISTS (
                SELECT 1 FROM lead_signups s2 WHERE s2.workspace_id = s.workspace_id AND s2.contact_id = s.contact_id
                  AND s2.state = 'confirmed' AND s2.confirmed_at > s.confirmed_at AND s2.confirmed_at <= o.at)
            """, 30 * day, magnet.unitCost.currency.code, magnet.id, 90 * day)
        let confirmations = totals?.int("confirmations") ?? 0
        return LeadStats(
            views: totals?.int("views") ?? 0, signups: totals?.int("signups") ?? 0, confirmations: confirmations,
            downloads: totals?.int("downloads") ?? 0, buyers30: buyers?.int("b30") ?? 0,
            buyers90: buyers?.int("b90") ?? 0, revenueMinor: buyers?.int("revenue") ?? 0,
            totalCostMinor: LeadStats.cost(
                unit: magnet.unitCost, fixed: magnet.fixedCost, confirmations: confirmations),
            currency: magnet.unitCost.currency.code)
    }

    // MARK: Proof

    /// Everything that proves one signup's consent, for the print page and the JSON export.
    public struct SignupProof: Sendable {
        public var signup: LeadSignup
        public var magnetSlug: String
        public var magnetName: String
        public var text: ConsentText
        public var confirmationMail: OutboxMail?
    }

    public func signupProofs(workspaceID: WorkspaceID, contactID: ContactID) async throws -> [SignupProof] {
        let rows = try await db.query(
            """
            SELECT \(Self.signupColumns.split(separator: ",").map { "s." + $0.trimmingCharacters(in: .whitespacesAndNewlines) }.joined(separator: ", ")),
              m.slug AS magnet_slug, m.name AS magnet_name, t.purpose AS text_purpose, t.version AS text_version,
              t.locale AS text_locale, t.body AS text_body, t.created_at AS text_created_at
            FROM lead_signups s JOIN lead_magnets m ON m.id = s.magnet_id JOIN consent_texts t ON t.id = s.text_id
            WHERE s.workspace_id = ? AND s.contact_id = ? ORDER BY s.id
            """, workspaceID, contactID)
        var out: [SignupProof] = []
        for r in rows {
            let signup = Self.signup(r)
            var mail: OutboxMail?
            if let id = signup.confirmOutboxID { mail = try await outboxMail(id: id) }
            out.append(
                SignupProof(
                    signup: signup, magnetSlug: r.text("magnet_slug"), magnetName: r.text("magnet_name"),
                    text: ConsentText(
                        id: signup.textID, workspaceID: workspaceID,
                        purpose: ConsentPurpose(rawValue: r.text("text_purpose")) ?? .newsletter,
                        version: Int(r.int("text_version")), locale: r.text("text_locale"), body: r.text("text_body"),
                        createdAt: r.date("text_created_at")), confirmationMail: mail))
        }
        return out
    }

    // MARK: Disposable domains

    public func disposableDomainAdditions() async throws -> [String] {
        try await db.query("SELECT domain FROM disposable_domains ORDER BY domain").map { $0.text("domain") }
    }

    /// Adds domains to the blocklist kept in the database (all nodes see it). Returns how many were new.
    public func addDisposableDomains(_ domains: [String]) async throws -> Int {
        try await db.transaction { tx in
            var added = 0
            for d in Set(domains.compactMap(DisposableDomains.normalize)) {
                added += try await tx.execute(
                    "INSERT INTO disposable_domains (domain, added_at) VALUES (?, ?) ON CONFLICT (domain) DO NOTHING",
                    d,
                    self.now)
            }
            return added
        }
    }
}
