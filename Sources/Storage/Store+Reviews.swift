import Foundation
import ReciprocityCore

/// A review as stored, with what the admin and the widgets need to show it.
public struct StoredReview: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var sku: String
    public var productName: String
    public var source: ReviewSource
    public var status: ReviewStatus
    public var rating: Int
    public var title: String
    public var body: String
    public var displayName: String
    public var locale: String
    public var orderID: OrderID?
    /// The shop's order number, for verified reviews (the feed's `transaction_id`).
    public var orderExternalID: String?
    public var requestID: Int64?
    public var contactID: ContactID?
    public var importSource: String?
    public var incentive: String?
    public var holdReasons: [String]
    public var hiddenReason: String?
    public var reply: String?
    public var repliedAt: Date?
    public var createdAt: Date
    public var updatedAt: Date
    public var photoIDs: [Int64] = []
}

public enum ReviewRequestState: String, Sendable, Codable, CaseIterable {
    case scheduled, sent, skipped, reminded
}

public struct ReviewRequestRecord: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var orderID: OrderID
    public var contactID: ContactID
    public var state: ReviewRequestState
    public var dueAt: Date
    public var skipReason: String?
    public var incentive: String?
    public var sentAt: Date?
    public var remindedAt: Date?
}

/// Which reviews the admin list shows.
public struct ReviewFilter: Sendable, Equatable {
    public var status: ReviewStatus?
    public var source: ReviewSource?
    public var rating: Int?
    public var sku: String?
    public var limit = 50
    public var offset = 0
    public init(status: ReviewStatus? = nil, source: ReviewSource? = nil, rating: Int? = nil, sku: String? = nil) {
        self.status = status
        self.source = source
        self.rating = rating
        self.sku = sku
    }
}

/// One old review from a CSV import.
public struct ImportedReview: Sendable, Equatable {
    public var sku: String
    public var productName: String
    public var rating: Int
    public var title: String
    public var body: String
    public var author: String
    public var createdAt: Date
    public init(
        sku: String, productName: String, rating: Int, title: String, body: String, author: String, createdAt: Date
    ) {
        self.sku = sku
        self.productName = productName
        self.rating = rating
        self.title = title
        self.body = body
        self.author = author
        self.createdAt = createdAt
    }
}

/// One month of the review statistics: requests sent, reviews received through them, and the average rating.
public struct ReviewMonth: Sendable, Equatable {
    public var month: String
    public var requestsSent: Int
    public var reviewsFromRequests: Int
    public var reviews: Int
    public var ratingSum: Int
    public var average: Double? { reviews == 0 ? nil : Double(ratingSum) / Double(reviews) }
}

extension Store {
    public static let reviewRequestJob = "reviews.request"
    public static let reviewReminderJob = "reviews.reminder"
    public static let reviewScheduleJob = "reviews.schedule"

    // MARK: Settings

    public func reviewSettings(workspaceID: WorkspaceID, in tx: (any SQLExecutor)? = nil) async throws
        -> ReviewSettings
    {
        var s = ReviewSettings()
        guard
            let r = try await (tx ?? db).first(
                "SELECT * FROM review_settings WHERE workspace_id = ?", workspaceID)
        else { return s }
        s.timing.delay = TimeInterval(r.int("delay_seconds"))
        s.timing.transit = TimeInterval(r.int("transit_seconds"))
        s.timing.reminderAfter = TimeInterval(r.int("reminder_seconds"))
        s.timing.remindersEnabled = r.bool("reminders_enabled")
        s.timing.categoryDelays =
            (try? JSONDecoder().decode([String: Double].self, from: Data(r.text("category_delays").utf8))) ?? [:]
        s.disclosure = r.text("disclosure")
        s.openForm = r.bool("open_form")
        s.tokenLifetime = TimeInterval(r.int("token_seconds"))
        s.editWindow = TimeInterval(r.int("edit_seconds"))
        s.incentive = r.optionalText("incentive")
        return s
    }

    /// Saves the settings; a changed disclosure, incentive or open form is audited (each has legal weight).
    /// `seen`: the version the form was read at (`settingsVersion`); nil for callers that replace outright (the API).
    public func saveReviewSettings(workspaceID: WorkspaceID, _ s: ReviewSettings, actor: String, seen: Int64? = nil)
        async throws
    {
        try s.validate()
        let categories = String(
            decoding: try JSONEncoder.sorted.encode(s.timing.categoryDelays), as: UTF8.self)
        try await db.transaction { tx in
            try await requireSettingsVersion(tx, .reviews, workspaceID: workspaceID, seen: seen)
            let before = try await reviewSettings(workspaceID: workspaceID, in: tx)
            try await tx.execute(
                """
                INSERT INTO review_settings (workspace_id, delay_seconds, transit_seconds, reminder_seconds,
                  reminders_enabled, category_delays, disclosure, open_form, token_seconds, edit_seconds, incentive,
                  updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (workspace_id) DO UPDATE SET delay_seconds = excluded.delay_seconds,
                  transit_seconds = excluded.transit_seconds, reminder_seconds = excluded.reminder_seconds,
                  reminders_enabled = excluded.reminders_enabled, category_delays = excluded.category_delays,
                  disclosure = excluded.disclosure, open_form = excluded.open_form,
                  token_seconds = excluded.token_seconds, edit_seconds = excluded.edit_seconds,
                  incentive = excluded.incentive, updated_at = excluded.updated_at
                """, workspaceID, Int64(s.timing.delay), Int64(s.timing.transit), Int64(s.timing.reminderAfter),
                s.timing.remindersEnabled, categories, s.disclosure, s.openForm, Int64(s.tokenLifetime),
                Int64(s.editWindow), s.incentive, now)
            var changed: [String] = []
            if before.disclosure != s.disclosure { changed.append("disclosure") }
            if before.incentive != s.incentive { changed.append("incentive") }
            if before.openForm != s.openForm { changed.append("open_form=\(s.openForm)") }
            if before.timing != s.timing { changed.append("timing") }
            if !changed.isEmpty {
                try await audit(
                    tx, workspaceID: workspaceID, actor: actor, action: "reviews.settings",
                    subject: "workspace:\(workspaceID)", detail: changed.joined(separator: ", "))
            }
        }
    }

    // MARK: Requests

    static let requestColumns =
        "id, workspace_id, order_id, contact_id, state, due_at, skip_reason, incentive, sent_at, reminded_at"

    static func reviewRequest(_ r: SQLRow) -> ReviewRequestRecord {
        ReviewRequestRecord(
            id: r.int("id"), workspaceID: r.int("workspace_id"), orderID: r.int("order_id"),
            contactID: r.int("contact_id"), state: ReviewRequestState(rawValue: r.text("state")) ?? .skipped,
            dueAt: r.date("due_at"), skipReason: r.optionalText("skip_reason"), incentive: r.optionalText("incentive"),
            sentAt: r.optionalDate("sent_at"), remindedAt: r.optionalDate("reminded_at"))
    }

    /// Schedules (or re-times) the review request of an order that was shipped or delivered: due at delivery, or
    /// shipping plus transit, plus the delay. A delivery after a shipment moves a still-scheduled request to the
    /// real delivery time. The sending job runs at the due time; whether to ask is decided then.
    @discardableResult
    public func scheduleReviewRequest(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderID: OrderID)
        async throws -> ReviewRequestRecord?
    {
        guard let order = try await loadOrder(tx, workspaceID: workspaceID, id: orderID) else { return nil }
        let settings = try await reviewSettings(workspaceID: workspaceID, in: tx)
        guard
            let due = settings.timing.requestDue(
                deliveredAt: order.statusTimes[.delivered], shippedAt: order.statusTimes[.shipped],
                categories: order.items.map(\.category))
        else { return nil }
        let t = now
        let rows = try await tx.query(
            """
            INSERT INTO review_requests (workspace_id, order_id, contact_id, state, due_at, incentive, created_at,
              updated_at) VALUES (?, ?, ?, 'scheduled', ?, ?, ?, ?)
            ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, contact_id = excluded.contact_id,
              updated_at = excluded.updated_at
              WHERE review_requests.state = 'scheduled'
            RETURNING \(Self.requestColumns)
            """, workspaceID, orderID, order.contactID, due, settings.incentive, t, t)
        guard let request = rows.first.map(Self.reviewRequest) else { return nil }
        try await enqueue(
            tx,
            JobRequest(
                kind: Self.reviewRequestJob, workspaceID: workspaceID, payload: #"{"request_id":\#(request.id)}"#,
                runAt: due, idempotencyKey: "review-request:\(request.id):\(due.epochMillis)"))
        return request
    }

    public func reviewRequest(id: Int64, in tx: (any SQLExecutor)? = nil) async throws -> ReviewRequestRecord? {
        try await (tx ?? db).first("SELECT \(Self.requestColumns) FROM review_requests WHERE id = ?", id)
            .map(Self.reviewRequest)
    }

    public func reviewRequest(workspaceID: WorkspaceID, orderID: OrderID) async throws -> ReviewRequestRecord? {
        try await db.first(
            "SELECT \(Self.requestColumns) FROM review_requests WHERE workspace_id = ? AND order_id = ?", workspaceID,
            orderID
        ).map(Self.reviewRequest)
    }

    /// What the planner needs to decide whether to ask: the order, consent, §7(3) basis, objection, and which of
    /// the order's products this contact was asked about within the window.
    public struct ReviewRequestFacts: Sendable {
        public var order: Order
        public var contact: Contact
        public var consentGranted: Bool
        public var existingCustomerModeApplies: Bool
        public var objected: Bool
        public var askedRecently: Set<String>
        /// The contact already had as many marketing mails as the frequency cap allows.
        public var capReached: Bool
    }

    public func reviewRequestFacts(_ tx: any SQLExecutor, _ request: ReviewRequestRecord, window: TimeInterval)
        async throws -> ReviewRequestFacts?
    {
        // The order's customer, not the one the request was scheduled for: the shop may have corrected the address.
        guard let order = try await loadOrder(tx, workspaceID: request.workspaceID, id: request.orderID),
            let contact = try await tx.first(
                "SELECT \(Self.contactColumns) FROM contacts WHERE workspace_id = ? AND id = ?", request.workspaceID,
                order.contactID
            ).map(Self.contact)
        else { return nil }
        let consent = try await consentState(
            tx, workspaceID: request.workspaceID, contactID: contact.id, purpose: .reviewRequest)
        let mail = try await mailSettings(workspaceID: request.workspaceID, in: tx)
        let mode = mail.existingCustomerMode
        let notice =
            mode && consent != .withdrawn
            ? try await hasSaleNotice(tx, workspaceID: request.workspaceID, contactID: contact.id) : false
        let suppressed = try await suppressionReason(
            tx, workspaceID: request.workspaceID, emailHash: suppressionHash(contact.emailNormalized))
        let objected = contact.erasedAt != nil || suppressed != nil
        let skus = order.items.map(\.sku)
        var asked: Set<String> = []
        if !skus.isEmpty {
            let marks = skus.map { _ in "?" }.joined(separator: ", ")
            let rows = try await tx.query(
                """
                SELECT DISTINCT sku FROM review_request_items
                WHERE workspace_id = ? AND contact_id = ? AND asked_at > ? AND request_id <> ? AND sku IN (\(marks))
                """,
                [request.workspaceID, contact.id, now.addingTimeInterval(-window), request.id]
                    + skus.map { $0 as any SQLBindable })
            asked = Set(rows.map { $0.text("sku") })
        }
        let cap = mail.cap
        let recent = try await recentMarketing(
            tx, workspaceID: request.workspaceID, recipientHash: suppressionHash(contact.emailNormalized),
            since: now.addingTimeInterval(-Double(cap.days) * 86_400))
        return ReviewRequestFacts(
            order: order, contact: contact, consentGranted: consent == .granted, existingCustomerModeApplies: notice,
            objected: objected, askedRecently: asked, capReached: recent.count >= cap.count)
    }

    /// Moves a request from one state to another; false if it was not in `from` (another worker got there first).
    public func transitionReviewRequest(
        _ tx: any SQLExecutor, id: Int64, from: ReviewRequestState, to: ReviewRequestState, skipReason: String? = nil,
        outboxID: Int64? = nil
    ) async throws -> Bool {
        let t = now
        let timeColumn =
            switch to {
            case .sent: ", sent_at = ?, outbox_id = ?"
            case .reminded: ", reminded_at = ?, reminder_outbox_id = ?"
            default: ""
            }
        let extra: [any SQLBindable] = timeColumn.isEmpty ? [] : [t, outboxID]
        // Sending re-checks the due time: a delivery event may have moved it later since the job looked.
        let due = to == .sent ? " AND due_at <= ?" : ""
        let dueBind: [any SQLBindable] = to == .sent ? [t.addingTimeInterval(1)] : []
        let n = try await tx.execute(
            """
            UPDATE review_requests SET state = ?, skip_reason = COALESCE(?, skip_reason), updated_at = ?\(timeColumn)
            WHERE id = ? AND state = ?\(due)
            """, [to.rawValue, skipReason, t] + extra + [id, from.rawValue] + dueBind)
        return n == 1
    }

    /// The order's customer when the request is sent, if the shop corrected the order's address since it was
    /// scheduled: the review and its favour belong to that person.
    public func setReviewRequestContact(_ tx: any SQLExecutor, id: Int64, contactID: ContactID) async throws {
        try await tx.execute("UPDATE review_requests SET contact_id = ? WHERE id = ?", contactID, id)
    }

    /// `.returned` or `.cancelled` when the order ended so, read under the order's row lock (PostgreSQL); nil for
    /// an order that stands.
    public func endedOrderStatus(_ tx: any SQLExecutor, workspaceID: WorkspaceID, id: OrderID) async throws
        -> OrderStatus?
    {
        guard
            let row = try await tx.first(
                "SELECT status FROM orders WHERE workspace_id = ? AND id = ?" + tx.dialect.rowLockClause, workspaceID,
                id),
            let status = OrderStatus(rawValue: row.text("status")), status.hasEnded
        else { return nil }
        return status
    }

    /// The incentive in force when the request is sent (a campaign may start while a request waits).
    public func setReviewRequestIncentive(_ tx: any SQLExecutor, id: Int64, incentive: String?) async throws {
        try await tx.execute("UPDATE review_requests SET incentive = ? WHERE id = ?", incentive, id)
    }

    /// Records the reminder as skipped without leaving the `sent` state (the request itself went out).
    public func noteReviewRequest(_ tx: any SQLExecutor, id: Int64, reason: String) async throws {
        try await tx.execute(
            "UPDATE review_requests SET skip_reason = ?, updated_at = ? WHERE id = ?", reason, now, id)
    }

    public func recordAskedItems(
        _ tx: any SQLExecutor, _ request: ReviewRequestRecord, items: [ReviewRequestPlanner.Item]
    ) async throws {
        for item in items {
            try await tx.execute(
                """
                INSERT INTO review_request_items (request_id, workspace_id, contact_id, sku, product_name, asked_at)
                VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, sku) DO NOTHING
                """, request.id, request.workspaceID, request.contactID, item.sku, item.name, now)
        }
    }

    /// The items a request asked about (the ones a review link exists for).
    public func askedItems(requestID: Int64, in tx: (any SQLExecutor)? = nil) async throws
        -> [ReviewRequestPlanner.Item]
    {
        try await (tx ?? db).query(
            "SELECT sku, product_name FROM review_request_items WHERE request_id = ? ORDER BY asked_at, sku",
            requestID
        ).map { ReviewRequestPlanner.Item(sku: $0.text("sku"), name: $0.text("product_name")) }
    }

    public func reviewCount(requestID: Int64, in tx: (any SQLExecutor)? = nil) async throws -> Int64 {
        try await (tx ?? db).scalar(
            "SELECT COUNT(*) FROM reviews WHERE request_id = ? AND status <> 'deleted'", requestID)
    }

    public func reviewRequests(workspaceID: WorkspaceID, limit: Int = 50) async throws -> [ReviewRequestRecord] {
        try await db.query(
            "SELECT \(Self.requestColumns) FROM review_requests WHERE workspace_id = ? ORDER BY id DESC LIMIT ?",
            workspaceID, limit
        ).map(Self.reviewRequest)
    }

    // MARK: Reviews

    static let reviewColumns = """
        r.id, r.workspace_id, r.sku, r.product_name, r.source, r.status, r.rating, r.title, r.body, r.display_name,
        r.locale, r.order_id, r.request_id, r.contact_id, r.import_source, r.incentive, r.hold_reasons,
        r.hidden_reason, r.reply, r.replied_at, r.created_at, r.updated_at, o.external_id AS order_external_id
        """
    static let reviewFrom = "reviews r LEFT JOIN orders o ON o.id = r.order_id"

    static func review(_ r: SQLRow) -> StoredReview {
        StoredReview(
            id: r.int("id"), workspaceID: r.int("workspace_id"), sku: r.text("sku"),
            productName: r.text("product_name"), source: ReviewSource(rawValue: r.text("source")) ?? .unverified,
            status: ReviewStatus(rawValue: r.text("status")) ?? .held, rating: Int(r.int("rating")),
            title: r.text("title"), body: r.text("body"), displayName: r.text("display_name"),
            locale: r.text("locale"), orderID: r.optionalInt("order_id"),
            orderExternalID: r.optionalText("order_external_id"), requestID: r.optionalInt("request_id"),
            contactID: r.optionalInt("contact_id"), importSource: r.optionalText("import_source"),
            incentive: r.optionalText("incentive"),
            holdReasons: r.text("hold_reasons").split(separator: ",").map(String.init),
            hiddenReason: r.optionalText("hidden_reason"), reply: r.optionalText("reply"),
            repliedAt: r.optionalDate("replied_at"), createdAt: r.date("created_at"), updatedAt: r.date("updated_at"))
    }

    public func review(workspaceID: WorkspaceID, id: Int64, in tx: (any SQLExecutor)? = nil) async throws
        -> StoredReview?
    {
        try await loadReview(tx ?? db, "r.workspace_id = ? AND r.id = ?", [workspaceID, id])
    }

    /// The review written through a request for one product, if any (also a deleted one: the link shows that).
    public func review(requestID: Int64, sku: String, in tx: (any SQLExecutor)? = nil) async throws -> StoredReview? {
        try await loadReview(tx ?? db, "r.request_id = ? AND r.sku = ?", [requestID, sku])
    }

    private func loadReview(_ ex: any SQLExecutor, _ condition: String, _ binds: [any SQLBindable]) async throws
        -> StoredReview?
    {
        guard
            var review = try await ex.query(
                "SELECT \(Self.reviewColumns) FROM \(Self.reviewFrom) WHERE \(condition)", binds
            ).first.map(Self.review)
        else { return nil }
        review.photoIDs = try await ex.query(
            "SELECT id FROM review_photos WHERE review_id = ? ORDER BY id", review.id
        ).map { $0.int("id") }
        return review
    }

    /// Writes a new review or replaces the author's own (text, rating, name); moderation decides the status.
    /// A new verified review is recorded as a favour the customer did, (`recordFavour`: a `FavourRecorded` event).
    public struct NewReview: Sendable {
        public var workspaceID: WorkspaceID
        public var sku: String
        public var productName: String
        public var source: ReviewSource
        public var input: ReviewInput
        public var locale: String
        public var orderID: OrderID?
        public var requestID: Int64?
        public var contactID: ContactID?
        public var incentive: String?
        public var importSource: String?
        public var createdAt: Date?
        public var photos: [(ReviewPhoto.Kind, [UInt8])] = []

        public init(
            workspaceID: WorkspaceID, sku: String, productName: String, source: ReviewSource, input: ReviewInput,
            locale: String
        ) {
            self.workspaceID = workspaceID
            self.sku = sku
            self.productName = productName
            self.source = source
            self.input = input
            self.locale = locale
        }
    }

    /// Two first submits at once (a double click) meet the unique index; the loser retries and edits instead.
    public func saveReview(_ n: NewReview, moderation: ReviewModeration.Outcome) async throws -> StoredReview {
        do {
            return try await db.transaction { tx in try await saveReview(tx, n, moderation: moderation) }
        } catch StorageError.uniqueViolation where n.requestID != nil {
            return try await db.transaction { tx in try await saveReview(tx, n, moderation: moderation) }
        }
    }

    public func saveReview(_ tx: any SQLExecutor, _ n: NewReview, moderation: ReviewModeration.Outcome) async throws
        -> StoredReview
    {
        let t = now
        let (status, reasons): (ReviewStatus, String) =
            switch moderation {
            case .publish: (.published, "")
            case .hold(let r): (.held, r.joined(separator: ","))
            }
        var existing: StoredReview?
        if let requestID = n.requestID {
            // Locked (PostgreSQL), so a hide or a deletion by the author in between is seen, not overwritten.
            _ = try await tx.first(
                "SELECT id FROM reviews WHERE request_id = ? AND sku = ?" + tx.dialect.rowLockClause, requestID, n.sku)
            existing = try await review(requestID: requestID, sku: n.sku, in: tx)
        }
        let id: Int64
        if let existing {
            guard existing.status != .deleted else {
                throw DomainError.conflict("review_deleted", "This review was deleted; it cannot be changed any more.")
            }
            id = existing.id
            // Hidden stays hidden until the merchant looks again; otherwise moderation decides afresh.
            let newStatus = existing.status == .hidden ? ReviewStatus.hidden : status
            try await tx.execute(
                """
                UPDATE reviews SET rating = ?, title = ?, body = ?, display_name = ?, status = ?, hold_reasons = ?,
                  updated_at = ? WHERE id = ?
                """, n.input.rating ?? 0, n.input.title, n.input.body, n.input.displayName, newStatus.rawValue,
                reasons, t, id)
            if !n.photos.isEmpty { try await tx.execute("DELETE FROM review_photos WHERE review_id = ?", id) }
        } else {
            id = try await tx.query(
                """
                INSERT INTO reviews (workspace_id, sku, product_name, source, status, rating, title, body,
                  display_name, locale, order_id, request_id, contact_id, import_source, incentive, hold_reasons,
                  created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                """, n.workspaceID, n.sku, n.productName, n.source.rawValue, status.rawValue, n.input.rating ?? 0,
                n.input.title, n.input.body, n.input.displayName, n.locale, n.orderID, n.requestID, n.contactID,
                n.importSource, n.incentive, reasons, n.createdAt ?? t, t)[0].int("id")
            if let contactID = n.contactID, n.source == .verified {
                try await recordFavour(
                    tx, workspaceID: n.workspaceID, contactID: contactID, kind: "review", subjectType: "review",
                    subjectID: id)
            }
        }
        for (kind, bytes) in n.photos {
            try await tx.execute(
                """
                INSERT INTO review_photos (workspace_id, review_id, content_type, bytes, created_at)
                VALUES (?, ?, ?, ?, ?)
                """, n.workspaceID, id, kind.rawValue, SQLValue.blob(bytes), t)
        }
        return try await review(workspaceID: n.workspaceID, id: id, in: tx)!
    }

    /// The author deletes their review: text, name and photos go; the row stays as a tombstone for the feed.
    public func deleteReview(workspaceID: WorkspaceID, id: Int64, actor: String) async throws {
        try await db.transaction { tx in
            try await tombstone(tx, where: "workspace_id = ? AND id = ?", [workspaceID, id])
            try await audit(
                tx, workspaceID: workspaceID, actor: actor, action: "review.delete", subject: "review:\(id)")
        }
    }

    /// Art. 17: a person's reviews are removed with them (kept as tombstones so counts of deletions stay).
    func eraseReviews(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws {
        try await tombstone(tx, where: "workspace_id = ? AND contact_id = ?", [workspaceID, contactID])
    }

    private func tombstone(_ tx: any SQLExecutor, where condition: String, _ binds: [any SQLBindable]) async throws {
        try await tx.execute(
            "DELETE FROM review_photos WHERE review_id IN (SELECT id FROM reviews WHERE \(condition))", binds)
        try await tx.execute(
            """
            UPDATE reviews SET status = 'deleted', title = '', body = '', display_name = '', reply = NULL,
              hold_reasons = '', updated_at = ? WHERE \(condition)
            """, [now] + binds)
    }

    /// The merchant's one public reply; saying it again edits it.
    public func replyToReview(workspaceID: WorkspaceID, id: Int64, reply: String, actor: String) async throws {
        let text = reply.trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count <= 2_000 else {
            throw DomainError.invalid("too_long", "A reply must be at most 2000 characters.", field: "reply")
        }
        try await db.transaction { tx in
            guard let r = try await review(workspaceID: workspaceID, id: id, in: tx), r.status != .deleted else {
                throw DomainError.notFound("Review")
            }
            try await tx.execute(
                "UPDATE reviews SET reply = ?, replied_at = ?, updated_at = ? WHERE id = ?",
                text.isEmpty ? nil : text, text.isEmpty ? nil : now, now, id)
            try await audit(
                tx, workspaceID: workspaceID, actor: actor,
                action: r.reply == nil ? "review.reply" : (text.isEmpty ? "review.reply.remove" : "review.reply.edit"),
                subject: "review:\(id)")
        }
    }

    /// Moderation by a person: publish a held review, or hide one with a reason (logged). The text is never
    /// touched here; there is no way to edit it.
    ///
    /// `seen` is the review's `updated_at` (epoch milliseconds) as the person saw it: a publish is refused
    /// (`review_changed`) when the author changed the review since, so no text goes live that nobody looked at.
    public func moderateReview(
        workspaceID: WorkspaceID, id: Int64, publish: Bool, reason: String?, actor: String, seen: Int64? = nil
    ) async throws {
        let why = reason?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        if !publish && why.isEmpty {
            throw DomainError.invalid("reason_required", "Say why the review is hidden.", field: "reason")
        }
        try await db.transaction { tx in
            // Locked (PostgreSQL): an edit or a deletion by the author waits, or is seen here.
            _ = try await tx.first(
                "SELECT id FROM reviews WHERE workspace_id = ? AND id = ?" + tx.dialect.rowLockClause, workspaceID, id)
            guard let r = try await review(workspaceID: workspaceID, id: id, in: tx), r.status != .deleted else {
                throw DomainError.notFound("Review")
            }
            if publish, let seen, r.updatedAt.epochMillis != seen {
                throw DomainError.conflict(
                    "review_changed", "The review was changed after you opened it. Read it again before publishing.")
            }
            try await tx.execute(
                "UPDATE reviews SET status = ?, hidden_reason = ?, updated_at = ? WHERE id = ?",
                publish ? ReviewStatus.published.rawValue : ReviewStatus.hidden.rawValue, publish ? nil : why, now, id)
            try await audit(
                tx, workspaceID: workspaceID, actor: actor, action: publish ? "review.publish" : "review.hide",
                subject: "review:\(id)", detail: why)
        }
    }

    public func reviews(workspaceID: WorkspaceID, filter: ReviewFilter) async throws -> [StoredReview] {
        var sql = "SELECT \(Self.reviewColumns) FROM \(Self.reviewFrom) WHERE r.workspace_id = ?"
        var binds: [any SQLBindable] = [workspaceID]
        if let s = filter.status {
            sql += " AND r.status = ?"
            binds.append(s.rawValue)
        } else {
            sql += " AND r.status <> 'deleted'"
        }
        if let s = filter.source {
            sql += " AND r.source = ?"
            binds.append(s.rawValue)
        }
        if let rating = filter.rating {
            sql += " AND r.rating = ?"
            binds.append(rating)
        }
        if let sku = filter.sku {
            sql += " AND r.sku = ?"
            binds.append(sku)
        }
        sql += " ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?"
        binds += [filter.limit, filter.offset]
        return try await db.query(sql, binds).map(Self.review)
    }

    public func reviewCounts(workspaceID: WorkspaceID) async throws -> [ReviewStatus: Int] {
        var out: [ReviewStatus: Int] = [:]
        for r in try await db.query(
            "SELECT status, COUNT(*) AS n FROM reviews WHERE workspace_id = ? GROUP BY status", workspaceID)
        {
            if let s = ReviewStatus(rawValue: r.text("status")) { out[s] = Int(r.int("n")) }
        }
        return out
    }

    /// Published reviews for the widgets and the feed (one product, or the whole shop), newest first, since `since`.
    public func publishedReviews(workspaceID: WorkspaceID, sku: String?, since: Date?, limit: Int) async throws
        -> [StoredReview]
    {
        var sql =
            "SELECT \(Self.reviewColumns) FROM \(Self.reviewFrom) WHERE r.workspace_id = ? AND r.status = 'published'"
        var binds: [any SQLBindable] = [workspaceID]
        if let sku {
            sql += " AND r.sku = ?"
            binds.append(sku)
        }
        if let since {
            sql += " AND r.created_at >= ?"
            binds.append(since)
        }
        sql += " ORDER BY r.created_at DESC, r.id DESC LIMIT ?"
        binds.append(limit)
        var reviews = try await db.query(sql, binds).map(Self.review)
        guard !reviews.isEmpty, limit <= 1_000 else { return reviews }
        let marks = reviews.map { _ in "?" }.joined(separator: ", ")
        var photos: [Int64: [Int64]] = [:]
        for r in try await db.query(
            "SELECT id, review_id FROM review_photos WHERE review_id IN (\(marks)) ORDER BY id",
            reviews.map { $0.id as any SQLBindable })
        {
            photos[r.int("review_id"), default: []].append(r.int("id"))
        }
        for i in reviews.indices { reviews[i].photoIDs = photos[reviews[i].id] ?? [] }
        return reviews
    }

    /// The ratings behind an aggregate: one product or the shop, published, within the period.
    public func ratingDistribution(workspaceID: WorkspaceID, sku: String?, since: Date) async throws -> [Int] {
        var sql =
            "SELECT rating, COUNT(*) AS n FROM reviews WHERE workspace_id = ? AND status = 'published' AND created_at >= ?"
        var binds: [any SQLBindable] = [workspaceID, since]
        if let sku {
            sql += " AND sku = ?"
            binds.append(sku)
        }
        var d = [0, 0, 0, 0, 0]
        for r in try await db.query(sql + " GROUP BY rating", binds) {
            let rating = Int(r.int("rating"))
            if (1...5).contains(rating) { d[rating - 1] = Int(r.int("n")) }
        }
        return d
    }

    /// Deleted review ids for the feed's `deleted_reviews`.
    public func deletedReviewIDs(workspaceID: WorkspaceID) async throws -> [Int64] {
        try await db.query(
            "SELECT id FROM reviews WHERE workspace_id = ? AND status IN ('deleted', 'hidden') ORDER BY id",
            workspaceID
        ).map { $0.int("id") }
    }

    /// A photo for the public widgets (`publishedOnly`) or for the admin's moderation (any status but deleted).
    public func reviewPhoto(workspaceID: WorkspaceID, id: Int64, publishedOnly: Bool = true) async throws -> (
        contentType: String, bytes: [UInt8]
    )? {
        guard
            let r = try await db.first(
                """
                SELECT p.content_type, p.bytes FROM review_photos p JOIN reviews r ON r.id = p.review_id
                WHERE p.workspace_id = ? AND p.id = ? AND r.status IN (\(publishedOnly ? "'published'" : "'published', 'held', 'hidden'"))
                """, workspaceID, id)
        else { return nil }
        guard case .blob(let bytes) = r["bytes"] else { return nil }
        return (r.text("content_type"), bytes)
    }

    /// The CSV import: every row labelled imported with its source, in one transaction (all or nothing). A row
    /// already imported from the same source (same product, author, date and text: the same file imported twice,
    /// or a repeated row) is skipped and counted, so the totals the widgets show do not double.
    public func importReviews(workspaceID: WorkspaceID, source: String, rows: [ImportedReview], actor: String)
        async throws -> (imported: Int, skipped: Int)
    {
        try await db.transaction { tx in
            var imported = 0
            var seen = Set<[String]>()
            for row in rows {
                let key = [row.sku, row.author, String(row.createdAt.epochMillis), row.title, row.body]
                guard seen.insert(key).inserted else { continue }
                if try await tx.scalar(
                    """
                    SELECT COUNT(*) FROM reviews WHERE workspace_id = ? AND source = 'imported' AND import_source = ?
                      AND sku = ? AND display_name = ? AND created_at = ? AND title = ? AND body = ?
                    """, workspaceID, source, row.sku, row.author, row.createdAt, row.title, row.body) > 0
                {
                    continue
                }
                imported += 1
                var n = NewReview(
                    workspaceID: workspaceID, sku: row.sku, productName: row.productName, source: .imported,
                    input: ReviewInput(rating: row.rating, title: row.title, body: row.body, displayName: row.author),
                    locale: "de")
                n.importSource = source
                n.createdAt = row.createdAt
                // Old data gets the same checks as new reviews (none of which looks at the rating).
                // The content checks of new reviews (none looks at the rating), without the minimum length.
                _ = try await saveReview(
                    tx, n,
                    moderation: ReviewModeration.check(
                        title: row.title, text: row.body, name: row.author, limits: .imported))
            }
            try await audit(
                tx, workspaceID: workspaceID, actor: actor, action: "reviews.import",
                subject: "workspace:\(workspaceID)",
                detail: "\(imported) from \(source), \(rows.count - imported) skipped")
            return (imported, rows.count - imported)
        }
    }

    /// Requests sent and reviews received per month (UTC), for the admin chart; the newest `months` months.
    public func reviewMonths(workspaceID: WorkspaceID, months: Int = 12) async throws -> [ReviewMonth] {
        let since = now.addingTimeInterval(-Double(months) * 31 * 86_400)
        var byMonth: [String: ReviewMonth] = [:]
        func month(_ d: Date) -> String { String(ISO8601.format(d).prefix(7)) }
        for r in try await db.query(
            "SELECT sent_at FROM review_requests WHERE workspace_id = ? AND sent_at >= ?", workspaceID, since)
        {
            let m = month(r.date("sent_at"))
            byMonth[
                m, default: ReviewMonth(month: m, requestsSent: 0, reviewsFromRequests: 0, reviews: 0, ratingSum: 0)
            ]
            .requestsSent += 1
        }
        for r in try await db.query(
            """
            SELECT created_at, rating, request_id FROM reviews
            WHERE workspace_id = ? AND created_at >= ? AND status <> 'deleted'
            """, workspaceID, since)
        {
            let m = month(r.date("created_at"))
            var entry =
                byMonth[m] ?? ReviewMonth(month: m, requestsSent: 0, reviewsFromRequests: 0, reviews: 0, ratingSum: 0)
            entry.reviews += 1
            entry.ratingSum += Int(r.int("rating"))
            if r.optionalInt("request_id") != nil { entry.reviewsFromRequests += 1 }
            byMonth[m] = entry
        }
        return byMonth.values.sorted { $0.month < $1.month }
    }

    /// One order with its items, by our id.
    public func order(workspaceID: WorkspaceID, id: OrderID) async throws -> Order? {
        try await loadOrder(db, workspaceID: workspaceID, id: id)
    }

    /// A product's name as last sold (or last reviewed); nil for a SKU the shop never had.
    public func productName(workspaceID: WorkspaceID, sku: String) async throws -> String? {
        if let r = try await db.first(
            "SELECT name FROM order_items WHERE workspace_id = ? AND sku = ? ORDER BY order_id DESC LIMIT 1",
            workspaceID, sku)
        {
            return r.text("name")
        }
        return try await db.first(
            "SELECT product_name FROM reviews WHERE workspace_id = ? AND sku = ? ORDER BY id DESC LIMIT 1", workspaceID,
            sku
        )?.text("product_name")
    }

    /// Requests sent, and how many of them got at least one review: the request → review rate.
    public func reviewRequestRate(workspaceID: WorkspaceID) async throws -> (sent: Int, reviewed: Int) {
        let sent = try await db.scalar(
            "SELECT COUNT(*) FROM review_requests WHERE workspace_id = ? AND sent_at IS NOT NULL", workspaceID)
        let reviewed = try await db.scalar(
            """
            SELECT COUNT(DISTINCT request_id) FROM reviews
            WHERE workspace_id = ? AND request_id IS NOT NULL AND status <> 'deleted'
            """, workspaceID)
        return (Int(sent), Int(reviewed))
    }

    // MARK: Favours

    /// A favour a customer did (a review, later a referral or an introduction), once per subject. The thank-you
    /// capability reacts to the `FavourRecorded` event.
    public func recordFavour(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, kind: String, subjectType: String,
        subjectID: Int64
    ) async throws {
        let rows = try await tx.query(
            """
            INSERT INTO favours (workspace_id, contact_id, kind, subject_type, subject_id, occurred_at)
            VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, subject_type, subject_id) DO NOTHING RETURNING id
            """, workspaceID, contactID, kind, subjectType, subjectID, now)
        guard let id = rows.first?.int("id") else { return }
        try await recordEvent(
            tx, workspaceID: workspaceID, type: "FavourRecorded", subjectType: "contact", subjectID: contactID,
            payload:
                #"{"favour_id":\#(id),"kind":"\#(JSONText.escape(kind))","subject_type":"\#(subjectType)","subject_id":\#(subjectID)}"#,
            dedupeKey: "favour:\(id)", occurredAt: now)
    }

    public func favours(workspaceID: WorkspaceID, contactID: ContactID) async throws -> [(kind: String, at: Date)] {
        try await db.query(
            "SELECT kind, occurred_at FROM favours WHERE workspace_id = ? AND contact_id = ? ORDER BY id", workspaceID,
            contactID
        ).map { ($0.text("kind"), $0.date("occurred_at")) }
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
