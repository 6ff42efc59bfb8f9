import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdBcrypt
import NIOPosix
import ReciprocityCore
import Storage
import Synchronization

enum AdminCookies {
    static let session = "rcp_session"
    static let loginCSRF = "rcp_login_csrf"
    static let lang = "rcp_lang"
    /// A browser that has logged in to an account: its own login limit (`AdminRoutes.login`).
    static let device = "rcp_device"
}

/// Picks the UI language: the explicit switch (cookie), then the browser's preference, then German.
struct LocaleMiddleware: RouterMiddleware {
    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        if let chosen = request.cookies[AdminCookies.lang]?.value, ReciprocityCore.Locale.supported.contains(chosen) {
            context.locale = chosen
        } else if let accept = request.headers[.acceptLanguage] {
            context.locale = ReciprocityCore.Locale.resolve(String(accept.prefix(5)))
        }
        return try await next(request, context)
    }
}

/// Guards /admin: a valid session cookie, a membership in the session's workspace, and a matching CSRF token on
/// every state-changing request. Login and the language switch are the only open admin routes.
struct AdminSessionMiddleware: RouterMiddleware {
    let store: Store
    static let open: Set<String> = [SiteURL.adminLogin.path, SiteURL.adminLocale.path]

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        let path = request.uri.path
        guard path == "/admin" || path.hasPrefix("/admin/"), !Self.open.contains(path) else {
            return try await next(request, context)
        }
        let loginRedirect = Redirect(
            to: SiteURL.adminLogin.path + "?next="
                + (path.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
        guard let token = request.cookies[AdminCookies.session]?.value else { throw loginRedirect }
        let hash = Hex.sha256(token)
        guard let session = try await store.session(tokenHash: hash),
            let user = try await store.user(id: session.userID)
        else { throw loginRedirect }
        let memberships = try await store.memberships(userID: user.id)
        guard let membership = memberships.first(where: { $0.workspace.id == session.workspaceID }) ?? memberships.first
        else { throw loginRedirect }
        var context = context
        context.admin = AdminPrincipal(
            user: user, workspace: membership.workspace, role: membership.role, memberships: memberships,
            csrfToken: session.csrfToken, sessionHash: hash)
        context.logger[metadataKey: "user"] = "\(user.id)"
        context.logger[metadataKey: "workspace"] = "\(membership.workspace.id)"
        if user.mustChangePassword && path != SiteURL.adminPassword.path && path != SiteURL.adminLogout.path {
            throw Redirect(to: SiteURL.adminPassword.path)
        }
        return try await next(request, context)
    }
}

enum Passwords {
    /// bcrypt off the cooperative pool: hashing takes a quarter second by design.
    static func hash(_ password: String, cost: UInt8) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }
    static func verify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }
    /// A hash to verify against when the user does not exist, so timing does not reveal which emails are known:
    /// at the cost new passwords are hashed with (`RECIPROCITY_BCRYPT_COST`), made once per cost.
    static func decoy(cost: UInt8) -> String {
        decoys.withLock { made in
            if let hash = made[cost] { return hash }
            let hash = Bcrypt.hash("decoy-password-never-matches", cost: cost)
            made[cost] = hash
            return hash
        }
    }
    private static let decoys = Mutex<[UInt8: String]>([:])
}

func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    guard x.count == y.count else { return false }
    return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
}
