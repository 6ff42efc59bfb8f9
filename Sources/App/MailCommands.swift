import Foundation
import Logging
import Mail
import Messaging
import ReciprocityCore
import SMTP
import Storage

/// The mail engine's CLI commands, as functions tests call.
extension Commands {
    /// `reciprocity dkim generate`: a new key for the workspace (the newest signs); returns the DNS record.
    public static func generateDKIM(
        _ rt: Runtime, workspace slug: String, domain: String, selector: String, algorithm: String
    ) async throws -> String {
        let w = try await workspace(rt, slug)
        guard let alg = DKIMKey.Algorithm(rawValue: algorithm) else {
            throw DomainError.invalid(
                "dkim_algorithm", "The algorithm must be rsa-sha256 or ed25519-sha256.", field: "algorithm")
        }
        guard let asciiDomain = IDNA.toASCII(domain.trimmingCharacters(in: .whitespaces)), asciiDomain.contains(".")
        else { throw DomainError.invalid("dkim_domain", "'\(domain)' is not a domain name.", field: "domain") }
        let labelOK: (Substring) -> Bool = { l in
            !l.isEmpty && l.count <= 63 && l.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
        guard selector.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(labelOK) else {
            throw DomainError.invalid(
                "dkim_selector", "A selector is letters, digits and hyphens, e.g. 's2026'.", field: "selector")
        }
        let senderDomain = (try? EmailAddress(w.senderEmail)).flatMap { IDNA.toASCII($0.domain) } ?? ""
        if !DKIMSigner.aligns(domain: asciiDomain, senderDomain: senderDomain) {
            // A warning, not a refusal: the sender address may be about to change. On stderr; stdout is the record.
            rt.logger.warning(
                "DKIM domain \(asciiDomain) may not align with the workspace's sender \(w.senderEmail) for DMARC (another organizational domain). Sign with a domain of the sender's organization."
            )
        }
        let key = try DKIMKey.generate(alg)
        let active = try await rt.store.addDKIMKey(
            workspaceID: w.id, domain: asciiDomain, selector: selector, algorithm: alg.rawValue,
            privateKey: key.storedForm, actor: "cli")
        let line = key.zoneFileLine(domain: asciiDomain, selector: selector)
        guard !active else { return line }
        return line + "\n"
            + "Pending: the current key signs until this record is published and you run "
            + "`reciprocity dkim activate --workspace \(slug) --selector \(selector)`."
    }

    /// `reciprocity dkim activate`: the key with this selector signs from now on.
    public static func activateDKIM(_ rt: Runtime, workspace slug: String, selector: String) async throws -> String {
        let w = try await workspace(rt, slug)
        let key = try await rt.store.activateDKIMKey(workspaceID: w.id, selector: selector, actor: "cli")
        return "Active: \(key.selector)._domainkey.\(key.domain) (\(key.algorithm)) signs \(w.slug)'s mail from now on."
    }

    /// `reciprocity mail send-test`: one mail of a kind with sample values, through the outbox and the transport.
    public static func sendTestMail(
        _ rt: Runtime, workspace slug: String, kind: String, to: String, locale: String, name: String?
    ) async throws -> String {
        let w = try await workspace(rt, slug)
        guard let k = MessageKind(rawValue: kind) else {
            throw DomainError.invalid(
                "mail_kind_unknown",
                "Unknown kind '\(kind)'; one of \(MessageKind.allCases.map(\.rawValue).joined(separator: ", ")).",
                field: "kind")
        }
        let address = try EmailAddress(to, field: "to")
        _ = try Mailbox(address.raw, displayName: name)
        let (id, outcome) = try await rt.mailer.sendTest(
            workspace: w, kind: k, to: address, locale: locale, name: name)
        let mail = try await rt.store.outboxMail(id: id)
        switch outcome {
        case .sent: return "sent <\(mail?.messageID ?? "?")>"
        case .skipped(let reason):
            throw DomainError.invalid("mail_not_sent", "not sent: \(reason) (outbox #\(id))")
        case .deferred(_, let reason):
            throw DomainError(.unavailable, code: "mail_deferred", "deferred, will retry: \(reason) (outbox #\(id))")
        case .failed(let reason), .bounced(let reason):
            throw DomainError(.unavailable, code: "mail_failed", "not sent: \(reason) (outbox #\(id))")
        case .alreadyDone(let state):
            guard state == .sent else {
                throw DomainError(
                    .unavailable, code: "mail_not_sent",
                    "not sent: \(state.rawValue) \(mail?.reason ?? "") (outbox #\(id))")
            }
            return "sent <\(mail?.messageID ?? "?")>"
        }
    }

    /// `reciprocity mail bench`: render, DKIM-sign and send `count` mails through the SMTP pool of `concurrency`
    /// sessions, bypassing the outbox (this measures the mail engine, not the database). One JSON line.
    ///
    /// `SMTPPool.sendersPerSession` senders per session, as the outbox's workers are more than the sessions: while one
    /// sender's message goes out, the next one's commands are already queued behind it (`SMTPConnection.canChain`).
    public static func benchMail(
        _ rt: Runtime, workspace slug: String, smtpURL: String, to: String, count: Int, concurrency: Int, size: Int,
        renderOnce: Bool = false
    ) async throws -> String {
        let w = try await workspace(rt, slug)
        var config = try SMTPConfiguration.parse(smtpURL, heloName: rt.config.smtpHelo, caFile: rt.config.smtpCAFile)
        config.poolSize = concurrency
        config.maxMessagesPerConnection = 1_000_000
        let pool = try SMTPPool(config: config, logger: rt.logger)
        let settings = try await rt.store.mailSettings(workspaceID: w.id)
        let template = try await rt.mailer.composer.template(workspaceID: w.id, kind: .thankYou, variant: "de")
        guard let stored = try await rt.store.activeDKIMKey(workspaceID: w.id) else {
            throw DomainError.invalid("dkim_missing", "Generate a DKIM key first: reciprocity dkim generate.")
        }
        let signer = DKIMSigner(
            domain: stored.domain, selector: stored.selector,
            key: try DKIMKey(algorithm: DKIMKey.Algorithm(rawValue: stored.algorithm)!, storedForm: stored.privateKey))
        let recipient = MailRecipient(email: try EmailAddress(to), firstName: "Jürgen", lastName: "Müller")
        // The thank-you text padded with whole phrases so that a signed mail is `size` bytes, as near as a phrase
        // gets: each phrase adds about the same to the mail (in the text part and the HTML part, quoted-printable),
        // measured from two mails. (Guessed from the phrase's length, the mails came out 10% larger than `size`.)
        let text = MailSamples.model(.thankYou, locale: "de")["message"] as? String ?? ""
        let phrase = " Grüße aus der Rösterei."
        func signedSize(_ phrases: Int) async throws -> Int {
            let composed = try await rt.mailer.composer.compose(
                workspace: w, settings: settings, kind: .thankYou, to: recipient,
                values: ["message": text + String(repeating: phrase, count: phrases)], template: template,
                date: rt.clock.now())
            return try signer.sign(composed.rendered, timestamp: rt.clock.now()).bytes.count
        }
        let probe = 100
        let (empty, probed) = (try await signedSize(0), try await signedSize(probe))
        let perPhrase = max(1, Double(probed - empty) / Double(probe))
        let phrases = max(0, Int((Double(size - empty) / perPhrase).rounded()))
        let message = text + String(repeating: phrase, count: phrases)
        // With `renderOnce`, one signed mail is sent `count` times: the SMTP client alone, like smtp-source.
        let once: [UInt8]? =
            renderOnce
            ? try signer.sign(
                try await rt.mailer.composer.compose(
                    workspace: w, settings: settings, kind: .thankYou, to: recipient, values: ["message": message],
                    template: template, date: rt.clock.now()
                ).rendered, timestamp: rt.clock.now()
            ).bytes : nil
        let rssStart = ProcessMemory.residentKB()
        let counter = Counter()
        let failures = Counter()
        var bytes = 0
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<(SMTPPool.sendersPerSession * concurrency) {
                group.addTask {
                    var sentBytes = 0
                    while counter.next() < count {
                        let signed: [UInt8]
                        if let once {
                            signed = once
                        } else {
                            let composed = try await rt.mailer.composer.compose(
                                workspace: w, settings: settings, kind: .thankYou, to: recipient,
                                values: ["message": message], template: template, date: rt.clock.now())
                            signed = try signer.sign(composed.rendered, timestamp: rt.clock.now()).bytes
                        }
                        sentBytes += signed.count
                        do {
                            try await pool.send(
                                SMTPEnvelope(mailFrom: "bounce@\(stored.domain)", recipients: [to], data: signed))
                        } catch {
                            _ = failures.next()
                        }
                    }
                    return sentBytes
                }
            }
            for try await b in group { bytes += b }
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        await pool.shutdown()
        let failed = failures.value
        let sent = count - failed
        let result: [String: Any] = [
            "sent": sent, "failed": failed, "seconds": (seconds * 1000).rounded() / 1000,
            "rate": (Double(sent) / seconds).rounded(), "bytes_avg": count > 0 ? bytes / count : 0,
            "rss_kb_start": rssStart, "render_once": renderOnce, "chained": pool.chainedTransactions,
            "rss_kb_peak": ProcessMemory.peakKB(),
            "rss_kb_end": ProcessMemory.residentKB(),
        ]
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// `reciprocity bounces import`: reads DSNs, complaints and mailto unsubscribes from a Maildir's `new/`.
    public static func importBounces(_ rt: Runtime, maildir: String) async throws -> String {
        let summary = try await BounceImport(store: rt.store, logger: rt.logger).importMaildir(maildir)
        return summary.description
    }
}

/// A thread-safe counter for the benchmark's workers.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int {
        lock.withLock {
            defer { n += 1 }
            return n
        }
    }
    var value: Int { lock.withLock { n } }
}

enum ProcessMemory {
    static func residentKB() -> Int { field("VmRSS:") }
    static func peakKB() -> Int { field("VmHWM:") }
    private static func field(_ name: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) })
        else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
}
