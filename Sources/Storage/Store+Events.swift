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
        let rows = try await tx.query(
            """
            INSERT INTO domain_events (workspace_id, type, subject_type, subject_id, payload, dedupe_key, occurred_at,
              recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
            """, workspaceID, type, subjectType, subjectID, payload, dedupeKey, occurredAt, now)
        guard let id = rows.first?.int("id") else { return nil }
        let event = DomainEvent(
            id: id, workspaceID: workspaceID, type: type, subjectType: subjectType, subjectID: subjectID,
            payload: payload, occurredAt: occurredAt)
        for kind in subscriptions.subscribers(of: type) {
            try await enqueue(
                tx,
                JobRequest(
                    kind: kind, workspaceID: workspaceID, payload: #"{"event_id":\#(id)}"#,
                    idempotencyKey: "event:\(id):\(kind)"))
        }
        return event
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
