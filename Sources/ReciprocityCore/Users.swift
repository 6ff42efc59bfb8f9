import Foundation

public typealias UserID = Int64

/// Admin roles. Owners manage users and keys; marketers run campaigns; support handles contacts and orders.
public enum Role: String, Sendable, Codable, CaseIterable, Comparable {
    case support, marketer, owner

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
    private var rank: Int { self == .support ? 0 : self == .marketer ? 1 : 2 }

    public var canManageUsers: Bool { self == .owner }
    public var canManageAPIKeys: Bool { self == .owner }
    public var canEraseContacts: Bool { self >= .support }
    public var canRetryJobs: Bool { self >= .marketer }
    /// Mail settings, templates and test sends.
    public var canEditMail: Bool { self >= .marketer }
    /// Switching the §7(3) UWG existing-customer mode is a legal decision: the owner's.
    public var canSwitchExistingCustomerMode: Bool { self == .owner }
}

public struct AdminUser: Sendable, Equatable {
    public var id: UserID
    public var email: String
    public var name: String
    public var passwordHash: String
    public var locale: String
    public var mustChangePassword: Bool
    public var createdAt: Date

    public init(
        id: UserID, email: String, name: String, passwordHash: String, locale: String, mustChangePassword: Bool,
        createdAt: Date
    ) {
        self.id = id
        self.email = email
        self.name = name
        self.passwordHash = passwordHash
        self.locale = locale
        self.mustChangePassword = mustChangePassword
        self.createdAt = createdAt
    }
}

public struct Membership: Sendable, Equatable {
    public var workspace: Workspace
    public var role: Role
    public init(workspace: Workspace, role: Role) {
        self.workspace = workspace
        self.role = role
    }
}

public enum PasswordPolicy {
    /// At least 12 characters; long passphrases beat composition rules (NIST SP 800-63B).
    public static func validate(_ password: String) throws(DomainError) {
        guard password.count >= 12 else {
            throw .invalid("password_too_short", "A password needs at least 12 characters.", field: "password")
        }
        guard password.utf8.count <= 72 else {
            throw .invalid("password_too_long", "bcrypt uses at most 72 bytes of a password.", field: "password")
        }
    }
}

/// API key scopes. Write implies read.
public enum APIScope: String, Sendable, Codable, CaseIterable {
    case read, write
    public func allows(_ needed: APIScope) -> Bool { self == .write || needed == .read }
}

public struct APIKey: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var name: String
    public var prefix: String
    public var scope: APIScope
    public var createdAt: Date
    public var lastUsedAt: Date?
    public var revokedAt: Date?

    /// Last use is recorded at most this often, so busy integrations do not turn every read into a write.
    public static let lastUseResolution: TimeInterval = 60

    /// Whether a use at `now` should be recorded.
    public func lastUseIsDue(at now: Date) -> Bool {
        lastUsedAt.map { now.timeIntervalSince($0) >= Self.lastUseResolution } ?? true
    }

    public init(
        id: Int64, workspaceID: WorkspaceID, name: String, prefix: String, scope: APIScope, createdAt: Date,
        lastUsedAt: Date?, revokedAt: Date?
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.name = name
        self.prefix = prefix
        self.scope = scope
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }
}

/// The shape of an API key: `rcp_<prefix>_<secret>`. The prefix is public and indexed; only a hash of the secret is
/// stored, so a leaked database does not leak usable keys.
public enum APIKeyFormat {
    public static let marker = "rcp_"
    public static func compose(prefix: String, secret: String) -> String { "\(marker)\(prefix)_\(secret)" }
    public static func split(_ key: String) -> (prefix: String, secret: String)? {
        guard key.hasPrefix(marker) else { return nil }
        let rest = key.dropFirst(marker.count)
        guard let underscore = rest.firstIndex(of: "_") else { return nil }
        let prefix = String(rest[..<underscore])
        let secret = String(rest[rest.index(after: underscore)...])
        guard prefix.count == 8, secret.count >= 32 else { return nil }
        return (prefix, secret)
    }
}
