import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A pool of reused SMTP sessions to one relay. At most `poolSize` are open. When every one is busy, a session that
/// offers PIPELINING takes up to `sendersPerSession` senders, whose commands go out behind the message before them
/// (`SMTPConnection.canChain`); beyond that a caller waits. A session is closed after `maxMessagesPerConnection`
/// messages, or when it broke.
///
/// A lock, not an actor: taking and returning a session are a few instructions, and an actor made every send hop
/// onto it and, when the reply came, hop back before the session could be returned.
public final class SMTPPool: Sendable {
    public let config: SMTPConfiguration
    let sslContext: NIOSSLContext?
    let group: any EventLoopGroup
    let logger: Logger

    private struct State {
        /// Usable sessions with no sender.
        var idle: [SMTPConnection] = []
        /// Sessions with senders that can take one more (`canChain`, below `sendersPerSession` and the message cap).
        var shared: [SMTPConnection] = []
        var open = 0
        /// Senders waiting for room, oldest first; resumed with true when there may be room, false when their wait
        /// timed out.
        var waiters: [Waiter] = []
        var nextWaiter: UInt64 = 0
        var closed = false
    }
    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Bool, Never>
        /// The wait's timer, cancelled when the waiter is resumed otherwise.
        var timer: Scheduled<Void>?
    }
    private let state = Mutex(State())

    /// The most senders one session takes at a time: one whose message is going out, one whose commands went out
    /// with it, and one composed meanwhile, queued to go out with the next message. With two, the third message's
    /// commands were often ready only after the second message had gone out alone.
    public static let sendersPerSession = 3

    /// SMTP's own event loops: a quarter of the cores, at least one. Sessions spend little time on their loop
    /// (composing and signing run in the sending task), and a loop of their own keeps them off the HTTP server's
    /// loops. On two cores one loop sent 5% more mails per second than NIO's shared two, four loops 18% fewer:
    /// every extra thread is another one to switch to (decision 0020).
    public static let sharedGroup = MultiThreadedEventLoopGroup(numberOfThreads: max(1, System.coreCount / 4))

    public init(config: SMTPConfiguration, group: any EventLoopGroup = SMTPPool.sharedGroup, logger: Logger) throws {
        self.config = config
        self.group = group
        self.logger = logger
        if config.tls == .none {
            sslContext = nil
        } else {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            if let ca = config.caFile {
                do {
                    tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(ca))]
                } catch {
                    throw SMTPError.tlsRequired(reason: "cannot read the CA file \(ca): \(error)")
                }
            }
            sslContext = try NIOSSLContext(configuration: tls)
        }
    }

    private let chained = SMTPCounter()
    /// Transactions of this pool whose commands went out in the same write as the message before them.
    public var chainedTransactions: Int { chained.value }

    /// Sends one message on a pooled session. A reused session that turns out dead before anything of the
    /// message went out is replaced once, transparently.
    @discardableResult
    public func send(_ envelope: SMTPEnvelope) async throws -> SMTPReply {
        var retriedStale = false
        while true {
            let (connection, reused) = try await acquire()
            do {
                let reply = try await connection.send(envelope)
                release(connection)
                return reply
            } catch let error as SMTPError {
                release(connection)
                // Only a session that died while idle (it fails at its first command) is replaced here; anything
                // later is the outbox's decision, with backoff.
                if case .connection(let phase, _) = error, reused, !retriedStale, ["rset", "mail"].contains(phase) {
                    retriedStale = true
                    logger.debug("stale pooled SMTP session; reconnecting", metadata: ["error": "\(error)"])
                    continue
                }
                throw error
            }
        }
    }

    private enum Step {
        case use(SMTPConnection, reused: Bool)
        case connect
        case wait
        case closed
    }

    private func acquire() async throws -> (SMTPConnection, Bool) {
        // One deadline for the whole wait, however often a woken sender finds the room taken again.
        let deadline = NIODeadline.now() + .init(config.timeouts.poolWait)
        while true {
            var dead: [SMTPConnection] = []
            let step: Step = state.withLock { s in
                if s.closed { return .closed }
                while let c = s.idle.popLast() {
                    if c.isUsable {
                        self.took(c, &s)
                        return .use(c, reused: true)
                    }
                    s.open -= 1
                    dead.append(c)
                }
                if s.open < config.poolSize {
                    s.open += 1
                    return .connect
                }
                // Every session is busy: chain behind a sender on one that can take a second. (One that cannot any
                // more is dropped from the list; its sender returns it.)
                while let c = s.shared.last {
                    guard c.isUsable && self.canTakeMore(c) else {
                        s.shared.removeLast()
                        continue
                    }
                    c.poolSenders += 1
                    if !self.canTakeMore(c) { s.shared.removeLast() }
                    return .use(c, reused: true)
                }
                return .wait
            }
            for c in dead { c.close() }
            switch step {
            case .use(let c, let reused):
                return (c, reused)
            case .closed:
                throw SMTPError.connection(phase: "pool", reason: "the pool is shut down")
            case .connect:
                do {
                    let c = try await SMTPConnection.connect(
                        config, sslContext: sslContext, group: group, logger: logger, chained: chained)
                    state.withLock { self.took(c, &$0) }
                    // Waiters may chain behind this sender now.
                    wake(Self.sendersPerSession - 1)
                    return (c, false)
                } catch {
                    state.withLock { $0.open -= 1 }
                    wakeOne()
                    throw error
                }
            case .wait:
                guard NIODeadline.now() < deadline, await waitForRoom(until: deadline) else {
                    throw SMTPError.connection(
                        phase: "pool", reason: "no SMTP session became free within \(config.timeouts.poolWait)")
                }
            }
        }
    }

    /// Waits until a session may have room (true), or `deadline` passed (false). Checked again under the lock: a
    /// session returned since `acquire` looked must not be missed.
    private func waitForRoom(until deadline: NIODeadline) async -> Bool {
        let loop = group.any()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let id: UInt64? = state.withLock { s in
                if s.closed || !s.idle.isEmpty || !s.shared.isEmpty || s.open < config.poolSize { return nil }
                s.nextWaiter += 1
                s.waiters.append(Waiter(id: s.nextWaiter, continuation: continuation))
                return s.nextWaiter
            }
            guard let id else { return continuation.resume(returning: true) }
            // Whoever takes the waiter out of the list resumes it: a release, the shutdown, or this timer.
            let timer = loop.scheduleTask(deadline: deadline) {
                let timedOut = self.state.withLock { s in
                    s.waiters.firstIndex { $0.id == id }.map { s.waiters.remove(at: $0).continuation }
                }
                timedOut?.resume(returning: false)
            }
            let stillWaiting = state.withLock { s in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return false }
                s.waiters[i].timer = timer
                return true
            }
            if !stillWaiting { timer.cancel() }
        }
    }

    /// A sender takes a session that had none.
    private func took(_ c: SMTPConnection, _ s: inout State) {
        c.poolSenders = 1
        if canTakeMore(c) { s.shared.append(c) }
    }

    /// Whether a session may take one more sender (under the pool's lock).
    private func canTakeMore(_ c: SMTPConnection) -> Bool {
        c.canChain && c.poolSenders < Self.sendersPerSession
            && c.messagesSent + c.poolSenders < config.maxMessagesPerConnection
    }

    private func release(_ connection: SMTPConnection) {
        // How many waiters the release lets in: one per sender the session (or a new one) can take now.
        let (quit, free): (Bool, Int) = state.withLock { s in
            connection.poolSenders -= 1
            s.shared.removeAll { $0 === connection }
            let remaining = connection.poolSenders
            guard
                connection.isUsable && connection.messagesSent + remaining < config.maxMessagesPerConnection
                    && !s.closed
            else {
                // Closed when its last sender is done.
                if remaining > 0 { return (false, 0) }
                s.open -= 1
                return (true, 1)
            }
            if remaining == 0 {
                s.idle.append(connection)
                return (false, connection.canChain ? Self.sendersPerSession : 1)
            }
            if canTakeMore(connection) {
                s.shared.append(connection)
                return (false, Self.sendersPerSession - remaining)
            }
            return (false, 0)
        }
        if quit { Task { await connection.quit() } }
        wake(free)
    }

    private func wakeOne() { wake(1) }

    /// Resumes up to `n` waiters; each looks again and waits again if it finds no room.
    private func wake(_ n: Int) {
        guard n > 0 else { return }
        let woken = state.withLock { s in
            let k = min(n, s.waiters.count)
            let first = Array(s.waiters.prefix(k))
            s.waiters.removeFirst(k)
            return first
        }
        for w in woken {
            w.timer?.cancel()
            w.continuation.resume(returning: true)
        }
    }

    /// QUITs every idle session and refuses new sends.
    public func shutdown() async {
        let (all, waiters) = state.withLock { s in
            s.closed = true
            let taken = (s.idle, s.waiters)
            s.open -= s.idle.count
            s.idle.removeAll()
            s.shared.removeAll()
            s.waiters.removeAll()
            return taken
        }
        for c in all { await c.quit() }
        for w in waiters {
            w.timer?.cancel()
            w.continuation.resume(returning: true)
        }
    }
}
