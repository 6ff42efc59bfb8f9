import Foundation
import Logging
import ReciprocityCore
import SMTP
import Storage

/// Reads what comes back: delivery status notifications (RFC 3464), complaint reports (ARF, RFC 5965) and
/// mailto unsubscribes (RFC 8058's second URI), from a Maildir; and the same events from the JSON webhook.
public struct BounceImport: Sendable {
    public let store: Store
    public let logger: Logger

    public init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    public struct Summary: Sendable, Equatable, CustomStringConvertible {
        public var read = 0
        public var bounces = 0
        public var delays = 0
        public var complaints = 0
        public var unsubscribes = 0
        public var unmatched = 0
        public var description: String {
            "read \(read): \(bounces) bounces, \(complaints) complaints, \(unsubscribes) unsubscribes, \(delays) delay notices, \(unmatched) unmatched"
        }
    }

    /// Processes every file in `maildir/new` and moves it to `cur` marked seen, so a second run skips it.
    public func importMaildir(_ maildir: String) async throws -> Summary {
        let new = URL(fileURLWithPath: maildir).appendingPathComponent("new")
        let cur = URL(fileURLWithPath: maildir).appendingPathComponent("cur")
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: new.path) else {
            throw DomainError.invalid("maildir_invalid", "'\(maildir)' is not a Maildir (no new/ folder).")
        }
        try FileManager.default.createDirectory(at: cur, withIntermediateDirectories: true)
        var summary = Summary()
        for name in files.sorted() where !name.hasPrefix(".") {
            let file = new.appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: file.path) else { continue }
            summary.read += 1
            let outcome = try await process(String(decoding: data, as: UTF8.self))
            switch outcome {
            case .bounce: summary.bounces += 1
            case .delay: summary.delays += 1
            case .complaint: summary.complaints += 1
            case .unsubscribe: summary.unsubscribes += 1
            case .unmatched: summary.unmatched += 1
            }
            try? FileManager.default.moveItem(at: file, to: cur.appendingPathComponent(name + ":2,S"))
        }
        return summary
    }

    public enum Outcome: Sendable, Equatable { case bounce, delay, complaint, unsubscribe, unmatched }

    /// One message from the mailbox.
    public func process(_ raw: String) async throws -> Outcome {
        let message = SimpleMIME(raw)
        let subject = message.header("subject") ?? ""
        // A mailto unsubscribe: "unsubscribe <token>" in the subject.
        if let range = subject.range(of: "unsubscribe ", options: .caseInsensitive) {
            let token = subject[range.upperBound...].trimmingCharacters(in: .whitespaces)
            if try await Unsubscribe(store: store).oneClick(token: token, source: "mailto") { return .unsubscribe }
        }
        let contentType = (message.header("content-type") ?? "").lowercased()
        guard contentType.contains("multipart/report") else { return .unmatched }
        let isComplaint = contentType.contains("feedback-report")
        // The code alone: a report may add a comment after it (`5.1.1 (user unknown)`, RFC 3464 §2.3.4).
        let status = String(
            (message.field("status", inPartsOf: "message/delivery-status") ?? "").trimmingCharacters(in: .whitespaces)
                .prefix { $0.isASCII && ($0.isNumber || $0 == ".") })
        let action = (message.field("action", inPartsOf: "message/delivery-status") ?? "").lowercased()
        let diagnostic = message.field("diagnostic-code", inPartsOf: "message/delivery-status") ?? ""
        // Our VERP address (in To / Delivered-To / X-Original-To), else the original Message-ID.
        var outboxID: Int64?
        for h in ["x-original-to", "delivered-to", "to", "envelope-to"] {
            for value in message.headers(h) {
                let address = value.components(separatedBy: CharacterSet(charactersIn: "<> ,")).first {
                    $0.lowercased().hasPrefix("bounce+")
                }
                if let address, let id = VERP.outboxID(from: address, store: store) {
                    outboxID = id
                    break
                }
            }
            if outboxID != nil { break }
        }
        if outboxID == nil, let original = message.originalMessageID() {
            outboxID = try await store.outboxMail(messageID: original)?.id
        }
        guard let outboxID else { return .unmatched }
        if isComplaint {
            _ = try await store.recordBounce(
                outboxID: outboxID, type: "complaint", permanent: true, detail: "feedback report", source: "maildir")
            return .complaint
        }
        // The action decides; the status class only where the report names none. An expired message is
        // `Action: failed` with a 4.x.x status (e.g. Postfix's 4.4.1 or 4.4.7): a final failure, not a delay.
        if action == "delayed" || (action != "failed" && status.hasPrefix("4")) {
            _ = try await store.recordBounce(
                outboxID: outboxID, type: "delay", permanent: false, detail: "\(status) \(diagnostic)",
                source: "maildir")
            return .delay
        }
        guard action == "failed" || status.hasPrefix("5") else { return .unmatched }
        // Only "no such address" bars the address for good; a full mailbox, a policy refusal or a refused sender is
        // noted.
        _ = try await store.recordBounce(
            outboxID: outboxID, type: "bounce", permanent: SMTPReply.meansNoSuchRecipient(status),
            detail: "\(status) \(diagnostic)", source: "maildir")
        return .bounce
    }
}

/// Unsubscribe and preference actions behind the signed links in every marketing mail.
public struct Unsubscribe: Sendable {
    public let store: Store
    public init(store: Store) { self.store = store }

    public struct Target: Sendable, Equatable {
        public var workspaceID: WorkspaceID
        public var emailHash: String
        public var contactID: ContactID?
        public var kind: String?
        public init(workspaceID: WorkspaceID, emailHash: String, contactID: ContactID?, kind: String?) {
            self.workspaceID = workspaceID
            self.emailHash = emailHash
            self.contactID = contactID
            self.kind = kind
        }
    }

    public func target(unsubscribeToken token: String) -> Target? {
        guard let f = store.verifyToken(token, purpose: "unsubscribe"), f.count == 4, let ws = Int64(f[0]) else {
            return nil
        }
        return Target(workspaceID: ws, emailHash: f[1], contactID: Int64(f[2]), kind: f[3])
    }

    public func target(preferencesToken token: String) -> Target? {
        guard let f = store.verifyToken(token, purpose: "preferences"), f.count == 3, let ws = Int64(f[0]) else {
            return nil
        }
        return Target(workspaceID: ws, emailHash: f[1], contactID: Int64(f[2]), kind: nil)
    }

    /// RFC 8058 one-click (POST, or a mailto): an objection to all marketing from this workspace, at once and for
    /// good (Art. 21 DSGVO). Every consent of the contact is withdrawn and the address is suppressed.
    /// Returns false for an invalid token.
    @discardableResult
    public func oneClick(token: String, source: String) async throws -> Bool {
        guard let t = target(unsubscribeToken: token) else { return false }
        try await objectAll(t, source: source)
        return true
    }

    public func objectAll(_ t: Target, source: String) async throws {
        try await store.db.transaction { tx in
            try await store.suppress(tx, workspaceID: t.workspaceID, emailHash: t.emailHash, reason: "unsubscribe")
            if let contactID = t.contactID {
                try await store.withdrawAllConsents(
                    tx, workspaceID: t.workspaceID, contactID: contactID, source: source)
            }
            try await store.audit(
                tx, workspaceID: t.workspaceID, actor: source, action: "mail.unsubscribe",
                subject: t.contactID.map { "contact:\($0)" } ?? "address", detail: t.kind ?? "")
        }
    }

    /// Whether this address is suppressed, and the contact's consents (for the preference centre).
    public func status(_ t: Target) async throws -> (suppressed: Bool, consents: [ConsentPurpose: ConsentState]) {
        let suppressed =
            try await store.suppressionReason(store.db, workspaceID: t.workspaceID, emailHash: t.emailHash) != nil
        var consents: [ConsentPurpose: ConsentState] = [:]
        if let contactID = t.contactID {
            for c in try await store.consents(workspaceID: t.workspaceID, contactID: contactID) {
                consents[c.purpose] = c.state
            }
        }
        return (suppressed, consents)
    }

    /// The preference centre's save: purposes left unticked are withdrawn. Granting needs a fresh opt-in, so
    /// ticking a box never grants here.
    public func withdraw(_ t: Target, purposes: [ConsentPurpose]) async throws {
        guard let contactID = t.contactID, !purposes.isEmpty else { return }
        try await store.db.transaction { tx in
            for purpose in purposes {
                try await store.applyConsent(
                    tx, workspaceID: t.workspaceID, contactID: contactID,
                    change: ConsentChange(
                        purpose: purpose, action: .withdraw, text: nil, source: "preference_centre",
                        evidence: ConsentEvidence(at: store.clock.now())))
            }
            try await store.audit(
                tx, workspaceID: t.workspaceID, actor: "preference_centre", action: "consent.withdraw",
                subject: "contact:\(contactID)", detail: purposes.map(\.rawValue).joined(separator: ","))
        }
    }
}

/// Just enough MIME reading for DSNs and ARF reports: top-level headers, parts, and fields inside parts.
struct SimpleMIME {
    let headerFields: [(String, String)]
    let body: String

    init(_ raw: String) {
        let normalized = raw.replacingOccurrences(of: "\r\n", with: "\n")
        let split = normalized.range(of: "\n\n")
        let head = split.map { String(normalized[..<$0.lowerBound]) } ?? normalized
        body = split.map { String(normalized[$0.upperBound...]) } ?? ""
        headerFields = Self.parseHeaders(head)
    }

    static func parseHeaders(_ head: String) -> [(String, String)] {
        var fields: [(String, String)] = []
        for line in head.components(separatedBy: "\n") {
            if (line.hasPrefix(" ") || line.hasPrefix("\t")), let last = fields.popLast() {
                fields.append((last.0, last.1 + " " + line.trimmingCharacters(in: .whitespaces)))
            } else if let colon = line.firstIndex(of: ":") {
                fields.append(
                    (
                        String(line[..<colon]).lowercased(),
                        String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                    ))
            }
        }
        return fields
    }

    func header(_ name: String) -> String? { headerFields.first { $0.0 == name }?.1 }
    func headers(_ name: String) -> [String] { headerFields.filter { $0.0 == name }.map(\.1) }

    /// A field (e.g. `Status`) inside any part of the given content type (DSN fields are header-like blocks).
    func field(_ name: String, inPartsOf type: String) -> String? {
        for part in parts() where (part.header("content-type") ?? "").lowercased().hasPrefix(type) {
            for block in part.body.components(separatedBy: "\n\n") {
                if let value = Self.parseHeaders(block).first(where: { $0.0 == name })?.1 { return value }
            }
        }
        return nil
    }

    /// The Message-ID of the returned original (text/rfc822-headers or message/rfc822 part), without brackets.
    func originalMessageID() -> String? {
        for part in parts() {
            let type = (part.header("content-type") ?? "").lowercased()
            guard type.hasPrefix("text/rfc822-headers") || type.hasPrefix("message/rfc822") else { continue }
            if let id = SimpleMIME(part.body).header("message-id") {
                return id.trimmingCharacters(in: CharacterSet(charactersIn: "<> "))
            }
        }
        return nil
    }

    func parts() -> [SimpleMIME] {
        guard let ct = header("content-type"), let b = ct.range(of: "boundary=", options: .caseInsensitive) else {
            return []
        }
        var boundary = String(ct[b.upperBound...])
        if boundary.hasPrefix("\"") {
            boundary = String(boundary.dropFirst().prefix(while: { $0 != "\"" }))
        } else {
            boundary = String(boundary.prefix(while: { $0 != ";" && $0 != " " }))
        }
        return body.components(separatedBy: "--" + boundary).dropFirst().compactMap { chunk in
            if chunk.hasPrefix("--") { return nil }
            return SimpleMIME(String(chunk.drop(while: { $0 == "\n" })))
        }
    }
}
