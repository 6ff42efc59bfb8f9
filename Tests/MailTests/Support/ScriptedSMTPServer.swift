// A scripted SMTP server on 127.0.0.1 for the mail engine's fault tests.
//
// Real enough SMTP semantics for a strict client (greeting, EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN,
// MAIL/RCPT/DATA with dot-unstuffing, RSET, NOOP, QUIT, PIPELINING), plus scripted faults: a chosen
// reply to the n-th command of a verb, a connection dropped in the middle of DATA, a command never
// answered, and plaintext injected after "220 Ready to start TLS".
//
// Only NIOCore, NIOPosix, NIOSSL and Foundation. One event-loop thread per server; all connection
// state lives on that loop, the shared record (messages, log, counters) behind a lock.
//
//     var script = SMTPScript()
//     script.tls = try ScriptedSMTPServer.testTLSContext(fixtures: ScriptedSMTPServer.fixturesDirectory())
//     script.faults = [.reply(verb: "RCPT", occurrence: 1, code: 550, text: "5.1.1 No such user")]
//     let server = try await ScriptedSMTPServer.start(script)   // 127.0.0.1:server.port
//     ... send with the client under test ...
//     #expect(server.messages().count == 1)
//     try await server.shutdown()
//
// The test target needs NIOCore, NIOPosix and NIOSSL, and `exclude: ["Fixtures"]` (the PEM files are
// read from the source tree through #filePath, see fixturesDirectory()).

import Foundation
import NIOCore
import NIOPosix
import NIOSSL

// MARK: - Script

struct SMTPScript: Sendable {
    /// The greeting line(s). A "\n" separates lines of a multi-line greeting (give the "220-" prefixes yourself).
    /// A greeting starting with 421 closes the connection after it is written; one starting with 554 answers
    /// every command but QUIT with "503 5.5.1 Error: no service" (RFC 5321 section 3.1).
    var greeting = "220 scripted.test ESMTP"
    var extensions: [String] = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "AUTH PLAIN LOGIN"]
    /// TLS for STARTTLS (advertised in EHLO only when set and offerSTARTTLS) or for implicit TLS.
    var tls: NIOSSLContext? = nil
    var offerSTARTTLS = true
    var implicitTLS = false
    /// When set, MAIL FROM before a successful AUTH gets "530 5.7.0 Authentication required".
    /// When nil, AUTH accepts any user name and password.
    var credentials: (user: String, password: String)? = nil
    var faults: [SMTPFault] = []
    /// The server's name in the first EHLO/HELO reply line.
    var hostname = "scripted.test"
}

enum SMTPFault: Sendable {
    /// Answer the n-th (1-based, counted over the server's whole life, all connections) command with this verb
    /// (EHLO, HELO, MAIL, RCPT, DATA, RSET, QUIT, AUTH, STARTTLS, NOOP, or "DOT" for the end-of-data reply) with `code text`.
    /// A 421 reply also closes the connection right after it is written.
    ///
    /// A code >= 400 replaces the command: nothing happens but the reply (a failed DOT drops the message and ends
    /// the transaction). A code < 400 lets the command take its normal effect and replaces its reply with this one
    /// line (EHLO then lists no extensions; DOT with 2xx records the message; AUTH with 235 authenticates at once,
    /// as the user of a PLAIN initial response if there is one, else as "").
    case reply(verb: String, occurrence: Int, code: Int, text: String)
    /// Close the connection after receiving `afterBytes` bytes of the n-th message's DATA payload (no reply).
    /// Messages are counted by the DATA commands answered with 354. `afterBytes: 0` closes right after the 354;
    /// an `afterBytes` larger than the payload closes once the whole payload and its final "." have arrived,
    /// without answering them.
    case dropDuringData(occurrence: Int, afterBytes: Int)
    /// Never answer the n-th command with this verb (the connection stays open until the client closes it).
    /// Nothing the client sends on that connection afterwards is read or logged.
    case stall(verb: String, occurrence: Int)
    /// After "220 Ready to start TLS", write these extra plaintext bytes in the SAME write, before the TLS
    /// handshake (the CVE-2011-0411 injection; a correct client discards them). Applies to every STARTTLS, on
    /// every connection; several of these are written one after the other.
    case injectAfterSTARTTLS(String)
    /// Answer DATA with 354 even when no recipient of the transaction was accepted, as some servers do to pipelined
    /// commands, and answer the end of that data with 554 without recording a message. RFC 2920 section 3.1: the
    /// client must then send a lone ".". `refusedPayloads()` lists what each such transaction carried.
    case dataWithoutRecipients
}

struct ReceivedMessage: Sendable, Equatable {
    /// The reverse-path inside <>, parameters like SIZE=/BODY= stripped ("" for the null sender <>).
    var mailFrom: String
    var recipients: [String]
    /// The payload after dot-unstuffing, without the final ".\r\n" (so it ends with the last line's CRLF).
    var data: [UInt8]
    var overTLS: Bool
    var authenticatedUser: String?
    /// 1-based connection index.
    var connection: Int
}

enum ScriptedSMTPServerError: Error, CustomStringConvertible {
    case implicitTLSWithoutContext

    var description: String {
        switch self {
        case .implicitTLSWithoutContext: "SMTPScript.implicitTLS needs SMTPScript.tls"
        }
    }
}

// MARK: - Server

final class ScriptedSMTPServer: Sendable {
    let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let serverChannel: any Channel
    private let shared: ScriptedSMTPShared

    private init(
        port: Int,
        group: MultiThreadedEventLoopGroup,
        serverChannel: any Channel,
        shared: ScriptedSMTPShared
    ) {
        self.port = port
        self.group = group
        self.serverChannel = serverChannel
        self.shared = shared
    }

    static func start(_ script: SMTPScript) async throws -> ScriptedSMTPServer {
        if script.implicitTLS && script.tls == nil { throw ScriptedSMTPServerError.implicitTLSWithoutContext }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let shared = ScriptedSMTPShared(faults: script.faults)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if script.implicitTLS, let tls = script.tls {
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try sync.addHandler(SMTPSessionHandler(script: script, shared: shared))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        let port = channel.localAddress?.port ?? 0
        return ScriptedSMTPServer(port: port, group: group, serverChannel: channel, shared: shared)
    }

    /// Messages whose end-of-data got a 250 reply (a 2xx reply, for a scripted DOT fault).
    func messages() -> [ReceivedMessage] { shared.withLock { $0.messages } }

    func connectionCount() -> Int { shared.withLock { $0.connections } }

    /// Every command line received, in order, as "connection: LINE" (AUTH secrets may appear; it is a test server).
    /// AUTH continuation lines are logged too; DATA payload lines are not.
    func commandLog() -> [String] { shared.withLock { $0.log } }

    /// How many plaintext bytes the server discarded after STARTTLS lines (pipelined by a client that should not have).
    func discardedAfterSTARTTLS() -> Int { shared.withLock { $0.discardedAfterSTARTTLS } }

    /// The payloads of the transactions answered with 354 without an accepted recipient, in order
    /// (`SMTPFault.dataWithoutRecipients`); a correct client sends none ([], a lone ".").
    func refusedPayloads() -> [[UInt8]] { shared.withLock { $0.refusedPayloads } }

    /// Polls until `messages().count >= count` or the timeout passes; returns the messages either way.
    func waitForMessages(count: Int, timeout: Duration = .seconds(10)) async -> [ReceivedMessage] {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            let current = messages()
            if current.count >= count { return current }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return messages()
    }

    /// Closes the listener and every open connection, and stops the server's thread.
    func shutdown() async throws {
        try? await serverChannel.close()
        try await group.shutdownGracefully()
    }

    /// A server TLS context from the fixtures folder: test-server.pem / test-server-key.pem (issued by test-ca.pem),
    /// or with `untrusted` the self-signed untrusted-server.pem / untrusted-server-key.pem. Both name DNS:localhost
    /// and IP:127.0.0.1.
    static func testTLSContext(fixtures: URL, untrusted: Bool = false) throws -> NIOSSLContext {
        let name = untrusted ? "untrusted-server" : "test-server"
        let certificates = try NIOSSLCertificate.fromPEMFile(fixtures.appendingPathComponent("\(name).pem").path)
        let key = try NIOSSLPrivateKey(file: fixtures.appendingPathComponent("\(name)-key.pem").path, format: .pem)
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificates.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        return try NIOSSLContext(configuration: configuration)
    }

    /// Tests/MailTests/Fixtures, found from this file's own path (symbolic links resolved).
    static func fixturesDirectory() -> URL {
        URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent()  // Support/
            .deletingLastPathComponent()  // MailTests/
            .appendingPathComponent("Fixtures", isDirectory: true)
    }
}

// MARK: - Shared record

/// What all connections share: counters for the faults, the accepted messages and the command log.
private final class ScriptedSMTPShared: @unchecked Sendable {
    struct State {
        var connections = 0
        var verbCounts: [String: Int] = [:]
        var dataPhases = 0
        var queued = 0
        var messages: [ReceivedMessage] = []
        var log: [String] = []
        var discardedAfterSTARTTLS = 0
        var refusedPayloads: [[UInt8]] = []
    }

    enum Action {
        case proceed
        case reply(code: Int, text: String)
        case stall
    }

    private let lock = NSLock()
    private var state = State()
    let faults: [SMTPFault]
    let injection: String?

    init(faults: [SMTPFault]) {
        self.faults = faults
        var injection: String?
        for case .injectAfterSTARTTLS(let text) in faults { injection = (injection ?? "") + text }
        self.injection = injection
    }

    func withLock<T>(_ body: (inout State) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&state)
    }

    func connectionOpened() -> Int {
        withLock { state in
            state.connections += 1
            return state.connections
        }
    }

    func log(connection: Int, line: String) { withLock { $0.log.append("\(connection): \(line)") } }

    /// Counts one command of `verb` (or "DOT") and says what the script wants done with it.
    func count(verb: String) -> Action {
        let verb = verb.uppercased()
        let occurrence = withLock { state -> Int in
            state.verbCounts[verb, default: 0] += 1
            return state.verbCounts[verb]!
        }
        for fault in faults {
            switch fault {
            case .reply(let v, let n, let code, let text) where v.uppercased() == verb && n == occurrence:
                return .reply(code: code, text: text)
            case .stall(let v, let n) where v.uppercased() == verb && n == occurrence:
                return .stall
            default:
                continue
            }
        }
        return .proceed
    }

    /// Counts one DATA payload phase (a DATA answered with 354); returns the drop threshold if one is scripted.
    func dataPhaseStarted() -> Int? {
        let occurrence = withLock { state -> Int in
            state.dataPhases += 1
            return state.dataPhases
        }
        for case .dropDuringData(let n, let afterBytes) in faults where n == occurrence { return max(0, afterBytes) }
        return nil
    }

    /// Whether DATA gets a 354 without an accepted recipient (`SMTPFault.dataWithoutRecipients`).
    var dataWithoutRecipients: Bool {
        faults.contains { if case .dataWithoutRecipients = $0 { true } else { false } }
    }

    /// Records the payload of a transaction without recipients, which the server refused at its end.
    func refuse(_ payload: [UInt8]) { withLock { $0.refusedPayloads.append(payload) } }

    /// Records an accepted message; returns its queue number.
    func accept(_ message: ReceivedMessage) -> Int {
        withLock { state in
            state.queued += 1
            state.messages.append(message)
            return state.queued
        }
    }
}

// MARK: - One connection

private final class SMTPSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Mode: Equatable {
        case command
        case authPlain
        case authLoginUser
        case authLoginPassword(user: String)
        case data
        case stalled
        case closed
    }

    private static let maxCommandLine = 1000  // RFC 5321 4.5.3.1.4, CRLF included

    private let script: SMTPScript
    private let shared: ScriptedSMTPShared
    private var connection = 0
    private var buffer = ByteBuffer()
    private var mode = Mode.command
    private var overTLS: Bool
    private var noService = false
    private var discardingLongLine = false

    // Session
    private var greeted = false
    private var authenticatedUser: String?
    // Transaction
    private var mailFrom: String?
    private var recipients: [String] = []
    private var payload: [UInt8] = []
    private var payloadRawBytes = 0
    private var dropAfter: Int?

    /// A scripted reply with code < 400 that replaces the next reply of the command being handled.
    private var override: (code: Int, text: String)?

    init(script: SMTPScript, shared: ScriptedSMTPShared) {
        self.script = script
        self.shared = shared
        self.overTLS = script.implicitTLS
    }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        connection = shared.connectionOpened()
        let lines = script.greeting.split(separator: "\n", omittingEmptySubsequences: true)
            .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        var out = context.channel.allocator.buffer(capacity: 128)
        for line in lines { out.writeString(line + "\r\n") }
        let first = lines.first ?? ""
        if first.hasPrefix("421") {
            writeThenClose(context: context, out)
            return
        }
        noService = first.hasPrefix("554")
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        mode = .closed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        mode = .closed
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        switch mode {
        case .stalled, .closed:
            return
        default:
            break
        }
        buffer.writeBuffer(&incoming)
        process(context: context)
        if buffer.readerIndex > 65536 { buffer.discardReadBytes() }
        context.flush()
    }

    // MARK: Input

    private func process(context: ChannelHandlerContext) {
        while true {
            switch mode {
            case .stalled, .closed:
                buffer.clear()
                return
            case .data:
                if !processPayload(context: context) { return }
            case .command, .authPlain, .authLoginUser, .authLoginPassword:
                guard let line = nextCommandLine(context: context) else { return }
                handle(line: line, context: context)
            }
        }
    }

    /// The next command line without its line ending, or nil when more bytes are needed. Bare LF is accepted.
    private func nextCommandLine(context: ChannelHandlerContext) -> String? {
        while true {
            let view = buffer.readableBytesView
            guard let lf = view.firstIndex(of: UInt8(ascii: "\n")) else {
                if view.count > Self.maxCommandLine {
                    buffer.moveReaderIndex(forwardBy: view.count)
                    if !discardingLongLine {
                        discardingLongLine = true
                        send(context: context, 500, "5.5.2 Error: line too long")
                    }
                }
                return nil
            }
            let lineLength = lf - view.startIndex + 1
            if discardingLongLine || lineLength > Self.maxCommandLine {
                buffer.moveReaderIndex(forwardBy: lineLength)
                if !discardingLongLine { send(context: context, 500, "5.5.2 Error: line too long") }
                discardingLongLine = false
                continue
            }
            var bytes = buffer.readBytes(length: lineLength)!
            bytes.removeLast()
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// Consumes DATA payload lines; false when more bytes are needed (or the connection was dropped).
    private func processPayload(context: ChannelHandlerContext) -> Bool {
        while true {
            if mode != .data { return true }
            let view = buffer.readableBytesView
            var search = view.startIndex
            var lineEnd: Int?  // index of the LF of the next CRLF
            while let lf = view[search...].firstIndex(of: UInt8(ascii: "\n")) {
                if lf > view.startIndex && view[lf - 1] == UInt8(ascii: "\r") {
                    lineEnd = lf
                    break
                }
                search = lf + 1
            }
            guard let lf = lineEnd else {
                if let limit = dropAfter, payloadRawBytes + view.count >= limit, view.count > 0 || limit == 0 {
                    drop(context: context)
                    return false
                }
                return false
            }
            let lineLength = lf - view.startIndex + 1
            let isTerminator = lineLength == 3 && view[view.startIndex] == UInt8(ascii: ".")
            if let limit = dropAfter, isTerminator || payloadRawBytes + lineLength >= limit {
                drop(context: context)
                return false
            }
            if isTerminator {
                buffer.moveReaderIndex(forwardBy: 3)
                endOfData(context: context)
                return true
            }
            var start = view.startIndex
            if view[start] == UInt8(ascii: ".") { start += 1 }  // dot-unstuffing (RFC 5321 4.5.2)
            payload.append(contentsOf: view[start...lf])
            payloadRawBytes += lineLength
            buffer.moveReaderIndex(forwardBy: lineLength)
        }
    }

    private func drop(context: ChannelHandlerContext) {
        mode = .closed
        buffer.clear()
        context.close(promise: nil)
    }

    // MARK: Commands

    private func handle(line: String, context: ChannelHandlerContext) {
        shared.log(connection: connection, line: line)
        switch mode {
        case .authPlain:
            mode = .command
            if line == "*" { return send(context: context, 501, "5.7.0 Authentication aborted") }
            guard let decoded = Self.base64(line) else {
                return send(context: context, 501, "5.5.2 Cannot decode response")
            }
            return finishPlain(decoded, context: context)
        case .authLoginUser:
            if line == "*" {
                mode = .command
                return send(context: context, 501, "5.7.0 Authentication aborted")
            }
            guard let user = Self.base64(line) else {
                mode = .command
                return send(context: context, 501, "5.5.2 Cannot decode response")
            }
            mode = .authLoginPassword(user: String(decoding: user, as: UTF8.self))
            return send(context: context, 334, "UGFzc3dvcmQ6")
        case .authLoginPassword(let user):
            mode = .command
            if line == "*" { return send(context: context, 501, "5.7.0 Authentication aborted") }
            guard let password = Self.base64(line) else {
                return send(context: context, 501, "5.5.2 Cannot decode response")
            }
            return finishAuth(user: user, password: String(decoding: password, as: UTF8.self), context: context)
        default:
            break
        }

        let verb: String
        let argument: String
        if let space = line.firstIndex(of: " ") {
            verb = line[..<space].uppercased()
            argument = String(line[line.index(after: space)...]).trimmingCharacters(in: .whitespaces)
        } else {
            verb = line.uppercased()
            argument = ""
        }

        switch shared.count(verb: verb) {
        case .stall:
            mode = .stalled
            return
        case .reply(let code, let text):
            if code >= 400 {
                return send(context: context, code, text)
            }
            override = (code, text)
        case .proceed:
            break
        }
        defer { override = nil }

        if noService && verb != "QUIT" { return send(context: context, 503, "5.5.1 Error: no service") }

        switch verb {
        case "EHLO": ehlo(argument, context: context)
        case "HELO": helo(argument, context: context)
        case "STARTTLS": startTLS(argument, context: context)
        case "AUTH": auth(argument, context: context)
        case "MAIL": mail(argument, context: context)
        case "RCPT": rcpt(argument, context: context)
        case "DATA": data(argument, context: context)
        case "RSET":
            resetTransaction()
            send(context: context, 250, "2.0.0 Ok")
        case "NOOP": send(context: context, 250, "2.0.0 Ok")
        case "QUIT":
            mode = .closed
            var out = context.channel.allocator.buffer(capacity: 32)
            out.writeString(replyText(221, ["2.0.0 Bye"]))
            writeThenClose(context: context, out)
        case "": send(context: context, 500, "5.5.2 Error: bad syntax")
        default: send(context: context, 500, "5.5.2 Error: command not recognized")
        }
    }

    private func ehlo(_ argument: String, context: ChannelHandlerContext) {
        guard !argument.isEmpty else { return send(context: context, 501, "5.5.4 Syntax: EHLO hostname") }
        resetTransaction()
        greeted = true
        var lines = ["\(script.hostname) Hello \(argument)"] + script.extensions
        if script.tls != nil && script.offerSTARTTLS && !overTLS { lines.append("STARTTLS") }
        send(context: context, 250, lines)
    }

    private func helo(_ argument: String, context: ChannelHandlerContext) {
        guard !argument.isEmpty else { return send(context: context, 501, "5.5.4 Syntax: HELO hostname") }
        resetTransaction()
        greeted = true
        send(context: context, 250, script.hostname)
    }

    private func startTLS(_ argument: String, context: ChannelHandlerContext) {
        guard let tls = script.tls, script.offerSTARTTLS else {
            return send(context: context, 502, "5.5.1 Error: command not implemented")
        }
        guard !overTLS else { return send(context: context, 503, "5.5.1 Error: TLS already active") }
        guard argument.isEmpty else { return send(context: context, 501, "5.5.4 Syntax: STARTTLS") }

        // The 220 (and any scripted injection) in one write, flushed before the TLS handler exists, so it goes out
        // as plaintext: it has already passed the (empty) outbound part of the pipeline.
        var out = context.channel.allocator.buffer(capacity: 64)
        out.writeString(replyText(220, ["2.0.0 Ready to start TLS"]))
        if let injection = shared.injection { out.writeString(injection) }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)

        // RFC 3207 section 4 / CVE-2011-0411: plaintext that arrived after the STARTTLS line is not a command.
        let discarded = buffer.readableBytes
        if discarded > 0 { shared.withLock { $0.discardedAfterSTARTTLS += discarded } }
        buffer.clear()

        // From now on every byte that arrives (and every write) goes through TLS.
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
        } catch {
            mode = .closed
            context.close(promise: nil)
            return
        }
        overTLS = true
        greeted = false
        authenticatedUser = nil
        resetTransaction()
    }

    private func auth(_ argument: String, context: ChannelHandlerContext) {
        guard greeted else { return send(context: context, 503, "5.5.1 Error: send HELO/EHLO first") }
        guard authenticatedUser == nil else { return send(context: context, 503, "5.5.1 Error: already authenticated") }
        guard mailFrom == nil else { return send(context: context, 503, "5.5.1 Error: MAIL transaction in progress") }
        let parts = argument.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let mechanism = parts.first?.uppercased() else {
            return send(context: context, 501, "5.5.4 Syntax: AUTH mechanism")
        }
        let initial = parts.count > 1 ? parts[1] : nil

        if let forced = override {  // a scripted success reply: the AUTH ends here
            if forced.code == 235 {
                var user = ""
                if mechanism == "PLAIN", let initial, let decoded = Self.base64(initial) {
                    let fields = decoded.split(separator: 0, omittingEmptySubsequences: false)
                    if fields.count == 3 { user = String(decoding: fields[1], as: UTF8.self) }
                }
                authenticatedUser = user
            }
            return send(context: context, forced.code, forced.text)
        }

        switch mechanism {
        case "PLAIN":
            guard let initial else {
                mode = .authPlain
                return send(context: context, 334, "")
            }
            if initial == "=" { return finishPlain([], context: context) }
            guard let decoded = Self.base64(initial) else {
                return send(context: context, 501, "5.5.2 Cannot decode response")
            }
            finishPlain(decoded, context: context)
        case "LOGIN":
            guard let initial else {
                mode = .authLoginUser
                return send(context: context, 334, "VXNlcm5hbWU6")
            }
            guard let user = Self.base64(initial) else {
                return send(context: context, 501, "5.5.2 Cannot decode response")
            }
            mode = .authLoginPassword(user: String(decoding: user, as: UTF8.self))
            send(context: context, 334, "UGFzc3dvcmQ6")
        default:
            send(context: context, 504, "5.5.4 Unsupported authentication mechanism")
        }
    }

    /// AUTH PLAIN message: authzid NUL authcid NUL passwd (RFC 4616).
    private func finishPlain(_ decoded: [UInt8], context: ChannelHandlerContext) {
        let fields = decoded.split(separator: 0, omittingEmptySubsequences: false)
        guard fields.count == 3 else { return send(context: context, 535, "5.7.8 Error: authentication failed") }
        finishAuth(
            user: String(decoding: fields[1], as: UTF8.self),
            password: String(decoding: fields[2], as: UTF8.self),
            context: context
        )
    }

    private func finishAuth(user: String, password: String, context: ChannelHandlerContext) {
        if let credentials = script.credentials, credentials.user != user || credentials.password != password {
            return send(context: context, 535, "5.7.8 Error: authentication failed")
        }
        authenticatedUser = user
        send(context: context, 235, "2.7.0 Authentication successful")
    }

    private func mail(_ argument: String, context: ChannelHandlerContext) {
        guard greeted else { return send(context: context, 503, "5.5.1 Error: send HELO/EHLO first") }
        guard mailFrom == nil else { return send(context: context, 503, "5.5.1 Error: nested MAIL command") }
        if script.credentials != nil && authenticatedUser == nil {
            return send(context: context, 530, "5.7.0 Authentication required")
        }
        guard let (address, parameters) = Self.path(argument, keyword: "FROM:") else {
            return send(context: context, 501, "5.5.4 Syntax: MAIL FROM:<address>")
        }
        if let limit = sizeLimit {
            for parameter in parameters where parameter.uppercased().hasPrefix("SIZE=") {
                if let size = Int(parameter.dropFirst(5)), size > limit {
                    return send(context: context, 552, "5.3.4 Message size exceeds fixed limit")
                }
            }
        }
        mailFrom = address
        recipients = []
        send(context: context, 250, "2.1.0 Ok")
    }

    private func rcpt(_ argument: String, context: ChannelHandlerContext) {
        guard mailFrom != nil else { return send(context: context, 503, "5.5.1 Error: need MAIL command") }
        guard let (address, _) = Self.path(argument, keyword: "TO:"), !address.isEmpty else {
            return send(context: context, 501, "5.5.4 Syntax: RCPT TO:<address>")
        }
        recipients.append(address)
        send(context: context, 250, "2.1.5 Ok")
    }

    private func data(_ argument: String, context: ChannelHandlerContext) {
        guard argument.isEmpty else { return send(context: context, 501, "5.5.4 Syntax: DATA") }
        guard mailFrom != nil else { return send(context: context, 503, "5.5.1 Error: need MAIL command") }
        guard !recipients.isEmpty || shared.dataWithoutRecipients else {
            return send(context: context, 503, "5.5.1 Error: need RCPT command")
        }
        payload = []
        payloadRawBytes = 0
        dropAfter = shared.dataPhaseStarted()
        mode = .data
        send(context: context, 354, "End data with <CR><LF>.<CR><LF>")
        // Bytes already buffered behind the DATA line are payload: process() goes on with them in data mode.
    }

    private func endOfData(context: ChannelHandlerContext) {
        mode = .command
        if recipients.isEmpty {
            shared.refuse(payload)
            resetTransaction()
            return send(context: context, 554, "5.5.1 Error: no valid recipients")
        }
        let message = ReceivedMessage(
            mailFrom: mailFrom ?? "",
            recipients: recipients,
            data: payload,
            overTLS: overTLS,
            authenticatedUser: authenticatedUser,
            connection: connection
        )
        resetTransaction()
        switch shared.count(verb: "DOT") {
        case .stall:
            mode = .stalled
        case .reply(let code, let text):
            if (200..<300).contains(code) { _ = shared.accept(message) }
            send(context: context, code, text)
        case .proceed:
            let id = shared.accept(message)
            send(context: context, 250, "2.0.0 Ok: queued as \(id)")
        }
    }

    private func resetTransaction() {
        mailFrom = nil
        recipients = []
        payload = []
        payloadRawBytes = 0
        dropAfter = nil
    }

    private var sizeLimit: Int? {
        for line in script.extensions {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0].uppercased() == "SIZE", let n = Int(fields[1]), n > 0 { return n }
        }
        return nil
    }

    // MARK: Output

    private func send(context: ChannelHandlerContext, _ code: Int, _ text: String) {
        send(context: context, code, [text])
    }

    /// Writes a (multi-line) reply, or the scripted override in its place; a 421 closes the connection.
    private func send(context: ChannelHandlerContext, _ code: Int, _ lines: [String]) {
        var code = code
        var lines = lines
        if let forced = override {
            override = nil
            code = forced.code
            lines = [forced.text]
        }
        var out = context.channel.allocator.buffer(capacity: 64)
        out.writeString(replyText(code, lines))
        if code == 421 {
            mode = .closed
            writeThenClose(context: context, out)
        } else {
            context.write(wrapOutboundOut(out), promise: nil)
        }
    }

    private func replyText(_ code: Int, _ lines: [String]) -> String {
        let lines = lines.isEmpty ? [""] : lines
        var text = ""
        for (index, line) in lines.enumerated() {
            let separator = index == lines.count - 1 ? " " : "-"
            text += "\(code)\(separator)\(line)\r\n"
        }
        return text
    }

    private func writeThenClose(context: ChannelHandlerContext, _ out: ByteBuffer) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }

    // MARK: Parsing

    private static func base64(_ text: String) -> [UInt8]? {
        if text == "=" { return [] }
        return Data(base64Encoded: text).map { [UInt8]($0) }
    }

    /// "FROM:<a@b> SIZE=1" → ("a@b", ["SIZE=1"]); nil on a syntax error.
    private static func path(_ argument: String, keyword: String) -> (String, [String])? {
        guard argument.uppercased().hasPrefix(keyword) else { return nil }
        let rest = argument.dropFirst(keyword.count).drop(while: { $0 == " " })
        guard rest.first == "<", let close = rest.firstIndex(of: ">") else { return nil }
        let address = String(rest[rest.index(after: rest.startIndex)..<close])
        let parameters = rest[rest.index(after: close)...].split(separator: " ").map(String.init)
        return (address, parameters)
    }
}
