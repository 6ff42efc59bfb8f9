import Dispatch
import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import ReciprocityCore

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
    /// Requests answered here rather than by the router, per route and per way in
    /// (`reciprocity_http_fast_path_total`): `bytes` read from the connection's bytes (`FastPathBytesHandler`),
    /// `parsed` after NIO's HTTP parser (`FastPathHandler`).
    let answered: [String: (bytes: Counter, parsed: Counter)]

    /// How a request reached the fast path.
    enum Way { case bytes, parsed }

    init(routes: [FastRoute], requestIDs: RequestIDs, metrics: RequestMetricsCache) {
        self.routes = routes
        self.requestIDs = requestIDs
        self.metrics = metrics
        func counter(_ path: String, _ way: String) -> Counter {
            Counter(label: "reciprocity_http_fast_path_total", dimensions: [("http_route", path), ("way", way)])
        }
        answered = Dictionary(
            routes.map { ($0.path, (counter($0.path, "bytes"), counter($0.path, "parsed"))) },
            uniquingKeysWith: { a, _ in a })
    }

    /// Whether the request asks to close the connection after its answer (a `Connection` other than keep-alive).
    static func endsConnection(_ head: HTTPRequest) -> Bool {
        head.headerFields[.connection].map { $0.lowercased() != "keep-alive" } ?? false
    }

    /// The handlers of one connection: `FastPathHandler`, placed after the HTTP codec and before Hummingbird's
    /// connection handling, which puts `FastPathBytesHandler` in front of the codec when it is added.
    public func handler() -> FastPathHandler { FastPathHandler(self) }

    /// The answer to a GET of `target` (no body), and the request id for it; or nil for the router. Counts the
    /// request in the request metrics, as `RequestMetricsMiddleware` counts the router's.
    func answer(target: Substring, request: FastRequest, way: Way) -> (answer: FastAnswer, requestID: String)? {
        let start = DispatchTime.now().uptimeNanoseconds
        let path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target
        for route in routes {
            guard let parameter = route.match(path) else { continue }
            var request = request
            request.parameter = parameter
            guard let answer = route.answer(request) else { return nil }
            let id = RequestIDMiddleware.id(given: request.requestID, ids: requestIDs)
            let endpoint = metrics.endpoint(route.path, .get, answer.response.status)
            endpoint.counter.increment()
            endpoint.timer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            if let counters = answered[route.path] {
                switch way {
                case .bytes: counters.bytes.increment()
                case .parsed: counters.parsed.increment()
                }
            }
            return (answer, id)
        }
        return nil
    }
}

/// A fast route's answer, made once (at start-up, or when a cache entry is filled) and shared by every request it
/// answers: the response (headers only) for the parsed way, and the same response as HTTP/1.1 bytes, all but the
/// request id, the date and the blank line, for the bytes way.
public final class FastAnswer: Sendable {
    public let response: HTTPResponse
    let head: [UInt8]

    /// `response` as the route gives it; what the middleware and the server add to every response, but the request
    /// id, is added here.
    public init(_ response: HTTPResponse, path: String) {
        var response = response
        SecurityHeadersMiddleware.apply(to: &response.headerFields, path: path[...])
        response.headerFields[.server] = WebApp.serverName
        response.headerFields[.contentLength] = "0"
        self.response = response
        var head = Array("HTTP/1.1 \(response.status.code) \(response.status.reasonPhrase)\r\n".utf8)
        for field in response.headerFields {
            head += field.name.rawName.utf8
            head += ": ".utf8
            head += field.value.utf8
            head += "\r\n".utf8
        }
        self.head = head
    }

    /// The whole answer: `head`, then the request id and the date (the order the parsed way adds them in).
    func bytes(requestID: String, date: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: head.count + requestID.utf8.count + date.utf8.count + 32)
        buffer.writeBytes(head)
        buffer.writeString(RequestIDMiddleware.header.rawName)
        buffer.writeStaticString(": ")
        buffer.writeString(requestID)
        buffer.writeStaticString("\r\nDate: ")
        buffer.writeString(date)
        buffer.writeStaticString("\r\n\r\n")
        return buffer
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
    let answer: @Sendable (FastRequest) -> FastAnswer?

    /// `answer` returns the answer (headers only), or nil when the router must answer (not in memory, or not a case
    /// this path handles). It must not have acted when it returns nil.
    public init(path: String, answer: @escaping @Sendable (FastRequest) -> FastAnswer?) {
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

/// What a fast route sees of a request: the few headers the routes read, whichever way the request came.
public struct FastRequest: Sendable {
    /// The route's `{parameter}`, or empty.
    public var parameter: Substring = ""
    public var userAgent: String?
    public var forwardedFor: String?
    /// The caller's `X-Request-Id`.
    var requestID: String?
    /// The TCP peer's address, formatted as `AppContext.peerIP` formats it.
    public var peerIP: String
}

/// The fast path on one connection, after NIO's HTTP parser. Requests it cannot answer pass on unchanged, and
/// responses keep the requests' order: while an earlier request is with the router (HTTP pipelining), later ones go
/// there too. When added, it puts a `FastPathBytesHandler` in front of the HTTP codec, which answers the plainest
/// requests from their bytes and hands everything else to the parser, and so to this handler.
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
    private var date = DateHeader()
    private var peerIP: String?

    // Hummingbird's `HTTPConnectionStateHandler` comes after this handler and does not see the requests answered
    // here. With an idle timeout configured (none is), a connection busy only with fast answers would look idle.

    init(_ fastPath: FastPath) { self.fastPath = fastPath }

    public func handlerAdded(context: ChannelHandlerContext) {
        // In front of the response encoder, which comes first of the HTTP handlers: the bytes handler's answers go
        // straight to the socket, and the request decoder sees only what it hands on.
        let pipeline = context.pipeline.syncOperations
        guard let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) else { return }
        try? pipeline.addHandler(FastPathBytesHandler(fastPath), position: .before(encoder))
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A peer that does not read its answers (the socket's buffer full) goes to the router, whose writer waits
            // for it and stops reading, instead of answers piling up in memory here.
            if withRouter == 0, !routerOnly, context.channel.isWritable, Self.hasNoBody(head), head.method == .get,
                !FastPath.endsConnection(head), let target = head.path,
                let (answer, id) = fastPath.answer(
                    target: target[...], request: request(head, context), way: .parsed)
            {
                var response = answer.response
                response.headerFields.append(HTTPField(name: RequestIDMiddleware.header, value: id))
                response.headerFields.append(HTTPField(name: .date, value: date.current()))
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

    private func request(_ head: HTTPRequest, _ context: ChannelHandlerContext) -> FastRequest {
        let peer = peerIP ?? context.channel.remoteAddress?.ipAddress ?? "unknown"
        peerIP = peer
        return FastRequest(
            userAgent: head.headerFields[.userAgent], forwardedFor: head.headerFields[WebEnvironment.forwardedFor],
            requestID: head.headerFields[RequestIDMiddleware.header], peerIP: peer)
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

    /// Only requests without a body are answered here; a body would have to be read past.
    static func hasNoBody(_ head: HTTPRequest) -> Bool {
        head.headerFields[.transferEncoding] == nil && (head.headerFields[.contentLength] ?? "0") == "0"
    }
}

/// The `Date` header (Hummingbird's router adds it to every response), made once per second per connection.
struct DateHeader {
    private var second = Int64.min
    private var value = ""

    mutating func current() -> String {
        let now = Int64(Date().timeIntervalSince1970)
        if now != second { (second, value) = (now, HTTPDate.format(epochSeconds: now)) }
        return value
    }
}

/// The IMF-fixdate of RFC 9110 (`Sun, 06 Nov 1994 08:49:37 GMT`), from Unix seconds, without a formatter.
enum HTTPDate {
    static func format(epochSeconds: Int64) -> String {
        let f = CivilDate.fields(epochSeconds: epochSeconds)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(CivilDate.weekdayNames[f.weekday]), \(two(f.day)) \(CivilDate.monthNames[f.month - 1]) \(f.year) "
            + "\(two(f.hour)):\(two(f.minute)):\(two(f.second)) GMT"
    }
}
