import Foundation
import ReciprocityCore

/// Per-workspace mail settings (defaults when none saved).
public struct MailSettings: Sendable, Equatable {
    /// The merchant switched on the §7(3) UWG existing-customer mode (logged in the audit log).
    public var existingCustomerMode = false
    public var cap = FrequencyCap()
    public var quietStart = 20
    public var quietEnd = 8
    /// Sending rate per second for this workspace (token bucket; burst = one second's worth).
    public var ratePerSecond = 20
    /// German address form: "sie" (default) or "du".
    public var addressForm = "sie"
    public var brandColor = "#2f5d50"
    public var logoURL = ""
    public init() {}

    public func validate() throws(DomainError) {
        guard (0...50).contains(cap.count), (1...90).contains(cap.days) else {
            throw .invalid("mail_cap_invalid", "The frequency cap is 0–50 mails in 1–90 days.", field: "cap")
        }
        guard (0...23).contains(quietStart), (0...23).contains(quietEnd) else {
            throw .invalid("quiet_hours_invalid", "Quiet hours are whole hours 0–23.", field: "quiet_hours")
        }
        guard (1...10_000).contains(ratePerSecond) else {
            throw .invalid("mail_rate_invalid", "The sending rate is 1–10,000 mails per second.", field: "rate")
        }
        guard ["sie", "du"].contains(addressForm) else {
            throw .invalid("address_form_invalid", "The address form is sie or du.", field: "address_form")
        }
        guard brandColor.count == 7, brandColor.hasPrefix("#"), brandColor.dropFirst().allSatisfy(\.isHexDigit) else {
            throw .invalid("brand_color_invalid", "The brand colour is #rrggbb.", field: "brand_color")
        }
        if !logoURL.isEmpty {
            guard logoURL.hasPrefix("https://") else {
                throw .invalid("logo_url_invalid", "The logo URL must be https.", field: "logo_url")
            }
        }
    }
}

public enum OutboxState: String, Sendable, Codable, CaseIterable {
    case queued, sending, sent, deferred, bounced, suppressed, failed

    /// States a row never leaves.
    public var isFinal: Bool { [.sent, .bounced, .suppressed, .failed].contains(self) }
}

/// A mail in the outbox: what was rendered, where it stands, and why.
public struct OutboxMail: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var contactID: ContactID?
    public var kind: String
    public var mailClass: MailClass
    public var recipient: String?
    public var recipientHash: String
    public var messageID: String
    public var subject: String
    /// The rendered message (headers and body, unsigned; DKIM is added at send time). Nil after erasure.
    public var message: String?
    public var state: OutboxState
    /// A test send from the admin or CLI: the policy checks suppression only.
    public var isTest: Bool
    public var reason: String
    public var legalBasis: String?
    public var attempts: Int
    public var transport: String
    public var smtpReply: String
    public var notBefore: Date
    public var createdAt: Date
    public var updatedAt: Date
    public var sendingAt: Date?
    public var sentAt: Date?
}

/// What to put in the outbox.
public struct OutboxDraft: Sendable {
    public var workspaceID: WorkspaceID
    public var contactID: ContactID?
    public var kind: MessageKind
    public var recipient: EmailAddress
    public var messageID: String
    public var subject: String
    public var message: String
    public var notBefore: Date?
    public var isTest: Bool
    public init(
        workspaceID: WorkspaceID, contactID: ContactID?, kind: MessageKind, recipient: EmailAddress,
        messageID: String, subject: String, message: String, notBefore: Date? = nil, isTest: Bool = false
    ) {
        self.isTest = isTest
        self.workspaceID = workspaceID
        self.contactID = contactID
        self.kind = kind
        self.recipient = recipient
        self.messageID = messageID
        self.subject = subject
        self.message = message
        self.notBefore = notBefore
    }
}

public struct StoredDKIMKey: Sendable, Equatable {
    public var id: Int64
    public var domain: String
    public var selector: String
    public var algorithm: String
    public var privateKey: String
    public var createdAt: Date
}

public struct StoredMailTemplate: Sendable, Equatable {
    public var kind: String
    public var variant: String
    public var subject: String
    public var text: String
    public var html: String
    public var updatedAt: Date
    public var updatedBy: String

    public init(
        kind: String, variant: String, subject: String, text: String, html: String, updatedAt: Date, updatedBy: String
    ) {
        self.kind = kind
        self.variant = variant
        self.subject = subject
        self.text = text
        self.html = html
        self.updatedAt = updatedAt
        self.updatedBy = updatedBy
    }
}

extension Store {
    public static let mailDeliveryJob = "mail.deliver"

    // MARK: settings

    public func mailSettings(workspaceID: WorkspaceID, in tx: (any SQLExecutor)? = nil) async throws -> MailSettings {
        var s = MailSettings()
        guard let r = try await (tx ?? db).first("SELECT * FROM mail_settings WHERE workspace_id = ?", workspaceID)
        else { return s }
        s.existingCustomerMode = r.bool("existing_customer_mode")
        s.cap = FrequencyCap(count: Int(r.int("cap_count")), days: Int(r.int("cap_days")))
        s.quietStart = Int(r.int("quiet_start"))
        s.quietEnd = Int(r.int("quiet_end"))
        s.ratePerSecond = Int(r.int("rate_per_second"))
        s.addressForm = r.text("address_form")
        s.brandColor = r.text("brand_color")
        s.logoURL = r.text("logo_url")
        return s
    }

    /// Saves settings; switching the §7(3) mode on or off is written to the audit log.
    /// `seen`: the version the form was read at (`settingsVersion`); nil replaces outright.
    public func saveMailSettings(workspaceID: WorkspaceID, _ s: MailSettings, actor: String, seen: Int64? = nil)
        async throws
    {
        try s.validate()
        try await db.transaction { tx in
            try await self.requireSettingsVersion(tx, .mail, workspaceID: workspaceID, seen: seen)
            let before = try await self.mailSettings(workspaceID: workspaceID, in: tx)
            try await tx.execute(
                """
                INSERT INTO mail_settings (workspace_id, existing_customer_mode, cap_count, cap_days, quiet_start,
                  quiet_end, rate_per_second, address_form, brand_color, logo_url, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (workspace_id) DO UPDATE SET existing_customer_mode = excluded.existing_customer_mode,
                  cap_count = excluded.cap_count, cap_days = excluded.cap_days, quiet_start = excluded.quiet_start,
                  quiet_end = excluded.quiet_end, rate_per_second = excluded.rate_per_second,
                  address_form = excluded.address_form, brand_color = excluded.brand_color,
                  logo_url = excluded.logo_url, updated_at = excluded.updated_at
                """, workspaceID, s.existingCustomerMode, s.cap.count, s.cap.days, s.quietStart, s.quietEnd,
                s.ratePerSecond, s.addressForm, s.brandColor, s.logoURL, self.now)
            if before.existingCustomerMode != s.existingCustomerMode {
                try await self.audit(
                    tx, workspaceID: workspaceID, actor: actor,
                    action: s.existingCustomerMode
                        ? "mail.existing_customer_mode.on" : "mail.existing_customer_mode.off",
                    subject: "workspace:\(workspaceID)",
                    detail: "§7(3) UWG mode for review requests")
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "mail.settings.save",
                subject: "workspace:\(workspaceID)")
        }
    }

    // MARK: DKIM keys

    /// Stores a new key. The workspace's first key signs at once (true); a later one waits for `activateDKIMKey`
    /// (false), because receivers cannot verify it until its DNS record is published.
    @discardableResult
    public func addDKIMKey(
        workspaceID: WorkspaceID, domain: String, selector: String, algorithm: String, privateKey: String, actor: String
    ) async throws -> Bool {
        try await db.transaction { tx in
            let first =
                try await tx.scalar(
                    "SELECT COUNT(*) FROM dkim_keys WHERE workspace_id = ? AND activated_at IS NOT NULL", workspaceID)
                == 0
            do {
                try await tx.execute(
                    """
                    INSERT INTO dkim_keys (workspace_id, domain, selector, algorithm, private_key, created_at,
                      activated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, workspaceID, domain, selector, algorithm, privateKey, self.now, first ? self.now : nil)
            } catch StorageError.uniqueViolation {
                throw DomainError.conflict(
                    "dkim_selector_taken", "A key for selector \(selector) on \(domain) exists; choose a new selector.")
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "dkim.generate",
                subject: "dkim:\(selector)._domainkey.\(domain)", detail: algorithm + (first ? ", active" : ", pending")
            )
            return first
        }
    }

    /// Makes the workspace's key with this selector the signing one (its DNS record is published). Activating the
    /// active key again changes nothing.
    public func activateDKIMKey(workspaceID: WorkspaceID, selector: String, actor: String) async throws
        -> StoredDKIMKey
    {
        try await db.transaction { tx in
            // One activation per workspace at a time: two at once would read the same latest time.
            _ = try await tx.query(
                "SELECT id FROM workspaces WHERE id = ?" + tx.dialect.rowLockClause, workspaceID)
            let keys = try await tx.query(
                "SELECT * FROM dkim_keys WHERE workspace_id = ? AND selector = ? ORDER BY id", workspaceID, selector)
            guard keys.count == 1, let key = keys.first.map(Self.dkimKey) else {
                throw keys.isEmpty
                    ? DomainError.notFound("DKIM key with selector \(selector)")
                    : DomainError.invalid(
                        "dkim_selector_ambiguous", "Selector \(selector) names keys of several domains.",
                        field: "selector")
            }
            if try await self.activeDKIMKey(workspaceID: workspaceID, in: tx)?.id == key.id { return key }
            // After every earlier activation, whatever the clock says (the same millisecond, a node whose clock is
            // behind): the key activated last signs.
            let latest = try await tx.scalar(
                "SELECT COALESCE(MAX(activated_at), 0) FROM dkim_keys WHERE workspace_id = ?", workspaceID)
            try await tx.execute(
                "UPDATE dkim_keys SET activated_at = ? WHERE id = ?", max(self.now.epochMillis, latest + 1), key.id)
            guard try await self.activeDKIMKey(workspaceID: workspaceID, in: tx)?.id == key.id else {
                throw StorageError.database("DKIM key \(selector) was activated but does not sign")
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "dkim.activate",
                subject: "dkim:\(selector)._domainkey.\(key.domain)", detail: key.algorithm)
            return key
        }
    }

    /// The most recently activated key signs.
    public func activeDKIMKey(workspaceID: WorkspaceID, in tx: (any SQLExecutor)? = nil) async throws
        -> StoredDKIMKey?
    {
        try await (tx ?? db).first(
            """
            SELECT * FROM dkim_keys WHERE workspace_id = ? AND activated_at IS NOT NULL
            ORDER BY activated_at DESC, id DESC LIMIT 1
            """, workspaceID
        ).map(Self.dkimKey)
    }

    static func dkimKey(_ r: SQLRow) -> StoredDKIMKey {
        StoredDKIMKey(
            id: r.int("id"), domain: r.text("domain"), selector: r.text("selector"), algorithm: r.text("algorithm"),
            privateKey: r.text("private_key"), createdAt: r.date("created_at"))
    }

    // MARK: templates

    public func mailTemplate(workspaceID: WorkspaceID, kind: String, variant: String) async throws
        -> StoredMailTemplate?
    {
        try await db.first(
            "SELECT * FROM mail_templates WHERE workspace_id = ? AND kind = ? AND variant = ?", workspaceID, kind,
            variant
        ).map(Self.template)
    }

    public func mailTemplates(workspaceID: WorkspaceID) async throws -> [StoredMailTemplate] {
        try await db.query("SELECT * FROM mail_templates WHERE workspace_id = ? ORDER BY kind, variant", workspaceID)
            .map(Self.template)
    }

    static func template(_ r: SQLRow) -> StoredMailTemplate {
        StoredMailTemplate(
            kind: r.text("kind"), variant: r.text("variant"), subject: r.text("subject"), text: r.text("text_body"),
            html: r.text("html_body"), updatedAt: r.date("updated_at"), updatedBy: r.text("updated_by"))
    }

    /// Saves an edited template (validated by the caller: it knows the kind's variables).
    /// The version of a workspace's edited template (its `updated_at`; 0 while the shipped one is in force).
    public func mailTemplateVersion(workspaceID: WorkspaceID, kind: String, variant: String) async throws -> Int64 {
        try await db.first(
            "SELECT updated_at FROM mail_templates WHERE workspace_id = ? AND kind = ? AND variant = ?", workspaceID,
            kind, variant)?.int("updated_at") ?? 0
    }

    /// `seen`: the version the editor was opened at (`mailTemplateVersion`); a save from an older one is refused
    /// (409 `settings_changed`). Nil saves outright.
    public func saveMailTemplate(workspaceID: WorkspaceID, _ t: StoredMailTemplate, actor: String, seen: Int64? = nil)
        async throws
    {
        try await db.transaction { tx in
            try await self.requireVersion(
                tx, "mail_templates", workspaceID: workspaceID, filter: " AND kind = ? AND variant = ?",
                [t.kind, t.variant], seen: seen)
            try await tx.execute(
                """
                INSERT INTO mail_templates (workspace_id, kind, variant, subject, text_body, html_body, updated_at,
                  updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (workspace_id, kind, variant) DO UPDATE SET subject = excluded.subject,
                  text_body = excluded.text_body, html_body = excluded.html_body, updated_at = excluded.updated_at,
                  updated_by = excluded.updated_by
                """, workspaceID, t.kind, t.variant, t.subject, t.text, t.html, self.now, actor)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "mail.template.save",
                subject: "template:\(t.kind).\(t.variant)")
        }
    }

    public func resetMailTemplate(workspaceID: WorkspaceID, kind: String, variant: String, actor: String) async throws {
        try await db.transaction { tx in
            try await tx.execute(
                "DELETE FROM mail_templates WHERE workspace_id = ? AND kind = ? AND variant = ?", workspaceID, kind,
                variant)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "mail.template.reset",
                subject: "template:\(kind).\(variant)")
        }
    }

    // MARK: outbox

    static let outboxColumns = """
        id, workspace_id, contact_id, kind, mail_class, recipient, recipient_hash, message_id, subject, message, state,
        is_test, reason, legal_basis, attempts, transport, smtp_reply, not_before, created_at, updated_at, sending_at, sent_at
        """

    static func outbox(_ r: SQLRow) -> OutboxMail {
        OutboxMail(
            id: r.int("id"), workspaceID: r.int("workspace_id"), contactID: r.optionalInt("contact_id"),
            kind: r.text("kind"), mailClass: MailClass(rawValue: r.text("mail_class")) ?? .marketing,
            recipient: r.optionalText("recipient"), recipientHash: r.text("recipient_hash"),
            messageID: r.text("message_id"), subject: r.text("subject"), message: r.optionalText("message"),
            state: OutboxState(rawValue: r.text("state")) ?? .failed, isTest: r.bool("is_test"),
            reason: r.text("reason"),
            legalBasis: r.optionalText("legal_basis"), attempts: Int(r.int("attempts")), transport: r.text("transport"),
            smtpReply: r.text("smtp_reply"), notBefore: r.date("not_before"), createdAt: r.date("created_at"),
            updatedAt: r.date("updated_at"), sendingAt: r.optionalDate("sending_at"), sentAt: r.optionalDate("sent_at"))
    }

    /// Enqueues a mail drafted before its transaction began, unless its contact was erased in between (the erasure
    /// emptied the outbox of their mails; a late one would bring the address back). Nil when skipped.
    @discardableResult
    public func enqueueMailUnlessErased(_ tx: any SQLExecutor, _ d: OutboxDraft) async throws -> Int64? {
        if let contactID = d.contactID,
            try await tx.first("SELECT id FROM contacts WHERE id = ? AND erased_at IS NULL", contactID) == nil
        {
            return nil
        }
        return try await enqueueMail(tx, d)
    }

    /// Storage limitation (Art. 5(1)(e) DSGVO): the bodies of mails whose delivery ended (sent, bounced, suppressed,
    /// failed) before `cutoff` go; the row stays as the record of what was sent to whom and when (kind, recipient,
    /// subject, outcome). A double opt-in confirmation a signup points at stays whole: it is part of the consent's
    /// proof (Art. 7(1)) for as long as the signup exists. Oldest first through `outbox_bodies` (migration 15), `chunk` rows per transaction, at most
    /// `maxChunks` transactions per call. Answers how many bodies went.
    public func purgeMailBodies(endedBefore cutoff: Date, chunk: Int = 2_000, maxChunks: Int = 100) async throws -> Int
    {
        var purged = 0
        for _ in 0..<maxChunks {
            let n = try await db.transaction { tx in
                try await tx.execute(
                    """
                    UPDATE outbox SET message = NULL WHERE id IN (
                      SELECT id FROM outbox WHERE message IS NOT NULL AND updated_at < ?
                        AND state IN ('sent', 'bounced', 'suppressed', 'failed')
                        AND id NOT IN (SELECT confirm_outbox_id FROM lead_signups WHERE confirm_outbox_id IS NOT NULL)
                      ORDER BY updated_at, id LIMIT ?)
                    """, cutoff, chunk)
            }
            purged += n
            if n < chunk { break }
        }
        return purged
    }

    /// `enqueueMailUnlessErased` for a mail with a stable Message-ID that must exist once: a second draft of it (a
    /// job run again after its mail committed) writes nothing. Nil when the contact was erased or the mail exists.
    public func enqueueMailOnce(_ tx: any SQLExecutor, _ d: OutboxDraft) async throws -> Int64? {
        if try await tx.first("SELECT id FROM outbox WHERE message_id = ?", d.messageID) != nil { return nil }
        // The unique Message-ID settles two runs at the same moment: the second fails and its job retries, then
        // finds the first's row above.
        return try await enqueueMailUnlessErased(tx, d)
    }

    /// Puts a rendered mail in the outbox and enqueues its delivery, in the caller's transaction: the mail exists
    /// exactly when the change that caused it does.
    @discardableResult
    public func enqueueMail(_ tx: any SQLExecutor, _ d: OutboxDraft) async throws -> Int64 {
        let t = now
        let notBefore = d.notBefore ?? t
        let rows = try await tx.query(
            """
            INSERT INTO outbox (workspace_id, contact_id, kind, mail_class, recipient, recipient_hash, message_id,
              subject, message, state, is_test, not_before, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING id
            """, d.workspaceID, d.contactID, d.kind.rawValue, d.kind.mailClass.rawValue, d.recipient.raw,
            suppressionHash(d.recipient.normalized), d.messageID, d.subject, d.message, d.isTest, notBefore, t, t)
        guard let id = rows.first?.int("id") else { throw DomainError(.unavailable, code: "outbox_insert", "No id.") }
        // A test send is delivered by its caller at once; the job is the safety net if that caller dies.
        try await enqueueMailDelivery(
            tx, outboxID: id, workspaceID: d.workspaceID, at: d.isTest ? notBefore.addingTimeInterval(60) : notBefore,
            key: "mail:\(id):0")
        return id
    }

    /// A (further) delivery attempt of an outbox row at `at`; `key` makes it idempotent.
    public func enqueueMailDelivery(
        _ tx: any SQLExecutor, outboxID: Int64, workspaceID: WorkspaceID, at: Date, key: String
    )
        async throws
    {
        try await enqueue(
            tx,
            JobRequest(
                kind: Self.mailDeliveryJob, workspaceID: workspaceID, payload: "{\"outbox_id\":\(outboxID)}", runAt: at,
                // The default attempts: a delivery job fails only on database errors (SMTP outcomes re-enqueue under
                // new keys), and three quick ones (a failover) would leave the row queued with no job behind it.
                idempotencyKey: key))
    }

    // MARK: facts the send-time policy reads

    /// Serialises send decisions for one recipient until the transaction ends (PostgreSQL; SQLite's single writer
    /// serialises these transactions anyway), so two mails cannot both read "1 of 2" under the frequency cap.
    public func lockRecipient(_ tx: any SQLExecutor, workspaceID: WorkspaceID, recipientHash: String) async throws {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(bitPattern: workspaceID)
        for b in recipientHash.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        if let lock = tx.dialect.advisoryLockSQL(key: Int64(bitPattern: h & 0x3FFF_FFFF_FFFF_FFFF), wait: true) {
            _ = try await tx.query(lock, [])
        }
    }

    public func workspaceTimeZone(_ tx: any SQLExecutor, workspaceID: WorkspaceID) async throws -> String? {
        try await tx.first("SELECT time_zone FROM workspaces WHERE id = ?", workspaceID)?.text("time_zone")
    }

    public func consentState(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, purpose: ConsentPurpose
    ) async throws -> ConsentState? {
        try await tx.first(
            "SELECT state FROM consents WHERE workspace_id = ? AND contact_id = ? AND purpose = ?", workspaceID,
            contactID, purpose.rawValue
        ).flatMap { ConsentState(rawValue: $0.text("state")) }
    }

    /// Whether the §7(3) objection notice was shown with a sale: an order of this contact that was not cancelled.
    public func hasSaleNotice(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws
        -> Bool
    {
        try await tx.scalar(
            """
            SELECT COUNT(*) FROM consent_events e JOIN orders o ON o.workspace_id = e.workspace_id
              AND e.source = 'order:' || o.external_id
            WHERE e.workspace_id = ? AND e.contact_id = ? AND e.action = 'notice_shown' AND e.legal_basis = ?
              AND o.status <> ?
            """, workspaceID, contactID, LegalBasis.existingCustomer.rawValue, OrderStatus.cancelled.rawValue) > 0
    }

    public func outboxMail(id: Int64, in tx: (any SQLExecutor)? = nil) async throws -> OutboxMail? {
        try await (tx ?? db).first("SELECT \(Self.outboxColumns) FROM outbox WHERE id = ?", id).map(Self.outbox)
    }

    public func outboxMail(workspaceID: WorkspaceID, id: Int64) async throws -> OutboxMail? {
        try await db.first(
            "SELECT \(Self.outboxColumns) FROM outbox WHERE workspace_id = ? AND id = ?", workspaceID, id
        ).map(Self.outbox)
    }

    public func outboxMail(messageID: String) async throws -> OutboxMail? {
        try await db.first("SELECT \(Self.outboxColumns) FROM outbox WHERE message_id = ?", messageID).map(Self.outbox)
    }

    public func outboxMails(workspaceID: WorkspaceID, state: OutboxState? = nil, limit: Int = 50, offset: Int = 0)
        async throws -> [OutboxMail]
    {
        if let state {
            return try await db.query(
                "SELECT \(Self.outboxColumns) FROM outbox WHERE workspace_id = ? AND state = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                workspaceID, state.rawValue, limit, offset
            ).map(Self.outbox)
        }
        return try await db.query(
            "SELECT \(Self.outboxColumns) FROM outbox WHERE workspace_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            workspaceID, limit, offset
        ).map(Self.outbox)
    }

    public func outboxCounts(workspaceID: WorkspaceID) async throws -> [OutboxState: Int] {
        var counts: [OutboxState: Int] = [:]
        for r in try await db.query(
            "SELECT state, COUNT(*) AS n FROM outbox WHERE workspace_id = ? GROUP BY state", workspaceID)
        {
            if let s = OutboxState(rawValue: r.text("state")) { counts[s] = Int(r.int("n")) }
        }
        return counts
    }

    /// When this recipient's marketing mails went out (or started to) since `since`: what the frequency cap counts.
    public func recentMarketing(_ tx: any SQLExecutor, workspaceID: WorkspaceID, recipientHash: String, since: Date)
        async throws -> [Date]
    {
        try await tx.query(
            """
            SELECT sending_at FROM outbox WHERE workspace_id = ? AND recipient_hash = ? AND mail_class = 'marketing'
              AND sending_at IS NOT NULL AND sending_at > ? AND state IN ('sending', 'sent', 'bounced', 'failed')
            """, workspaceID, recipientHash, since
        ).map { $0.date("sending_at") }
    }

    /// Moves a row to a new state if it is in one of `from`; false when it was not (someone else moved it).
    @discardableResult
    public func transitionOutbox(
        _ tx: any SQLExecutor, id: Int64, from: [OutboxState], to: OutboxState, reason: String? = nil,
        smtpReply: String? = nil, transport: String? = nil, legalBasis: String? = nil, notBefore: Date? = nil,
        countAttempt: Bool = false
    ) async throws -> Bool {
        let t = now
        let placeholders = from.map { _ in "?" }.joined(separator: ", ")
        var binds: [any SQLBindable] = [to.rawValue]
        var sets = "state = ?, updated_at = ?"
        binds.append(t)
        if let reason {
            sets += ", reason = ?"
            binds.append(reason)
        }
        if let smtpReply {
            sets += ", smtp_reply = ?"
            binds.append(String(smtpReply.prefix(1000)))
        }
        if let transport {
            sets += ", transport = ?"
            binds.append(transport)
        }
        if let legalBasis {
            sets += ", legal_basis = ?"
            binds.append(legalBasis)
        }
        if let notBefore {
            sets += ", not_before = ?"
            binds.append(notBefore)
        }
        if countAttempt { sets += ", attempts = attempts + 1" }
        if to == .sending {
            sets += ", sending_at = ?"
            binds.append(t)
        }
        if to == .sent {
            sets += ", sent_at = ?"
            binds.append(t)
        }
        binds.append(id)
        binds += from.map { $0.rawValue as any SQLBindable }
        return try await tx.execute(
            "UPDATE outbox SET \(sets) WHERE id = ? AND state IN (\(placeholders))", binds) == 1
    }

    public func recordMailEvent(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, outboxID: Int64?, type: String, detail: String, source: String
    ) async throws {
        try await tx.execute(
            "INSERT INTO mail_events (workspace_id, outbox_id, type, detail, source, at) VALUES (?, ?, ?, ?, ?, ?)",
            workspaceID, outboxID, type, String(detail.prefix(2000)), source, now)
    }

    public struct MailEvent: Sendable, Equatable {
        public var outboxID: Int64?
        public var type: String
        public var detail: String
        public var source: String
        public var at: Date
    }

    public func mailEvents(workspaceID: WorkspaceID, outboxID: Int64) async throws -> [MailEvent] {
        try await db.query(
            "SELECT * FROM mail_events WHERE workspace_id = ? AND outbox_id = ? ORDER BY id", workspaceID, outboxID
        ).map {
            MailEvent(
                outboxID: $0.optionalInt("outbox_id"), type: $0.text("type"), detail: $0.text("detail"),
                source: $0.text("source"), at: $0.date("at"))
        }
    }

    /// A bounce or complaint for a sent mail: the row is marked, the event kept, and for a hard bounce or a
    /// complaint the address goes on the suppression list.
    public func recordBounce(
        outboxID: Int64, type: String, permanent: Bool, detail: String, source: String
    ) async throws -> Bool {
        try await db.transaction { tx in
            guard let mail = try await self.outboxMail(id: outboxID, in: tx) else { return false }
            try await self.recordMailEvent(
                tx, workspaceID: mail.workspaceID, outboxID: mail.id, type: type, detail: detail, source: source)
            if type == "complaint" || permanent {
                try await self.suppress(
                    tx, workspaceID: mail.workspaceID, emailHash: mail.recipientHash,
                    reason: type == "complaint" ? "complaint" : "bounce")
            }
            if type == "bounce" {
                try await self.transitionOutbox(
                    tx, id: mail.id, from: [.sent, .sending, .deferred, .queued], to: .bounced, reason: detail)
            }
            return true
        }
    }
}
