import Foundation
import Hummingbird
import Logging
import NIOCore
import ReciprocityCore
import Storage

/// Who an API request acts for: the API key's workspace and scope.
public struct APIPrincipal: Sendable {
    public var workspaceID: WorkspaceID
    public var keyID: Int64
    public var scope: APIScope
}

/// Who an admin page request acts for.
public struct AdminPrincipal: Sendable {
    public var user: AdminUser
    public var workspace: Workspace
    public var role: Role
    public var memberships: [Membership]
    public var csrfToken: String
    public var sessionHash: String
}

public struct AppContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    public var api: APIPrincipal?
    public var admin: AdminPrincipal?
    public var locale = "de"
    /// The TCP peer's address. Proxies' X-Forwarded-For is not trusted for security decisions. Formatted when asked
    /// for: most requests never need it.
    public var peerIP: String { peer?.ipAddress ?? "unknown" }
    private let peer: SocketAddress?

    public init(source: Source) {
        coreContext = .init(source: source)
        peer = source.channel.remoteAddress
    }

    /// Bodies are read explicitly with a limit (`JSONBody`); this caps everything else.
    public var maxUploadSize: Int { 1_048_576 }
}
