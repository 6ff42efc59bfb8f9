import Foundation
import Logging
import Mail
import Metrics
import ReciprocityCore
import SMTP
import Storage

/// Where mail goes: a real relay, or the development outbox (nothing leaves; admin shows it).
public protocol MailTransport: Sendable {
    var name: String { get }
    func send(_ envelope: SMTPEnvelope) async throws -> SMTPReply
    func shutdown() async
}

public struct SMTPTransport: MailTransport {
    public let pool: SMTPPool
    public var name: String { "smtp" }
    public init(pool: SMTPPool) { self.pool = pool }
    public func send(_ envelope: SMTPEnvelope) async throws -> SMTPReply { try await pool.send(envelope) }
    public func shutdown() async { await pool.shutdown() }
}

/// With no `RECIPROCITY_SMTP_URL`, mail stays in the database and the admin's Outbox page shows it.
public struct DevOutboxTransport: MailTransport {
    public init() {}
    public var name: String { "outbox" }
    public func send(_ envelope: SMTPEnvelope) async throws -> SMTPReply {
        SMTPReply(code: 250, lines: ["kept in the development outbox"])
    }
    public func shutdown() async {}
}

/// A per-workspace token bucket in this process (each node has its own; see docs/mail.md).
actor SendRateLimiter {
    private var buckets: [WorkspaceID: TokenBucket] = [:]

    /// Waits for a token; returns false if the wait would exceed `maxWait` (the caller defers the mail instead).
    func acquire(workspaceID: WorkspaceID, rate: Int, now: @Sendable () -> Date, maxWait: TimeInterval) async -> Bool {
        while true {
            var bucket = buckets[workspaceID] ?? TokenBucket(rate: Double(rate), burst: Double(rate), now: now())
            if bucket.rate != Double(rate) { bucket = TokenBucket(rate: Double(rate), burst: Double(rate), now: now()) }
            let wait = bucket.take(now: now())
            buckets[workspaceID] = bucket
            guard let wait else { return true }
            if wait > maxWait { return false }
            try? await Task.sleep(for: .milliseconds(Int(wait * 1000) + 1))
        }
    }
}

/// Delivers outbox rows: checks the policy at send time, signs, sends, and records the outcome.
///
/// Crash semantics (docs/mail.md): the row is marked `sending` and committed before the first byte goes to the
/// relay. If the process dies after that, the next attempt finds `sending`:
/// - marketing is sent **at most once**: the row is marked failed ("interrupted"), never resent;
/// - transactional is sent **at least once**: it is sent again with the same Message-ID, so the recipient's
///   mail system can tell a duplicate.
public struct MailDelivery: Sendable {
    public let store: Store
    public let transport: any MailTransport
    public let logger: Logger
    public var retry = RetryPolicy()
    /// Attempts before a retryable failure becomes final.
    public var maxAttempts = 8
    /// A row in `sending` for longer is taken for a crash's leftover (the job lease). A send is bounded by the
    /// transport's own timeouts (SMTP: the pool wait, connect, each reply); it is never abandoned while it may still
    /// succeed, because its outcome, a relay's 250 included, must be recorded.
    public var inFlightWindow: TimeInterval = 300
    let limiter = SendRateLimiter()

    public init(store: Store, transport: any MailTransport, logger: Logger) {
        self.store = store
        self.transport = transport
        self.logger = logger
    }

    public enum Outcome: Sendable, Equatable {
        case sent(SMTPReply)
        case deferred(until: Date, reason: String)
        case skipped(reason: String)
        case failed(reason: String)
        case bounced(reason: String)
        case alreadyDone(OutboxState)
    }

    public func deliver(outboxID: Int64, random: any RandomSource = SystemRandom()) async throws -> Outcome {
        // 0. The workspace's sending rate, waited for outside any transaction.
        var allowed = true
        var headSettings: MailSettings?
        if let head = try await store.outboxMail(id: outboxID), !head.state.isFinal,
            head.notBefore <= store.clock.now().addingTimeInterval(1)
        {
            let settings = try await store.mailSettings(workspaceID: head.workspaceID)
            headSettings = settings
            allowed = await limiter.acquire(
                workspaceID: head.workspaceID, rate: settings.ratePerSecond,
                now: { [clock = store.clock] in clock.now() }, maxWait: 2)
        }
        let rateOK = allowed
        let knownSettings = headSettings
        // 1. Decide, and mark `sending` in a committed transaction.
        let prepared: Prepared = try await store.db.transaction { tx in
            try await self.prepare(tx, outboxID: outboxID, rateOK: rateOK, settings: knownSettings)
        }
        guard case .send(let mail, let key) = prepared else {
            if case .done(let outcome) = prepared { return outcome }
            return .failed(reason: "unreachable")
        }
        // 2. Sign and send, outside any transaction.
        let result: Result<SMTPReply, any Error>
        do {
            let stored = Array((mail.message ?? "").utf8)
            let parsed = try RenderedMessage(parsing: stored)
            let recipient = try Mailbox(mail.recipient ?? "")
            // UTF-8 in an address (the recipient's, or the sender's in From) needs SMTPUTF8 (RFC 6531); names and
            // subjects are encoded words, so any 8-bit byte in a header is an address.
            let envelope = SMTPEnvelope(
                mailFrom: returnPath(mail, from: parsed), recipients: [recipient.address],
                data: try key.map { try sign(parsed, key: $0) } ?? stored,
                needsSMTPUTF8: recipient.needsSMTPUTF8
                    || parsed.headers.contains(where: { $0.value.utf8.contains { $0 >= 0x80 } }))
            result = .success(try await transport.send(envelope))
        } catch {
            result = .failure(error)
        }
        // 3. Record the outcome. Counted after the commit: a transaction body can run more than once.
        let outcome = try await store.db.transaction { tx in
            try await self.record(tx, mail: mail, result: result, random: random)
        }
        switch (result, outcome) {
        case (.success, .sent):
            Counter(label: "reciprocity_mail_sent_total", dimensions: [("class", mail.mailClass.rawValue)]).increment()
        case (.failure, _):
            Counter(label: "reciprocity_mail_failures_total", dimensions: [("class", mail.mailClass.rawValue)])
                .increment()
        default:
            break
        }
        return outcome
    }

    enum Prepared: Sendable {
        case done(Outcome)
        case send(OutboxMail, StoredDKIMKey?)
    }

    private func prepare(_ tx: any SQLExecutor, outboxID: Int64, rateOK: Bool, settings known: MailSettings?)
        async throws -> Prepared
    {
        guard let mail = try await store.outboxMail(id: outboxID, in: tx) else {
            return .done(.failed(reason: "no such outbox row"))
        }
        if mail.state.isFinal { return .done(.alreadyDone(mail.state)) }
        let now = store.clock.now()
        if mail.state == .sending, let started = mail.sendingAt, started > now.addingTimeInterval(-inFlightWindow) {
            // Another worker is sending it right now (its lease ran out while it waited on a slow relay): look
            // again once that send must have ended, one way or the other.
            let later = started.addingTimeInterval(inFlightWindow + 1)
            try await store.enqueueMailDelivery(
                tx, outboxID: mail.id, workspaceID: mail.workspaceID, at: later,
                key: "mail:\(mail.id):inflight:\(started.epochMillis)")
            return .done(.deferred(until: later, reason: "being sent by another worker"))
        }
        if mail.state == .sending && mail.mailClass == .marketing && !mail.isTest {
            let reason = "interrupted after sending began; not resent (marketing is sent at most once)"
            try await store.transitionOutbox(tx, id: mail.id, from: [.sending], to: .failed, reason: reason)
            try await store.recordMailEvent(
                tx, workspaceID: mail.workspaceID, outboxID: mail.id, type: "failed", detail: reason, source: "delivery"
            )
            return .done(.failed(reason: reason))
        }
        guard mail.recipient != nil, mail.message != nil else {
            try await store.transitionOutbox(
                tx, id: mail.id, from: [.queued, .deferred, .sending], to: .suppressed, reason: "erased")
            return .done(.skipped(reason: "erased"))
        }
        if mail.notBefore > now.addingTimeInterval(1) && mail.state != .sending {
            return .done(.deferred(until: mail.notBefore, reason: "not yet due"))
        }
        guard let timeZone = try await store.workspaceTimeZone(tx, workspaceID: mail.workspaceID) else {
            return .done(.failed(reason: "workspace gone"))
        }
        try await store.lockRecipient(tx, workspaceID: mail.workspaceID, recipientHash: mail.recipientHash)
        let settings: MailSettings
        if let known {
            settings = known
        } else {
            settings = try await store.mailSettings(workspaceID: mail.workspaceID, in: tx)
        }
        let kind = MessageKind(rawValue: mail.kind) ?? .thankYou
        var check = SendCheck(
            kind: kind,
            suppression: try await store.suppressionReason(
                tx, workspaceID: mail.workspaceID, emailHash: mail.recipientHash),
            consent: nil, now: now)
        if mail.isTest {
            // A test send goes to the merchant's own address: only the suppression list applies.
            check.consent = .granted
            check.cap = FrequencyCap(count: 1_000, days: 1)
            check.quietHours = QuietHours(startHour: 0, endHour: 0)
        } else if let purpose = kind.purpose, let contactID = mail.contactID {
            check.consent = try await store.consentState(
                tx, workspaceID: mail.workspaceID, contactID: contactID, purpose: purpose)
            if settings.existingCustomerMode && purpose == .reviewRequest {
                check.existingCustomerBasis = try await store.hasSaleNotice(
                    tx, workspaceID: mail.workspaceID, contactID: contactID)
            }
            check.cap = settings.cap
            check.quietHours = QuietHours(
                startHour: settings.quietStart, endHour: settings.quietEnd, timeZone: timeZone)
            check.recentMarketing = try await store.recentMarketing(
                tx, workspaceID: mail.workspaceID, recipientHash: mail.recipientHash,
                since: now.addingTimeInterval(-Double(settings.cap.days) * 86_400))
        }
        switch SendPolicy.decide(check) {
        case .skip(let reason):
            try await store.transitionOutbox(
                tx, id: mail.id, from: [.queued, .deferred, .sending], to: .suppressed, reason: reason)
            try await store.recordMailEvent(
                tx, workspaceID: mail.workspaceID, outboxID: mail.id, type: "skipped", detail: reason, source: "policy")
            return .done(.skipped(reason: reason))
        case .wait(let until, let reason):
            try await postpone(tx, mail, until: until, reason: reason)
            return .done(.deferred(until: until, reason: reason))
        case .send(let basis):
            if !rateOK {
                let until = now.addingTimeInterval(5)
                try await postpone(tx, mail, until: until, reason: "sending rate")
                return .done(.deferred(until: until, reason: "sending rate"))
            }
            guard
                try await store.transitionOutbox(
                    tx, id: mail.id, from: [.queued, .deferred, .sending], to: .sending,
                    legalBasis: basis?.rawValue, countAttempt: true)
            else { return .done(.alreadyDone(mail.state)) }
            var updated = mail
            updated.attempts += 1
            return .send(updated, try await store.activeDKIMKey(workspaceID: mail.workspaceID, in: tx))
        }
    }

    private func postpone(_ tx: any SQLExecutor, _ mail: OutboxMail, until: Date, reason: String) async throws {
        try await store.transitionOutbox(
            tx, id: mail.id, from: [.queued, .deferred, .sending], to: .deferred, reason: reason, notBefore: until)
        try await store.enqueueMailDelivery(
            tx, outboxID: mail.id, workspaceID: mail.workspaceID, at: until,
            key: "mail:\(mail.id):\(mail.attempts):\(until.epochMillis)")
    }

    /// The stored message with a DKIM signature in front (when the workspace has a key).
    /// The message with a DKIM signature in front.
    func sign(_ message: RenderedMessage, key: StoredDKIMKey) throws -> [UInt8] {
        let signer = DKIMSigner(
            domain: key.domain, selector: key.selector,
            key: try DKIMKey(
                algorithm: DKIMKey.Algorithm(rawValue: key.algorithm) ?? .rsaSHA256, storedForm: key.privateKey))
        return try signer.sign(message, timestamp: store.clock.now()).bytes
    }

    /// VERP: a bounce address per message, `bounce+<id>-<mac>@<sender domain>`; bounces import reads it back.
    func returnPath(_ mail: OutboxMail, from message: RenderedMessage) -> String {
        let from = message.headers.first(where: { $0.name.lowercased() == "from" })?.value ?? ""
        let domain = from.split(separator: "@").last.map { String($0.prefix(while: { $0 != ">" })) } ?? "localhost"
        return VERP.address(outboxID: mail.id, domain: domain, store: store)
    }

    private func record(
        _ tx: any SQLExecutor, mail: OutboxMail, result: Result<SMTPReply, any Error>, random: any RandomSource
    )
        async throws -> Outcome
    {
        switch result {
        case .success(let reply):
            // The relay took it: that is the truth, even if the row was given up on meanwhile.
            guard
                try await store.transitionOutbox(
                    tx, id: mail.id, from: [.sending, .failed], to: .sent, reason: "", smtpReply: reply.description,
                    transport: transport.name)
            else { return .alreadyDone(try await store.outboxMail(id: mail.id, in: tx)?.state ?? .sent) }
            return .sent(reply)
        case .failure(let error):
            let smtp = error as? SMTPError
            let reason = "\(error)"
            try await store.recordMailEvent(
                tx, workspaceID: mail.workspaceID, outboxID: mail.id, type: "attempt_failed", detail: reason,
                source: transport.name)
            // A refusal of the session itself (greeting, EHLO, AUTH) says nothing about this mail: retry it.
            if case .permanent(let phase, let reply) = smtp, !["greeting", "ehlo", "auth", "starttls"].contains(phase) {
                if phase == "rcpt" || phase == "data-end" {
                    // "No such address" bars it for good: such a status (some relays check recipients only after
                    // the data), or a RCPT refusal without an enhanced status.
                    if reply.enhancedStatus.map(SMTPReply.meansNoSuchRecipient) ?? (phase == "rcpt") {
                        try await store.suppress(
                            tx, workspaceID: mail.workspaceID, emailHash: mail.recipientHash, reason: "bounce")
                    }
                    try await store.transitionOutbox(
                        tx, id: mail.id, from: [.sending], to: .bounced, reason: reason, smtpReply: reply.description,
                        transport: transport.name)
                    return .bounced(reason: reason)
                }
                try await store.transitionOutbox(
                    tx, id: mail.id, from: [.sending], to: .failed, reason: reason, smtpReply: reply.description,
                    transport: transport.name)
                return .failed(reason: reason)
            }
            if case .outcomeUnknown = smtp, mail.mailClass == .marketing && !mail.isTest {
                let r = reason + "; not resent (marketing is sent at most once)"
                try await store.transitionOutbox(tx, id: mail.id, from: [.sending], to: .failed, reason: r)
                return .failed(reason: r)
            }
            // Retryable: 4xx, connection trouble, no TLS, or (transactional) an unknown outcome.
            let retryable: Bool =
                switch smtp {
                case .transient, .connection, .tlsRequired, .outcomeUnknown, .permanent: true
                case .unsupported: false
                case nil: !(error is DomainError)
                }
            guard retryable, mail.attempts < maxAttempts else {
                try await store.transitionOutbox(
                    tx, id: mail.id, from: [.sending], to: .failed,
                    reason: retryable ? "gave up after \(mail.attempts) attempts: \(reason)" : reason)
                return .failed(reason: reason)
            }
            let until = store.clock.now().addingTimeInterval(retry.delay(afterAttempt: mail.attempts, random: random))
            try await postpone(tx, mail, until: until, reason: reason)
            return .deferred(until: until, reason: reason)
        }
    }
}

/// VERP bounce addresses: `bounce+<outbox id>-<mac>@domain`. The MAC stops forged bounces from suppressing people.
public enum VERP {
    public static func address(outboxID: Int64, domain: String, store: Store) -> String {
        "bounce+\(outboxID)-\(mac(outboxID, store))@\(domain)"
    }

    /// The outbox id in a VERP address, if the address is one of ours and its MAC is right.
    public static func outboxID(from address: String, store: Store) -> Int64? {
        let local = address.lowercased().split(separator: "@").first.map(String.init) ?? ""
        guard local.hasPrefix("bounce+") else { return nil }
        let parts = local.dropFirst("bounce+".count).split(separator: "-")
        guard parts.count == 2, let id = Int64(parts[0]), String(parts[1]) == mac(id, store) else { return nil }
        return id
    }

    private static func mac(_ id: Int64, _ store: Store) -> String {
        let token = store.signToken(purpose: "verp", fields: [String(id)])
        let sig = token.split(separator: ".").last.map(String.init) ?? ""
        return String(sig.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(10))
    }
}

extension RenderedMessage {
    /// Splits stored message bytes back into header fields (unfolded) and body.
    public init(parsing bytes: [UInt8]) throws {
        var headerEnd: Int?
        var i = 0
        while i + 3 < bytes.count {
            if bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                headerEnd = i
                break
            }
            i += 1
        }
        guard let end = headerEnd else {
            throw DomainError.invalid("mail_malformed", "The stored message has no header/body separator.")
        }
        let headerText = String(decoding: bytes[..<end], as: UTF8.self)
        var fields: [HeaderField] = []
        for line in headerText.components(separatedBy: "\r\n") {
            if line.hasPrefix(" ") || line.hasPrefix("\t"), var last = fields.popLast() {
                last.value += " " + line.trimmingCharacters(in: .whitespaces)
                fields.append(last)
            } else if let colon = line.firstIndex(of: ":") {
                fields.append(
                    HeaderField(
                        String(line[..<colon]),
                        String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
            }
        }
        self.init(headers: fields, body: Array(bytes[(end + 4)...]))
    }
}
