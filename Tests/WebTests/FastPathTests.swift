import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import ReciprocityCore
import Storage
import TestSupport
import Testing

@testable import Web

/// The redirects answered on the event loop (docs/decisions/0011-event-loop-routes.md) answer exactly what the router
/// answers, count and record the same, keep pipelined responses in order, and leave what they cannot answer to the
/// router. Serialized: the fast path counter is process-wide.
@Suite(.serialized) struct FastPathTests {
    static let target = "https://kaffee.example/bohnen?utm_source=ref"

    /// A workspace with an active programme and one advocate; returns the API key and the advocate's code.
    static func programme(
        _ app: TestApp, slug: String = "shop", extra: String = "", target: String = FastPathTests.target
    ) async throws -> (String, String) {
        let (_, key) = try await app.workspaceWithKey(slug)
        try #require(
            try await app.request(
                .put, "/api/v1/referrals/programme", key: key,
                json: #"{"active":true,"target_url":"\#(target)"\#(extra)}"#
            ).status == .ok)
        try #require(
            try await app.request(.put, "/api/v1/orders/A-1", key: key, json: orderJSON(status: "delivered")).status
                == .created)
        let joined = try await app.request(
            .post, "/api/v1/referrals/advocates", key: key,
            json: #"{"email":"anna@example.com","consent_text":"Ja, ich mache mit."}"#)
        try #require(joined.status == .created, "\(joined.text)")
        return (key, try #require(try joined.json()["code"] as? String))
    }

    /// `reciprocity_http_fast_path_total` for a route, from `/metrics`: both ways in, or one (`bytes`, `parsed`).
    static func answered(_ app: TestApp, route: String, way: String? = nil) async throws -> Int {
        let text = try await app.request(.get, "/metrics").text
        return text.split(separator: "\n").filter { line in
            line.hasPrefix("reciprocity_http_fast_path_total{") && line.contains(#"http_route="\#(route)""#)
                && (way.map { line.contains(#"way="\#($0)""#) } ?? true)
        }.compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }.reduce(0, +)
    }

    /// The response's header fields without the request id (new per request) and the date (checked apart).
    static func fields(_ response: TestResponse) -> [String] {
        response.headers.filter { $0.name != HTTPField.Name("X-Request-Id")! && $0.name != .date }
            .map { "\($0.name): \($0.value)" }.sorted()
    }

    /// The `Date` header, within a few seconds of now.
    static func hasCurrentDate(_ response: TestResponse) -> Bool {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let text = response.headers[.date], let date = formatter.date(from: text) else { return false }
        // Current, not frozen: within 30 s, since on a loaded machine (a full suite on two cores) the answer can be
        // seconds old by the time it is checked, and the router's date cache ticks on a timer.
        return abs(date.timeIntervalSinceNow) < 30 && formatter.string(from: date) == text
    }

    @Test func httpDatesAreIMFFixdates() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        #expect(HTTPDate.format(epochSeconds: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        for seconds: Int64 in [0, -1, 59, 86_399, 86_400, 951_782_400, 1_709_164_800, 1_790_000_000, 4_102_444_799] {
            let expected = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            #expect(HTTPDate.format(epochSeconds: seconds) == expected, "\(seconds)")
        }
    }

    @Test func routesMatchOnePlainSegment() {
        let referral = FastRoute(path: "/r/{code}") { _ in nil }
        #expect(referral.match("/r/ANNA-7K3Q") == "ANNA-7K3Q")
        #expect(referral.match("/r/anna_7") == "anna_7")
        for path in ["/r/", "/r", "/r/A/B", "/r/%41NNA", "/r/ANNA.7", "/x/ANNA", "/rr/ANNA", "/r/ÄNNA", "//r/ANNA"] {
            #expect(referral.match(path[...]) == nil, "\(path)")
        }
        let suffixed = FastRoute(path: "/a/{id}/b") { _ in nil }
        #expect(suffixed.match("/a/42/b") == "42")
        #expect(suffixed.match("/a//b") == nil && suffixed.match("/a/42/c") == nil && suffixed.match("/a/4/2/b") == nil)
        let bare = FastRoute(path: "/_/redirect") { _ in nil }
        #expect(bare.match("/_/redirect") == "")
        #expect(bare.match("/_/redirect/") == nil && bare.match("/_/redirec") == nil)
    }

    @Test func referralRedirectAnswersAsTheRouterDoes() async throws {
        try await TestApp.run(live: true) { app in
            let (_, code) = try await Self.programme(app)
            let before = try await Self.answered(app, route: "/r/{code}")
            // The first request fills the cache through the router; the second is answered on the event loop.
            let routed = try await app.request(.get, "/r/\(code)", headers: [.userAgent: "Mozilla/5.0 Firefox/130.0"])
            #expect(try await Self.answered(app, route: "/r/{code}") == before)
            let fast = try await app.request(
                .get, "/r/\(code)?utm_campaign=x", headers: [.userAgent: "Mozilla/5.0 Firefox/130.0"])
            #expect(try await Self.answered(app, route: "/r/{code}") == before + 1)
            #expect(routed.status == .found && fast.status == .found)
            #expect(fast.headers[.location] == Self.target + "&ref=\(code)")
            #expect(Self.fields(fast) == Self.fields(routed))
            #expect(Self.fields(fast).contains("X-Content-Type-Options: nosniff"))
            #expect(Self.fields(fast).contains("Referrer-Policy: no-referrer"))
            #expect(Self.fields(fast).contains("Server: reciprocity"))
            #expect(Self.hasCurrentDate(fast) && Self.hasCurrentDate(routed))
            // A sane request id of the caller is echoed, a new one made otherwise.
            let given = try await app.request(
                .get, "/r/\(code)", headers: [HTTPField.Name("X-Request-Id")!: "abc-123-def"])
            #expect(given.headers[HTTPField.Name("X-Request-Id")!] == "abc-123-def")
            #expect(fast.headers[HTTPField.Name("X-Request-Id")!]?.count ?? 0 >= 8)
            // Every answer is a click, whichever way it went; both counted in the request metrics.
            try await app.runtime.referrals.clicks.flush()
            let clicks = try await app.store.db.scalar("SELECT COUNT(*) FROM referral_clicks")
            #expect(clicks == 3)
            let metrics = try await app.request(.get, "/metrics").text
            let requests = metrics.split(separator: "\n").first {
                $0.hasPrefix("hb_requests{") && $0.contains(#"http_route="/r/{code}""#)
                    && $0.contains(#"http_response_status_code="302""#)
            }
            #expect(requests.map { $0.hasSuffix(" 3") } == true, "\(requests ?? "no series")")
            // Unknown, malformed and lower-case codes go to the router: a 404 page, or the same redirect.
            #expect(try await app.request(.get, "/r/NOPE-0000").status == .notFound)
            #expect(
                try await app.request(.get, "/r/\(code.lowercased())").headers[.location] == fast.headers[.location])
            #expect(try await app.request(.get, "/r/%41NNA").status == .notFound)
        }
    }

    @Test func cookieAndLandingPageSettingsHold() async throws {
        try await TestApp.run(live: true) { app in
            let (_, code) = try await Self.programme(app, extra: #","cookie":true"#)
            let first = try await app.request(.get, "/r/\(code)")
            let second = try await app.request(.get, "/r/\(code)")
            #expect(second.headers[.setCookie] == first.headers[.setCookie])
            #expect(second.headers[.setCookie]?.hasPrefix("rcp_ref=\(code);") == true)
            #expect(second.headers[.setCookie]?.hasSuffix("; Secure") == true)
            #expect(second.headers[.setCookie]?.contains("Domain=") == false)
            // The shop at www.shop.example reads a cookie set for shop.example, which our host (shop.example)
            // may set; a domain the shop's address does not lie in is refused when saved.
            let (key3, code3) = try await Self.programme(
                app, slug: "drei", extra: #","cookie":true,"cookie_domain":"shop.example""#,
                target: "https://www.shop.example/laden")
            #expect(
                try await app.request(.get, "/r/\(code3)").headers[.setCookie]?.contains("; Domain=shop.example;")
                    == true)
            let refused = try await app.request(
                .put, "/api/v1/referrals/programme", key: key3,
                json:
                    #"{"active":true,"target_url":"https://kaffee.example/","cookie":true,"cookie_domain":"shop.example"}"#
            )
            #expect(refused.status == .unprocessableContent && refused.text.contains("cookie_domain_invalid"))
            // With the landing page on, the friend sees the page: the router renders it every time.
            let (key2, code2) = try await Self.programme(app, slug: "zwei", extra: #","landing_page":true"#)
            _ = key2
            let before = try await Self.answered(app, route: "/r/{code}")
            for _ in 0..<2 {
                let page = try await app.request(.get, "/r/\(code2)")
                #expect(page.status == .ok)
                #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
            }
            #expect(try await Self.answered(app, route: "/r/{code}") == before)
        }
    }

    @Test func bareRedirectIsTheSameWithAndWithoutTheFastPath() async throws {
        let answers = Answers()
        for enabled in [true, false] {
            try await TestApp.run(live: true, environment: ["RECIPROCITY_HTTP_FAST_PATH": "\(enabled)"]) { app in
                let before = try await Self.answered(app, route: "/_/redirect")
                let response = try await app.request(.get, "/_/redirect")
                #expect(response.status == .found)
                #expect(try await Self.answered(app, route: "/_/redirect") == before + (enabled ? 1 : 0))
                answers.add(Self.fields(response))
            }
        }
        let both = answers.all
        #expect(both.count == 2 && both[0] == both[1])
        #expect(both.first?.contains("Location: https://shop.example/") == true)
    }

    /// Requests the fast path leaves to the router: a body, another method, `Connection: close`, and whatever
    /// follows a `Connection: close` on the same connection (Hummingbird reads no further request there).
    @Test func bodiesMethodsAndClosingGoToTheRouter() async throws {
        try await TestApp.run(live: true) { app in
            let before = try await Self.answered(app, route: "/_/redirect")
            let withBody = try await app.request(.get, "/_/redirect", json: "{}")
            #expect(withBody.status == .found)
            #expect(try await Self.answered(app, route: "/_/redirect") == before)
            // The next request on the connection is the fast path's again.
            #expect(try await app.request(.get, "/_/redirect").status == .found)
            let fast = try await Self.answered(app, route: "/_/redirect")
            #expect(fast == before + 1)
            let port = try #require(app.client.port)
            let body = try await Self.exchange(
                port: port, "GET /_/redirect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab")
            #expect(body.hasPrefix("HTTP/1.1 302 Found"))
            let head = try await Self.exchange(
                port: port, "HEAD /_/redirect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 "))
            let closing = try await Self.exchange(
                port: port,
                "GET /_/redirect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    + "GET /_/redirect HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(closing.components(separatedBy: "HTTP/1.1 302").count == 2, "\(closing)")
            #expect(try await Self.answered(app, route: "/_/redirect") == fast)
        }
    }

    /// Pipelined requests: a request for the router (`/readyz` waits for the database), then a fast one, then one that
    /// closes the connection. The answers must come in the same order, so the fast one waits for the router.
    @Test func pipelinedAnswersKeepTheirOrder() async throws {
        try await TestApp.run(live: true) { app in
            let port = try #require(app.client.port)
            let text = try await Self.exchange(
                port: port,
                "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /_/redirect HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            // A status line follows the previous body directly (no line break after a body).
            let statuses = text.matches(of: /HTTP\/1\.1 \d{3}/).map { String(text[$0.range]) }
            #expect(statuses == ["HTTP/1.1 200", "HTTP/1.1 302", "HTTP/1.1 200"], "\(text)")
            #expect(text.contains(#""status":"ready""#))
            #expect(text.hasSuffix("ok\n"))
            // `Connection: close` is the router's to honour: it answers, then closes.
            let alone = try await Self.exchange(
                port: port, "GET /_/redirect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(alone.hasPrefix("HTTP/1.1 302 Found"))
        }
    }

    // MARK: The bytes way (docs/decisions/0012-fast-path-bytes.md)

    static func plain(_ text: String) -> PlainGet? {
        Array(text.utf8).withUnsafeBytes { PlainGet.parse($0) }
    }

    @Test func plainGetsAreReadFromBytes() throws {
        let wrk = "GET /r/ANNA-7K3Q?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        let get = try #require(Self.plain(wrk + "GET /next"))
        #expect(get.length == wrk.utf8.count)
        #expect(get.target == 4..<20)
        let browser =
            "GET /r/A HTTP/1.1\r\nhost: x\r\nUSER-AGENT:  Mozilla/5.0 (X11)\t \r\nAccept: */*\r\n"
            + "Connection: Keep-Alive\r\nContent-Length: 0\r\nx-request-id: abc-123-def\r\n"
            + "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n"
        let fields = try #require(Self.plain(browser))
        let bytes = Array(browser.utf8)
        func text(_ range: Range<Int>?) -> String? { range.map { String(decoding: bytes[$0], as: UTF8.self) } }
        #expect(text(fields.userAgent) == "Mozilla/5.0 (X11)")
        #expect(text(fields.requestID) == "abc-123-def")
        #expect(text(fields.forwardedFor) == "10.0.0.1, 10.0.0.2")
        #expect(fields.length == bytes.count)
        // Everything not of the plainest form is left to NIO's parser.
        let refused = [
            "POST /r/A HTTP/1.1\r\n\r\n", "get /r/A HTTP/1.1\r\n\r\n", "GET /r/A HTTP/1.0\r\n\r\n",
            "GET http://x/r/A HTTP/1.1\r\n\r\n", "GET /r/A  HTTP/1.1\r\n\r\n", "GET /r/\u{C4} HTTP/1.1\r\n\r\n",
            "GET /r/A HTTP/1.1\nHost: x\r\n\r\n", "GET /r/A HTTP/1.1\r\nHost: x\n\r\n",
            "GET /r/A HTTP/1.1\r\nHost: x\r\n\n", "GET /r/A HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "GET /r/A HTTP/1.1\r\n: x\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n", "GET /r/A HTTP/1.1\r\nHost: \u{E4}\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", "GET /r/A HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nConnection: close\r\n\r\n", "GET /r/A HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "GET /r/A HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nUser-Agent: a\r\nuser-agent: b\r\n\r\n",
            "GET /r/A HTTP/1.1\r\nProxy-Connection: close\r\n\r\n", "GET /r/A HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            // Cut off by the read: the parser waits for the rest.
            "GET /r/A HTTP/1.1\r\nHost: x\r\n", "GET /r/A HTTP/1.1\r\nHost: x\r\n\r", "GET /r/A", "GET",
        ]
        for request in refused { #expect(Self.plain(request) == nil, "\(request.debugDescription)") }
        // The limits, from both sides.
        let lines = { (n: Int) in "GET / HTTP/1.1\r\n" + String(repeating: "A: b\r\n", count: n) + "\r\n" }
        #expect(Self.plain(lines(PlainGet.maxFields))?.length == lines(PlainGet.maxFields).utf8.count)
        #expect(Self.plain(lines(PlainGet.maxFields + 1)) == nil)
        let long = { (n: Int) in "GET / HTTP/1.1\r\nA: " + String(repeating: "b", count: n) + "\r\n\r\n" }
        let longest = PlainGet.maxLength - long(0).utf8.count
        #expect(Self.plain(long(longest))?.length == PlainGet.maxLength)
        #expect(Self.plain(long(longest + 1)) == nil)
    }

    /// A connection of plain GETs is answered from its bytes, byte for byte as the parsed way answers; at the first
    /// request for the router the rest of the connection goes to the parser, in order.
    @Test func plainRequestsAreAnsweredFromTheirBytes() async throws {
        try await TestApp.run(live: true) { app in
            let (_, code) = try await Self.programme(app)
            let port = try #require(app.client.port)
            // The first request fills the cache (through the router); the parsed way then answers from it.
            _ = try await app.request(.get, "/r/\(code)")
            let parsedReference = try await Self.answered(app, route: "/r/{code}", way: "parsed")
            let parsed = try await app.request(.get, "/r/\(code)", headers: [.userAgent: "Mozilla/5.0 Firefox/130.0"])
            try #require(try await Self.answered(app, route: "/r/{code}", way: "parsed") == parsedReference + 1)
            let bytesBefore = try await Self.answered(app, route: "/r/{code}", way: "bytes")
            let parsedBefore = try await Self.answered(app, route: "/r/{code}", way: "parsed")
            let get = "GET /r/\(code) HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0 Firefox/130.0\r\n\r\n"
            let text = try await Self.exchange(
                port: port,
                get + get + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + get
                    + "GET /_/redirect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let answers = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + $0 }
            #expect(
                answers.map { $0.prefix(12) } == [
                    "HTTP/1.1 302", "HTTP/1.1 302", "HTTP/1.1 200", "HTTP/1.1 302",
                    "HTTP/1.1 302",
                ], "\(text)")
            // Two from the bytes. After /healthz the bytes handler has handed over, and the fourth request, read with
            // /healthz still at the router, waits for the router too (pipelined answers keep their order).
            #expect(try await Self.answered(app, route: "/r/{code}", way: "bytes") == bytesBefore + 2)
            #expect(try await Self.answered(app, route: "/r/{code}", way: "parsed") == parsedBefore)
            // The same fields as the router's answer, and in the same order as the parsed way's.
            func lines(_ answer: String) -> [String] {
                answer.components(separatedBy: "\r\n").filter {
                    !$0.hasPrefix("X-Request-Id:") && !$0.hasPrefix("Date:")
                }
            }
            #expect(lines(answers[0]).sorted() == lines(answers[3]).sorted())
            var expected = ["HTTP/1.1 302 Found"]
            expected += parsed.headers.filter { $0.name != HTTPField.Name("X-Request-Id")! && $0.name != .date }
                .map { "\($0.name): \($0.value)" }
            #expect(lines(answers[0]).filter { !$0.isEmpty } == expected)
            #expect(answers[0].contains("\r\nX-Request-Id: ") && answers[0].hasSuffix("GMT\r\n\r\n"))
            #expect(answers[0] != answers[1], "each answer has its own request id")
            // Every answer was a click with the user agent: the router's first, the parsed one, and three here.
            try await app.runtime.referrals.clicks.flush()
            #expect(try await app.store.db.scalar("SELECT COUNT(*) FROM referral_clicks") == 5)
            let firefox = try await app.store.db.scalar(
                "SELECT COUNT(*) FROM referral_clicks WHERE ua_family = 'firefox'")
            #expect(firefox == 4, "the user agent of the parsed answer and of the three here")
        }
    }

    /// The HTTP pipeline of a Hummingbird connection with the fast path, on an `EmbeddedChannel`, with the bare
    /// redirect as its one route.
    static func embedded() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        let answer = FastAnswer(
            HTTPResponse(status: .found, headerFields: [.location: "https://shop.example/"]), path: "/_/redirect")
        let fastPath = FastPath(
            routes: [FastRoute(path: "/_/redirect") { _ in answer }], requestIDs: RequestIDs(random: SystemRandom()),
            metrics: RequestMetricsCache())
        try pipeline.addHandler(fastPath.handler())
        return channel
    }

    static func outbound(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let part = try channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = part { text += String(buffer: buffer) }
        }
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    /// Requests whole in one read are answered from their bytes; a request cut in two by the reads goes to the
    /// parser, with everything after it, and the parsed way answers it.
    @Test func aRequestCutByTheReadGoesToTheParser() throws {
        let get = "GET /_/redirect HTTP/1.1\r\nHost: x\r\n\r\n"
        let whole = try Self.embedded()
        try whole.writeInbound(ByteBuffer(string: get + get))
        let bytes = try #require(try whole.pipeline.syncOperations.handler(type: FastPathBytesHandler.self))
        #expect(!bytes.handedOver)
        #expect(try Self.outbound(whole).components(separatedBy: "HTTP/1.1 302 Found\r\n").count == 3)
        let cut = try Self.embedded()
        try cut.writeInbound(ByteBuffer(string: "GET /_/redirect HTTP/1.1\r\nHo"))
        #expect(try Self.outbound(cut).isEmpty)
        try cut.writeInbound(ByteBuffer(string: "st: x\r\n\r\n" + get))
        #expect(try cut.pipeline.syncOperations.handler(type: FastPathBytesHandler.self).handedOver)
        let text = try Self.outbound(cut)
        #expect(text.components(separatedBy: "HTTP/1.1 302 Found\r\n").count == 3, "\(text)")
        #expect(try cut.readInbound(as: HTTPRequestPart.self) == nil, "both answered on the fast path")
        _ = try? whole.finish()
        _ = try? cut.finish()
    }

    static func connect(port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Writes `request` on a new connection and reads until the server closes it.
    static func exchange(port: Int, _ request: String) async throws -> String {
        let channel = try await connect(port: port)
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var text = ""
            for try await chunk in inbound { text += String(buffer: chunk) }
            return text
        }
    }
}

/// Answers gathered across two test apps.
final class Answers: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [[String]] = []
    func add(_ item: [String]) { lock.withLock { items.append(item) } }
    var all: [[String]] { lock.withLock { items } }
}
