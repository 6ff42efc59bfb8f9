import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import ReciprocityCore
import Storage

/// Authenticates API requests by key (`Authorization: Bearer rcp_…` or `X-API-Key`) and checks the scope:
/// safe methods need read, everything else write.
struct APIAuthMiddleware: RouterMiddleware {
    let store: Store
    /// Paths under /api that need no key.
    let open: Set<String>

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        guard request.uri.path.hasPrefix("/api/"), !open.contains(request.uri.path) else {
            return try await next(request, context)
        }
        var context = context
        let principal = try await authenticate(request)
        let needed: APIScope = [.get, .head, .options].contains(request.method) ? .read : .write
        guard principal.scope.allows(needed) else {
            throw DomainError(.forbidden, code: "scope_insufficient", "This API key may only read.")
        }
        context.api = principal
        context.logger[metadataKey: "workspace"] = "\(principal.workspaceID)"
        return try await next(request, context)
    }

    func authenticate(_ request: Request) async throws -> APIPrincipal {
        let unauthorized = DomainError(.unauthorized, code: "api_key_invalid", "A valid API key is required.")
        var presented = request.headers[.authorization].flatMap { value -> String? in
            let parts = value.split(separator: " ", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "bearer" ? String(parts[1]) : nil
        }
        if presented == nil { presented = request.headers[HTTPField.Name("X-API-Key")!] }
        guard let key = presented, let (prefix, secret) = APIKeyFormat.split(key),
            let (stored, hash) = try await store.apiKey(prefix: prefix)
        else { throw unauthorized }
        // Constant-time comparison of the secret's hash.
        let digest = Hex.sha256(secret)
        guard digest.utf8.count == hash.utf8.count,
            zip(digest.utf8, hash.utf8).reduce(UInt8(0), { $0 | ($1.0 ^ $1.1) }) == 0
        else { throw unauthorized }
        guard stored.revokedAt == nil else {
            throw DomainError(.unauthorized, code: "api_key_revoked", "This API key has been revoked.")
        }
        try await store.recordUse(of: stored)
        return APIPrincipal(workspaceID: stored.workspaceID, keyID: stored.id, scope: stored.scope)
    }
}

extension AppContext {
    /// The authenticated API principal; the auth middleware guarantees it on every protected route.
    func principal() throws -> APIPrincipal {
        guard let api else { throw DomainError(.unauthorized, code: "api_key_invalid", "A valid API key is required.") }
        return api
    }

    func int64Parameter(_ name: String) throws -> Int64 {
        guard let value = parameters.get(name), let id = Int64(value) else {
            throw DomainError.notFound("The resource")
        }
        return id
    }
}
