import Foundation

/// RFC 5322 header values and RFC 2047 encoded words. Every value that leaves here is ASCII, has no bare CR or LF,
/// and folds so that no line passes 78 characters where there is whitespace to fold at (never past 998).
public enum HeaderEncoding {
    /// Characters that force a display name into a quoted string (RFC 5322 `specials`). (A switch: hashing each
    /// character into a `Set` cost more than the rest of the check.)
    private static func isSpecial(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "(", ")", "<", ">", "[", "]", ":", ";", "@", "\\", ",", ".", "\"": true
        default: false
        }
    }

    /// A display name (`phrase`): as is when it is plain ASCII, quoted when it has specials, encoded words otherwise.
    public static func phrase(_ text: String) -> String {
        if text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value != 0x7F }) {
            if text.unicodeScalars.contains(where: isSpecial) {
                return "\""
                    + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    + "\""
            }
            return text
        }
        return encodedWords(text).joined(separator: " ")
    }

    /// An unstructured value such as Subject: ASCII stays readable; anything else becomes encoded words.
    public static func unstructured(_ text: String) -> String {
        // Most subjects: printable ASCII, no `=?`, no word past 70 bytes. They stay as they are, seen in one pass,
        // which also tells whether there are control characters to replace.
        var text = text
        let (plain, control) = text.withUTF8 { bytes in
            var plain = true
            var control = false
            var word = 0
            var previous: UInt8 = 0
            for b in bytes {
                if b < 0x20 || b == 0x7F { control = true }
                if b < 0x20 || b >= 0x7F || (previous == UInt8(ascii: "=") && b == UInt8(ascii: "?")) { plain = false }
                word = b == 0x20 ? 0 : word + 1
                if word > 70 { plain = false }
                previous = b
            }
            return (plain, control)
        }
        if plain { return text }
        var clean = text
        if control {
            var scalars = String.UnicodeScalarView()
            for s in text.unicodeScalars { scalars.append(s.value < 0x20 || s.value == 0x7F ? " " : s) }
            clean = String(scalars)
        }
        // Plain ASCII stays readable unless a word is too long to fold (it would make a line past the limit).
        if clean.utf8.allSatisfy({ $0 < 0x80 }) && !clean.contains("=?")
            && !clean.split(separator: " ").contains(where: { $0.utf8.count > 70 })
        {
            return clean
        }
        return encodedWords(clean).joined(separator: " ")
    }

    /// Splits text into `=?UTF-8?Q?…?=` or `=?UTF-8?B?…?=` words of at most 75 characters, never splitting a
    /// character's UTF-8 bytes across words (RFC 2047 §5). Q is used for mostly-ASCII text, B otherwise.
    public static func encodedWords(_ text: String) -> [String] {
        var nonASCII = 0
        for b in text.utf8 where b >= 0x80 { nonASCII += 1 }
        let useQ = nonASCII * 3 < text.utf8.count
        let prefix = useQ ? "=?UTF-8?Q?" : "=?UTF-8?B?"
        let budget = 75 - prefix.count - 2
        var chunks: [[UInt8]] = []
        var current: [UInt8] = []
        // The encoded length of `current`, kept as characters are added (Q: 1 or 3 per byte; B: 4 per 3 bytes).
        var qLength = 0
        // Code point by code point (RFC 2047 §5's characters), told by UTF-8 lead bytes: iterating `Character`s
        // (grapheme clusters) was most of the cost of a display name.
        var text = text
        text.withUTF8 { bytes in
            var i = 0
            while i < bytes.count {
                let lead = bytes[i]
                let width = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
                let scalar = UnsafeBufferPointer(rebasing: bytes[i..<min(i + width, bytes.count)])
                var chQ = 0
                for b in scalar { chQ += qLiteral(b) ? 1 : 3 }
                let next = useQ ? qLength + chQ : (current.count + scalar.count + 2) / 3 * 4
                if !current.isEmpty && next > budget {
                    chunks.append(current)
                    current = []
                    qLength = 0
                }
                current.append(contentsOf: scalar)
                qLength += chQ
                i += scalar.count
            }
        }
        if !current.isEmpty { chunks.append(current) }
        return chunks.map { prefix + (useQ ? qEncode($0) : Data($0).base64EncodedString()) + "?=" }
    }

    private static let upperHex = Array("0123456789ABCDEF".utf8)

    private static func qEncode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3)
        for b in bytes {
            if b == 0x20 {
                out.append(UInt8(ascii: "_"))
            } else if qLiteral(b) {
                out.append(b)
            } else {
                out += [UInt8(ascii: "="), upperHex[Int(b >> 4)], upperHex[Int(b & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether Q encoding writes the byte as one character (a space becomes `_`).
    private static func qLiteral(_ b: UInt8) -> Bool {
        switch b {
        case 0x20, UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "!"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: "-"), UInt8(ascii: "/"):
            true
        default: false
        }
    }

    /// `Name: value` folded at whitespace so lines stay within 78 characters where possible, joined by CRLF SP.
    /// A line with an encoded word stays within 76 (RFC 2047 §2), so such a word may also go onto a line of its own
    /// right after the colon. The result has no trailing CRLF.
    public static func fold(name: String, value: String, limit: Int = 78) -> String {
        var name = name
        var value = value
        return name.withUTF8 { n in
            value.withUTF8 { v in
                let encoded = hasEncodedWord(v)
                let limit = encoded ? min(limit, 76) : limit
                // Each separating space becomes at most CRLF SP: three bytes for every byte of the value is enough.
                return String(unsafeUninitializedCapacity: n.count + 1 + v.count * 3) { out in
                    var o = 0
                    for b in n {
                        out[o] = b
                        o += 1
                    }
                    out[o] = UInt8(ascii: ":")
                    o += 1
                    var lineLength = o
                    var first = true
                    var i = 0
                    let count = v.count
                    while i < count {
                        if v[i] == 32 {
                            i += 1
                            continue
                        }
                        var j = i + 1
                        while j < count && v[j] != 32 { j += 1 }
                        let length = j - i
                        let encodedWord =
                            encoded && length > 1 && v[i] == UInt8(ascii: "=") && v[i + 1] == UInt8(ascii: "?")
                        if (!first || encodedWord) && lineLength + 1 + length > limit {
                            out[o] = 13
                            out[o + 1] = 10
                            out[o + 2] = 32
                            o += 3
                            lineLength = 1
                        } else {
                            out[o] = 32
                            o += 1
                            lineLength += 1
                        }
                        for k in i..<j {
                            out[o] = v[k]
                            o += 1
                        }
                        lineLength += length
                        first = false
                        i = j
                    }
                    return o
                }
            }
        }
    }

    /// Whether `=?` occurs: the start of an encoded word (RFC 2047). (`memchr` for each `=`: iterating the String's
    /// UTF-8 view cost 1.5% of the mail sender's CPU, more than folding itself.)
    static func hasEncodedWord(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        var i = 0
        while i + 1 < bytes.count, let found = memchr(base + i, Int32(UInt8(ascii: "=")), bytes.count - 1 - i) {
            let at = UnsafePointer(found.assumingMemoryBound(to: UInt8.self)) - base
            if base[at + 1] == UInt8(ascii: "?") { return true }
            i = at + 1
        }
        return false
    }

    /// Decodes RFC 2047 encoded words (UTF-8, Q or B) for display; whitespace between adjacent words is dropped.
    public static func decode(_ value: String) -> String {
        var out = ""
        var previousWasWord = false
        for token in value.replacingOccurrences(of: "\r\n", with: "").split(
            separator: " ", omittingEmptySubsequences: false)
        {
            let t = String(token)
            if t.hasPrefix("=?"), t.hasSuffix("?="), case let parts = t.dropFirst(2).dropLast(2).split(separator: "?"),
                parts.count == 3, parts[0].uppercased() == "UTF-8"
            {
                let payload = String(parts[2])
                let decoded: String
                if parts[1].uppercased() == "B" {
                    decoded = Data(base64Encoded: payload).map { String(decoding: $0, as: UTF8.self) } ?? t
                } else {
                    decoded = QuotedPrintable.decode(payload.replacingOccurrences(of: "_", with: " "))
                }
                if !previousWasWord && !out.isEmpty { out += " " }
                out += decoded
                previousWasWord = true
            } else {
                if !out.isEmpty { out += " " }
                out += t
                previousWasWord = false
            }
        }
        return out
    }
}
