import Foundation
import ReciprocityCore

extension Store {
    static let workspaceColumns =
        "id, slug, name, locale, time_zone, sender_name, sender_email, imprint_url, privacy_url, created_at"

    static func workspace(_ r: SQLRow) -> Workspace {
        Workspace(
            id: r.int("id"), slug: r.text("slug"), name: r.text("name"), locale: r.text("locale"),
            timeZone: r.text("time_zone"), senderName: r.text("sender_name"), senderEmail: r.text("sender_email"),
            imprintURL: r.text("imprint_url"), privacyURL: r.text("privacy_url"), createdAt: r.date("created_at"))
    }

    public func createWorkspace(_ w: NewWorkspace, in tx: (any SQLExecutor)? = nil) async throws -> Workspace {
        let executor: any SQLExecutor = tx ?? db
        do {
            let rows = try await executor.query(
                """
                INSERT INTO workspaces (slug, name, locale, time_zone, sender_name, sender_email, imprint_url,
                  privacy_url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING \(Self.workspaceColumns)
                """, w.slug, w.name, w.locale, w.timeZone, w.senderName, w.senderEmail, w.imprintURL, w.privacyURL,
                now)
            return Self.workspace(rows[0])
        } catch StorageError.uniqueViolation {
            throw DomainError.conflict(
                "slug_taken", "A workspace with the slug '\(w.slug)' exists already.",
                field: "slug")
        }
    }

    public func workspace(id: WorkspaceID) async throws -> Workspace? {
        try await db.first("SELECT \(Self.workspaceColumns) FROM workspaces WHERE id = ?", id).map(Self.workspace)
    }

    public func workspace(slug: String) async throws -> Workspace? {
        try await db.first("SELECT \(Self.workspaceColumns) FROM workspaces WHERE slug = ?", slug.lowercased())
            .map(Self.workspace)
    }

    public func workspaces() async throws -> [Workspace] {
        try await db.query("SELECT \(Self.workspaceColumns) FROM workspaces ORDER BY name").map(Self.workspace)
    }

    public func workspaceCount() async throws -> Int { Int(try await db.scalar("SELECT COUNT(*) FROM workspaces")) }
}
