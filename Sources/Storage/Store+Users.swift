import Foundation
import ReciprocityCore

/// Admin users, memberships, sessions and API keys.
extension Store {
    static let userColumns = "id, email, name, password_hash, locale, must_change_password, created_at"

    static func user(_ r: SQLRow) -> AdminUser {
        AdminUser(
            id: r.int("id"), email: r.text("email"), name: r.text("name"), passwordHash: r.text("password_hash"),
            locale: r.text("locale"), mustChangePassword: r.bool("must_change_password"),
            createdAt: r.date("created_at"))
    }

    public func createUser(
        email: EmailAddress, name: String, passwordHash: String, locale: String, mustChangePassword: Bool,
        in tx: (any SQLExecutor)? = nil
    ) async throws -> AdminUser {
        do {
            let rows = try await (tx ?? db).query(
                """
                INSERT INTO users (email, name, password_hash, locale, must_change_password, created_at)
                VALUES (?, ?, ?, ?, ?, ?) RETURNING \(Self.userColumns)
                """, email.normalized, name, passwordHash, locale, mustChangePassword, now)
            return Self.user(rows[0])
        } catch StorageError.uniqueViolation {
            throw DomainError.conflict("email_taken", "A user with this email exists already.", field: "email")
        }
    }

    public func user(email: String) async throws -> AdminUser? {
        try await db.first("SELECT \(Self.userColumns) FROM users WHERE email = ?", email.lowercased())
            .map(Self.user)
    }

    public func user(id: UserID) async throws -> AdminUser? {
        try await db.first("SELECT \(Self.userColumns) FROM users WHERE id = ?", id).map(Self.user)
    }

    /// Every user of the installation, for first-run detection and the demo.
    public func allUserIDs() async throws -> [UserID] {
        try await db.query("SELECT id FROM users ORDER BY id").map { $0.int("id") }
    }

    public func setPassword(userID: UserID, hash: String, mustChange: Bool) async throws {
        let n = try await db.execute(
            "UPDATE users SET password_hash = ?, must_change_password = ? WHERE id = ?", hash, mustChange, userID)
        guard n == 1 else { throw DomainError.notFound("User") }
        // A new password ends every existing session.
        try await db.execute("DELETE FROM sessions WHERE user_id = ?", userID)
    }

    public func addMembership(workspaceID: WorkspaceID, userID: UserID, role: Role, in tx: (any SQLExecutor)? = nil)
        async throws
    {
        try await (tx ?? db).execute(
            """
            INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role
            """, workspaceID, userID, role.rawValue, now)
    }

    /// An invitation to join a workspace, waiting for its user.
    public struct Invitation: Sendable, Equatable {
        public var id: Int64
        public var workspace: Workspace
        public var role: Role
        public var createdAt: Date
    }

    /// Invites an existing user (who is not a member) to the workspace with `role`; a repeated invitation takes the
    /// new role. Audited as `user.invite`.
    public func invite(workspaceID: WorkspaceID, userID: UserID, role: Role, by inviter: UserID) async throws {
        try await db.transaction { tx in
            try await tx.execute(
                """
                INSERT INTO invitations (workspace_id, user_id, role, invited_by, created_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role, invited_by = excluded.invited_by
                """, workspaceID, userID, role.rawValue, inviter, self.now)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: "user:\(inviter)", action: "user.invite",
                subject: "user:\(userID)",
                detail: role.rawValue)
        }
    }

    /// The invitations waiting for a user, oldest first.
    public func invitations(userID: UserID) async throws -> [Invitation] {
        let cols = Self.workspaceColumns.split(separator: ", ").map { "w.\($0)" }.joined(separator: ", ")
        return try await db.query(
            """
            SELECT i.id AS invitation_id, i.role, i.created_at AS invited_at, \(cols) FROM invitations i
            JOIN workspaces w ON w.id = i.workspace_id WHERE i.user_id = ? ORDER BY i.id
            """, userID
        ).map {
            Invitation(
                id: $0.int("invitation_id"), workspace: Self.workspace($0),
                role: Role(rawValue: $0.text("role")) ?? .support,
                createdAt: $0.date("invited_at"))
        }
    }

    /// The invitations a workspace has out: who (address), which role, since when.
    public func pendingInvitations(workspaceID: WorkspaceID) async throws -> [(email: String, role: Role, since: Date)]
    {
        try await db.query(
            """
            SELECT u.email, i.role, i.created_at FROM invitations i JOIN users u ON u.id = i.user_id
            WHERE i.workspace_id = ? ORDER BY i.id
            """, workspaceID
        ).map { ($0.text("email"), Role(rawValue: $0.text("role")) ?? .support, $0.date("created_at")) }
    }

    /// The user's answer to one of their invitations: accepted, they become a member with the invited role; either
    /// way the invitation goes. Nil when the user has no such invitation (another user's, or answered already).
    public func answerInvitation(id: Int64, userID: UserID, accept: Bool) async throws -> WorkspaceID? {
        try await db.transaction { tx in
            guard
                let row = try await tx.first(
                    "SELECT workspace_id, role FROM invitations WHERE id = ? AND user_id = ?\(tx.dialect.rowLockClause)",
                    id, userID)
            else { return nil }
            let workspaceID = row.int("workspace_id")
            if accept {
                try await self.addMembership(
                    workspaceID: workspaceID, userID: userID, role: Role(rawValue: row.text("role")) ?? .support, in: tx
                )
            }
            try await tx.execute("DELETE FROM invitations WHERE id = ?", id)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: "user:\(userID)",
                action: accept ? "user.invitation.accept" : "user.invitation.decline", subject: "user:\(userID)")
            return workspaceID
        }
    }

    public func role(userID: UserID, workspaceID: WorkspaceID) async throws -> Role? {
        try await db.first("SELECT role FROM memberships WHERE user_id = ? AND workspace_id = ?", userID, workspaceID)
            .flatMap { Role(rawValue: $0.text("role")) }
    }

    public func memberships(userID: UserID) async throws -> [Membership] {
        let cols = Self.workspaceColumns.split(separator: ", ").map { "w.\($0)" }.joined(separator: ", ")
        return try await db.query(
            "SELECT \(cols), m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id WHERE m.user_id = ? ORDER BY w.name",
            userID
        ).map { Membership(workspace: Self.workspace($0), role: Role(rawValue: $0.text("role")) ?? .support) }
    }

    public struct Member: Sendable, Equatable {
        public var user: AdminUser
        public var role: Role
    }

    public func members(workspaceID: WorkspaceID) async throws -> [Member] {
        let cols = Self.userColumns.split(separator: ", ").map { "u.\($0)" }.joined(separator: ", ")
        return try await db.query(
            "SELECT \(cols), m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ? ORDER BY u.email",
            workspaceID
        ).map { Member(user: Self.user($0), role: Role(rawValue: $0.text("role")) ?? .support) }
    }

    // MARK: Sessions

    public struct Session: Sendable, Equatable {
        public var userID: UserID
        public var workspaceID: WorkspaceID
        public var csrfToken: String
        public var expiresAt: Date
    }

    public func createSession(
        tokenHash: String, userID: UserID, workspaceID: WorkspaceID, csrfToken: String, expiresAt: Date
    ) async throws {
        try await db.execute(
            "INSERT INTO sessions (token_hash, user_id, workspace_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            tokenHash, userID, workspaceID, csrfToken, now, expiresAt)
    }

    public func session(tokenHash: String) async throws -> Session? {
        try await db.first(
            "SELECT user_id, workspace_id, csrf_token, expires_at FROM sessions WHERE token_hash = ? AND expires_at > ?",
            tokenHash, now
        ).map {
            Session(
                userID: $0.int("user_id"), workspaceID: $0.int("workspace_id"), csrfToken: $0.text("csrf_token"),
                expiresAt: $0.date("expires_at"))
        }
    }

    public func switchSession(tokenHash: String, to workspaceID: WorkspaceID) async throws {
        try await db.execute("UPDATE sessions SET workspace_id = ? WHERE token_hash = ?", workspaceID, tokenHash)
    }

    public func deleteSession(tokenHash: String) async throws {
        try await db.execute("DELETE FROM sessions WHERE token_hash = ?", tokenHash)
    }

    @discardableResult
    public func purgeExpiredSessions(in tx: (any SQLExecutor)? = nil) async throws -> Int {
        try await (tx ?? db).execute("DELETE FROM sessions WHERE expires_at <= ?", now)
    }

    // MARK: API keys

    static let apiKeyColumns = "id, workspace_id, name, prefix, scope, created_at, last_used_at, revoked_at"

    static func apiKey(_ r: SQLRow) -> APIKey {
        APIKey(
            id: r.int("id"), workspaceID: r.int("workspace_id"), name: r.text("name"), prefix: r.text("prefix"),
            scope: APIScope(rawValue: r.text("scope")) ?? .read, createdAt: r.date("created_at"),
            lastUsedAt: r.optionalDate("last_used_at"), revokedAt: r.optionalDate("revoked_at"))
    }

    public func createAPIKey(
        workspaceID: WorkspaceID, name: String, prefix: String, secretHash: String, scope: APIScope,
        in tx: (any SQLExecutor)? = nil
    ) async throws -> APIKey {
        let rows = try await (tx ?? db).query(
            """
            INSERT INTO api_keys (workspace_id, name, prefix, secret_hash, scope, created_at)
            VALUES (?, ?, ?, ?, ?, ?) RETURNING \(Self.apiKeyColumns)
            """, workspaceID, name, prefix, secretHash, scope.rawValue, now)
        return Self.apiKey(rows[0])
    }

    /// The key with this prefix and its secret hash; revoked keys are returned too, so callers can say why. Read
    /// through `APIKeyCache`: a revocation elsewhere shows here within a second.
    public func apiKey(prefix: String) async throws -> (key: APIKey, secretHash: String)? {
        if let cached = apiKeyCache.get(prefix) { return cached }
        guard
            let row = try await db.first(
                "SELECT \(Self.apiKeyColumns), secret_hash FROM api_keys WHERE prefix = ?", prefix)
        else { return nil }
        let found = (key: Self.apiKey(row), secretHash: row.text("secret_hash"))
        apiKeyCache.put(found.key, secretHash: found.secretHash)
        return found
    }

    public func apiKeys(workspaceID: WorkspaceID) async throws -> [APIKey] {
        try await db.query(
            "SELECT \(Self.apiKeyColumns) FROM api_keys WHERE workspace_id = ? ORDER BY id DESC", workspaceID
        ).map(Self.apiKey)
    }

    /// Records that `key` was used, when due (`APIKey.lastUseIsDue`). The condition is repeated in SQL so that
    /// several nodes racing on one key still write once per period.
    public func recordUse(of key: APIKey) async throws {
        let current = now
        guard key.lastUseIsDue(at: current) else { return }
        try await db.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
            current, key.id, current.addingTimeInterval(-APIKey.lastUseResolution))
        // Written here or, in the same period, by another node: either way not due again for a while.
        apiKeyCache.noteUse(of: key, at: current)
    }

    /// Revokes a key of this workspace. Returns false if there is no such key here (another workspace's is unknown).
    public func revokeAPIKey(workspaceID: WorkspaceID, id: Int64, actor: String) async throws -> Bool {
        defer { apiKeyCache.drop(id: id) }
        return try await db.transaction { tx in
            let n = try await tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL", now,
                id, workspaceID)
            if n == 1 {
                try await audit(
                    tx, workspaceID: workspaceID, actor: actor, action: "apikey.revoke", subject: "apikey:\(id)")
            }
            return n == 1
        }
    }
}
