import Foundation
import ReciprocityCore

/// Contacts, their consents with evidence, the suppression list, and the data-subject rights (Art. 15, 17, 21).
extension Store {
    static let contactColumns =
        "id, workspace_id, email, email_normalized, first_name, last_name, locale, source, source_ref, created_at, updated_at, erased_at"

    static func contact(_ r: SQLRow) -> Contact {
        Contact(
            id: r.int("id"), workspaceID: r.int("workspace_id"), email: r.text("email"),
            emailNormalized: r.text("email_normalized"), firstName: r.optionalText("first_name"),
            lastName: r.optionalText("last_name"), locale: r.text("locale"), source: r.text("source"),
            sourceRef: r.optionalText("source_ref"), createdAt: r.date("created_at"),
            updatedAt: r.date("updated_at"), erasedAt: r.optionalDate("erased_at"))
    }

    /// Creates the contact or updates the names it is known by. The first source of the address is kept.
    /// Writes only what changed: a returning customer's order leaves their row untouched, so concurrent orders by
    /// one person do not queue on its row lock. Two first orders racing to create the contact meet the unique
    /// index; the loser's transaction fails and is retried by its caller.
    public func upsertContact(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, email: EmailAddress, firstName: String?, lastName: String?,
        locale: String, source: String, sourceRef: String?
    ) async throws -> ContactID {
        try await upsertContacts(
            tx, workspaceID: workspaceID,
            [
                ContactUpsert(
                    email: email, firstName: firstName, lastName: lastName, locale: locale, source: source,
                    sourceRef: sourceRef)
            ])[0]
    }

    /// `upsertContact` for many at once: one look-up per chunk of addresses, one insert per chunk of new contacts,
    /// and an update only for contacts whose names or locale change. Answers the ids in the list's order.
    ///
    /// Several entries for one address end as they would one after another: a name given replaces the one before,
    /// a name left out keeps it, the last locale counts, and a new contact keeps its first entry's source.
    public func upsertContacts(_ tx: any SQLExecutor, workspaceID: WorkspaceID, _ list: [ContactUpsert])
        async throws -> [ContactID]
    {
        let t = now
        // Keyed by the address's bytes: the database compares bytes, Swift's `==` canonical equivalence.
        var addresses: [[UInt8]] = []
        var folded: [[UInt8]: ContactUpsert] = [:]
        for c in list {
            let key = Array(c.email.normalized.utf8)
            if var f = folded[key] {
                f.firstName = c.firstName ?? f.firstName
                f.lastName = c.lastName ?? f.lastName
                f.locale = c.locale
                folded[key] = f
            } else {
                addresses.append(key)
                folded[key] = c
            }
        }
        // Sorted, so that transactions touching the same contacts lock them in the same order.
        addresses.sort { $0.lexicographicallyPrecedes($1) }
        var ids: [[UInt8]: ContactID] = [:]
        for chunk in MultiRow.chunks(addresses, dialect: tx.dialect) {
            let rows = try await tx.query(
                """
                SELECT id, email_normalized, first_name, last_name, locale FROM contacts
                WHERE workspace_id = ? AND email_normalized IN (\(MultiRow.list(chunk.count)))
                """, [workspaceID] + chunk.map { String(decoding: $0, as: UTF8.self) as any SQLBindable })
            let found = rows.map { (Array($0.text("email_normalized").utf8), $0) }
                .sorted { $0.0.lexicographicallyPrecedes($1.0) }
            for (key, row) in found {
                guard let f = folded[key] else { continue }
                let id = row.int("id")
                ids[key] = id
                let newFirst = f.firstName ?? row.optionalText("first_name")
                let newLast = f.lastName ?? row.optionalText("last_name")
                if newFirst != row.optionalText("first_name") || newLast != row.optionalText("last_name")
                    || f.locale != row.text("locale")
                {
                    try await tx.execute(
                        "UPDATE contacts SET first_name = ?, last_name = ?, locale = ?, updated_at = ? WHERE id = ?",
                        newFirst, newLast, f.locale, t, id)
                }
            }
        }
        let missing = addresses.filter { ids[$0] == nil }
        for chunk in MultiRow.inserts(
            rows: missing.count, types: [.int, .text, .text, .text, .text, .text, .text, .text, .text, .int, .int],
            dialect: tx.dialect,
            row: {
                let c = folded[missing[$0]]!
                return [
                    workspaceID, c.email.raw, c.email.normalized, c.email.canonicalIdentity, c.firstName, c.lastName,
                    c.locale, c.source, c.sourceRef, t, t,
                ]
            })
        {
            let rows = try await tx.query(
                """
                INSERT INTO contacts (workspace_id, email, email_normalized, identity, first_name, last_name, locale,
                  source, source_ref, created_at, updated_at)
                \(chunk.source) RETURNING id, email_normalized
                """, chunk.binds)
            for row in rows { ids[Array(row.text("email_normalized").utf8)] = row.int("id") }
        }
        return try list.map { c in
            guard let id = ids[Array(c.email.normalized.utf8)] else {
                throw StorageError.database("contact \(c.email.normalized) was neither found nor created")
            }
            return id
        }
    }

    public func contact(workspaceID: WorkspaceID, id: ContactID) async throws -> Contact? {
        try await db.first(
            "SELECT \(Self.contactColumns) FROM contacts WHERE workspace_id = ? AND id = ?", workspaceID, id
        ).map(Self.contact)
    }

    public func contact(workspaceID: WorkspaceID, email: EmailAddress) async throws -> Contact? {
        try await db.first(
            "SELECT \(Self.contactColumns) FROM contacts WHERE workspace_id = ? AND email_normalized = ?",
            workspaceID, email.normalized
        ).map(Self.contact)
    }

    public struct Page<T: Sendable>: Sendable {
        public var items: [T]
        public var total: Int
        public var limit: Int
        public var offset: Int
    }

    public func contacts(workspaceID: WorkspaceID, search: String? = nil, limit: Int = 50, offset: Int = 0)
        async throws -> Page<Contact>
    {
        let limit = min(max(limit, 1), 500)
        let offset = max(offset, 0)
        var filter = "workspace_id = ?"
        var binds: [any SQLBindable] = [workspaceID]
        if let search = search?.trimmingCharacters(in: .whitespaces), !search.isEmpty {
            let like = db.dialect.likeOperator
            let pattern =
                "%"
                + search.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_") + "%"
            filter +=
                " AND (email_normalized \(like) ? ESCAPE '\\' OR first_name \(like) ? ESCAPE '\\' OR last_name \(like) ? ESCAPE '\\')"
            binds += [pattern.lowercased(), pattern, pattern]
        }
        let total = try await db.query("SELECT COUNT(*) AS n FROM contacts WHERE \(filter)", binds).first?.int("n")
        let items = try await db.query(
            "SELECT \(Self.contactColumns) FROM contacts WHERE \(filter) ORDER BY id DESC LIMIT ? OFFSET ?",
            binds + [limit, offset]
        ).map(Self.contact)
        return Page(items: items, total: Int(total ?? 0), limit: limit, offset: offset)
    }

    /// Contacts that have not been erased.
    public func activeContactCount(workspaceID: WorkspaceID) async throws -> Int {
        Int(
            try await db.scalar(
                "SELECT COUNT(*) FROM contacts WHERE workspace_id = ? AND erased_at IS NULL", workspaceID))
    }

    // MARK: Consent

    /// Granted consents per purpose.
    public func grantedConsentCounts(workspaceID: WorkspaceID) async throws -> [ConsentPurpose: Int] {
        var counts: [ConsentPurpose: Int] = [:]
        for r in try await db.query(
            "SELECT purpose, COUNT(*) AS n FROM consents WHERE workspace_id = ? AND state = 'granted' GROUP BY purpose",
            workspaceID)
        {
            if let p = ConsentPurpose(rawValue: r.text("purpose")) { counts[p] = Int(r.int("n")) }
        }
        return counts
    }

    static let consentColumns = """
        id, workspace_id, contact_id, purpose, state, legal_basis, text_id, source, form_id, page_url, requested_at,
        requested_ip, requested_user_agent, granted_at, granted_ip, granted_user_agent, withdrawn_at, updated_at
        """

    static func consent(_ r: SQLRow) -> Consent {
        Consent(
            id: r.int("id"), workspaceID: r.int("workspace_id"), contactID: r.int("contact_id"),
            purpose: ConsentPurpose(rawValue: r.text("purpose")) ?? .newsletter,
            state: ConsentState(rawValue: r.text("state")) ?? .pending,
            legalBasis: LegalBasis(rawValue: r.text("legal_basis")) ?? .consent, textID: r.optionalInt("text_id"),
            source: r.text("source"), formID: r.optionalText("form_id"), pageURL: r.optionalText("page_url"),
            requested: r.optionalDate("requested_at").map {
                ConsentEvidence(
                    at: $0, ip: r.optionalText("requested_ip"), userAgent: r.optionalText("requested_user_agent"))
            },
            granted: r.optionalDate("granted_at").map {
                ConsentEvidence(
                    at: $0, ip: r.optionalText("granted_ip"), userAgent: r.optionalText("granted_user_agent"))
            },
            withdrawnAt: r.optionalDate("withdrawn_at"), updatedAt: r.date("updated_at"))
    }

    /// The version of a consent text; the same words for the same purpose and locale are one version.
    public func consentTextVersion(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, purpose: String, locale: String, body: String
    ) async throws -> ConsentText {
        let hash = Hex.sha256(body)
        let cols = "id, workspace_id, purpose, version, locale, body, created_at"
        if let row = try await tx.first(
            "SELECT \(cols) FROM consent_texts WHERE workspace_id = ? AND purpose = ? AND locale = ? AND body_hash = ?",
            workspaceID, purpose, locale, hash)
        {
            return Self.consentText(row)
        }
        let next = try await tx.scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM consent_texts WHERE workspace_id = ? AND purpose = ?",
            workspaceID, purpose)
        let rows = try await tx.query(
            """
            INSERT INTO consent_texts (workspace_id, purpose, version, locale, body, body_hash, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING \(cols)
            """, workspaceID, purpose, next, locale, body, hash, now)
        return Self.consentText(rows[0])
    }

    static func consentText(_ r: SQLRow) -> ConsentText {
        ConsentText(
            id: r.int("id"), workspaceID: r.int("workspace_id"),
            purpose: ConsentPurpose(rawValue: r.text("purpose")) ?? .newsletter, version: Int(r.int("version")),
            locale: r.text("locale"), body: r.text("body"), createdAt: r.date("created_at"))
    }

    /// Applies a consent change and appends it to the contact's consent history (the proof trail).
    @discardableResult
    public func applyConsent(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, change: ConsentChange
    ) async throws -> Consent {
        try ConsentRules.validate(change)
        let textID: Int64? =
            if let body = change.text {
                try await consentTextVersion(
                    tx, workspaceID: workspaceID, purpose: change.purpose.rawValue, locale: change.textLocale,
                    body: body
                ).id
            } else { nil }
        let existing = try await tx.first(
            "SELECT \(Self.consentColumns) FROM consents WHERE workspace_id = ? AND contact_id = ? AND purpose = ?",
            workspaceID, contactID, change.purpose.rawValue
        ).map(Self.consent)
        let state = ConsentRules.next(from: existing?.state, action: change.action)
        let e = change.evidence
        let t = now
        let row: SQLRow
        if let existing {
            // A request while granted keeps the grant and its evidence untouched: the row is not written at all
            // (only the history below), so an unconfirmed post by anyone cannot put their IP, form or page on a
            // consent that stands.
            let keepsGrant = existing.state == .granted && change.action == .request
            row =
                keepsGrant
                ? try await tx.query(
                    "SELECT \(Self.consentColumns) FROM consents WHERE id = ?", existing.id)[0]
                : try await tx.query(
                    """
                    UPDATE consents SET state = ?, legal_basis = ?, text_id = COALESCE(?, text_id), source = ?,
                      form_id = COALESCE(?, form_id), page_url = COALESCE(?, page_url),
                      requested_at = CASE WHEN ? = 'request' THEN ? ELSE requested_at END,
                      requested_ip = CASE WHEN ? = 'request' THEN ? ELSE requested_ip END,
                      requested_user_agent = CASE WHEN ? = 'request' THEN ? ELSE requested_user_agent END,
                      granted_at = CASE WHEN ? = 'grant' THEN ? ELSE granted_at END,
                      granted_ip = CASE WHEN ? = 'grant' THEN ? ELSE granted_ip END,
                      granted_user_agent = CASE WHEN ? = 'grant' THEN ? ELSE granted_user_agent END,
                      withdrawn_at = CASE WHEN ? = 'withdraw' THEN ? WHEN ? = 'grant' THEN NULL ELSE withdrawn_at END,
                      updated_at = ?
                    WHERE id = ? RETURNING \(Self.consentColumns)
                    """,
                    state.rawValue, change.legalBasis.rawValue, textID, change.source, change.formID,
                    change.pageURL, change.action.rawValue, e.at, change.action.rawValue, e.ip, change.action.rawValue,
                    e.userAgent, change.action.rawValue, e.at, change.action.rawValue, e.ip, change.action.rawValue,
                    e.userAgent, change.action.rawValue, e.at, change.action.rawValue, t, existing.id)[0]
        } else {
            let isRequest = change.action == .request
            let isGrant = change.action == .grant
            row = try await tx.query(
                """
                INSERT INTO consents (workspace_id, contact_id, purpose, state, legal_basis, text_id, source, form_id,
                  page_url, requested_at, requested_ip, requested_user_agent, granted_at, granted_ip,
                  granted_user_agent, withdrawn_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING \(Self.consentColumns)
                """,
                workspaceID, contactID, change.purpose.rawValue, state.rawValue, change.legalBasis.rawValue, textID,
                change.source, change.formID, change.pageURL, isRequest ? e.at : nil, isRequest ? e.ip : nil,
                isRequest ? e.userAgent : nil, isGrant ? e.at : nil, isGrant ? e.ip : nil,
                isGrant ? e.userAgent : nil, change.action == .withdraw ? e.at : nil, t)[0]
        }
        try await tx.execute(
            """
            INSERT INTO consent_events (workspace_id, contact_id, purpose, action, state, legal_basis, text_id, source,
              ip, user_agent, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, workspaceID, contactID, change.purpose.rawValue, change.action.rawValue, state.rawValue,
            change.legalBasis.rawValue, textID, change.source, e.ip, e.userAgent, e.at)
        // Withdrawing the programme's consent is leaving it: the code stops working, earned rewards stay.
        if change.purpose == .referralProgram && state == .withdrawn {
            try await leaveReferrals(tx, workspaceID: workspaceID, contactID: contactID)
        }
        return Self.consent(row)
    }

    public func consents(workspaceID: WorkspaceID, contactID: ContactID) async throws -> [Consent] {
        try await db.query(
            "SELECT \(Self.consentColumns) FROM consents WHERE workspace_id = ? AND contact_id = ? ORDER BY purpose",
            workspaceID, contactID
        ).map(Self.consent)
    }

    /// Records a notice shown to the person (e.g. the §7(3) UWG objection notice at checkout) in the proof trail.
    public func recordNotice(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, kind: String, text: String,
        locale: String, source: String, at: Date
    ) async throws {
        let version = try await consentTextVersion(
            tx, workspaceID: workspaceID, purpose: kind, locale: locale, body: text)
        try await tx.execute(
            """
            INSERT INTO consent_events (workspace_id, contact_id, purpose, action, state, legal_basis, text_id, source,
              at) VALUES (?, ?, ?, 'notice_shown', 'shown', ?, ?, ?, ?)
            """, workspaceID, contactID, kind, LegalBasis.existingCustomer.rawValue, version.id, source, at)
    }

    // MARK: Objection and suppression

    /// Art. 21 objection: withdraws every consent and suppresses the address for all marketing, at once and for good.
    public func object(workspaceID: WorkspaceID, contactID: ContactID, actor: String, reason: String = "objection")
        async throws
    {
        try await db.transaction { tx in
            guard
                let c = try await tx.first(
                    "SELECT email_normalized, erased_at FROM contacts WHERE workspace_id = ? AND id = ?", workspaceID,
                    contactID)
            else { throw DomainError.notFound("Contact") }
            try await withdrawAllConsents(tx, workspaceID: workspaceID, contactID: contactID, source: "objection")
            if c.optionalInt("erased_at") == nil {
                try await suppress(
                    tx, workspaceID: workspaceID, normalizedEmail: c.text("email_normalized"), reason: reason)
            }
            try await audit(
                tx, workspaceID: workspaceID, actor: actor, action: "contact.object", subject: "contact:\(contactID)")
        }
    }

    /// Withdraws every consent of the contact that is not withdrawn yet (objection, one-click unsubscribe).
    public func withdrawAllConsents(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, source: String
    ) async throws {
        let at = now
        for purpose in ConsentPurpose.allCases {
            let open = try await tx.scalar(
                "SELECT COUNT(*) FROM consents WHERE workspace_id = ? AND contact_id = ? AND purpose = ? AND state <> 'withdrawn'",
                workspaceID, contactID, purpose.rawValue)
            if open > 0 {
                try await applyConsent(
                    tx, workspaceID: workspaceID, contactID: contactID,
                    change: ConsentChange(
                        purpose: purpose, action: .withdraw, text: nil, source: source,
                        evidence: ConsentEvidence(at: at)))
            }
        }
    }

    public func suppress(_ tx: any SQLExecutor, workspaceID: WorkspaceID, normalizedEmail: String, reason: String)
        async throws
    {
        try await suppress(tx, workspaceID: workspaceID, emailHash: suppressionHash(normalizedEmail), reason: reason)
    }

    /// Suppresses by the salted hash alone (an unsubscribe link carries the hash, never the address). A later hard
    /// bounce or complaint replaces an earlier reason, so transactional mail stops for a dead address too.
    public func suppress(_ tx: any SQLExecutor, workspaceID: WorkspaceID, emailHash: String, reason: String)
        async throws
    {
        try await tx.execute(
            """
            INSERT INTO suppressions (workspace_id, email_hash, reason, created_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (workspace_id, email_hash) DO UPDATE SET reason = excluded.reason
              WHERE excluded.reason IN ('bounce', 'complaint')
            """, workspaceID, emailHash, reason, now)
    }

    /// Why an address (by its salted hash) is suppressed, or nil.
    public func suppressionReason(_ tx: any SQLExecutor, workspaceID: WorkspaceID, emailHash: String) async throws
        -> String?
    {
        try await tx.first(
            "SELECT reason FROM suppressions WHERE workspace_id = ? AND email_hash = ?", workspaceID, emailHash
        )?.text("reason")
    }

    /// Whether marketing to this address is barred. Checked by every marketing send.
    public func isSuppressed(workspaceID: WorkspaceID, email: EmailAddress) async throws -> Bool {
        try await isSuppressed(workspaceID: workspaceID, normalizedEmail: email.normalized)
    }

    private func isSuppressed(workspaceID: WorkspaceID, normalizedEmail: String) async throws -> Bool {
        try await db.scalar(
            "SELECT COUNT(*) FROM suppressions WHERE workspace_id = ? AND email_hash = ?", workspaceID,
            suppressionHash(normalizedEmail)) > 0
    }

    /// Whether this contact is barred from marketing. An erased contact always is: erasure suppresses the original
    /// address, which is no longer known.
    public func isSuppressed(_ contact: Contact) async throws -> Bool {
        if contact.erasedAt != nil { return true }
        return try await isSuppressed(workspaceID: contact.workspaceID, normalizedEmail: contact.emailNormalized)
    }

    // MARK: Art. 17 erasure

    /// Erases a person: every field that identifies them is removed; rows stay so counts and sums stay.
    /// A salted hash of the address is kept on the suppression list so the person is not mailed again.
    public func erase(workspaceID: WorkspaceID, contactID: ContactID, actor: String) async throws {
        try await db.transaction { tx in
            guard
                let c = try await tx.first(
                    "SELECT email_normalized, erased_at FROM contacts WHERE workspace_id = ? AND id = ?", workspaceID,
                    contactID)
            else { throw DomainError.notFound("Contact") }
            guard c.optionalInt("erased_at") == nil else { return }
            try await suppress(
                tx, workspaceID: workspaceID, normalizedEmail: c.text("email_normalized"), reason: "erasure")
            let placeholder = "erased-\(contactID)@erased.invalid"
            try await tx.execute(
                """
                UPDATE contacts SET email = ?, email_normalized = ?, identity = NULL, first_name = NULL,
                  last_name = NULL, source_ref = NULL, erased_at = ?, updated_at = ? WHERE workspace_id = ? AND id = ?
                """, placeholder, placeholder, now, now, workspaceID, contactID)
            try await tx.execute(
                """
                UPDATE consents SET requested_ip = NULL, requested_user_agent = NULL, granted_ip = NULL,
                  granted_user_agent = NULL, page_url = NULL WHERE workspace_id = ? AND contact_id = ?
                """, workspaceID, contactID)
            try await tx.execute(
                "UPDATE consent_events SET ip = NULL, user_agent = NULL WHERE workspace_id = ? AND contact_id = ?",
                workspaceID, contactID)
            try await tx.execute(
                """
                UPDATE orders SET shipping_name = NULL, shipping_street = NULL, shipping_postal_code = NULL,
                  shipping_city = NULL, payment_fingerprint = NULL, referred_by = NULL, client_device = NULL
                WHERE workspace_id = ? AND contact_id = ?
                """, workspaceID, contactID)
            // Mail copies go too; a mail not yet sent never will be.
            try await tx.execute(
                """
                UPDATE outbox SET state = CASE WHEN state IN ('queued', 'deferred') THEN 'suppressed' ELSE state END,
                  reason = CASE WHEN state IN ('queued', 'deferred') OR reason <> '' THEN 'erased' ELSE reason END,
                  smtp_reply = '', recipient = NULL, subject = '', message = NULL, updated_at = ?
                WHERE workspace_id = ? AND contact_id = ?
                """, now, workspaceID, contactID)
            // Delivery diagnostics (a relay's reply, a bounce's Diagnostic-Code) often quote the address.
            try await tx.execute(
                """
                UPDATE mail_events SET detail = '' WHERE workspace_id = ?
                  AND outbox_id IN (SELECT id FROM outbox WHERE workspace_id = ? AND contact_id = ?)
                """, workspaceID, workspaceID, contactID)
            try await eraseReviews(tx, workspaceID: workspaceID, contactID: contactID)
            try await eraseLeadSignups(tx, workspaceID: workspaceID, contactID: contactID)
            try await eraseAdvocate(tx, workspaceID: workspaceID, contactID: contactID)
            try await audit(
                tx, workspaceID: workspaceID, actor: actor, action: "contact.erase", subject: "contact:\(contactID)")
        }
    }
}

/// A contact to create or update by address: see `Store.upsertContacts`.
public struct ContactUpsert: Sendable {
    public var email: EmailAddress
    public var firstName: String?
    public var lastName: String?
    public var locale: String
    public var source: String
    public var sourceRef: String?

    public init(
        email: EmailAddress, firstName: String?, lastName: String?, locale: String, source: String, sourceRef: String?
    ) {
        self.email = email
        self.firstName = firstName
        self.lastName = lastName
        self.locale = locale
        self.source = source
        self.sourceRef = sourceRef
    }
}
