import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// Asking for reviews: an order that was shipped or delivered gets a request scheduled; at the due time the
/// planner decides whether to ask (and about which items), and one mail per order goes into the outbox; one
/// reminder follows only if nothing was reviewed.
///
/// The send step composes outside any transaction (the composer reads settings and templates), then writes the
/// outbox row and the request's new state in one transaction that only succeeds from `scheduled`: a request is
/// sent at most once even if two workers run its job.
public struct ReviewRequests: Sendable {
    public let store: Store
    public let mailer: Mailer
    public let links: ReviewLinks
    public let logger: Logger

    public init(store: Store, mailer: Mailer, links: ReviewLinks, logger: Logger) {
        self.store = store
        self.mailer = mailer
        self.links = links
        self.logger = logger
    }

    /// The domain events that schedule a request.
    public static let triggers = [OrderStatus.shipped.eventType, OrderStatus.delivered.eventType]

    /// `reviews.schedule`: runs in the job's transaction, for an `OrderShipped`/`OrderDelivered` event.
    public func schedule(eventID: Int64, tx: any SQLExecutor) async throws {
        guard
            let row = try await tx.first(
                "SELECT workspace_id, subject_id FROM domain_events WHERE id = ? AND subject_type = 'order'", eventID)
        else { return }
        try await store.scheduleReviewRequest(tx, workspaceID: row.int("workspace_id"), orderID: row.int("subject_id"))
    }

    public enum Outcome: Equatable, Sendable {
        case sent(outboxID: Int64)
        case skipped(ReviewRequestSkip)
        /// Nothing to do: already handled, or re-timed to later (a newer job will run then).
        case notDue
    }

    struct LostRace: Error {}

    /// `reviews.request`: decide and send.
    @discardableResult
    public func send(requestID: Int64) async throws -> Outcome {
        guard var request = try await store.reviewRequest(id: requestID), request.state == .scheduled else {
            return .notDue
        }
        let now = store.clock.now()
        guard request.dueAt <= now.addingTimeInterval(1) else { return .notDue }
        let settings = try await store.reviewSettings(workspaceID: request.workspaceID)
        if now.timeIntervalSince(request.dueAt) > settings.timing.maxLateness {
            return try await skip(request, .tooOld)
        }
        guard
            let facts = try await store.reviewRequestFacts(
                store.db, request, window: settings.timing.sameProductWindow)
        else { return .notDue }
        // The order's customer now: the shop may have corrected the address since the request was scheduled.
        let scheduledFor = request.contactID
        request.contactID = facts.contact.id
        let plan = ReviewRequestPlanner.plan(
            status: facts.order.status, consentGranted: facts.consentGranted,
            existingCustomerModeApplies: facts.existingCustomerModeApplies, objected: facts.objected,
            items: ReviewRequestPlanner.items(of: facts.order), askedRecently: facts.askedRecently,
            capReached: facts.capReached)
        switch plan {
        case .failure(let reason):
            return try await skip(request, reason.skip)
        case .success(let items):
            guard let draft = try await draft(.reviewRequest, request, facts, items, settings) else { return .notDue }
            return try await commit(draft, request, from: .scheduled, to: .sent) { [request] tx in
                if request.contactID != scheduledFor {
                    try await store.setReviewRequestContact(tx, id: request.id, contactID: request.contactID)
                }
                try await store.recordAskedItems(tx, request, items: items)
                try await store.setReviewRequestIncentive(tx, id: request.id, incentive: settings.incentive)
                if let due = settings.timing.reminderDue(requestSentAt: now) {
                    try await store.enqueue(
                        tx,
                        JobRequest(
                            kind: Store.reviewReminderJob, workspaceID: request.workspaceID,
                            payload: #"{"request_id":\#(request.id)}"#, runAt: due,
                            idempotencyKey: "review-reminder:\(request.id)"))
                }
            }
        }
    }

    func skip(_ request: ReviewRequestRecord, _ reason: ReviewRequestSkip) async throws -> Outcome {
        _ = try await store.db.transaction { tx in
            try await store.transitionReviewRequest(
                tx, id: request.id, from: .scheduled, to: .skipped, skipReason: reason.rawValue)
        }
        logger.info(
            "review request skipped",
            metadata: ["request": "\(request.id)", "order": "\(request.orderID)", "reason": "\(reason.rawValue)"])
        return .skipped(reason)
    }

    /// `reviews.reminder`: once, only when nothing was reviewed, and only if asking is still allowed (the order
    /// may have been returned, or the person may have objected, since).
    @discardableResult
    public func remind(requestID: Int64) async throws -> Outcome {
        guard let request = try await store.reviewRequest(id: requestID), request.state == .sent else { return .notDue }
        let settings = try await store.reviewSettings(workspaceID: request.workspaceID)
        guard settings.timing.remindersEnabled, try await store.reviewCount(requestID: request.id) == 0,
            let facts = try await store.reviewRequestFacts(store.db, request, window: 0)
        else { return .notDue }
        let items = ReviewRequestPlanner.items(try await store.askedItems(requestID: request.id), keptIn: facts.order)
        let plan = ReviewRequestPlanner.plan(
            status: facts.order.status, consentGranted: facts.consentGranted,
            existingCustomerModeApplies: facts.existingCustomerModeApplies, objected: facts.objected, items: items,
            askedRecently: [], capReached: facts.capReached)
        guard case .success(let asked) = plan else {
            if case .failure(let reason) = plan {
                try await store.db.transaction { tx in
                    try await store.noteReviewRequest(tx, id: request.id, reason: "reminder: \(reason.skip.rawValue)")
                }
                return .skipped(reason.skip)
            }
            return .notDue
        }
        guard let draft = try await draft(.reviewReminder, request, facts, asked, settings) else { return .notDue }
        return try await commit(draft, request, from: .sent, to: .reminded) { _ in }
    }

    /// The mail for a request or reminder, composed outside any transaction, with fresh links.
    func draft(
        _ kind: MessageKind, _ request: ReviewRequestRecord, _ facts: Store.ReviewRequestFacts,
        _ items: [ReviewRequestPlanner.Item], _ settings: ReviewSettings
    ) async throws -> OutboxDraft? {
        guard let workspace = try await store.workspace(id: request.workspaceID) else { return nil }
        let expires = store.clock.now().addingTimeInterval(settings.tokenLifetime)
        return try await mailer.draft(
            workspace: workspace, kind: kind, to: try MailRecipient(facts.contact),
            values: values(request: request, order: facts.order, items: items, expires: expires))
    }

    /// Writes the mail and moves the request on, in one transaction that only succeeds from `from`: a second
    /// worker on the same job writes nothing.
    func commit(
        _ draft: OutboxDraft, _ request: ReviewRequestRecord, from: ReviewRequestState, to: ReviewRequestState,
        also: @escaping @Sendable (any SQLExecutor) async throws -> Void
    ) async throws -> Outcome {
        do {
            let id = try await store.db.transaction { tx in
                // The order may have been returned or cancelled while the mail was composed (under the order's row
                // lock on PostgreSQL, so a return that commits first is seen).
                if let ended = try await store.endedOrderStatus(
                    tx, workspaceID: request.workspaceID, id: request.orderID)
                {
                    throw OrderEnded(skip: ended == .returned ? .orderReturned : .orderCancelled)
                }
                // Erased since the draft was made: nothing is written (the transition below would have no mail).
                guard let id = try await store.enqueueMailUnlessErased(tx, draft),
                    try await store.transitionReviewRequest(tx, id: request.id, from: from, to: to, outboxID: id)
                else { throw LostRace() }
                try await also(tx)
                return id
            }
            return .sent(outboxID: id)
        } catch is LostRace {
            return .notDue
        } catch let ended as OrderEnded {
            if from == .scheduled { return try await skip(request, ended.skip) }
            try await store.db.transaction { tx in
                try await store.noteReviewRequest(tx, id: request.id, reason: "reminder: \(ended.skip.rawValue)")
            }
            return .skipped(ended.skip)
        }
    }

    struct OrderEnded: Error { var skip: ReviewRequestSkip }

    func values(request: ReviewRequestRecord, order: Order, items: [ReviewRequestPlanner.Item], expires: Date)
        -> [String: Any]
    {
        [
            "order": ["number": order.externalID],
            "items": items.map { item -> [String: Any] in
                [
                    "name": item.name,
                    "review_url": links.url(
                        workspaceID: request.workspaceID, requestID: request.id, sku: item.sku, expires: expires),
                ]
            },
        ]
    }
}

/// The signed link to one item's review form: workspace, request and SKU, with an expiry. The MAC is 128 bits.
public struct ReviewLinks: Sendable {
    public let store: Store
    public let baseURL: String
    public static let purpose = "review"

    public init(store: Store, baseURL: String) {
        self.store = store
        self.baseURL = baseURL
    }

    public func token(workspaceID: WorkspaceID, requestID: Int64, sku: String, expires: Date) -> String {
        store.signToken(
            purpose: Self.purpose,
            fields: [String(workspaceID), String(requestID), Base64URL.encode(Array(sku.utf8))], expiresAt: expires)
    }

    public func url(workspaceID: WorkspaceID, requestID: Int64, sku: String, expires: Date) -> String {
        baseURL + "/review/" + token(workspaceID: workspaceID, requestID: requestID, sku: sku, expires: expires)
    }

    public struct Target: Sendable, Equatable {
        public var workspaceID: WorkspaceID
        public var requestID: Int64
        public var sku: String
    }

    public enum Resolved: Sendable, Equatable {
        case valid(Target)
        case expired(Target)
        case invalid
    }

    public func resolve(_ token: String) -> Resolved {
        func target(_ f: [String]) -> Target? {
            guard f.count == 3, let ws = Int64(f[0]), let req = Int64(f[1]), let sku = Base64URL.decode(f[2]) else {
                return nil
            }
            return Target(workspaceID: ws, requestID: req, sku: String(decoding: sku, as: UTF8.self))
        }
        switch store.checkToken(token, purpose: Self.purpose) {
        case .valid(let f): return target(f).map(Resolved.valid) ?? .invalid
        case .expired(let f): return target(f).map(Resolved.expired) ?? .invalid
        case .invalid: return .invalid
        }
    }
}
