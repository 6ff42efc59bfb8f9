import Foundation

/// HTML text escaping on UTF-8 bytes: `< > & " '`. Byte by byte, so a quote followed by a combining mark (one
/// Swift `Character`) is still escaped; swift-mustache's own escaper works per Character and misses it. It is
/// also faster (it was a seventh of the cost of composing a mail).
public enum HTMLText {
    public static func escape(_ text: String) -> String {
        guard needsEscaping(text) else { return text }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + 16)
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "<"): out += Array("&lt;".utf8)
            case UInt8(ascii: ">"): out += Array("&gt;".utf8)
            case UInt8(ascii: "&"): out += Array("&amp;".utf8)
            case UInt8(ascii: "\""): out += Array("&quot;".utf8)
            case UInt8(ascii: "'"): out += Array("&#39;".utf8)
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Drops the marks that cling to an escaped character (a combining accent after `"`, a prepend mark before
    /// it): once the character is an entity they have nothing to attach to, and they would merge with the entity's
    /// last letter instead.
    public static func detachMarks(_ text: String) -> String {
        guard text.utf8.contains(where: isSpecial) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            if c.unicodeScalars.count > 1, c.unicodeScalars.contains(where: isSpecial) {
                out.unicodeScalars.append(contentsOf: c.unicodeScalars.filter(isSpecial))
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Whether any byte is one of the five, scanned over contiguous UTF-8 (mail values are kilobytes long).
    static func needsEscaping(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { $0.contains(where: isSpecial) }
    }

    static func isSpecial(_ b: UInt8) -> Bool {
        b == UInt8(ascii: "<") || b == UInt8(ascii: ">") || b == UInt8(ascii: "&") || b == UInt8(ascii: "\"")
            || b == UInt8(ascii: "'")
    }

    static func isSpecial(_ s: Unicode.Scalar) -> Bool { s.isASCII && isSpecial(UInt8(s.value)) }
}

/// Text for XML documents (review feed, SEPA files, SVG).
public enum XMLText {
    /// XML 1.0 text: the five entities escaped and characters XML cannot carry dropped.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                let v = scalar.value
                if v == 0x9 || v == 0xA || v == 0xD || (v >= 0x20 && v != 0xFFFE && v != 0xFFFF) {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
