import Foundation
import ReciprocityCore

/// Which job kinds react to which domain event types. Later capabilities register here
/// (reviews: `OrderDelivered` → `reviews.schedule`); every subscriber gets its own job, in the same transaction
/// as the change that raised the event.
///
/// A subscriber may ask only for events that carry one of some tags (`EventDraft.tags`): facts of the subject
/// that decide whether the job could do anything, so that no job is enqueued, claimed and completed for nothing.
public struct EventSubscriptions: Sendable {
    public struct Subscriber: Sendable, Equatable {
        public var jobKind: String
        /// The event must carry at least one of these tags; nil takes every event of the type.
        public var anyOfTags: Set<String>?
    }

    public private(set) var byType: [String: [Subscriber]] = [:]
    public init() {}
    public mutating func subscribe(_ jobKind: String, to eventType: String, ifTaggedWithAnyOf tags: Set<String>? = nil)
    {
        byType[eventType, default: []].append(Subscriber(jobKind: jobKind, anyOfTags: tags))
    }
    /// The job kinds an event of the type with these tags fans out to.
    public func subscribers(of type: String, tags: Set<String>) -> [String] {
        (byType[type] ?? []).compactMap { s in
            s.anyOfTags.map { $0.isDisjoint(with: tags) } == true ? nil : s.jobKind
        }
    }
}

public struct DomainEvent: Sendable, Equatable, Codable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var type: String
    public var subjectType: String
    public var subjectID: Int64
    public var payload: String
    public var occurredAt: Date
    /// The job kinds its recording enqueued: known to the change that recorded it, empty for an event read later.
    public var jobKinds: [String] = []
}

extension Store {
    /// Records an event once (the dedupe key makes a repeat a no-op) and enqueues one job per subscriber.
    /// Returns the event, or nil if it had been recorded before.
    @discardableResult
    public func recordEvent(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, type: String, subjectType: String, subjectID: Int64,
        payload: String, dedupeKey: String, occurredAt: Date
    ) async throws -> DomainEvent? {
        try await recordEvents(
            tx,
            [
                EventDraft(
                    workspaceID: workspaceID, type: type, subjectType: subjectType, subjectID: subjectID,
                    payload: payload, dedupeKey: dedupeKey, occurredAt: occurredAt)
            ]
        ).first
    }

    /// Records events, each at most once by its dedupe key, and enqueues their subscribers' jobs in the same
    /// transaction. Answers the events recorded now (not those recorded before), in the drafts' order.
    public func recordEvents(_ tx: any SQLExecutor, _ drafts: [EventDraft]) async throws -> [DomainEvent] {
        let t = now
        var ids: [String: Int64] = [:]
        for chunk in MultiRow.inserts(
            rows: drafts.count, types: [.int, .text, .text, .int, .text, .text, .int, .int, .text], dialect: tx.dialect,
            row: {
                let d = drafts[$0]
                return [
                    d.workspaceID, d.type, d.subjectType, d.subjectID, d.payload, d.dedupeKey, d.occurredAt, t,
                    Self.tagList(d.tags),
                ]
            })
        {
            let rows = try await tx.query(
                """
                INSERT INTO domain_events (workspace_id, type, subject_type, subject_id, payload, dedupe_key, occurred_at,
                  recorded_at, tags) \(chunk.source)
                ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key
                """, chunk.binds)
            for r in rows { ids[r.text("dedupe_key")] = r.int("id") }
        }
        let events = drafts.compactMap { d in
            ids.removeValue(forKey: d.dedupeKey).map {
                DomainEvent(
                    id: $0, workspaceID: d.workspaceID, type: d.type, subjectType: d.subjectType,
                    subjectID: d.subjectID, payload: d.payload, occurredAt: d.occurredAt,
                    jobKinds: subscriptions.subscribers(of: d.type, tags: d.tags))
            }
        }
        let jobs = events.flatMap { event in
            event.jobKinds.map { Self.subscriberJob(kind: $0, workspaceID: event.workspaceID, eventID: event.id) }
        }
        _ = try await enqueue(tx, jobs)
        return events
    }

    /// An event's subject carries `tags` now, which the event may not have carried when it was recorded (an order
    /// that names a coupon only in a later update). Adds them to the event's tags and enqueues the subscribers they
    /// admit that its earlier tags did not, in the caller's transaction. An event's tags only grow, so each
    /// subscriber's job is enqueued at most once per event, also after the job row has been purged.
    ///
    /// `known`: tags the subject carried before this change. The event already has their subscribers, so when the
    /// new tags admit no other, nothing is read or written. Answers the kinds it enqueued.
    func fanOut(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, eventType: String, dedupeKey: String, tags: Set<String>,
        known: Set<String>
    ) async throws -> [String] {
        guard
            subscriptions.subscribers(of: eventType, tags: tags.union(known))
                != subscriptions.subscribers(of: eventType, tags: known),
            let event = try await tx.first(
                "SELECT id, tags FROM domain_events WHERE dedupe_key = ? AND workspace_id = ?", dedupeKey, workspaceID)
        else { return [] }
        let had = Self.tags(event.text("tags"))
        guard !tags.isSubset(of: had) else { return [] }
        let before = subscriptions.subscribers(of: eventType, tags: had)
        let kinds = subscriptions.subscribers(of: eventType, tags: had.union(tags)).filter { !before.contains($0) }
        let eventID = event.int("id")
        try await tx.execute(
            "UPDATE domain_events SET tags = ? WHERE id = ?", Self.tagList(had.union(tags)), eventID)
        let ids = try await enqueue(
            tx, kinds.map { Self.subscriberJob(kind: $0, workspaceID: workspaceID, eventID: eventID) })
        return zip(kinds, ids).compactMap { kind, id in id.map { _ in kind } }
    }

    /// Tags as stored: sorted and comma-separated, '' for none.
    static func tagList(_ tags: Set<String>) -> String { tags.sorted().joined(separator: ",") }
    static func tags(_ list: String) -> Set<String> {
        Set(list.split(separator: ",").map(String.init))
    }

    /// The job a subscriber gets for an event: once per event and kind.
    static func subscriberJob(kind: String, workspaceID: WorkspaceID, eventID: Int64) -> JobRequest {
        JobRequest(
            kind: kind, workspaceID: workspaceID, payload: #"{"event_id":\#(eventID)}"#,
            idempotencyKey: "event:\(eventID):\(kind)")
    }

    public func events(workspaceID: WorkspaceID, subjectType: String, subjectID: Int64) async throws -> [DomainEvent] {
        try await db.query(
            """
            SELECT id, workspace_id, type, subject_type, subject_id, payload, occurred_at FROM domain_events
            WHERE workspace_id = ? AND subject_type = ? AND subject_id = ? ORDER BY id
            """, workspaceID, subjectType, subjectID
        ).map(Self.event)
    }

    public func event(id: Int64) async throws -> DomainEvent? {
        try await db.first(
            "SELECT id, workspace_id, type, subject_type, subject_id, payload, occurred_at FROM domain_events WHERE id = ?",
            id
        ).map(Self.event)
    }

    static func event(_ r: SQLRow) -> DomainEvent {
        DomainEvent(
            id: r.int("id"), workspaceID: r.int("workspace_id"), type: r.text("type"),
            subjectType: r.text("subject_type"), subjectID: r.int("subject_id"), payload: r.text("payload"),
            occurredAt: r.date("occurred_at"))
    }
}

/// An event to record: what happened to which subject, once per dedupe key.
public struct EventDraft: Sendable {
    public var workspaceID: WorkspaceID
    public var type: String
    public var subjectType: String
    public var subjectID: Int64
    public var payload: String
    public var dedupeKey: String
    public var occurredAt: Date
    /// Facts of the subject that subscribers may filter on (`EventSubscriptions.subscribe(_:to:ifTaggedWithAnyOf:)`).
    /// Kept with the event, so that tags the subject gains later fan out once (`Store.fanOut`).
    public var tags: Set<String>

    public init(
        workspaceID: WorkspaceID, type: String, subjectType: String, subjectID: Int64, payload: String,
        dedupeKey: String, occurredAt: Date, tags: Set<String> = []
    ) {
        self.tags = tags
        self.workspaceID = workspaceID
        self.type = type
        self.subjectType = subjectType
        self.subjectID = subjectID
        self.payload = payload
        self.dedupeKey = dedupeKey
        self.occurredAt = occurredAt
    }
}
