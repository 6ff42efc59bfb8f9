import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ReciprocityCore

/// Gives every request an id (the caller's `X-Request-Id` if sane), puts it in the logs and the response.
struct RequestIDMiddleware: RouterMiddleware {
    let random: any RandomSource

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        let given = request.headers[HTTPField.Name("X-Request-Id")!]
        let id =
            if let given, (8...64).contains(given.count), given.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" })
            {
                given
            } else {
                random.token(bytes: 10)
            }
        context.requestID = id
        context.logger[metadataKey: "request_id"] = "\(id)"
        var response = try await next(request, context)
        response.headers[HTTPField.Name("X-Request-Id")!] = id
        return response
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
        response.headers[Self.contentTypeOptions] = "nosniff"
        // A route that sets a stricter policy (the referral redirect and personal page: no-referrer) keeps it.
        if response.headers[Self.referrerPolicy] == nil { response.headers[Self.referrerPolicy] = "same-origin" }
        if request.uri.path.hasPrefix("/admin") {
            // A route that sets its own policy (the sandboxed mail HTML, framed by the outbox page) keeps it.
            if response.headers[.contentSecurityPolicy] == nil {
                response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
                response.headers[.contentSecurityPolicy] =
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
            }
            response.headers[.cacheControl] = "no-store"
        } else if response.headers[.contentSecurityPolicy] == nil,
            response.headers[.contentType]?.hasPrefix("text/html") == true
        {
            // Public pages (review form, unsubscribe, preferences): no script at all, and not framable.
            response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
            response.headers[.contentSecurityPolicy] =
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        }
        return response
    }
}
