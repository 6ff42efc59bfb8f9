import Foundation
import ReciprocityCore

/// A server reply: the three-digit code and its text lines.
public struct SMTPReply: Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var lines: [String]

    public init(code: Int, lines: [String]) {
        self.code = code
        self.lines = lines
    }

    public var isPositive: Bool { (200..<400).contains(code) }
    public var isTransient: Bool { (400..<500).contains(code) }
    public var isPermanent: Bool { code >= 500 }
    public var text: String { lines.joined(separator: " ") }
    public var description: String { "\(code) \(text)" }
    /// The RFC 3463 enhanced status code at the start of the text, e.g. `5.1.1`.
    public var enhancedStatus: String? {
        guard let first = lines.first?.split(separator: " ").first else { return nil }
        let parts = first.split(separator: ".")
        guard parts.count == 3, parts.allSatisfy({ Int($0) != nil }) else { return nil }
        return String(first)
    }

    /// Whether an enhanced status (RFC 3463) says the recipient's address does not exist or cannot take mail for
    /// good: 5.1.1 bad mailbox, 5.1.2 bad system, 5.1.3 bad address syntax, 5.1.6 mailbox moved, 5.1.10 null MX.
    /// Not 5.1.7 or 5.1.8: those are about the sender's address, and must not bar the recipient.
    public static func meansNoSuchRecipient(_ status: String) -> Bool {
        ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"].contains(status)
    }
}

/// Why a send failed, in the terms the outbox needs: may it be retried, and might the mail have arrived anyway?
public enum SMTPError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A 4xx reply: try again later.
    case transient(phase: String, reply: SMTPReply)
    /// A 5xx reply: do not retry; a bounce for this recipient.
    case permanent(phase: String, reply: SMTPReply)
    /// Connection failure, drop or timeout before the message was complete: nothing was delivered; retry.
    case connection(phase: String, reason: String)
    /// The message was sent in full but no final reply came (drop or timeout after the final dot).
    /// The server may have accepted it: the outcome is unknown (RFC 1047).
    case outcomeUnknown(reason: String)
    /// TLS was required and the server did not offer STARTTLS, or the handshake failed: nothing was sent.
    case tlsRequired(reason: String)
    /// The server cannot take this message at all (too large, needs SMTPUTF8 it lacks): permanent, not a bounce.
    case unsupported(reason: String)

    public var description: String {
        switch self {
        case .transient(let phase, let reply): "transient failure at \(phase): \(reply)"
        case .permanent(let phase, let reply): "permanent failure at \(phase): \(reply)"
        case .connection(let phase, let reason): "connection failure at \(phase): \(reason)"
        case .outcomeUnknown(let reason): "outcome unknown after the message was sent: \(reason)"
        case .tlsRequired(let reason): "TLS required: \(reason)"
        case .unsupported(let reason): "server cannot take the message: \(reason)"
        }
    }

    /// Whether sending the same message again later is the right thing (nothing arrived, the cause may pass).
    public var isRetryable: Bool {
        switch self {
        case .transient, .connection: true
        case .permanent, .outcomeUnknown, .tlsRequired, .unsupported: false
        }
    }
}

/// One mail to hand to the server: envelope and the complete message bytes (CRLF line ends, not dot-stuffed).
public struct SMTPEnvelope: Sendable {
    /// The reverse-path (VERP bounce address); empty for the null sender.
    public var mailFrom: String
    public var recipients: [String]
    public var data: [UInt8]
    public var needsSMTPUTF8: Bool

    public init(mailFrom: String, recipients: [String], data: [UInt8], needsSMTPUTF8: Bool = false) {
        self.mailFrom = mailFrom
        self.recipients = recipients
        self.data = data
        self.needsSMTPUTF8 = needsSMTPUTF8
    }
}

/// Dot-stuffing (RFC 5321 §4.5.2) and the end-of-data marker.
public enum DotStuffing {
    public static func stuff(_ data: [UInt8]) -> [UInt8] {
        data.withUnsafeBufferPointer { input in
            let n = input.count
            // Worst case: every byte a dot at a line start, plus CRLF and the final dot line.
            return [UInt8](unsafeUninitializedCapacity: n * 2 + 5) { out, count in
                var o = 0
                if let base = input.baseAddress, let target = out.baseAddress {
                    // Line by line: copy up to and including each LF, doubling a dot that starts a line.
                    var i = 0
                    while i < n {
                        if base[i] == UInt8(ascii: ".") {
                            target[o] = UInt8(ascii: ".")
                            o += 1
                        }
                        let found = memchr(base + i, 10, n - i)
                        let end = found.map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base + 1 } ?? n
                        (target + o).initialize(from: base + i, count: end - i)
                        o += end - i
                        i = end
                    }
                }
                if o < 2 || out[o - 2] != 13 || out[o - 1] != 10 {
                    out[o] = 13
                    out[o + 1] = 10
                    o += 2
                }
                out[o] = UInt8(ascii: ".")
                out[o + 1] = 13
                out[o + 2] = 10
                count = o + 3
            }
        }
    }
}
