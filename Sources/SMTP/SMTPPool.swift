import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// A pool of reused SMTP sessions to one relay. At most `poolSize` are open; a caller waits for a free one.
/// A session is closed after `maxMessagesPerConnection` messages, or when it broke.
public actor SMTPPool {
    public let config: SMTPConfiguration
    let sslContext: NIOSSLContext?
    let group: any EventLoopGroup
    let logger: Logger
    private var idle: [SMTPConnection] = []
    private var open = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var closed = false

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

    private func acquire() async throws -> (SMTPConnection, Bool) {
        while true {
            if closed { throw SMTPError.connection(phase: "pool", reason: "the pool is shut down") }
            while let c = idle.popLast() {
                if c.isUsable { return (c, true) }
                open -= 1
                c.close()
            }
            if open < config.poolSize {
                open += 1
                do {
                    let c = try await SMTPConnection.connect(
                        config, sslContext: sslContext, group: group, logger: logger)
                    return (c, false)
                } catch {
                    open -= 1
                    wakeOne()
                    throw error
                }
            }
            await withCheckedContinuation { waiters.append($0) }
        }
    }

    private func release(_ connection: SMTPConnection) {
        if connection.isUsable && connection.messagesSent < config.maxMessagesPerConnection && !closed {
            idle.append(connection)
        } else {
            open -= 1
            Task { await connection.quit() }
        }
        wakeOne()
    }

    private func wakeOne() {
        if !waiters.isEmpty { waiters.removeFirst().resume() }
    }

    /// QUITs every idle session and refuses new sends.
    public func shutdown() async {
        closed = true
        let all = idle
        idle.removeAll()
        open -= all.count
        for c in all { await c.quit() }
        for w in waiters { w.resume() }
        waiters.removeAll()
    }
}
