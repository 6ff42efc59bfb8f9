import Foundation
import ReciprocityCore

/// Which job kinds react to which domain event types. Later capabilities register here
/// (reviews: `OrderDelivered` → `reviews.schedule`); every subscriber gets its own job, in the same transaction
/// as the change that raised the event.
public struct EventSubscriptions: Sendable {
    public private(set) var byType: [String: [String]] = [:]
    public init() {}
    public mutating func subscribe(_ jobKind: String, to eventType: String) {
        byType[eventType, default: []].append(jobKind)
    }
    public func subscribers(of type: String) -> [String] { byType[type] ?? [] }
}

public struct DomainEvent: Sendable, Equatable, Codable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var type: String
    public var subjectType: String
    public var subjectID: Int64
    public var payload: String
    public var occurredAt: Date
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
        for chunk in MultiRow.chunks(rows: drafts.count, columns: 8, dialect: tx.dialect) {
            var binds: [any SQLBindable] = []
            binds.reserveCapacity(chunk.range.count * 8)
            for d in drafts[chunk.range] {
                binds += [d.workspaceID, d.type, d.subjectType, d.subjectID, d.payload, d.dedupeKey, d.occurredAt, t]
            }
            let rows = try await tx.query(
                """
                INSERT INTO domain_events (workspace_id, type, subject_type, subject_id, payload, dedupe_key, occurred_at,
                  recorded_at) VALUES \(chunk.marks)
                ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key
                """, binds)
            for r in rows { ids[r.text("dedupe_key")] = r.int("id") }
        }
        let events = drafts.compactMap { d in
            ids.removeValue(forKey: d.dedupeKey).map {
                DomainEvent(
                    id: $0, workspaceID: d.workspaceID, type: d.type, subjectType: d.subjectType,
                    subjectID: d.subjectID, payload: d.payload, occurredAt: d.occurredAt)
            }
        }
        let jobs = events.flatMap { event in
            subscriptions.subscribers(of: event.type).map { kind in
                JobRequest(
                    kind: kind, workspaceID: event.workspaceID, payload: #"{"event_id":\#(event.id)}"#,
                    idempotencyKey: "event:\(event.id):\(kind)")
            }
        }
        _ = try await enqueue(tx, jobs)
        return events
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

    public init(
        workspaceID: WorkspaceID, type: String, subjectType: String, subjectID: Int64, payload: String,
        dedupeKey: String, occurredAt: Date
    ) {
        self.workspaceID = workspaceID
        self.type = type
        self.subjectType = subjectType
        self.subjectID = subjectID
        self.payload = payload
        self.dedupeKey = dedupeKey
        self.occurredAt = occurredAt
    }
}
