import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ReciprocityCore
import Synchronization

/// Gives every request an id (the caller's `X-Request-Id` if sane), puts it in the logs and the response.
struct RequestIDMiddleware: RouterMiddleware {
    static let header = HTTPField.Name("X-Request-Id")!
    let ids: RequestIDs

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        let id = Self.id(given: request.headers[Self.header], ids: ids)
        context.requestID = id
        context.logger[metadataKey: "request_id"] = "\(id)"
        var response = try await next(request, context)
        response.headers[Self.header] = id
        return response
    }

    /// The caller's id when it is 8 to 64 letters, digits and hyphens; otherwise a new one.
    static func id(given: String?, ids: RequestIDs) -> String {
        if let given, (8...64).contains(given.count), given.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) {
            given
        } else {
            ids.next()
        }
    }
}

/// Request ids without a system call each: SplitMix64's finaliser, a bijection on 64 bits, applied to a counter
/// offset by a random seed. Unique for 2^64 requests of a process, and not sequential, so an id does not tell a caller
/// how many requests the server takes. Not a secret: nothing is authorized by a request id.
final class RequestIDs: Sendable {
    private let seed: UInt64
    private let counter = Atomic<UInt64>(0)

    init(random: any RandomSource) { seed = random.bytes(8).reduce(0) { $0 << 8 | UInt64($1) } }

    func next() -> String {
        var z = counter.add(1, ordering: .relaxed).newValue &+ seed
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Base32.encode((0..<8).map { UInt8(truncatingIfNeeded: z >> (8 * $0)) })
    }
}

/// The one edge where errors become responses: problem+json under /api, a readable page elsewhere.
/// Unknown errors are logged with context and answered with a 500 that reveals nothing.
struct ErrorMiddleware: RouterMiddleware {
    let templates: Templates

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let redirect as Redirect {
            return redirect.response
        } catch {
            let (problem, known) = Problem.from(error)
            if !known {
                context.logger.error(
                    "unhandled error",
                    metadata: [
                        "error": "\(String(reflecting: error))", "path": "\(request.uri.path)",
                        "method": "\(request.method)",
                    ])
            }
            // Scripts (the embedded signup form) ask for JSON on public routes too.
            if request.uri.path.hasPrefix("/api/") || request.headers[.accept]?.contains("application/json") == true {
                return problem.response(requestID: context.requestID, path: request.uri.path)
            }
            return templates.errorPage(problem: problem, requestID: context.requestID, locale: context.locale)
        }
    }
}

/// Thrown by page handlers to leave for another page.
public struct Redirect: Error {
    public var location: String
    public var cookies: [Cookie] = []
    public init(to location: String, cookies: [Cookie] = []) {
        self.location = location
        self.cookies = cookies
    }
    public var response: Response {
        var response = Response(status: .seeOther, headers: [.location: location])
        for c in cookies { response.setCookie(c) }
        return response
    }
}

/// Baseline security headers on every response.
struct SecurityHeadersMiddleware: RouterMiddleware {
    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        var response = try await next(request, context)
        Self.apply(to: &response.headers, path: request.uri.path[...])
        return response
    }

    /// The headers for a response on `path` (also used by the fast path, docs/decisions/0011-event-loop-routes.md).
    static func apply(to headers: inout HTTPFields, path: Substring) {
        headers[Self.contentTypeOptions] = "nosniff"
        // A route that sets a stricter policy (the referral redirect and personal page: no-referrer) keeps it.
        if headers[Self.referrerPolicy] == nil { headers[Self.referrerPolicy] = "same-origin" }
        if path.hasPrefix("/admin") {
            // A route that sets its own policy (the sandboxed mail HTML, framed by the outbox page) keeps it.
            if headers[.contentSecurityPolicy] == nil {
                headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
                headers[.contentSecurityPolicy] =
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
            }
            headers[.cacheControl] = "no-store"
        } else if headers[.contentSecurityPolicy] == nil,
            headers[.contentType]?.hasPrefix("text/html") == true
        {
            // Public pages (review form, unsubscribe, preferences): no script at all, and not framable.
            headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
            headers[.contentSecurityPolicy] =
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        }
    }
}
