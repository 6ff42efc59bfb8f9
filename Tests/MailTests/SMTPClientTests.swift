import Foundation
import Logging
import NIOSSL
import ReciprocityCore
import SMTP
import TestSupport
import Testing

/// Our SMTP client against a scripted server on loopback: TLS, AUTH, pipelining, the pool, and faults.
@Suite struct SMTPClientTests {
    static let logger = Logger(label: "smtp-test")
    static var caFile: String { ScriptedSMTPServer.fixturesDirectory().appendingPathComponent("test-ca.pem").path }

    func config(_ server: ScriptedSMTPServer, tls: SMTPConfiguration.TLSMode = .starttls, user: String? = nil)
        -> SMTPConfiguration
    {
        var c = SMTPConfiguration(
            host: "localhost", port: server.port, tls: tls, username: user, password: user == nil ? nil : "geheim",
            heloName: "client.example", caFile: Self.caFile, poolSize: 2, maxMessagesPerConnection: 3)
        c.timeouts.command = .seconds(2)
        c.timeouts.dataEnd = .seconds(2)
        return c
    }

    func tlsScript(_ faults: [SMTPFault] = [], untrusted: Bool = false) throws -> SMTPScript {
        var s = SMTPScript()
        s.tls = try ScriptedSMTPServer.testTLSContext(
            fixtures: ScriptedSMTPServer.fixturesDirectory(), untrusted: untrusted)
        s.faults = faults
        return s
    }

    func envelope(_ n: Int = 1, body: String = "Hallo") -> SMTPEnvelope {
        SMTPEnvelope(
            mailFrom: "bounce+\(n)@example.test", recipients: ["kunde\(n)@example.test"],
            data: Array("Subject: Test \(n)\r\nMessage-ID: <m\(n)@example.test>\r\n\r\n\(body)\r\n".utf8))
    }

    @Test func startTLSThenAuthThenPipelinedTransactionsOnReusedSessions() async throws {
        let server = try await ScriptedSMTPServer.start(try tlsScript())
        let pool = try SMTPPool(config: config(server, user: "shop"), logger: Self.logger)
        for n in 1...4 { try await pool.send(envelope(n, body: ".leading dot\r\n..two dots")) }
        await pool.shutdown()
        let messages = server.messages()
        #expect(messages.count == 4)
        #expect(messages.allSatisfy { $0.overTLS && $0.authenticatedUser == "shop" })
        #expect(String(decoding: messages[0].data, as: UTF8.self).hasSuffix("\r\n.leading dot\r\n..two dots\r\n"))
        #expect(messages[0].mailFrom == "bounce+1@example.test" && messages[0].recipients == ["kunde1@example.test"])
        #expect(server.connectionCount() == 2, "3 messages per session, then a new one")
        let log = server.commandLog()
        #expect(log.filter { $0.hasSuffix(": STARTTLS") }.count == 2)
        #expect(log.filter { $0.contains(": EHLO client.example") }.count == 4, "EHLO again after STARTTLS")
        // A completed transaction leaves the session ready for MAIL (RFC 5321 §4.1.4): no RSET in between. The
        // scripted server answers a MAIL inside an open transaction with 503, so a missing reset would show.
        #expect(!log.contains { $0.hasSuffix(": RSET") }, "no RSET after a completed transaction")
        try await server.shutdown()
    }

    /// Five minutes: far above the 18-25 s this takes inside the whole, starved suite, so only a hang reaches it.
    @Test(.timeLimit(.minutes(5))) func concurrentSendersShareAtMostPoolSizeSessionsAndShutdownReleasesWaiters()
        async throws
    {
        let server = try await ScriptedSMTPServer.start(try tlsScript())
        var c = config(server)
        c.maxMessagesPerConnection = 1000
        let pool = try SMTPPool(config: c, logger: Self.logger)
        // 24 senders, 2 sessions: 22 wait for a free one at any time.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 1...24 { group.addTask { try await pool.send(self.envelope(n)) } }
            try await group.waitForAll()
        }
        #expect(server.messages().count == 24)
        #expect(server.connectionCount() == 2, "never more sessions than poolSize")
        // Senders waiting when the pool shuts down get an error, not a hang; later sends are refused.
        let waiting = Task {
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for n in 25...40 {
                    group.addTask { (try? await pool.send(self.envelope(n))) != nil }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
        }
        await pool.shutdown()
        // In-flight sends may still finish; every waiter returns (a waiter left suspended would hit the time limit).
        _ = try await waiting.value
        await #expect(throws: SMTPError.self) { try await pool.send(self.envelope(41)) }
        try await server.shutdown()
    }

    /// Senders on one session (poolSize 1), all at once: the session takes a second sender, whose commands go out
    /// behind the first one's message. `count` senders; returns what each got (by message number) and the server.
    func sendChained(_ count: Int, faults: [SMTPFault] = [], body: String = "Hallo") async throws
        -> (results: [Int: Result<SMTPReply, SMTPError>], server: ScriptedSMTPServer, chained: Int)
    {
        let server = try await ScriptedSMTPServer.start(try tlsScript(faults))
        var c = config(server)
        c.poolSize = 1
        c.maxMessagesPerConnection = 1000
        let pool = try SMTPPool(config: c, logger: Self.logger)
        let results = try await withThrowingTaskGroup(of: (Int, Result<SMTPReply, SMTPError>).self) { group in
            for n in 1...count {
                group.addTask {
                    do {
                        return (n, .success(try await pool.send(self.envelope(n, body: body))))
                    } catch let error as SMTPError {
                        return (n, .failure(error))
                    }
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        await pool.shutdown()
        return (results, server, pool.chainedTransactions)
    }

    static func delivered(_ server: ScriptedSMTPServer) -> [String] {
        server.messages().flatMap(\.recipients).sorted()
    }

    @Test func aBusySessionTakesTheNextSendersCommandsBehindItsMessage() async throws {
        let (results, server, chained) = try await sendChained(12)
        #expect(results.values.allSatisfy { if case .success = $0 { true } else { false } })
        #expect(Self.delivered(server) == (1...12).map { "kunde\($0)@example.test" }.sorted(), "each once")
        #expect(server.connectionCount() == 1)
        #expect(!server.commandLog().contains { $0.hasSuffix(": RSET") })
        // Twelve senders on one session: some commands must have gone out in the same write as a message.
        #expect(chained > 0)
        try await server.shutdown()
    }

    @Test func refusalsOnAChainedSessionKeepItInStep() async throws {
        let (results, server, _) = try await sendChained(
            8,
            faults: [
                .reply(verb: "RCPT", occurrence: 2, code: 550, text: "5.1.1 No such user"),
                .reply(verb: "DOT", occurrence: 3, code: 554, text: "5.7.1 Rejected as spam"),
                .reply(verb: "MAIL", occurrence: 5, code: 451, text: "4.3.0 Try later"),
            ])
        var phases: [String] = []
        var failed: Set<Int> = []
        for (n, result) in results {
            guard case .failure(let error) = result else { continue }
            failed.insert(n)
            switch error {
            case .permanent(let phase, _), .transient(let phase, _): phases.append(phase)
            default: Issue.record("message \(n): \(error)")
            }
        }
        #expect(phases.sorted() == ["data-end", "mail", "rcpt"])
        let expected = (1...8).filter { !failed.contains($0) }.map { "kunde\($0)@example.test" }.sorted()
        #expect(Self.delivered(server) == expected, "every accepted message arrived, once")
        #expect(server.connectionCount() == 1, "refusals leave the session in step")
        try await server.shutdown()
    }

    /// A server that answers 354 to the DATA of a transaction whose only recipient it refused: the client ends that
    /// transaction with a lone dot (RFC 2920 section 3.1), also while other senders' commands are chained behind it.
    @Test func aRefusedRecipientsDataIsEndedWithALoneDotOnAChainedSession() async throws {
        let (results, server, chained) = try await sendChained(
            10,
            faults: [
                .dataWithoutRecipients,
                .reply(verb: "RCPT", occurrence: 2, code: 550, text: "5.1.1 No such user"),
                .reply(verb: "RCPT", occurrence: 6, code: 550, text: "5.1.1 No such user"),
            ])
        var failed: [Int: String] = [:]
        for (n, result) in results {
            guard case .failure(let error) = result else { continue }
            switch error {
            case .permanent(let phase, _): failed[n] = phase
            default: Issue.record("message \(n): \(error)")
            }
        }
        #expect(failed.values.sorted() == ["rcpt", "rcpt"])
        #expect(server.refusedPayloads() == [[], []], "each refused transaction sent nothing but the dot")
        let expected = (1...10).filter { failed[$0] == nil }.map { "kunde\($0)@example.test" }.sorted()
        #expect(Self.delivered(server) == expected, "every accepted message arrived, once")
        #expect(server.connectionCount() == 1, "the session stays in step")
        #expect(chained > 0)
        try await server.shutdown()
    }

    @Test func aDropMidMessageOnABusySessionResendsOnlyWhatNeverWentOut() async throws {
        let big = String(repeating: "Zeile mit Inhalt\r\n", count: 5_000)
        let (results, server, _) = try await sendChained(
            6, faults: [.dropDuringData(occurrence: 2, afterBytes: 10)], body: big)
        let failed = results.filter { if case .failure = $0.value { true } else { false } }
        #expect(failed.count == 1, "only the message cut off fails: \(failed)")
        for (_, result) in failed {
            guard case .failure(let error) = result else { continue }
            switch error {
            case .connection(let phase, _): #expect(phase == "data")
            case .outcomeUnknown: break
            default: Issue.record("unexpected \(error)")
            }
        }
        // The commands chained behind the cut-off message never got a reply: resent on a fresh session, once.
        let expected = (1...6).filter { failed[$0] == nil }.map { "kunde\($0)@example.test" }.sorted()
        #expect(Self.delivered(server) == expected)
        #expect(server.connectionCount() == 2)
        try await server.shutdown()
    }

    @Test func authLoginWhenPlainIsNotOffered() async throws {
        var script = try tlsScript()
        script.extensions = ["PIPELINING", "AUTH LOGIN"]
        script.credentials = (user: "shop", password: "geheim")
        let server = try await ScriptedSMTPServer.start(script)
        let pool = try SMTPPool(config: config(server, user: "shop"), logger: Self.logger)
        try await pool.send(envelope())
        await pool.shutdown()
        #expect(server.messages().first?.authenticatedUser == "shop")
        #expect(server.commandLog().contains { $0.hasSuffix(": AUTH LOGIN") })
        try await server.shutdown()
    }

    @Test func noSTARTTLSOfferedMeansNothingIsSent() async throws {
        var script = SMTPScript()
        script.offerSTARTTLS = false
        let server = try await ScriptedSMTPServer.start(script)
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        await #expect {
            try await pool.send(envelope())
        } throws: { error in
            if case .tlsRequired = error as? SMTPError { return true }
            return false
        }
        await pool.shutdown()
        #expect(server.messages().isEmpty)
        #expect(!server.commandLog().contains { $0.contains("MAIL FROM") }, "no plaintext fallback")
        try await server.shutdown()
    }

    @Test func anUntrustedCertificateIsRefused() async throws {
        let server = try await ScriptedSMTPServer.start(try tlsScript(untrusted: true))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        await #expect(throws: SMTPError.self) { try await pool.send(envelope()) }
        await pool.shutdown()
        #expect(!server.commandLog().contains { $0.contains("MAIL FROM") })
        try await server.shutdown()
    }

    /// While every session is busy, a sender waits at most `poolWait`, then fails with nothing sent (a connection
    /// error, which the outbox retries); the stalled sender is not disturbed by it.
    @Test func aSenderWaitsForASessionAtMostThePoolWait() async throws {
        var script = try tlsScript([.stall(verb: "RCPT", occurrence: 1)])
        // Without PIPELINING a busy session takes no second sender.
        script.extensions.removeAll { $0 == "PIPELINING" }
        let server = try await ScriptedSMTPServer.start(script)
        var c = config(server)
        c.poolSize = 1
        c.timeouts.command = .seconds(4)
        c.timeouts.poolWait = .milliseconds(300)
        let pool = try SMTPPool(config: c, logger: Self.logger)
        let stalled = Task { try await pool.send(envelope(1)) }
        // The only session is taken once its transaction has begun.
        try await waitUntil("the first sender's MAIL FROM") {
            server.commandLog().contains { $0.contains("MAIL FROM") }
        }
        let started = ContinuousClock.now
        do {
            try await pool.send(envelope(2))
            Issue.record("the second sender got a session while the only one was busy")
        } catch let SMTPError.connection(phase, reason) {
            #expect(phase == "pool" && reason.contains("no SMTP session became free"))
        }
        #expect(ContinuousClock.now - started < .seconds(3))
        // The stalled one ends with its own timeout, and the pool serves again afterwards.
        await #expect(throws: SMTPError.self) { try await stalled.value }
        try await pool.send(envelope(3))
        #expect(server.messages().count == 1)
        await pool.shutdown()
        try await server.shutdown()
    }

    @Test func plaintextInjectedAfterSTARTTLSIsDiscarded() async throws {
        // CVE-2011-0411: a reply injected before the handshake must not be read as the reply to our EHLO.
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([.injectAfterSTARTTLS("250-injected\r\n250 AUTH PLAIN\r\n")]))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        try await pool.send(envelope())
        await pool.shutdown()
        #expect(server.messages().count == 1)
        #expect(server.messages().first?.overTLS == true)
        try await server.shutdown()
    }

    @Test func implicitTLS() async throws {
        var script = try tlsScript()
        script.implicitTLS = true
        let server = try await ScriptedSMTPServer.start(script)
        let pool = try SMTPPool(config: config(server, tls: .implicit), logger: Self.logger)
        try await pool.send(envelope())
        await pool.shutdown()
        #expect(server.messages().first?.overTLS == true)
        #expect(!server.commandLog().contains { $0.hasSuffix(": STARTTLS") })
        try await server.shutdown()
    }

    @Test func repliesAreClassified() async throws {
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([
                .reply(verb: "RCPT", occurrence: 1, code: 550, text: "5.1.1 No such user"),
                .reply(verb: "MAIL", occurrence: 2, code: 451, text: "4.3.0 Try later"),
                .reply(verb: "DOT", occurrence: 1, code: 554, text: "5.7.1 Rejected as spam"),
            ]))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        var errors: [SMTPError] = []
        for n in 1...3 {
            do { try await pool.send(envelope(n)) } catch let e as SMTPError { errors.append(e) }
        }
        try await pool.send(envelope(4))
        await pool.shutdown()
        guard errors.count == 3 else {
            Issue.record("expected three failures, got \(errors)")
            return
        }
        #expect(errors[0] == .permanent(phase: "rcpt", reply: SMTPReply(code: 550, lines: ["5.1.1 No such user"])))
        #expect(errors[0].isRetryable == false)
        if case .transient(let phase, _) = errors[1] {
            #expect(phase == "mail")
        } else {
            Issue.record("451 is transient")
        }
        #expect(errors[1].isRetryable)
        if case .permanent(let phase, _) = errors[2] {
            #expect(phase == "data-end")
        } else {
            Issue.record("554 at end")
        }
        #expect(server.messages().map(\.recipients) == [["kunde4@example.test"]], "the session stays in step")
        // RSET after the refused RCPT and the refused MAIL; none after the 554 to the message, which ended it.
        let verbs = server.commandLog().compactMap { $0.split(separator: ": ", maxSplits: 1).last }
            .map { String($0.prefix(4)) }.filter { ["RSET", "MAIL"].contains($0) }
        #expect(verbs == ["MAIL", "RSET", "MAIL", "RSET", "MAIL", "MAIL"])
        try await server.shutdown()
    }

    @Test func a421ToMAILOnAReusedSessionIsRetriedOnAFreshOne() async throws {
        // The server closes an idle session as it is handed out: its 421 answers the pipelined MAIL.
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([.reply(verb: "MAIL", occurrence: 2, code: 421, text: "4.4.2 Idle timeout")]))
        var c = config(server)
        c.poolSize = 1
        let pool = try SMTPPool(config: c, logger: Self.logger)
        try await pool.send(envelope(1))
        try await pool.send(envelope(2))
        await pool.shutdown()
        #expect(server.messages().map(\.recipients) == [["kunde1@example.test"], ["kunde2@example.test"]])
        #expect(server.connectionCount() == 2)
        try await server.shutdown()
    }

    @Test func aRefusedRSETBeforeAnAcceptedDATASendsNoEmptyMessage() async throws {
        // Message 1 is refused at RCPT, so message 2 starts with RSET, which is refused too. The server keeps the
        // old sender (MAIL gets 503) but takes the new recipient and says 354 to DATA: a lone dot now would deliver
        // an empty mail to kunde2. The client closes the session instead.
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([
                .reply(verb: "RCPT", occurrence: 1, code: 550, text: "5.1.1 No such user"),
                .reply(verb: "RSET", occurrence: 1, code: 500, text: "5.5.1 Not now"),
            ]))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        for n in 1...2 {
            await #expect(throws: SMTPError.self) { try await pool.send(self.envelope(n)) }
        }
        try await pool.send(envelope(3))
        await pool.shutdown()
        #expect(server.messages().map(\.recipients) == [["kunde3@example.test"]], "no message for kunde2")
        try await server.shutdown()
    }

    @Test func aStallTimesOutAndADropAfterTheDotIsAnUnknownOutcome() async throws {
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([.stall(verb: "MAIL", occurrence: 1), .stall(verb: "DOT", occurrence: 1)]))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        let clock = ContinuousClock()
        let start = clock.now
        await #expect {
            try await pool.send(envelope(1))
        } throws: { error in
            if case .connection(let phase, _) = error as? SMTPError { return phase == "mail" }
            return false
        }
        // Ended by the 2 s command timeout, not the 60 s default; the bound leaves room for a loaded machine
        // (12 s were seen with a full suite and a build sharing two cores).
        #expect(clock.now - start < .seconds(30))
        await #expect {
            try await pool.send(envelope(2))
        } throws: { error in
            if case .outcomeUnknown = error as? SMTPError { return true }
            return false
        }
        try await pool.send(envelope(3))
        await pool.shutdown()
        #expect(server.messages().count == 1)
        try await server.shutdown()
    }

    @Test func aDropMidDataIsAConnectionFailureBeforeTheEnd() async throws {
        let server = try await ScriptedSMTPServer.start(
            try tlsScript([.dropDuringData(occurrence: 1, afterBytes: 10)]))
        let pool = try SMTPPool(config: config(server), logger: Self.logger)
        let big = String(repeating: "Zeile mit Inhalt\r\n", count: 20_000)
        await #expect {
            try await pool.send(envelope(1, body: big))
        } throws: { error in
            guard let e = error as? SMTPError else { return false }
            switch e {
            case .connection, .outcomeUnknown: return true
            default: return false
            }
        }
        try await pool.send(envelope(2))
        await pool.shutdown()
        #expect(server.messages().count == 1)
        try await server.shutdown()
    }
}
