import Foundation
import HummingbirdBcrypt
import ReciprocityCore
import Storage

/// What the CLI commands do, as functions tests call. Each returns what the command prints.
public enum Commands {
    public static func migrate(_ rt: Runtime) async throws -> String {
        let applied = try await Migrator.migrate(rt.db, logger: rt.logger, clock: rt.clock)
        let version = try await Migrator.currentVersion(rt.db)
        return applied.isEmpty
            ? "Schema is current (version \(version))."
            : "Applied \(applied.map { "\($0.id) \($0.name)" }.joined(separator: ", ")); schema version \(version)."
    }

    public static func createWorkspace(
        _ rt: Runtime, slug: String, name: String, senderEmail: String, senderName: String?, locale: String,
        timeZone: String, imprintURL: String, privacyURL: String
    ) async throws -> Workspace {
        try await rt.store.createWorkspace(
            NewWorkspace(
                slug: slug, name: name, locale: locale, timeZone: timeZone, senderName: senderName,
                senderEmail: senderEmail, imprintURL: imprintURL, privacyURL: privacyURL))
    }

    static func workspace(_ rt: Runtime, _ slug: String) async throws -> Workspace {
        guard let w = try await rt.store.workspace(slug: slug) else {
            throw DomainError.invalid(
                "workspace_unknown", "There is no workspace with the slug '\(slug)'.", field: "workspace")
        }
        return w
    }

    /// Creates a user (or adds an existing one) with a role in a workspace. Without a password, a one-time password
    /// is generated and must be changed at first login. Returns the one-time password, if one was made.
    public static func createUser(
        _ rt: Runtime, workspace slug: String, email: String, name: String?, role: Role, password: String?
    ) async throws -> (user: AdminUser, oneTimePassword: String?) {
        let w = try await workspace(rt, slug)
        let address = try EmailAddress(email)
        if let password { try PasswordPolicy.validate(password) }
        let generated = password == nil ? rt.random.token(bytes: 12) : nil
        let user: AdminUser
        if let existing = try await rt.store.user(email: address.normalized) {
            user = existing
        } else {
            user = try await rt.store.createUser(
                email: address, name: name ?? address.raw,
                passwordHash: Bcrypt.hash(password ?? generated!, cost: UInt8(rt.config.bcryptCost)), locale: w.locale,
                mustChangePassword: password == nil)
        }
        try await rt.db.transaction { tx in
            try await rt.store.addMembership(workspaceID: w.id, userID: user.id, role: role, in: tx)
            try await rt.store.audit(
                tx, workspaceID: w.id, actor: "cli", action: "user.add", subject: "user:\(user.id)",
                detail: role.rawValue)
        }
        return (user, user.mustChangePassword ? generated : nil)
    }

    /// Sets a new one-time password (or the given one) and ends the user's sessions.
    public static func resetPassword(_ rt: Runtime, email: String, password: String?) async throws -> String? {
        guard let user = try await rt.store.user(email: email) else {
            throw DomainError.invalid("user_unknown", "There is no user with the email '\(email)'.", field: "email")
        }
        if let password { try PasswordPolicy.validate(password) }
        let generated = password == nil ? rt.random.token(bytes: 12) : nil
        try await rt.store.setPassword(
            userID: user.id, hash: Bcrypt.hash(password ?? generated!, cost: UInt8(rt.config.bcryptCost)),
            mustChange: password == nil)
        return generated
    }

    public static func createAPIKey(_ rt: Runtime, workspace slug: String, name: String, scope: APIScope) async throws
        -> (key: APIKey, plaintext: String)
    {
        let w = try await workspace(rt, slug)
        return try await APIKeys.issue(
            store: rt.store, random: rt.random, workspaceID: w.id, name: name, scope: scope, actor: "cli")
    }

    public static func revokeAPIKey(_ rt: Runtime, prefix: String) async throws {
        let bare =
            prefix.hasPrefix(APIKeyFormat.marker)
            ? String(prefix.dropFirst(APIKeyFormat.marker.count).prefix(8)) : String(prefix.prefix(8))
        guard let (key, _) = try await rt.store.apiKey(prefix: bare) else {
            throw DomainError.invalid(
                "apikey_unknown", "There is no API key with the prefix '\(prefix)'.", field: "prefix")
        }
        _ = try await rt.store.revokeAPIKey(workspaceID: key.workspaceID, id: key.id, actor: "cli")
    }

    public static func exportContact(_ rt: Runtime, workspace slug: String, email: String) async throws -> String {
        let w = try await workspace(rt, slug)
        guard let c = try await rt.store.contact(workspaceID: w.id, email: try EmailAddress(email)) else {
            throw DomainError.notFound("Contact")
        }
        let export = try await rt.store.exportContact(workspaceID: w.id, contactID: c.id)
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(export), as: UTF8.self)
    }

    public static func eraseContact(_ rt: Runtime, workspace slug: String, email: String) async throws {
        let (w, c) = try await contact(rt, workspace: slug, email: email)
        try await rt.store.erase(workspaceID: w.id, contactID: c.id, actor: "cli")
    }

    /// Records an objection (Art. 21): every consent withdrawn, the address blocked for marketing for good.
    public static func objectContact(_ rt: Runtime, workspace slug: String, email: String) async throws {
        let (w, c) = try await contact(rt, workspace: slug, email: email)
        try await rt.store.object(workspaceID: w.id, contactID: c.id, actor: "cli")
    }

    static func contact(_ rt: Runtime, workspace slug: String, email: String) async throws -> (Workspace, Contact) {
        let w = try await workspace(rt, slug)
        guard let c = try await rt.store.contact(workspaceID: w.id, email: try EmailAddress(email)) else {
            throw DomainError.notFound("Contact")
        }
        return (w, c)
    }

    /// First run: with no user at all, creates a workspace (if none) and an owner with a one-time password.
    /// Returns the lines to print, or nil when the installation is set up already.
    public static func firstRun(_ rt: Runtime) async throws -> [String]? {
        guard try await rt.store.allUserIDs().isEmpty else { return nil }
        let workspace: Workspace
        if let existing = try await rt.store.workspaces().first {
            workspace = existing
        } else {
            workspace = try await rt.store.createWorkspace(
                NewWorkspace(slug: "shop", name: "Mein Shop", senderEmail: "shop@example.com"))
        }
        let email = "owner@example.com"
        let (_, password) = try await createUser(
            rt, workspace: workspace.slug, email: email, name: "Owner", role: .owner, password: nil)
        return [
            "Reciprocity is set up. Log in and choose your own password:",
            "Login: \(rt.config.baseURL)/admin/login",
            "E-mail: \(email)",
            "One-time password: \(password ?? "")",
        ]
    }
}
