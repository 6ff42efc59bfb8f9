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

/// Settings forms that two people may have open at once: the version a form was read at (`updated_at` of the
/// row, 0 before the first save) goes back with it, and a save whose version is no longer the row's is refused,
/// instead of silently undoing the other person's changes (a lost update).
public enum SettingsTable: String, Sendable {
    case reviews = "review_settings"
    case referrals = "referral_programmes"
    case mail = "mail_settings"
}

extension Store {
    /// The version of a workspace's settings row (its `updated_at` in milliseconds; 0 when never saved).
    public func settingsVersion(_ table: SettingsTable, workspaceID: WorkspaceID) async throws -> Int64 {
        try await db.first("SELECT updated_at FROM \(table.rawValue) WHERE workspace_id = ?", workspaceID)?
            .int("updated_at") ?? 0
    }

    /// In a save's transaction: refuses it (409 `settings_changed`) when the row is no longer at `seen`. On
    /// PostgreSQL the workspace's row is locked first, so two saves of the same version (a first save included)
    /// cannot both pass; SQLite's writer is one at a time.
    func requireSettingsVersion(_ tx: any SQLExecutor, _ table: SettingsTable, workspaceID: WorkspaceID, seen: Int64?)
        async throws
    {
        try await requireVersion(tx, table.rawValue, workspaceID: workspaceID, seen: seen)
    }

    /// `requireSettingsVersion` for any row of `table` that `filter` (more binds after the workspace id) picks.
    func requireVersion(
        _ tx: any SQLExecutor, _ table: String, workspaceID: WorkspaceID, filter: String = "",
        _ binds: [any SQLBindable] = [], seen: Int64?
    ) async throws {
        guard let seen else { return }
        // The workspace's row is the lock on PostgreSQL: the settings row may not exist yet (a first save).
        if tx.dialect == .postgres {
            _ = try await tx.first("SELECT id FROM workspaces WHERE id = ? FOR UPDATE", workspaceID)
        }
        let current =
            try await tx.query(
                "SELECT updated_at FROM \(table) WHERE workspace_id = ?\(filter)\(tx.dialect.rowLockClause)",
                [workspaceID] + binds
            ).first?.int("updated_at") ?? 0
        guard current == seen else {
            throw DomainError.conflict(
                "settings_changed",
                "Someone saved these settings after this page was opened. Nothing was saved: reload the page to see "
                    + "their changes, then make yours again.")
        }
    }
}
