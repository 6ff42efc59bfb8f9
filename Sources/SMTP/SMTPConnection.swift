import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// One SMTP session on a NIO channel: greeting, EHLO, STARTTLS (EHLO again), AUTH, then any number of
/// transactions. With PIPELINING, a transaction is one trip onto the event loop: MAIL, RCPT… and DATA in one write
/// (RSET first after a refusal), then the message as soon as the replies accept it.
///
/// With PIPELINING, two tasks may send at once (`canChain`; the pool allows it when every session is busy): the
/// handler writes the second transaction's commands behind the first one's message, in the same write
/// (RFC 2920 §3.1: message content may be the first "command" of a group), so a busy session takes one write and one
/// round trip per message instead of two. Without PIPELINING, one task at a time.
public final class SMTPConnection: @unchecked Sendable {
    let channel: any Channel
    let handler: SMTPClientHandler
    let config: SMTPConfiguration
    let logger: Logger
    /// Set during the handshake, read-only afterwards.
    public private(set) var extensions: [String: String] = [:]
    public private(set) var isTLS = false
    private struct State {
        var messagesSent = 0
        var broken = false
    }
    private let state = Mutex(State())
    public var messagesSent: Int { state.withLock { $0.messagesSent } }
    private var broken: Bool {
        get { state.withLock { $0.broken } }
        set { state.withLock { $0.broken = newValue } }
    }
    /// Without PIPELINING only: whether the last transaction ended without a reply to its message (refused, or
    /// never finished), so the next one starts with RSET. After a completed transaction the server is ready for MAIL
    /// again (RFC 5321 §4.1.4). With PIPELINING the handler decides, when it writes the commands.
    private var needsReset = false
    /// Senders the pool has this session with (touched only under the pool's lock).
    var poolSenders = 0

    init(channel: any Channel, handler: SMTPClientHandler, config: SMTPConfiguration, logger: Logger) {
        self.channel = channel
        self.handler = handler
        self.config = config
        self.logger = logger
    }

    public var isUsable: Bool { !broken && channel.isActive }

    /// Whether a second transaction may be started while one is in flight (the server offers PIPELINING).
    public var canChain: Bool { extensions["PIPELINING"] != nil }

    /// Connects and runs the session up to "ready for MAIL": greeting, EHLO, STARTTLS and AUTH as configured.
    public static func connect(
        _ config: SMTPConfiguration, sslContext: NIOSSLContext?, group: any EventLoopGroup, logger: Logger,
        chained: SMTPCounter = SMTPCounter()
    ) async throws -> SMTPConnection {
        // An IP literal is not a valid SNI name; NIOSSL then checks the certificate against the peer's address.
        let isIPLiteral = config.host.contains(":") || config.host.allSatisfy { $0.isNumber || $0 == "." }
        let tlsHost: String? = isIPLiteral ? nil : config.host
        let handler = SMTPClientHandler(sslContext: sslContext, serverHostname: tlsHost, chained: chained)
        let implicit = config.tls == .implicit
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.init(config.timeouts.connect))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if implicit, let sslContext {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: sslContext, serverHostname: tlsHost))
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: config.host, port: config.port).get()
        } catch {
            throw SMTPError.connection(phase: "connect", reason: "\(config.host):\(config.port): \(error)")
        }
        let connection = SMTPConnection(channel: channel, handler: handler, config: config, logger: logger)
        do {
            try await connection.handshake(implicitTLS: implicit)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    private func handshake(implicitTLS: Bool) async throws {
        let greeting = try await awaitReply(
            handler.expectReply(on: channel, timeout: config.timeouts.command), "greeting")
        guard greeting.code == 220 else { throw Self.failure("greeting", greeting) }
        isTLS = implicitTLS
        try await ehlo()
        if config.tls == .starttls {
            guard extensions["STARTTLS"] != nil else {
                throw SMTPError.tlsRequired(
                    reason:
                        "\(config.host) does not offer STARTTLS (it offers \(extensions.keys.sorted().joined(separator: " "))); nothing was sent"
                )
            }
            let reply = try await command("STARTTLS", phase: "starttls", upgradeToTLS: true)
            guard reply.code == 220 else {
                throw SMTPError.tlsRequired(reason: "STARTTLS refused: \(reply)")
            }
            do {
                try await handler.tlsEstablished(on: channel, timeout: config.timeouts.command).get()
            } catch {
                throw SMTPError.tlsRequired(reason: "TLS handshake with \(config.host) failed: \(error)")
            }
            isTLS = true
            // RFC 3207 §4.2: forget everything learned before TLS and ask again.
            try await ehlo()
        }
        if let user = config.username {
            try await authenticate(user: user, password: config.password ?? "")
        }
    }

    private func ehlo() async throws {
        let reply = try await command("EHLO \(config.heloName)", phase: "ehlo")
        guard reply.code == 250 else { throw Self.failure("ehlo", reply) }
        var ext: [String: String] = [:]
        for line in reply.lines.dropFirst() {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard let keyword = parts.first else { continue }
            ext[keyword.uppercased()] = parts.count > 1 ? String(parts[1]) : ""
        }
        extensions = ext
    }

    private func authenticate(user: String, password: String) async throws {
        if !isTLS && config.tls != .none {
            throw SMTPError.tlsRequired(reason: "refusing to send credentials without TLS")
        }
        let mechanisms = Set((extensions["AUTH"] ?? "").uppercased().split(separator: " ").map(String.init))
        let reply: SMTPReply
        if mechanisms.contains("PLAIN") {
            let token = Data(([0] + Array(user.utf8) + [0] + Array(password.utf8))).base64EncodedString()
            reply = try await command("AUTH PLAIN \(token)", phase: "auth", redact: true)
        } else if mechanisms.contains("LOGIN") {
            let first = try await command("AUTH LOGIN", phase: "auth")
            guard first.code == 334 else { throw Self.failure("auth", first) }
            let second = try await command(Data(user.utf8).base64EncodedString(), phase: "auth", redact: true)
            guard second.code == 334 else { throw Self.failure("auth", second) }
            reply = try await command(Data(password.utf8).base64EncodedString(), phase: "auth", redact: true)
        } else {
            throw SMTPError.unsupported(reason: "\(config.host) offers no AUTH PLAIN or LOGIN")
        }
        guard reply.code == 235 else { throw Self.failure("auth", reply) }
    }

    /// Sends one message. Throws `SMTPError`; after any error but a 4xx/5xx reply to MAIL/RCPT the session is
    /// broken and must be closed.
    @discardableResult
    public func send(_ envelope: SMTPEnvelope) async throws -> SMTPReply {
        do {
            let reply = try await transaction(envelope)
            state.withLock { $0.messagesSent += 1 }
            return reply
        } catch let error as SMTPError {
            switch error {
            // A refusal leaves the session in step: the next transaction starts with RSET.
            case .transient, .permanent, .unsupported: break
            default: broken = true
            }
            throw error
        }
    }

    private func transaction(_ envelope: SMTPEnvelope) async throws -> SMTPReply {
        var mailParams = ""
        if let size = extensions["SIZE"], let limit = Int(size), limit > 0 {
            guard envelope.data.count <= limit else {
                throw SMTPError.unsupported(reason: "message of \(envelope.data.count) bytes exceeds SIZE \(limit)")
            }
        }
        if extensions["SIZE"] != nil { mailParams += " SIZE=\(envelope.data.count)" }
        if envelope.needsSMTPUTF8 {
            guard extensions["SMTPUTF8"] != nil else {
                throw SMTPError.unsupported(reason: "the address needs SMTPUTF8, which \(config.host) does not offer")
            }
            mailParams += " SMTPUTF8"
        }
        if extensions["8BITMIME"] != nil && envelope.needsSMTPUTF8 { mailParams += " BODY=8BITMIME" }
        var commands = ["MAIL FROM:<\(envelope.mailFrom)>\(mailParams)"]
        for r in envelope.recipients { commands.append("RCPT TO:<\(r)>") }
        commands.append("DATA")
        let stuffed = DotStuffing.stuff(envelope.data)

        if canChain {
            // One trip onto the event loop: the commands go out in one write (behind the message of a transaction
            // still in flight, if there is one), and the message follows as soon as the replies accept it, without
            // waking this task in between. The handler puts RSET first when the session needs it.
            let outcome: SMTPClientHandler.PipelinedOutcome
            do {
                outcome = try await handler.transaction(
                    commands, message: stuffed, on: channel, timeout: config.timeouts.command,
                    dataTimeout: config.timeouts.dataEnd
                ).get()
            } catch {
                // The event loop refused the work. "data", not "mail": the pool never resends after this.
                broken = true
                throw SMTPError.connection(phase: "data", reason: "\(error)")
            }
            let lines = outcome.reset ? ["RSET"] + commands : commands
            let mailIndex = outcome.reset ? 1 : 0
            try closing(outcome.replies, lines: lines)
            if let failure = outcome.failure {
                broken = true
                throw Self.channelFailure(failure.error, phase: Self.phase(of: lines[failure.index]))
            }
            if case .failure(let error) = outcome.abort {
                broken = true
                throw Self.channelFailure(error, phase: "data")
            }
            // The handler ended a refused transaction that the server still waited for data on (a lone dot, or
            // closing the session); nothing is left to write here.
            try await checkReplies(outcome.replies, lines: lines, mailIndex: mailIndex, endData: false)
            guard let final = outcome.final else {
                // The handler sends the message exactly when the checks above pass.
                broken = true
                throw SMTPError.connection(phase: "data", reason: "the message was not sent after 354")
            }
            return try finish(final, written: outcome.written, commandsBehind: outcome.commandsBehind)
        }

        var lines: [String] = []
        if needsReset { lines.append("RSET") }
        let mailIndex = lines.count
        lines += commands
        // Until the server answers the message itself, the next transaction must reset the session first.
        needsReset = true
        var replies: [SMTPReply] = []
        for line in lines {
            let reply = try await command(line, phase: Self.phase(of: line))
            replies.append(reply)
            if !reply.isPositive { break }
        }
        try closing(replies, lines: lines)
        try await checkReplies(replies, lines: lines, mailIndex: mailIndex, endData: true)
        // Whether the whole message reached the socket decides what a failure now means: before that, the
        // server cannot have the final dot (retry is safe); after it, it may have accepted the mail (RFC 1047).
        let written = channel.eventLoop.makePromise(of: Void.self)
        let replyFuture = handler.write(stuffed, on: channel, timeout: config.timeouts.dataEnd, written: written)
        let final: Result<SMTPReply, any Error>
        do { final = .success(try await replyFuture.get()) } catch { final = .failure(error) }
        var flushed = true
        if case .failure = final { flushed = (try? await written.futureResult.get()) != nil }
        // Any reply to the message ends the transaction (RFC 5321 §4.1.1.4): the next MAIL needs no RSET.
        if case .success = final { needsReset = false }
        return try finish(final, written: flushed, commandsBehind: false)
    }

    /// Throws unless RSET, MAIL, every RCPT and DATA were accepted; with `endData`, a server left waiting for data
    /// after a refusal gets its lone dot first.
    private func checkReplies(_ replies: [SMTPReply], lines: [String], mailIndex: Int, endData: Bool) async throws {
        for i in 0..<min(mailIndex, replies.count) where replies[i].code != 250 {
            // A server that refused RSET but then took MAIL, RCPT and DATA waits for a message: a lone dot would
            // deliver an empty one. Closing the session makes it drop the transaction.
            if replies.count == lines.count, replies.last?.code == 354 { close() }
            throw Self.failure("rset", replies[i])
        }
        guard replies.count > mailIndex else { throw SMTPError.connection(phase: "mail", reason: "missing reply") }
        let mail = replies[mailIndex]
        guard mail.code == 250 else {
            if endData { try await abortData(replies: replies, lines: lines) }
            throw Self.failure("mail", mail)
        }
        var rejected: SMTPReply?
        for i in (mailIndex + 1)..<max(mailIndex + 1, lines.count - 1) where i < replies.count {
            let reply = replies[i]
            if reply.code != 250 && reply.code != 251 { rejected = rejected ?? reply }
        }
        if let rejected {
            if endData { try await abortData(replies: replies, lines: lines) }
            throw Self.failure("rcpt", rejected)
        }
        guard replies.count == lines.count, let dataReply = replies.last else {
            throw SMTPError.connection(phase: "data", reason: "missing reply")
        }
        guard dataReply.code == 354 else { throw Self.failure("data", dataReply) }
    }

    /// 421: the server is closing the session. Nothing of the message went out, so this is the session's failure at
    /// that command (on a reused session, the pool then retries on a fresh one), not the mail's. The commands after
    /// it fail as "closed", which must not hide it.
    private func closing(_ replies: [SMTPReply], lines: [String]) throws {
        guard let i = replies.firstIndex(where: { $0.code == 421 }) else { return }
        close()
        throw SMTPError.connection(phase: Self.phase(of: lines[i]), reason: "\(replies[i])")
    }

    /// The reply to the message, or what its absence means.
    private func finish(_ final: Result<SMTPReply, any Error>, written: Bool, commandsBehind: Bool) throws
        -> SMTPReply
    {
        switch final {
        case .success(let reply):
            guard reply.code == 250 else { throw Self.failure("data-end", reply) }
            return reply
        case .failure(let error):
            broken = true
            // Not written out: the server cannot have the final dot. Hung up without a reply: a server that takes a
            // message answers before it hangs up (RFC 5321 §4.1.1.4), so this is a drop mid-DATA, and the message is
            // sent again. A close, or a reset with our message unread (nothing of ours behind it). A reset with the
            // next transaction's commands behind the message is not that: a server that answered 250 and closed with
            // those commands unread resets, and its 250 may be lost on the way. That, silence (a timeout) and a
            // garbled reply leave the outcome unknown. (`written` says the kernel took the bytes, not that the server
            // read them.)
            var reset = error is IOError || error is ChannelError
            if case NIOSSLError.uncleanShutdown = error { reset = true }
            let hungUp = (error as? SMTPChannelError) == .closed || (reset && !commandsBehind)
            if !written || hungUp {
                throw SMTPError.connection(phase: "data", reason: "\(error) before the server answered the message")
            }
            throw SMTPError.outcomeUnknown(reason: "\(error)")
        }
    }

    /// After a refused MAIL or RCPT in a pipeline, a server that still said 354 to DATA waits for data:
    /// end it with a lone dot (RFC 2920 §3.1) so the session stays in step.
    private func abortData(replies: [SMTPReply], lines: [String]) async throws {
        if replies.count == lines.count, replies.last?.code == 354 {
            _ = try await awaitReply(
                handler.write(Array(".\r\n".utf8), on: channel, timeout: config.timeouts.command), "data")
        }
    }

    private static func phase(of line: String) -> String {
        String(line.prefix(while: { $0 != " " && $0 != ":" })).lowercased()
    }

    private func command(_ line: String, phase: String, upgradeToTLS: Bool = false, redact: Bool = false)
        async throws -> SMTPReply
    {
        try await awaitReply(
            handler.command(line, on: channel, timeout: config.timeouts.command, upgradeToTLS: upgradeToTLS), phase)
    }

    /// Awaits a reply; maps channel failures to `SMTPError` for the phase, marking the session broken.
    private func awaitReply(_ future: EventLoopFuture<SMTPReply>, _ phase: String) async throws -> SMTPReply {
        do {
            return try await future.get()
        } catch {
            broken = true
            throw Self.channelFailure(error, phase: phase)
        }
    }

    /// A reply that never came, as the error of the phase that waited for it.
    static func channelFailure(_ error: any Error, phase: String) -> SMTPError {
        if let error = error as? SMTPError { return error }
        if phase == "data-end" { return SMTPError.outcomeUnknown(reason: "\(error)") }
        return SMTPError.connection(phase: phase, reason: "\(error)")
    }

    static func failure(_ phase: String, _ reply: SMTPReply) -> SMTPError {
        reply.isPermanent ? .permanent(phase: phase, reply: reply) : .transient(phase: phase, reply: reply)
    }

    /// QUIT and close; errors are ignored (the session is over either way).
    public func quit() async {
        if isUsable {
            _ = try? await handler.command("QUIT", on: channel, timeout: .seconds(5), upgradeToTLS: false).get()
        }
        close()
    }

    public func close() {
        broken = true
        channel.close(promise: nil)
    }
}

/// A count shared by a pool's sessions.
public final class SMTPCounter: Sendable {
    let count = Atomic<Int>(0)
    public init() {}
    public var value: Int { count.load(ordering: .relaxed) }
    func increment() { count.add(1, ordering: .relaxed) }
}

/// Errors raised inside the channel.
enum SMTPChannelError: Error, CustomStringConvertible, Equatable {
    case timeout
    case closed
    case lineTooLong
    case malformedReply(String)
    var description: String {
        switch self {
        case .timeout: "timed out waiting for the server"
        case .closed: "the server closed the connection"
        case .lineTooLong: "reply line too long"
        case .malformedReply(let l): "malformed reply line '\(l.prefix(80))'"
        }
    }
}

/// Reads replies (multi-line `250-…` / `250 …`) and completes the waiting commands in order. Everything in here
/// runs on the channel's event loop; the public methods hop onto it.
final class SMTPClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Who waits for the next reply: a single command's caller, or one step of a pipelined transaction.
    private enum Waiter {
        case reply(EventLoopPromise<SMTPReply>)
        /// The reply to the `index`th command of a pipelined transaction.
        case command(Pipeline, index: Int)
        /// The reply to a pipelined transaction's message, and whether the message has reached the socket.
        case message(Pipeline, written: EventLoopFuture<Void>)
        /// The reply to the lone dot that ended a refused transaction whose DATA got 354.
        case abort(Pipeline)
    }

    private struct Pending {
        let id: Int
        let waiter: Waiter
        var timer: Scheduled<Void>?
        let upgradeToTLS: Bool
    }

    /// A pipelined transaction in flight: its replies are collected here, on the event loop, and it completes one
    /// promise. (One future per reply, joined and chained, was a tenth of the client's CPU.)
    private final class Pipeline: @unchecked Sendable {  // touched only on the event loop
        let promise: EventLoopPromise<PipelinedOutcome>
        /// MAIL, RCPT… and DATA; RSET goes in front when the handler writes them and the session needs it.
        let lines: [String]
        let message: [UInt8]
        let timeout: Duration
        let dataTimeout: Duration
        var outcome = PipelinedOutcome()
        /// Once written: how many commands (with RSET, if sent), and where MAIL is.
        var commands: Int { lines.count + mailIndex }
        var mailIndex: Int { outcome.reset ? 1 : 0 }
        /// One deadline for all the commands' replies (they are written together).
        var timer: Scheduled<Void>?
        var commandsAnswered = false

        init(
            promise: EventLoopPromise<PipelinedOutcome>, lines: [String], message: [UInt8], timeout: Duration,
            dataTimeout: Duration
        ) {
            self.promise = promise
            self.lines = lines
            self.message = message
            self.timeout = timeout
            self.dataTimeout = dataTimeout
        }
    }

    private let sslContext: NIOSSLContext?
    private let serverHostname: String?
    private var buffer: ByteBuffer?
    private var pending: [Pending] = []
    private var unclaimed: [SMTPReply] = []
    private var lines: [String] = []
    private var nextID = 0
    private var context: ChannelHandlerContext?
    private var tlsPromise: EventLoopPromise<Void>?
    private var tlsDone = false
    private var tlsError: (any Error)?
    /// After a 220 to STARTTLS and until the TLS handler is in place, plaintext from the server is discarded.
    private(set) var discardedPlaintextBytes = 0
    /// The pipelined transaction whose commands are written and not all answered yet.
    private var active: Pipeline?
    /// Transactions started while `active` was: their commands go out when its replies are in, behind its message.
    private var queued: [Pipeline] = []
    /// Whether the last pipelined transaction ended without its message (refused, or never finished), so the next
    /// one starts with RSET. After a message the server is ready for MAIL again (RFC 5321 §4.1.4).
    private var resetNeeded = false
    /// Counts the transactions whose commands went out in the same write as the message (or dot) before them.
    private let chained: SMTPCounter

    init(sslContext: NIOSSLContext?, serverHostname: String?, chained: SMTPCounter) {
        self.sslContext = sslContext
        self.serverHostname = serverHostname
        self.chained = chained
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: called from the connection (any thread)

    func expectReply(on channel: any Channel, timeout: Duration) -> EventLoopFuture<SMTPReply> {
        channel.eventLoop.flatSubmit { self.register(timeout: timeout, upgradeToTLS: false, on: channel.eventLoop) }
    }

    func command(_ line: String, on channel: any Channel, timeout: Duration, upgradeToTLS: Bool)
        -> EventLoopFuture<SMTPReply>
    {
        channel.eventLoop.flatSubmit {
            let future = self.register(timeout: timeout, upgradeToTLS: upgradeToTLS, on: channel.eventLoop)
            self.writeLines([line])
            return future
        }
    }

    /// What a pipelined transaction got back: the replies to its commands, in order, and the reply to the
    /// message when the commands' replies accepted it.
    struct PipelinedOutcome: Sendable {
        /// Whether RSET went first.
        var reset = false
        var replies: [SMTPReply] = []
        /// The first command whose reply never came (timeout, closed connection), and why.
        var failure: (index: Int, error: any Error)?
        /// Set when the message was sent: RSET (if any) 250, MAIL 250, every RCPT 250/251, DATA 354.
        var final: Result<SMTPReply, any Error>?
        /// Whether the whole message reached the socket.
        var written = false
        /// Whether the next transaction's commands went out right behind the message (chained).
        var commandsBehind = false
        /// After a refusal that still got 354 to DATA: the reply to the lone dot that ended it.
        var abort: Result<SMTPReply, any Error>?
    }

    /// Writes `lines` (MAIL, RCPT… DATA) at once (RFC 2920), with RSET first if the session needs it, and, when
    /// their replies accept the message, writes `message` (dot-stuffed, with its final dot) straight from the event
    /// loop. One hop onto the loop and one completion per transaction. While another transaction's commands await
    /// their replies, these wait and go out behind its message.
    func transaction(
        _ lines: [String], message: [UInt8], on channel: any Channel, timeout: Duration, dataTimeout: Duration
    ) -> EventLoopFuture<PipelinedOutcome> {
        let loop = channel.eventLoop
        let pipeline = Pipeline(
            promise: loop.makePromise(of: PipelinedOutcome.self), lines: lines, message: message, timeout: timeout,
            dataTimeout: dataTimeout)
        let start = {
            if self.active == nil && !self.awaitsMessageReply {
                self.start(pipeline, after: nil)
            } else {
                self.queued.append(pipeline)
            }
        }
        if loop.inEventLoop { start() } else { loop.execute(start) }
        return pipeline.promise.futureResult
    }

    /// Whether a message (or a lone dot) went out and its reply has not come yet. Commands are not written alone
    /// then, only in the same write as a message: a server that does not set TCP_NODELAY (Postfix's smtp-sink) would
    /// hold its reply to them behind its unacknowledged reply to the message, until our delayed ACK (Nagle's
    /// algorithm), a stall of tens of milliseconds per message. They go out when that reply is in.
    private var awaitsMessageReply: Bool {
        pending.contains {
            switch $0.waiter {
            case .message, .abort: true
            default: false
            }
        }
    }

    /// Writes a transaction's commands, behind `after` (the message or lone dot before it) in the same write.
    private func start(_ pipeline: Pipeline, after: [UInt8]?, written: EventLoopPromise<Void>? = nil) {
        guard let context else {
            written?.fail(SMTPChannelError.closed)
            pipeline.outcome.failure = (0, SMTPChannelError.closed)
            pipeline.promise.succeed(pipeline.outcome)
            return
        }
        let lines = resetNeeded ? ["RSET"] + pipeline.lines : pipeline.lines
        pipeline.outcome.reset = resetNeeded
        // Until the server answers this transaction's message, the next one must reset the session first.
        resetNeeded = true
        active = pipeline
        // Behind a message, the replies come after the message's own, which may take up to its data timeout.
        let timeout = awaitsMessageReply ? pipeline.timeout + pipeline.dataTimeout : pipeline.timeout
        pipeline.timer = context.eventLoop.scheduleTask(in: .init(timeout)) {
            guard !pipeline.commandsAnswered else { return }
            // The stream is out of step now: fail everything waiting, and end the session.
            self.failAll(SMTPChannelError.timeout)
            self.context?.close(promise: nil)
        }
        for index in lines.indices { add(.command(pipeline, index: index), timeout: nil) }
        if let after {
            // Two buffers, one flush (one `writev`): `written` must mean "the message and its dot reached the
            // socket", not the commands behind it as well. A message whose dot went out is an unknown outcome on
            // failure, never a safe resend.
            var message = context.channel.allocator.buffer(capacity: after.count)
            message.writeBytes(after)
            context.write(wrapOutboundOut(message), promise: written)
            chained.increment()
        }
        writeLines(lines, promise: after == nil ? written : nil)
    }

    /// All the commands' replies are in (or failed): send the message when they accept it; end a refused
    /// transaction that the server still waits for data on; report the rest. Then the next queued transaction's
    /// commands go out, in the same write as the message or the dot.
    private func commandsAnswered(_ pipeline: Pipeline) {
        pipeline.commandsAnswered = true
        pipeline.timer?.cancel()
        if active === pipeline { active = nil }
        let replies = pipeline.outcome.replies
        let waitsForData =
            pipeline.outcome.failure == nil && replies.count == pipeline.commands && replies.last?.code == 354
        var out: [UInt8]?
        var written: EventLoopPromise<Void>?
        if waitsForData, Self.acceptsMessage(replies, mailIndex: pipeline.mailIndex), let loop = context?.eventLoop {
            let promise = loop.makePromise(of: Void.self)
            add(.message(pipeline, written: promise.futureResult), timeout: pipeline.dataTimeout)
            // The final dot ends the transaction whatever its reply: the next MAIL needs no RSET.
            resetNeeded = false
            (out, written) = (pipeline.message, promise)
        } else if waitsForData, pipeline.outcome.reset, replies.first?.code != 250 {
            // RSET refused, yet MAIL, RCPT and DATA taken: the server still holds the old transaction's state, and a
            // lone dot could deliver an empty message. Closing the session makes it drop the transaction.
            pipeline.promise.succeed(pipeline.outcome)
            failAll(SMTPChannelError.closed)
            context?.close(promise: nil)
            return
        } else if waitsForData {
            // A refused MAIL or RCPT, and still 354 to DATA: a lone dot ends it (RFC 2920 §3.1), and the session
            // stays in step.
            add(.abort(pipeline), timeout: pipeline.timeout)
            out = Array(".\r\n".utf8)
        } else {
            pipeline.promise.succeed(pipeline.outcome)
        }
        if !queued.isEmpty {
            if written != nil { pipeline.outcome.commandsBehind = true }
            start(queued.removeFirst(), after: out, written: written)
        } else if let out {
            writeBytes(out, promise: written)
        }
    }

    /// Hands a reply (or the failure to get one) to whoever waited for it.
    private func resolve(_ waiter: Waiter, _ result: Result<SMTPReply, any Error>) {
        switch waiter {
        case .reply(let promise):
            promise.completeWith(result)
        case .command(let pipeline, let index):
            switch result {
            case .success(let reply): pipeline.outcome.replies.append(reply)
            case .failure(let error): if pipeline.outcome.failure == nil { pipeline.outcome.failure = (index, error) }
            }
            if index == pipeline.commands - 1 { commandsAnswered(pipeline) }
        case .abort(let pipeline):
            pipeline.outcome.abort = result
            pipeline.promise.succeed(pipeline.outcome)
            startQueued()
        case .message(let pipeline, let written):
            defer { startQueued() }
            pipeline.outcome.final = result
            if case .success = result {
                pipeline.outcome.written = true
                pipeline.promise.succeed(pipeline.outcome)
            } else {
                // Whether the whole message reached the socket decides what the failure means.
                written.whenComplete { flushed in
                    if case .success = flushed { pipeline.outcome.written = true }
                    pipeline.promise.succeed(pipeline.outcome)
                }
            }
        }
    }

    /// After a message's reply: the next queued transaction's commands, if none are out.
    private func startQueued() {
        if active == nil && !queued.isEmpty && !awaitsMessageReply { start(queued.removeFirst(), after: nil) }
    }

    /// RSET (when sent) and MAIL 250, every RCPT 250 or 251, DATA 354.
    static func acceptsMessage(_ replies: [SMTPReply], mailIndex: Int) -> Bool {
        guard replies.count >= mailIndex + 3, replies.last?.code == 354 else { return false }
        for i in 0...mailIndex where replies[i].code != 250 { return false }
        for i in (mailIndex + 1)..<(replies.count - 1) where replies[i].code != 250 && replies[i].code != 251 {
            return false
        }
        return true
    }

    func write(
        _ bytes: [UInt8], on channel: any Channel, timeout: Duration, written: EventLoopPromise<Void>? = nil
    ) -> EventLoopFuture<SMTPReply> {
        channel.eventLoop.flatSubmit {
            let future = self.register(timeout: timeout, upgradeToTLS: false, on: channel.eventLoop)
            self.writeBytes(bytes, promise: written)
            return future
        }
    }

    func tlsEstablished(on channel: any Channel, timeout: Duration) -> EventLoopFuture<Void> {
        channel.eventLoop.flatSubmit {
            if self.tlsDone { return channel.eventLoop.makeSucceededVoidFuture() }
            if let error = self.tlsError { return channel.eventLoop.makeFailedFuture(error) }
            let promise = channel.eventLoop.makePromise(of: Void.self)
            self.tlsPromise = promise
            let timer = channel.eventLoop.scheduleTask(in: .init(timeout)) {
                self.tlsPromise?.fail(SMTPChannelError.timeout)
                self.tlsPromise = nil
                self.context?.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            return promise.futureResult
        }
    }

    // MARK: on the event loop

    private func writeLines(_ lines: [String], promise: EventLoopPromise<Void>? = nil) {
        guard let context else {
            promise?.fail(SMTPChannelError.closed)
            return
        }
        var size = 0
        for l in lines { size += l.utf8.count + 2 }
        var buf = context.channel.allocator.buffer(capacity: size)
        for l in lines {
            buf.writeString(l)
            buf.writeStaticString("\r\n")
        }
        context.writeAndFlush(wrapOutboundOut(buf), promise: promise)
    }

    private func writeBytes(_ bytes: [UInt8], promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(SMTPChannelError.closed)
            return
        }
        var buf = context.channel.allocator.buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(buf), promise: promise)
    }

    private func register(timeout: Duration, upgradeToTLS: Bool, on loop: any EventLoop) -> EventLoopFuture<SMTPReply> {
        let promise = loop.makePromise(of: SMTPReply.self)
        add(.reply(promise), timeout: timeout, upgradeToTLS: upgradeToTLS)
        return promise.futureResult
    }

    /// Queues a waiter for the next reply: a reply that came before anyone asked is handed over at once; on a
    /// closed channel the waiter fails; `timeout` (when given) ends the session if the reply does not come.
    private func add(_ waiter: Waiter, timeout: Duration?, upgradeToTLS: Bool = false) {
        if !unclaimed.isEmpty {
            resolve(waiter, .success(unclaimed.removeFirst()))
            return
        }
        guard let loop = context?.eventLoop, context?.channel.isActive == true else {
            resolve(waiter, .failure(SMTPChannelError.closed))
            return
        }
        nextID += 1
        let id = nextID
        var entry = Pending(id: id, waiter: waiter, timer: nil, upgradeToTLS: upgradeToTLS)
        if let timeout { entry.timer = loop.scheduleTask(in: .init(timeout)) { self.timedOut(id) } }
        pending.append(entry)
    }

    private func timedOut(_ id: Int) {
        guard pending.contains(where: { $0.id == id }) else { return }
        // The stream is out of step now: fail this and everything after it, and end the session.
        failAll(SMTPChannelError.timeout)
        context?.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        let all = pending
        pending.removeAll()
        // Transactions still queued fail at their first command: nothing of them went out.
        let waiting = queued
        queued.removeAll()
        for p in all {
            p.timer?.cancel()
            resolve(p.waiter, .failure(error))
        }
        for pipeline in waiting {
            pipeline.outcome.failure = (0, error)
            pipeline.promise.succeed(pipeline.outcome)
        }
        tlsPromise?.fail(error)
        tlsPromise = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        while let line = nextLine() {
            guard line.utf8.count >= 3, let code = Int(line.prefix(3)) else {
                failAll(SMTPChannelError.malformedReply(line))
                context.close(promise: nil)
                return
            }
            let separator = line.dropFirst(3).first
            lines.append(String(line.dropFirst(4)))
            if separator == "-" { continue }
            let reply = SMTPReply(code: code, lines: lines)
            lines = []
            deliver(reply, context: context)
        }
        if let b = buffer, b.readableBytes > 4096 {
            failAll(SMTPChannelError.lineTooLong)
            context.close(promise: nil)
        }
    }

    private func deliver(_ reply: SMTPReply, context: ChannelHandlerContext) {
        guard !pending.isEmpty else {
            // Not asked for yet (the greeting usually comes before anyone waits for it), or unsolicited
            // ("421 shutting down"): kept for the next waiter.
            unclaimed.append(reply)
            if reply.code == 421 { context.close(promise: nil) }
            return
        }
        let p = pending.removeFirst()
        p.timer?.cancel()
        if p.upgradeToTLS && reply.code == 220 {
            // CVE-2011-0411: whatever plaintext followed the 220 in the buffer was not protected by TLS and
            // must not be read as replies after the handshake. Drop it, and add TLS before the next read.
            discardedPlaintextBytes += buffer?.readableBytes ?? 0
            buffer = nil
            lines = []
            do {
                guard let sslContext else { throw SMTPChannelError.closed }
                let tls = try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname)
                try context.pipeline.syncOperations.addHandler(tls, position: .first)
            } catch {
                tlsError = error
                resolve(p.waiter, .success(reply))
                context.close(promise: nil)
                return
            }
        }
        resolve(p.waiter, .success(reply))
        if reply.code == 421 {
            failAll(SMTPChannelError.closed)
            context.close(promise: nil)
        }
    }

    private func nextLine() -> String? {
        guard var b = buffer, let view = b.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let length = view - b.readerIndex + 1
        guard var bytes = b.readBytes(length: length) else { return nil }
        buffer = b.readableBytes > 0 ? b : nil
        // Bytes, not Characters: "\r\n" is one Character in Swift.
        while let last = bytes.last, last == 10 || last == 13 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            tlsDone = true
            tlsPromise?.succeed(())
            tlsPromise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if tlsPromise == nil && !tlsDone && sslContext != nil { tlsError = error }
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(SMTPChannelError.closed)
        context.fireChannelInactive()
    }
}
