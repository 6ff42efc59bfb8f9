import Dispatch
import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTPTypes

/// GET routes answered on the connection's event loop, before Hummingbird's router, when memory alone has the answer
/// (docs/decisions/0011-event-loop-routes.md).
///
/// Hummingbird hands each request to a Swift task and the response back to the event loop: two thread hops per
/// request, which is most of what the bare 302 route costs on this machine. The referral redirect answers from its
/// cache and appends the click to memory, so it needs neither. A route here answers with headers only (no body), or
/// returns nil, and the router answers as usual. The router has the same routes, so declining is always safe.
///
/// What the middleware does for the router's answers is done here too, by the same code: the security headers
/// (`SecurityHeadersMiddleware.apply`) and the `Server` header when a route prepares its answer (`prepare`), and per
/// request the request id (`RequestIDMiddleware.id`) and the request metrics under the route's name.
public struct FastPath: Sendable {
    let routes: [FastRoute]
    let requestIDs: RequestIDs
    let metrics: RequestMetricsCache
    /// Requests answered here rather than by the router, per route (`reciprocity_http_fast_path_total`).
    let answered: [String: Counter]

    init(routes: [FastRoute], requestIDs: RequestIDs, metrics: RequestMetricsCache) {
        self.routes = routes
        self.requestIDs = requestIDs
        self.metrics = metrics
        answered = Dictionary(
            routes.map {
                ($0.path, Counter(label: "reciprocity_http_fast_path_total", dimensions: [("http_route", $0.path)]))
            },
            uniquingKeysWith: { a, _ in a })
    }

    /// A route's answer with what the middleware and the server add to every response, but the request id: made
    /// once per answer (at start-up, or when a cache entry is filled), not per request.
    public static func prepare(_ response: HTTPResponse, path: String) -> HTTPResponse {
        var response = response
        SecurityHeadersMiddleware.apply(to: &response.headerFields, path: path[...])
        response.headerFields[.server] = WebApp.serverName
        response.headerFields[.contentLength] = "0"
        return response
    }

    /// Whether the request asks to close the connection after its answer (a `Connection` other than keep-alive).
    static func endsConnection(_ head: HTTPRequest) -> Bool {
        head.headerFields[.connection].map { $0.lowercased() != "keep-alive" } ?? false
    }

    /// One handler per connection, placed after the HTTP codec and before Hummingbird's connection handling.
    public func handler() -> FastPathHandler { FastPathHandler(self) }

    /// The answer for a request with no body, or nil for the router.
    func answer(_ head: HTTPRequest, peer: SocketAddress?) -> HTTPResponse? {
        let start = DispatchTime.now().uptimeNanoseconds
        guard head.method == .get, let target = head.path else { return nil }
        // Closing the connection after the answer (`Connection: close`) stays with Hummingbird's loop.
        if Self.endsConnection(head) { return nil }
        let path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target[...]
        for route in routes {
            guard let parameter = route.match(path) else { continue }
            let request = FastRequest(parameter: parameter, headers: head.headerFields, peer: peer)
            guard var response = route.answer(request) else { return nil }
            response.headerFields.append(
                HTTPField(
                    name: RequestIDMiddleware.header,
                    value: RequestIDMiddleware.id(given: head.headerFields[RequestIDMiddleware.header], ids: requestIDs)
                ))
            let endpoint = metrics.endpoint(route.path, .get, response.status)
            endpoint.counter.increment()
            endpoint.timer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            answered[route.path]?.increment()
            return response
        }
        return nil
    }
}

/// A GET route for the fast path: the router's path pattern (`/r/{code}`, at most one `{parameter}`) and an answer
/// from memory.
public struct FastRoute: Sendable {
    /// The router's pattern; also the `http.route` label of the request metrics.
    public let path: String
    private let prefix: [UInt8]
    private let suffix: [UInt8]
    private let hasParameter: Bool
    let answer: @Sendable (FastRequest) -> HTTPResponse?

    /// `answer` returns the response (headers only, made by `FastPath.prepare`), or nil when the router must answer
    /// (not in memory, or not a case this path handles). It must not have acted when it returns nil.
    public init(path: String, answer: @escaping @Sendable (FastRequest) -> HTTPResponse?) {
        self.path = path
        self.answer = answer
        if let open = path.firstIndex(of: "{"), let close = path[open...].firstIndex(of: "}") {
            prefix = Array(path[..<open].utf8)
            suffix = Array(path[path.index(after: close)...].utf8)
            hasParameter = true
        } else {
            (prefix, suffix, hasParameter) = (Array(path.utf8), [], false)
        }
    }

    /// The parameter (empty without one) when `path` matches. A parameter is one segment of letters, digits, `-`
    /// and `_`: anything percent-encoded or unusual goes to the router, which decodes it.
    func match(_ path: Substring) -> Substring? {
        let bytes = path.utf8
        guard hasParameter else { return bytes.elementsEqual(prefix) ? path[path.endIndex...] : nil }
        guard bytes.count > prefix.count + suffix.count, bytes.starts(with: prefix),
            bytes.reversed().starts(with: suffix.reversed())
        else { return nil }
        let start = bytes.index(bytes.startIndex, offsetBy: prefix.count)
        let end = bytes.index(bytes.endIndex, offsetBy: -suffix.count)
        let plain = bytes[start..<end].allSatisfy {
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
                || $0 == UInt8(ascii: "_")
        }
        return plain ? path[start..<end] : nil
    }
}

/// What a fast route sees of a request.
public struct FastRequest: Sendable {
    /// The route's `{parameter}`, or empty.
    public let parameter: Substring
    public let headers: HTTPFields
    /// The TCP peer's address, formatted as `AppContext.peerIP` formats it.
    public var peerIP: String { peer?.ipAddress ?? "unknown" }
    let peer: SocketAddress?
}

/// The fast path on one connection. Requests it cannot answer pass on unchanged, and responses keep the requests'
/// order: while an earlier request is with the router (HTTP pipelining), later ones go there too.
public final class FastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    private let fastPath: FastPath
    /// Requests passed to the router whose response has not ended yet.
    private var withRouter = 0
    /// The rest of a request answered here is dropped (a GET without body: only its end).
    private var answered = false
    private var needsFlush = false
    /// After a request that ends the connection (`Connection: close`) went to the router, nothing more is answered
    /// here: Hummingbird reads no further request on this connection.
    private var routerOnly = false
    /// The `Date` header, made once per second per connection (Hummingbird's router adds it to every response).
    private var date = (second: Int64.min, value: "")

    // Hummingbird's `HTTPConnectionStateHandler` comes after this handler and does not see the requests answered
    // here. With an idle timeout configured (none is), a connection busy only with fast answers would look idle.

    init(_ fastPath: FastPath) { self.fastPath = fastPath }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A peer that does not read its answers (the socket's buffer full) goes to the router, whose writer waits
            // for it and stops reading, instead of answers piling up in memory here.
            if withRouter == 0, !routerOnly, context.channel.isWritable, Self.hasNoBody(head),
                var response = fastPath.answer(head, peer: context.channel.remoteAddress)
            {
                response.headerFields.append(HTTPField(name: .date, value: currentDate()))
                answered = true
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                context.write(wrapOutboundOut(.end(nil)), promise: nil)
                needsFlush = true
                return
            }
            answered = false
            withRouter += 1
            if FastPath.endsConnection(head) { routerOnly = true }
            context.fireChannelRead(data)
        case .body:
            if !answered { context.fireChannelRead(data) }
        case .end:
            if answered {
                answered = false
            } else {
                context.fireChannelRead(data)
            }
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // (A parse error's 400 has no request before it: never below zero.)
        if case .end = unwrapOutboundIn(data) { withRouter = max(0, withRouter - 1) }
        context.write(data, promise: promise)
    }

    private func currentDate() -> String {
        let now = Int64(Date().timeIntervalSince1970)
        if now != date.second { date = (now, HTTPDate.format(epochSeconds: now)) }
        return date.value
    }

    /// Only requests without a body are answered here; a body would have to be read past.
    static func hasNoBody(_ head: HTTPRequest) -> Bool {
        head.headerFields[.transferEncoding] == nil && (head.headerFields[.contentLength] ?? "0") == "0"
    }
}

/// The IMF-fixdate of RFC 9110 (`Sun, 06 Nov 1994 08:49:37 GMT`), from Unix seconds, without a formatter.
enum HTTPDate {
    static func format(epochSeconds: Int64) -> String {
        let days = epochSeconds >= 0 ? epochSeconds / 86_400 : (epochSeconds - 86_399) / 86_400
        let seconds = Int(epochSeconds - days * 86_400)
        // Days to civil date (Howard Hinnant's algorithm), 1970-01-01 being day 0, a Thursday.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
        let weekday = Int(((days % 7) + 11) % 7)  // 0 = Sunday
        let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(weekdays[weekday]), \(two(day)) \(months[month - 1]) \(year) "
            + "\(two(seconds / 3600)):\(two(seconds / 60 % 60)):\(two(seconds % 60)) GMT"
    }
}
