import Crypto
import Foundation
import ReciprocityCore

/// A file attached to a mail.
public struct Attachment: Sendable, Equatable {
    public var filename: String
    public var contentType: String
    public var data: [UInt8]
    public init(filename: String, contentType: String, data: [UInt8]) {
        self.filename = filename
        self.contentType = contentType
        self.data = data
    }
}

/// One header field as it will be written: the name and the (already encoded, possibly folded) value.
public struct HeaderField: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
    /// `Name: value` folded, without the trailing CRLF.
    public var line: String { HeaderEncoding.fold(name: name, value: value) }
}

/// A mail before rendering: who, what, and the extra headers (e.g. RFC 8058 unsubscribe) the pipeline adds.
public struct MailMessage: Sendable, Equatable {
    public var from: Mailbox
    public var to: [Mailbox]
    public var replyTo: Mailbox?
    public var subject: String
    public var text: String
    public var html: String?
    public var attachments: [Attachment]
    /// Without angle brackets, e.g. `3f2a…@mail.example.com`. Stable across retries of the same outbox row.
    public var messageID: String
    public var date: Date
    /// Further headers, values already ASCII (e.g. `List-Unsubscribe`).
    public var extraHeaders: [HeaderField]

    public init(
        from: Mailbox, to: [Mailbox], replyTo: Mailbox? = nil, subject: String, text: String, html: String? = nil,
        attachments: [Attachment] = [], messageID: String, date: Date, extraHeaders: [HeaderField] = []
    ) {
        self.from = from
        self.to = to
        self.replyTo = replyTo
        self.subject = subject
        self.text = text
        self.html = html
        self.attachments = attachments
        self.messageID = messageID
        self.date = date
        self.extraHeaders = extraHeaders
    }

    /// Whether the envelope needs SMTPUTF8 (a non-ASCII local part anywhere).
    public var needsSMTPUTF8: Bool { from.needsSMTPUTF8 || to.contains(where: \.needsSMTPUTF8) }

    /// Renders headers and body (RFC 5322, MIME). Deterministic: the same message renders to the same bytes,
    /// so a resent transactional mail is byte-identical, boundaries included.
    public func render() throws(DomainError) -> RenderedMessage {
        for h in extraHeaders {
            guard h.name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }),
                h.value.unicodeScalars.allSatisfy({ $0.isASCII && !Mailbox.isControl($0) })
            else {
                throw .invalid("mail_header_injection", "The header \(h.name) has characters a header cannot carry.")
            }
        }
        guard !to.isEmpty else { throw .invalid("mail_no_recipient", "A mail needs at least one recipient.") }
        var headers: [HeaderField] = [
            HeaderField("From", from.headerValue),
            HeaderField("To", to.map(\.headerValue).joined(separator: ", ")),
        ]
        if let replyTo { headers.append(HeaderField("Reply-To", replyTo.headerValue)) }
        headers += [
            HeaderField("Subject", HeaderEncoding.unstructured(subject)),
            HeaderField("Date", RFC5322Date.format(date)),
            HeaderField("Message-ID", "<" + messageID + ">"),
        ]
        headers += extraHeaders
        headers.append(HeaderField("MIME-Version", "1.0"))

        let seed = Hex.lower(Array(SHA256.hash(data: Array(messageID.utf8)).prefix(12)))
        let textPart = MIMEPart.text(text, subtype: "plain")
        var body = textPart
        if let html {
            body = .multipart(
                subtype: "alternative", boundary: "=_alt_" + seed, parts: [textPart, .text(html, subtype: "html")])
        }
        if !attachments.isEmpty {
            body = .multipart(
                subtype: "mixed", boundary: "=_mix_" + seed, parts: [body] + attachments.map(MIMEPart.attachment))
        }
        let (partHeaders, partBody) = body.encoded()
        headers += partHeaders
        return RenderedMessage(headers: headers, body: partBody)
    }
}

/// Headers and body bytes of a rendered mail. `bytes` joins them with CRLF; DKIM signs and prepends its header.
public struct RenderedMessage: Sendable, Equatable {
    public var headers: [HeaderField]
    public var body: [UInt8]

    public init(headers: [HeaderField], body: [UInt8]) {
        self.headers = headers
        self.body = body
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count + headers.count * 100 + 2)
        for h in headers {
            out.append(contentsOf: h.line.utf8)
            out.append(13)
            out.append(10)
        }
        out.append(13)
        out.append(10)
        out.append(contentsOf: body)
        return out
    }
}

/// A MIME entity: a leaf text part, an attachment, or a multipart container.
indirect enum MIMEPart {
    case text(String, subtype: String)
    case attachment(Attachment)
    case multipart(subtype: String, boundary: String, parts: [MIMEPart])

    /// The entity's own headers and its encoded body (CRLF line ends, lines ≤ 76 characters).
    func encoded() -> ([HeaderField], [UInt8]) {
        switch self {
        case .text(let string, let subtype):
            let bytes = TextEncoding.crlf(string)
            // Quoted-printable first, counting on the way what `TransferEncoding.choose` counts: for most text that
            // is the choice, and the separate counting pass is saved.
            let (quoted, high) = QuotedPrintable.encodeCounting(bytes)
            let encoding: TransferEncoding = high * 3 > bytes.count ? .base64 : .quotedPrintable
            return (
                [
                    HeaderField("Content-Type", "text/\(subtype); charset=utf-8"),
                    HeaderField("Content-Transfer-Encoding", encoding.rawValue),
                ], encoding == .quotedPrintable ? quoted : encoding.encode(bytes)
            )
        case .attachment(let a):
            // RFC 2231 for names that are not plain ASCII; a quoted ASCII fallback beside it for old readers.
            let safe = a.filename.unicodeScalars.map {
                $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? Character($0) : "_"
            }
            let ascii = "\"" + String(safe) + "\""
            let needs2231 = a.filename.unicodeScalars.contains { !$0.isASCII || $0.value < 0x20 || $0 == "\"" }
            var allowed = CharacterSet.alphanumerics.intersection(
                CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
            allowed.insert(charactersIn: "-._~")
            let extended = "UTF-8''" + (a.filename.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
            let type =
                a.contentType.range(of: #"^[a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+$"#, options: .regularExpression) != nil
                ? a.contentType : "application/octet-stream"
            return (
                [
                    HeaderField("Content-Type", "\(type); name=\(ascii)"),
                    HeaderField("Content-Transfer-Encoding", "base64"),
                    HeaderField(
                        "Content-Disposition",
                        "attachment; filename=\(ascii)" + (needs2231 ? "; filename*=\(extended)" : "")),
                ], TransferEncoding.base64.encode(a.data)
            )
        case .multipart(let subtype, let boundary, let parts):
            let encodedParts = parts.map { $0.encoded() }
            var out: [UInt8] = []
            out.reserveCapacity(encodedParts.reduce(128) { $0 + $1.1.count + $1.0.count * 80 + boundary.utf8.count })
            out.append(contentsOf: "This is a multi-part message in MIME format.\r\n".utf8)
            for (h, b) in encodedParts {
                out.append(contentsOf: "\r\n--".utf8)
                out.append(contentsOf: boundary.utf8)
                out.append(contentsOf: "\r\n".utf8)
                for field in h {
                    out.append(contentsOf: field.line.utf8)
                    out.append(contentsOf: "\r\n".utf8)
                }
                out.append(contentsOf: "\r\n".utf8)
                out.append(contentsOf: b)
            }
            out.append(contentsOf: "\r\n--".utf8)
            out.append(contentsOf: boundary.utf8)
            out.append(contentsOf: "--\r\n".utf8)
            return ([HeaderField("Content-Type", "multipart/\(subtype); boundary=\"\(boundary)\"")], out)
        }
    }
}

/// Content-Transfer-Encoding, chosen by content: quoted-printable for mostly-ASCII text (readable, small),
/// base64 when more than a third of the bytes are not ASCII (there QP would be longer and unreadable anyway).
public enum TransferEncoding: String, Sendable {
    case quotedPrintable = "quoted-printable"
    case base64

    public static func choose(for bytes: [UInt8]) -> TransferEncoding {
        guard !bytes.isEmpty else { return .quotedPrintable }
        var high = 0
        bytes.withUnsafeBufferPointer { buffer in
            var i = 0
            if let base = buffer.baseAddress {
                // Eight at a time (SWAR): the non-ASCII bytes' high bits, and the control bytes but tab, LF, CR.
                while i + 8 <= buffer.count {
                    let v = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                    // Bytes below 0x20; only if there are any (in text, mostly a line's CR LF), which of them are
                    // not tab, LF or CR.
                    var control = SWAR.zero(v & 0xE0E0_E0E0_E0E0_E0E0)
                    if control != 0 { control &= ~(SWAR.equal(v, 9) | SWAR.equal(v, 10) | SWAR.equal(v, 13)) }
                    high += ((v & 0x8080_8080_8080_8080) | control).nonzeroBitCount
                    i += 8
                }
            }
            for b in buffer[i...] where b >= 0x80 || (b < 0x20 && b != 10 && b != 13 && b != 9) { high += 1 }
        }
        return high * 3 > bytes.count ? .base64 : .quotedPrintable
    }

    public func encode(_ bytes: [UInt8]) -> [UInt8] {
        switch self {
        case .base64:
            let encoded = Array(Data(bytes).base64EncodedString().utf8)
            var out: [UInt8] = []
            out.reserveCapacity(encoded.count + encoded.count / 76 * 2 + 2)
            var i = 0
            while i < encoded.count {
                let end = min(i + 76, encoded.count)
                out += encoded[i..<end]
                out += [13, 10]
                i = end
            }
            return out
        case .quotedPrintable:
            return QuotedPrintable.encode(bytes)
        }
    }
}

/// RFC 2045 §6.7 quoted-printable, for text with CRLF line ends: hard line breaks kept, soft breaks at 76.
public enum QuotedPrintable {
    private static let hex = Array("0123456789ABCDEF".utf8)

    public static func encode(_ bytes: [UInt8]) -> [UInt8] { encodeCounting(bytes).encoded }

    /// `encode`, and the count of bytes `TransferEncoding.choose` counts (not ASCII, or a control other than tab,
    /// LF and CR): every such byte takes the byte-by-byte way below.
    static func encodeCounting(_ bytes: [UInt8]) -> (encoded: [UInt8], high: Int) {
        var high = 0
        // Into a buffer sized for the worst case (every byte "=XX", a soft break every 25 of them, a final CRLF):
        // one pass, no growth and no per-byte bounds checks.
        let encoded = bytes.withUnsafeBufferPointer { input in
            let n = input.count
            let hex = Self.hex
            return [UInt8](unsafeUninitializedCapacity: n * 4 + 4) { out, count in
                var o = 0
                var lineLength = 0
                var i = 0
                let base = UnsafeRawPointer(input.baseAddress)
                let target = UnsafeMutableRawPointer(out.baseAddress)
                while i < n {
                    // Eight at a time (SWAR) while the line has room for them: the bytes before the first that needs
                    // more thought (not printable ASCII, "=", or a space that may end a line) are copied as they are.
                    // The buffer's worst-case size leaves room for a whole word at `o`.
                    if lineLength <= 67, i + 8 <= n, let base, let target {
                        let v = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                        let bad =
                            (v & 0x8080_8080_8080_8080) | SWAR.zero(v & 0xE0E0_E0E0_E0E0_E0E0) | SWAR.equal(v, 127)
                            | SWAR.equal(v, 61)
                        var k = bad == 0 ? 8 : bad.trailingZeroBitCount >> 3
                        if k > 0 && (v >> (8 * UInt64(k - 1))) & 0xFF == 32 { k -= 1 }
                        if k > 0 {
                            target.storeBytes(of: v, toByteOffset: o, as: UInt64.self)
                            o += k
                            lineLength += k
                            i += k
                            if k == 8 { continue }
                        }
                    }
                    let b = input[i]
                    if b >= 0x80 || (b < 0x20 && b != 9 && b != 10 && b != 13) { high += 1 }
                    // Most bytes: printable, not "=", and room on the line.
                    if b >= 33 && b <= 126 && b != 61 && lineLength < 75 {
                        out[o] = b
                        o += 1
                        lineLength += 1
                        i += 1
                        continue
                    }
                    if b == 13, i + 1 < n, input[i + 1] == 10 {
                        out[o] = 13
                        out[o + 1] = 10
                        o += 2
                        lineLength = 0
                        i += 2
                        continue
                    }
                    let atLineEnd = i + 1 == n || input[i + 1] == 13
                    let literal = (b >= 33 && b <= 126 && b != 61) || ((b == 32 || b == 9) && !atLineEnd)
                    let width = literal ? 1 : 3
                    if lineLength + width > 75 {
                        out[o] = 61  // "=" soft line break
                        out[o + 1] = 13
                        out[o + 2] = 10
                        o += 3
                        lineLength = 0
                    }
                    if literal {
                        out[o] = b
                        o += 1
                    } else {
                        out[o] = 61
                        out[o + 1] = hex[Int(b >> 4)]
                        out[o + 2] = hex[Int(b & 0xF)]
                        o += 3
                    }
                    lineLength += width
                    i += 1
                }
                if o < 2 || out[o - 2] != 13 || out[o - 1] != 10 {
                    out[o] = 13
                    out[o + 1] = 10
                    o += 2
                }
                count = o
            }
        }
        return (encoded, high)
    }
}

enum TextEncoding {
    /// The UTF-8 bytes with CRLF everywhere: bare LF and bare CR become CRLF. (On bytes: Foundation's
    /// `replacingOccurrences` was a third of the cost of composing a mail.)
    static func crlf(_ s: String) -> [UInt8] {
        var s = s
        return s.withUTF8 { input in
            let n = input.count
            // At most two bytes out for every byte in.
            return [UInt8](unsafeUninitializedCapacity: n * 2 + 1) { out, count in
                guard let base = input.baseAddress, let target = out.baseAddress else {
                    count = 0
                    return
                }
                var o = 0
                if memchr(base, 13, n) == nil {
                    // No CR at all (templates): copy the runs between LFs, each LF becoming CRLF.
                    var i = 0
                    while i < n {
                        let found = memchr(base + i, 10, n - i)
                        let end = found.map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? n
                        (target + o).initialize(from: base + i, count: end - i)
                        o += end - i
                        if end < n {
                            target[o] = 13
                            target[o + 1] = 10
                            o += 2
                        }
                        i = end + 1
                    }
                    count = o
                    return
                }
                var previousCR = false
                for b in input {
                    if b == 10 {
                        if !previousCR {
                            out[o] = 13
                            o += 1
                        }
                        out[o] = 10
                        o += 1
                        previousCR = false
                    } else {
                        if previousCR {
                            out[o] = 10
                            o += 1
                        }
                        out[o] = b
                        o += 1
                        previousCR = b == 13
                    }
                }
                if previousCR {
                    out[o] = 10
                    o += 1
                }
                count = o
            }
        }
    }
}

/// Byte tests on eight bytes at once in a `UInt64` (exact per byte: the high bit of each byte that matches).
enum SWAR {
    private static let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F

    /// 0x80 in every byte of `v` that is zero.
    @inline(__always) static func zero(_ v: UInt64) -> UInt64 { ~(((v & low7) &+ low7) | v | low7) }

    /// 0x80 in every byte of `v` that equals `byte`.
    @inline(__always) static func equal(_ v: UInt64, _ byte: UInt8) -> UInt64 {
        zero(v ^ (UInt64(byte) &* 0x0101_0101_0101_0101))
    }
}

enum Hex {
    static let digits = Array("0123456789abcdef".utf8)
    static func lower(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0xF)]] }
        return String(decoding: out, as: UTF8.self)
    }
}

/// RFC 5322 §3.3 date-time, always in UTC ("+0000"), independent of the process locale.
public enum RFC5322Date {
    public static func format(_ date: Date) -> String {
        // `CivilDate`, not a Calendar (which cost more than the rest of the header block). Seconds are floored,
        // as Calendar does. Outside 1583...9999 (Calendar's Gregorian turns Julian before 1582) it stays with
        // Calendar.
        let t = date.timeIntervalSince1970
        guard t.isFinite, t >= -12_212_553_600, t < 253_402_300_800 else { return calendarFormat(date) }
        let f = CivilDate.fields(epochSeconds: Int64(t.rounded(.down)))
        return line(weekday: f.weekday, day: f.day, month: f.month, year: f.year, f.hour, f.minute, f.second)
    }

    static func calendarFormat(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        return line(
            weekday: (c.weekday ?? 1) - 1, day: c.day ?? 1, month: c.month ?? 1, year: c.year ?? 1970, c.hour ?? 0,
            c.minute ?? 0, c.second ?? 0)
    }

    private static func line(weekday: Int, day: Int, month: Int, year: Int, _ h: Int, _ m: Int, _ s: Int) -> String {
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(CivilDate.weekdayNames[weekday]), \(day) \(CivilDate.monthNames[month - 1]) \(year) "
            + "\(two(h)):\(two(m)):\(two(s)) +0000"
    }
}

extension QuotedPrintable {
    /// Decodes quoted-printable text (soft breaks removed, `=XX` decoded) as UTF-8.
    public static func decode(_ text: String) -> String {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 48...57: b - 48
            case 65...70: b - 55
            case 97...102: b - 87
            default: nil
            }
        }
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "=") {
                if i + 2 < bytes.count, bytes[i + 1] == 13, bytes[i + 2] == 10 {
                    i += 3
                    continue
                }
                if i + 1 < bytes.count, bytes[i + 1] == 10 {
                    i += 2
                    continue
                }
                if i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                    out.append(h << 4 | l)
                    i += 3
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
    }
}
