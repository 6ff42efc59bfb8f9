import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import Metrics

/// Hummingbird's request metrics (same names and labels as its `MetricsMiddleware`), recorded when the handler has
/// produced the response rather than after the body is written.
///
/// Hummingbird's middleware wraps every body in a post-write closure, which turns off the server's fast path for a
/// response in one buffer (head, body and end in one write): the cached landing page then took two `write` calls per
/// request instead of one (docs/decisions/0007-request-path-costs.md). A streamed body's duration is therefore the
/// time to its head.
struct RequestMetricsMiddleware: RouterMiddleware {
    let cache: RequestMetricsCache

    func handle(_ request: Request, context: AppContext, next: (Request, AppContext) async throws -> Response)
        async throws -> Response
    {
        let start = DispatchTime.now().uptimeNanoseconds
        let active = cache.active(request.method)
        active.increment()
        defer { active.decrement() }
        do {
            let response = try await next(request, context)
            let metrics = cache.endpoint(context.endpointPath ?? "Unknown", request.method, response.status)
            metrics.counter.increment()
            metrics.timer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status ?? .internalServerError
            let metrics = cache.endpoint(context.endpointPath ?? "NotFound", request.method, status)
            metrics.counter.increment()
            metrics.errors.increment()
            throw error
        }
    }
}

/// The metric objects per method and per route, method and status, made once each.
final class RequestMetricsCache: @unchecked Sendable {
    struct Endpoint {
        let counter: Counter
        let timer: Metrics.Timer
        let errors: Counter
    }
    private struct Key: Hashable {
        let route: String
        let method: HTTPRequest.Method
        let status: Int
    }
    private let lock = NSLock()
    private var methods: [HTTPRequest.Method: Meter] = [:]
    private var endpoints: [Key: Endpoint] = [:]

    func active(_ method: HTTPRequest.Method) -> Meter {
        lock.withLock {
            if let meter = methods[method] { return meter }
            let meter = Meter(
                label: "http.server.active_requests", dimensions: [("http.request.method", method.rawValue)])
            methods[method] = meter
            return meter
        }
    }

    func endpoint(_ route: String, _ method: HTTPRequest.Method, _ status: HTTPResponse.Status) -> Endpoint {
        let key = Key(route: route, method: method, status: status.code)
        return lock.withLock {
            if let endpoint = endpoints[key] { return endpoint }
            let dimensions = [
                ("http.route", route), ("http.request.method", method.rawValue),
                ("http.response.status_code", String(status.code)),
            ]
            let endpoint = Endpoint(
                counter: Counter(label: "hb.requests", dimensions: dimensions),
                timer: Metrics.Timer(
                    label: "http.server.request.duration", dimensions: dimensions, preferredDisplayUnit: .seconds),
                errors: Counter(
                    label: "hb.request.errors",
                    dimensions: [
                        ("http.route", route), ("http.request.method", method.rawValue),
                        ("error.type", String(status.code)),
                    ]))
            endpoints[key] = endpoint
            return endpoint
        }
    }
}
