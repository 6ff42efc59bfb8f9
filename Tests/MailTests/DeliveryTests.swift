import Foundation
import Logging
import Mail
import Messaging
import ReciprocityCore
import SMTP
import Storage
import TestSupport
import Testing

/// The outbox pipeline against a scripted SMTP server, on both engines: every fault ends with the mail delivered
/// exactly once, or (where SMTP cannot know) with the documented at-most-once/at-least-once outcome.
@Suite struct DeliveryTests {
    struct Harness {
        let store: Store
        let mailer: Mailer
        let clock: ManualClock
        let workspace: Workspace
        let contactID: ContactID
        let server: ScriptedSMTPServer

        /// Puts a mail in the outbox; marketing kinds go to a contact with review-request consent.
        func enqueue(_ kind: MessageKind, to address: String = "kunde@example.test") async throws -> Int64 {
            try await mailer.enqueue(
                workspace: workspace, kind: kind,
                to: MailRecipient(
                    email: try EmailAddress(address), firstName: "Jürgen", lastName: "Müller",
                    contactID: address == "kunde@example.test" ? contactID : nil),
                values: MailSamples.model(kind, locale: "de"))
        }

        /// Delivers until the row is final (advancing the clock past each retry), at most `rounds` times.
        func deliverUntilFinal(_ id: Int64, rounds: Int = 6) async throws -> OutboxMail {
            for _ in 0..<rounds {
                _ = try await mailer.delivery.deliver(outboxID: id, random: SeededRandom(seed: 3))
                let mail = try #require(try await store.outboxMail(id: id))
                if mail.state.isFinal { return mail }
                clock.set(max(clock.now(), mail.notBefore).addingTimeInterval(1))
            }
            return try #require(try await store.outboxMail(id: id))
        }

        func received(_ id: Int64) async throws -> [ReceivedMessage] {
            let mid = try #require(try await store.outboxMail(id: id)).messageID
            return server.messages().filter { String(decoding: $0.data, as: UTF8.self).contains("<\(mid)>") }
        }
    }

    static func run(
        _ engine: Engine, faults: [SMTPFault], offerSTARTTLS: Bool = true,
        _ body: @Sendable (Harness) async throws -> Void
    ) async throws {
        var script = SMTPScript()
        script.tls = try ScriptedSMTPServer.testTLSContext(fixtures: ScriptedSMTPServer.fixturesDirectory())
        script.offerSTARTTLS = offerSTARTTLS
        script.faults = faults
        let server = try await ScriptedSMTPServer.start(script)
        try await engine.withDatabase { db in
            // 10:00 in Berlin: outside quiet hours.
            let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000 - 6 * 3600))
            let store = Store(db: db, clock: clock, secret: Array(repeating: 9, count: 32))
            let w = try await store.createWorkspace(
                NewWorkspace(slug: "shop", name: "Bohnenglück", senderEmail: "news@example.test"))
            let key = try DKIMKey.generate(.ed25519SHA256)
            try await store.addDKIMKey(
                workspaceID: w.id, domain: "example.test", selector: "t", algorithm: key.algorithm.rawValue,
                privateKey: key.storedForm, actor: "test")
            let contactID = try await db.transaction { tx in
                let id = try await store.upsertContact(
                    tx, workspaceID: w.id, email: try EmailAddress("kunde@example.test"), firstName: "Jürgen",
                    lastName: "Müller", locale: "de", source: "test", sourceRef: nil)
                _ = try await store.applyConsent(
                    tx, workspaceID: w.id, contactID: id,
                    change: ConsentChange(
                        purpose: .reviewRequest, action: .grant, text: "Ja, bitte fragen Sie mich nach Bewertungen.",
                        source: "test", evidence: ConsentEvidence(at: clock.now())))
                return id
            }
            var config = SMTPConfiguration(
                host: "localhost", port: server.port, heloName: "client.example",
                caFile: ScriptedSMTPServer.fixturesDirectory().appendingPathComponent("test-ca.pem").path)
            config.timeouts.command = .milliseconds(800)
            config.timeouts.dataEnd = .milliseconds(800)
            let logger = Logger(label: "delivery-test")
            let transport = SMTPTransport(pool: try SMTPPool(config: config, logger: logger))
            let mailer = Mailer(
                store: store,
                composer: MailComposer(
                    catalog: try MailTemplateCatalog.load(), store: store, baseURL: "https://shop.example"),
                delivery: MailDelivery(store: store, transport: transport, logger: logger))
            do {
                try await body(
                    Harness(
                        store: store, mailer: mailer, clock: clock, workspace: w, contactID: contactID, server: server))
            } catch {
                await transport.shutdown()
                throw error
            }
            await transport.shutdown()
        }
        try await server.shutdown()
    }

    @Test(arguments: Engine.available)
    func a421Or450IsDeferredAndSentOnceLater(engine: Engine) async throws {
        try await Self.run(
            engine,
            faults: [
                .reply(verb: "MAIL", occurrence: 1, code: 421, text: "4.3.2 Shutting down"),
                .reply(verb: "RCPT", occurrence: 1, code: 450, text: "4.2.1 Mailbox busy"),
            ]
        ) { h in
            let id = try await h.enqueue(.reviewRequest)
            let first = try await h.mailer.delivery.deliver(outboxID: id)
            guard case .deferred = first else { throw TestFailure("421 must defer, got \(first)") }
            let mail = try await h.deliverUntilFinal(id)
            #expect(mail.state == .sent)
            #expect(mail.attempts == 3)
            #expect(try await h.received(id).count == 1, "delivered exactly once")
            #expect(try await h.store.mailEvents(workspaceID: h.workspace.id, outboxID: id).count == 2)
        }
    }

    @Test(arguments: Engine.available)
    func a550IsABounceThatSuppressesTheAddress(engine: Engine) async throws {
        try await Self.run(
            engine, faults: [.reply(verb: "RCPT", occurrence: 1, code: 550, text: "5.1.1 User unknown")]
        ) { h in
            let id = try await h.enqueue(.reviewRequest)
            let mail = try await h.deliverUntilFinal(id)
            #expect(mail.state == .bounced)
            #expect(mail.attempts == 1, "a permanent failure is not retried")
            #expect(try await h.received(id).isEmpty)
            let again = try await h.enqueue(.reviewRequest)
            let next = try await h.deliverUntilFinal(again)
            #expect(next.state == .suppressed, "a hard bounce keeps further marketing away")
            #expect(next.reason == "suppressed: bounce")
        }
    }

    /// A rotation: the second key of a workspace waits until it is activated (its DNS record published); the first
    /// signs until then. Mail is signed with the active key's selector.
    @Test(arguments: Engine.available)
    func aNewDKIMKeySignsOnlyOnceActivated(engine: Engine) async throws {
        try await Self.run(engine, faults: []) { h in
            let before = try #require(try await h.store.activeDKIMKey(workspaceID: h.workspace.id))
            let next = try DKIMKey.generate(.ed25519SHA256)
            let active = try await h.store.addDKIMKey(
                workspaceID: h.workspace.id, domain: "example.test", selector: "t2", algorithm: next.algorithm.rawValue,
                privateKey: next.storedForm, actor: "test")
            #expect(!active)
            #expect(try await h.store.activeDKIMKey(workspaceID: h.workspace.id)?.id == before.id)
            func selectorOfSent() async throws -> String? {
                let id = try await h.enqueue(.doiConfirmation)
                #expect(try await h.deliverUntilFinal(id).state == .sent)
                let data = String(decoding: try #require(h.server.messages().last).data, as: UTF8.self)
                    .replacingOccurrences(of: "\r\n ", with: " ").replacingOccurrences(of: "\r\n\t", with: " ")
                let dkim = try #require(data.components(separatedBy: "\r\n").first { $0.hasPrefix("DKIM-Signature:") })
                return dkim.range(of: " s=").map { String(dkim[$0.upperBound...].prefix { $0 != ";" }) }
            }
            #expect(try await selectorOfSent() == before.selector)
            let activated = try await h.store.activateDKIMKey(
                workspaceID: h.workspace.id, selector: "t2", actor: "test")
            #expect(activated.selector == "t2")
            #expect(try await h.store.activeDKIMKey(workspaceID: h.workspace.id)?.selector == "t2")
            let after = try await selectorOfSent()
            #expect(after == "t2")
            // Back to the first key, in the same millisecond: the key activated last signs.
            _ = try await h.store.activateDKIMKey(workspaceID: h.workspace.id, selector: before.selector, actor: "test")
            #expect(try await h.store.activeDKIMKey(workspaceID: h.workspace.id)?.id == before.id)
            await #expect(throws: DomainError.self) {
                try await h.store.activateDKIMKey(workspaceID: h.workspace.id, selector: "nope", actor: "test")
            }
        }
    }

    /// A sender address with UTF-8 in its local part makes the From header 8-bit: the transaction asks for SMTPUTF8
    /// (RFC 6531), as it does for such a recipient.
    @Test(arguments: Engine.available)
    func aUTF8SenderAddressAsksForSMTPUTF8(engine: Engine) async throws {
        try await Self.run(engine, faults: []) { h in
            var w = h.workspace
            w.senderEmail = "grüße@example.test"
            let id = try await h.mailer.enqueue(
                workspace: w, kind: .doiConfirmation,
                to: MailRecipient(
                    email: try EmailAddress("kunde@example.test"), firstName: "Jürgen", lastName: "Müller"),
                values: MailSamples.model(.doiConfirmation, locale: "de"))
            #expect(try await h.deliverUntilFinal(id).state == .sent)
            let mailFrom = h.server.commandLog().filter { $0.contains("MAIL FROM") }
            #expect(mailFrom.count == 1 && mailFrom[0].contains("SMTPUTF8"), "\(mailFrom)")
        }
    }

    /// A relay that checks recipients only after the data refuses at the final dot: 5.1.1 there bounces and
    /// suppresses as at RCPT; a policy refusal (5.7.1) bounces the mail and leaves the address usable.
    @Test(arguments: Engine.available)
    func a5xxAtTheEndOfTheDataBouncesAndSuppressesOnlyAnUnknownAddress(engine: Engine) async throws {
        try await Self.run(
            engine,
            faults: [
                .reply(verb: "DOT", occurrence: 1, code: 554, text: "5.7.1 Rejected by policy"),
                .reply(verb: "DOT", occurrence: 2, code: 550, text: "5.1.1 User unknown"),
                .reply(verb: "RCPT", occurrence: 1, code: 550, text: "5.1.8 Sender address rejected: Domain not found"),
            ]
        ) { h in
            // A refused sender (5.1.8) bounces the mail; the recipient is not to blame and stays usable.
            let sender = try await h.enqueue(.doiConfirmation)
            #expect(try await h.deliverUntilFinal(sender).state == .bounced)
            #expect(
                !(try await h.store.isSuppressed(
                    workspaceID: h.workspace.id, email: try EmailAddress("kunde@example.test"))))
            let policy = try await h.enqueue(.reviewRequest)
            #expect(try await h.deliverUntilFinal(policy).state == .bounced)
            #expect(
                !(try await h.store.isSuppressed(
                    workspaceID: h.workspace.id, email: try EmailAddress("kunde@example.test"))))
            let unknown = try await h.enqueue(.reviewRequest)
            let bounced = try await h.deliverUntilFinal(unknown)
            #expect(bounced.state == .bounced && bounced.attempts == 1)
            #expect(
                try await h.store.isSuppressed(
                    workspaceID: h.workspace.id, email: try EmailAddress("kunde@example.test")))
        }
    }

    @Test(arguments: Engine.available)
    func aDropMidDataIsRetriedAndDeliveredOnce(engine: Engine) async throws {
        try await Self.run(
            engine,
            faults: [
                .dropDuringData(occurrence: 1, afterBytes: 200), .dropDuringData(occurrence: 3, afterBytes: 300),
            ]
        ) { h in
            let id = try await h.enqueue(.doiConfirmation)
            let mail = try await h.deliverUntilFinal(id)
            #expect(mail.state == .sent)
            #expect(try await h.received(id).count == 1)
            // Marketing cut off mid-DATA is resent too: the server cannot have had the final dot.
            let review = try await h.enqueue(.reviewRequest)
            let sent = try await h.deliverUntilFinal(review)
            #expect(sent.state == .sent)
            #expect(sent.attempts == 2)
            #expect(try await h.received(review).count == 1)
        }
    }

    @Test(arguments: Engine.available)
    func aStallIsATimeoutAndTheMailGoesOnceAfterwards(engine: Engine) async throws {
        try await Self.run(engine, faults: [.stall(verb: "RCPT", occurrence: 1)]) { h in
            let id = try await h.enqueue(.reviewRequest)
            let mail = try await h.deliverUntilFinal(id)
            #expect(mail.state == .sent)
            #expect(mail.attempts == 2)
            #expect(try await h.received(id).count == 1)
        }
    }

    /// After the final dot, silence is ambiguous. Transactional mail is resent with the same Message-ID (at least
    /// once); marketing is not (at most once). docs/mail.md explains the choice.
    @Test(arguments: Engine.available)
    func anUnknownOutcomeResendsTransactionalButNotMarketing(engine: Engine) async throws {
        try await Self.run(
            engine, faults: [.stall(verb: "DOT", occurrence: 1), .stall(verb: "DOT", occurrence: 3)]
        ) { h in
            let doi = try await h.enqueue(.doiConfirmation)
            let sentDOI = try await h.deliverUntilFinal(doi)
            #expect(sentDOI.state == .sent)
            #expect(try await h.received(doi).count == 1)
            let review = try await h.enqueue(.reviewRequest)
            let failed = try await h.deliverUntilFinal(review)
            #expect(failed.state == .failed)
            #expect(failed.reason.contains("at most once"))
            #expect(failed.attempts == 1)
        }
    }

    /// A server that hangs up after the whole message and its final dot, without a reply, did not take it (a server
    /// answers before it closes, RFC 5321 §4.1.1.4): both classes are sent again, once. Only silence is unknown
    /// (`anUnknownOutcomeResendsTransactionalButNotMarketing`).
    @Test(arguments: Engine.available)
    func aHangUpAfterTheWholeMessageIsSentAgain(engine: Engine) async throws {
        try await Self.run(
            engine,
            faults: [
                .dropDuringData(occurrence: 1, afterBytes: 1_000_000),
                .dropDuringData(occurrence: 3, afterBytes: 1_000_000),
            ]
        ) { h in
            let doi = try await h.enqueue(.doiConfirmation)
            let sentDOI = try await h.deliverUntilFinal(doi)
            #expect(sentDOI.state == .sent && sentDOI.attempts == 2)
            #expect(try await h.received(doi).count == 1)
            let review = try await h.enqueue(.reviewRequest)
            let sent = try await h.deliverUntilFinal(review)
            #expect(sent.state == .sent && sent.attempts == 2)
            #expect(try await h.received(review).count == 1)
        }
    }

    /// A crash between "sending" and the outcome: marketing is not resent; transactional is, same Message-ID.
    @Test(arguments: Engine.available)
    func aCrashWhileSendingFollowsTheClassRule(engine: Engine) async throws {
        try await Self.run(engine, faults: []) { h in
            let review = try await h.enqueue(.reviewRequest)
            let doi = try await h.enqueue(.doiConfirmation)
            for id in [review, doi] {
                try await h.store.db.transaction { tx in
                    try await h.store.transitionOutbox(tx, id: id, from: [.queued], to: .sending, countAttempt: true)
                }
            }
            // Within the in-flight window another worker may still be sending: hands off.
            let early = try await h.mailer.delivery.deliver(outboxID: doi)
            guard case .deferred(_, let reason) = early else { throw TestFailure("in flight: \(early)") }
            #expect(reason == "being sent by another worker")
            #expect(try await h.received(doi).isEmpty)
            // After it, the row is a crash's leftover.
            h.clock.advance(by: 301)
            #expect(try await h.deliverUntilFinal(review).state == .failed)
            #expect(try await h.received(review).isEmpty)
            #expect(try await h.deliverUntilFinal(doi).state == .sent)
            #expect(try await h.received(doi).count == 1)
        }
    }

    @Test(arguments: Engine.available)
    func noSTARTTLSMeansNothingIsSentAndTheMailWaits(engine: Engine) async throws {
        try await Self.run(engine, faults: [], offerSTARTTLS: false) { h in
            let id = try await h.enqueue(.doiConfirmation)
            let outcome = try await h.mailer.delivery.deliver(outboxID: id)
            guard case .deferred(_, let reason) = outcome else { throw TestFailure("must defer, got \(outcome)") }
            #expect(reason.contains("STARTTLS"))
            #expect(h.server.messages().isEmpty)
            #expect(!h.server.commandLog().contains { $0.contains("MAIL FROM") })
        }
    }

    @Test(arguments: Engine.available)
    func policyAtSendTime(engine: Engine) async throws {
        try await Self.run(engine, faults: []) { h in
            // No consent: a marketing mail to a stranger is never sent.
            let stranger = try await h.enqueue(.reviewRequest, to: "fremd@example.test")
            #expect(try await h.deliverUntilFinal(stranger).state == .suppressed)
            // Frequency cap: the third marketing mail within 7 days waits.
            let a = try await h.enqueue(.reviewRequest)
            let b = try await h.enqueue(.reviewRequest)
            let c = try await h.enqueue(.reviewRequest)
            #expect(try await h.deliverUntilFinal(a).state == .sent)
            #expect(try await h.deliverUntilFinal(b).state == .sent)
            let third = try await h.mailer.delivery.deliver(outboxID: c)
            guard case .deferred(let until, let reason) = third else { throw TestFailure("cap: \(third)") }
            #expect(reason.contains("frequency cap"))
            #expect(until > h.clock.now().addingTimeInterval(6 * 86_400))
            // An objection (one-click) after queueing stops it at send time.
            let d = try await h.enqueue(.thankYou)
            let target = Unsubscribe.Target(
                workspaceID: h.workspace.id, emailHash: h.store.suppressionHash("kunde@example.test"),
                contactID: h.contactID, kind: "thank_you")
            try await Unsubscribe(store: h.store).objectAll(target, source: "one_click")
            let stopped = try await h.deliverUntilFinal(d)
            #expect(stopped.state == .suppressed)
            #expect(try await h.received(d).isEmpty)
            // Transactional mail the person asked for still goes.
            let doi = try await h.enqueue(.doiConfirmation)
            #expect(try await h.deliverUntilFinal(doi).state == .sent)
        }
    }

    @Test(arguments: Engine.available)
    func bouncesFromAMaildirAndTheWebhookPath(engine: Engine) async throws {
        try await Self.run(engine, faults: []) { h in
            let id = try await h.enqueue(.doiConfirmation)
            #expect(try await h.deliverUntilFinal(id).state == .sent)
            let received = try #require(try await h.received(id).first)
            let verp = received.mailFrom
            #expect(verp.hasPrefix("bounce+\(id)-") && verp.hasSuffix("@example.test"))
            let mid = try #require(try await h.store.outboxMail(id: id)).messageID
            let dsn = """
                Return-Path: <>\r\nTo: \(verp)\r\nSubject: Undelivered Mail Returned to Sender\r\n\
                Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r\n\r\n\
                --B1\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
                --B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n\
                Final-Recipient: rfc822; kunde@example.test\r\nAction: failed\r\nStatus: 5.1.1 (user unknown)\r\n\
                Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n\
                --B1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <\(mid)>\r\n\r\n--B1--\r\n
                """
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("maildir-\(UUID().uuidString)")
            for sub in ["new", "cur", "tmp"] {
                try FileManager.default.createDirectory(
                    at: dir.appendingPathComponent(sub), withIntermediateDirectories: true)
            }
            defer { try? FileManager.default.removeItem(at: dir) }
            try dsn.write(to: dir.appendingPathComponent("new/1.dsn"), atomically: true, encoding: .utf8)
            // A forged bounce with a wrong MAC in the VERP address and no Message-ID matches nothing.
            try
                "To: bounce+\(id)-forged@example.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--x--\r\n"
                .write(to: dir.appendingPathComponent("new/2.forged"), atomically: true, encoding: .utf8)
            let importer = BounceImport(store: h.store, logger: Logger(label: "test"))
            let summary = try await importer.importMaildir(dir.path)
            #expect(summary.bounces == 1 && summary.unmatched == 1 && summary.read == 2)
            #expect(try await h.store.outboxMail(id: id)?.state == .bounced)
            #expect(
                try await h.store.isSuppressed(
                    workspaceID: h.workspace.id, email: try EmailAddress("kunde@example.test")))
            let second = try await importer.importMaildir(dir.path)
            #expect(second.read == 0, "processed files move to cur/")

            // A message the relay gave up on after retrying is `Action: failed` with a 4.x.x status: bounced (not
            // a delay), but the address stays usable (not 5.1.x). A real delay leaves the mail sent.
            for (n, action, status) in [(3, "delayed", "4.4.1"), (4, "failed", "4.4.7")] {
                let other = try await h.enqueue(.doiConfirmation, to: "kunde\(n)@example.test")
                #expect(try await h.deliverUntilFinal(other).state == .sent)
                let report = try #require(try await h.received(other).first).mailFrom
                try dsn.replacingOccurrences(of: verp, with: report)
                    .replacingOccurrences(
                        of: "Action: failed\r\nStatus: 5.1.1 (user unknown)",
                        with: "Action: \(action)\r\nStatus: \(status)"
                    )
                    .replacingOccurrences(of: "<\(mid)>", with: "<none@example.test>")
                    .write(to: dir.appendingPathComponent("new/\(n).dsn"), atomically: true, encoding: .utf8)
                let summary = try await importer.importMaildir(dir.path)
                #expect(summary.read == 1)
                #expect(
                    try await h.store.outboxMail(id: other)?.state == (action == "failed" ? .bounced : .sent),
                    "\(action) \(status)")
                #expect(
                    !(try await h.store.isSuppressed(
                        workspaceID: h.workspace.id, email: try EmailAddress("kunde\(n)@example.test"))))
            }
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
