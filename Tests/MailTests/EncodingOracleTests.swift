import Foundation
import Testing

@testable import Mail
@testable import SMTP

/// The byte-level encoders against the plain versions they replaced (kept here as oracles), on generated input:
/// quoted-printable, CRLF, header folding, DKIM canonicalization, dot-stuffing and the Date header.
@Suite struct EncodingOracleTests {
    /// Bytes that exercise every branch: CR, LF, CRLF, blanks, dots, "=", controls, UTF-8 and long runs.
    static func samples(count: Int, seed: UInt64) -> [[UInt8]] {
        var rng = SplitMix(seed: seed)
        let alphabet: [[UInt8]] = [
            [13], [10], [13, 10], [32], [9], [46], [61], [0], [127], Array("ü".utf8), Array("a".utf8),
            Array("Grüße aus der Rösterei.".utf8), [UInt8](repeating: 120, count: 90), [46, 46], [32, 32, 32],
            Array("Καλημέρα κόσμε".utf8), Array("word word  word\tword ".utf8),
        ]
        var out: [[UInt8]] = [[], [46], [13], [10], [32], [13, 10, 13, 10]]
        for _ in 0..<count {
            var b: [UInt8] = []
            for _ in 0..<rng.next(40) { b += alphabet[rng.next(alphabet.count)] }
            out.append(b)
        }
        return out
    }

    @Test func quotedPrintableAndCRLFMatchTheirOracles() {
        for bytes in Self.samples(count: 400, seed: 1) {
            #expect(QuotedPrintable.encode(bytes) == Oracle.quotedPrintable(bytes), "\(bytes)")
            #expect(TransferEncoding.choose(for: bytes) == Oracle.choose(bytes), "\(bytes)")
            // The count made while encoding decides as `choose` does.
            let (quoted, high) = QuotedPrintable.encodeCounting(bytes)
            #expect(quoted == Oracle.quotedPrintable(bytes), "\(bytes)")
            #expect((high * 3 > bytes.count ? .base64 : .quotedPrintable) == Oracle.choose(bytes), "\(bytes)")
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(TextEncoding.crlf(text) == Oracle.crlf(text), "\(bytes)")
        }
    }

    @Test func dkimCanonicalizationMatchesItsOracles() {
        for bytes in Self.samples(count: 400, seed: 2) {
            #expect(DKIMSigner.relaxedBody(bytes) == Oracle.relaxedBody(bytes), "\(bytes)")
            // A body taken as canonical is its own canonical form, and a canonical form (but the empty one) is taken
            // as canonical: the signer hashes exactly what relaxed canonicalization gives.
            if DKIMSigner.isRelaxedCanonical(bytes) { #expect(Oracle.relaxedBody(bytes) == bytes, "\(bytes)") }
            let canonical = Oracle.relaxedBody(bytes)
            let withoutBareCR = !zip(canonical, canonical.dropFirst() + [0]).contains { $0 == 13 && $1 != 10 }
            if !canonical.isEmpty && withoutBareCR {
                #expect(DKIMSigner.isRelaxedCanonical(canonical), "\(canonical)")
            }
            let value = String(decoding: bytes, as: UTF8.self)
            for name in ["Subject", "X-Y ", "List-Unsubscribe", "X:Y"] {
                let line = HeaderEncoding.fold(name: name, value: value)
                #expect(line == Oracle.fold(name: name, value: value), "\(bytes)")
                #expect(DKIMSigner.relaxedHeader(line) == Oracle.relaxedHeader(line), "\(bytes)")
                var direct: [UInt8] = []
                DKIMSigner.appendRelaxedHeader(name: name, value: value, to: &direct)
                #expect(direct == Oracle.relaxedHeader(line), "canonical from the parts: \(bytes)")
            }
        }
    }

    /// Whatever breaks a canonical body (two spaces, a space before a line break, a tab, a blank last line), at
    /// every offset, including either side of the eight-byte words, makes it not canonical.
    @Test func aBodyWithAnythingToCanonicalizeIsNotTakenAsCanonical() {
        let canonical = Array("Hallo Anna,\r\nzweite Zeile mit Text.\r\n".utf8)
        #expect(DKIMSigner.isRelaxedCanonical(canonical))
        for offset in 0..<canonical.count - 2 {
            for breaker in ["  ", " \r\n", "\t"] {
                var body = canonical
                body.insert(contentsOf: Array(breaker.utf8), at: offset)
                #expect(!DKIMSigner.isRelaxedCanonical(body), "\(breaker.debugDescription) at \(offset)")
                #expect(Oracle.relaxedBody(body) != body, "the oracle agrees: \(offset)")
            }
        }
        #expect(!DKIMSigner.isRelaxedCanonical(canonical + Array("\r\n".utf8)), "a blank last line")
        #expect(!DKIMSigner.isRelaxedCanonical(Array(canonical.dropLast(2))), "no CRLF at the end")
    }

    @Test func dotStuffingMatchesItsOracle() {
        for bytes in Self.samples(count: 400, seed: 3) {
            #expect(DotStuffing.stuff(bytes) == Oracle.dotStuff(bytes), "\(bytes)")
        }
    }

    @Test func theDateHeaderMatchesCalendar() {
        var rng = SplitMix(seed: 4)
        // Including dates before 1583 and after 9999, where the header is written by Calendar's rules.
        var seconds: [Double] = [
            0, -1, -86_400, 951_782_400, 1_790_000_000.75, 4_107_542_400, -2_208_988_800.5, -12_219_292_801,
            -12_212_553_601, 253_402_300_800, 300_000_000_000,
        ]
        for _ in 0..<2000 { seconds.append(Double(rng.next(8_000_000_000)) - 2_500_000_000 + 0.25) }
        for s in seconds {
            let date = Date(timeIntervalSince1970: s)
            #expect(RFC5322Date.format(date) == RFC5322Date.calendarFormat(date), "\(s)")
        }
    }
}

/// The implementations the byte-level ones replaced, unchanged. (The Date header's, Calendar-based, stays in
/// `RFC5322Date.calendarFormat` for the years `CivilDate` does not cover.)
enum Oracle {
    static func quotedPrintable(_ bytes: [UInt8]) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        var lineLength = 0
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b == 13, i + 1 < n, bytes[i + 1] == 10 {
                out += [13, 10]
                lineLength = 0
                i += 2
                continue
            }
            let atLineEnd = i + 1 == n || bytes[i + 1] == 13
            let literal = (b >= 33 && b <= 126 && b != 61) || ((b == 32 || b == 9) && !atLineEnd)
            let width = literal ? 1 : 3
            if lineLength + width > 75 {
                out += [61, 13, 10]
                lineLength = 0
            }
            out += literal ? [b] : [61, hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            lineLength += width
            i += 1
        }
        if out.count < 2 || out[out.count - 2] != 13 || out[out.count - 1] != 10 { out += [13, 10] }
        return out
    }

    static func choose(_ bytes: [UInt8]) -> TransferEncoding {
        guard !bytes.isEmpty else { return .quotedPrintable }
        let high = bytes.reduce(0) { $0 + ($1 >= 0x80 || ($1 < 0x20 && $1 != 10 && $1 != 13 && $1 != 9) ? 1 : 0) }
        return high * 3 > bytes.count ? .base64 : .quotedPrintable
    }

    static func crlf(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var previousCR = false
        for b in s.utf8 {
            if b == 10 {
                if !previousCR { out.append(13) }
                out.append(10)
                previousCR = false
            } else {
                if previousCR { out.append(10) }
                out.append(b)
                previousCR = b == 13
            }
        }
        if previousCR { out.append(10) }
        return out
    }

    static func fold(name: String, value: String, limit: Int = 78) -> String {
        var out: [UInt8] = Array(name.utf8)
        out.append(UInt8(ascii: ":"))
        var lineLength = out.count
        var first = true
        // RFC 2047 §2: 76 on a line with an encoded word, which may also start the second line.
        let encoded = value.contains("=?")
        let limit = encoded ? min(limit, 76) : limit
        for token in value.utf8.split(separator: 32, omittingEmptySubsequences: true) {
            let encodedWord = encoded && token.starts(with: Array("=?".utf8))
            if (!first || encodedWord) && lineLength + 1 + token.count > limit {
                out += [13, 10, 32]
                lineLength = 1
            } else {
                out.append(32)
                lineLength += 1
            }
            out += token
            lineLength += token.count
            first = false
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func relaxedHeader(_ line: String) -> [UInt8] {
        let bytes = Array(line.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return bytes }
        let name = bytes[..<colon].map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }.filter { $0 != 32 && $0 != 9 }
        var value: [UInt8] = []
        var pendingSpace = false
        for b in bytes[(colon + 1)...] {
            if b == 13 || b == 10 { continue }
            if b == 32 || b == 9 {
                pendingSpace = true
                continue
            }
            if pendingSpace && !value.isEmpty { value.append(32) }
            pendingSpace = false
            value.append(b)
        }
        return name + [UInt8(ascii: ":")] + value
    }

    static func relaxedBody(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var pendingSpace = false
        var lineStart = 0
        var lastContentEnd = 0
        var i = 0
        let n = body.count
        while i < n {
            let b = body[i]
            if b == 13, i + 1 < n, body[i + 1] == 10 {
                pendingSpace = false
                let empty = out.count == lineStart
                out += [13, 10]
                lineStart = out.count
                if !empty { lastContentEnd = out.count }
                i += 2
                continue
            }
            if b == 32 || b == 9 {
                pendingSpace = true
            } else {
                if pendingSpace { out.append(32) }
                pendingSpace = false
                out.append(b)
            }
            i += 1
        }
        if out.count > lineStart {
            out += [13, 10]
            lastContentEnd = out.count
        }
        out.removeLast(out.count - lastContentEnd)
        return out
    }

    static func dotStuff(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var atLineStart = true
        for b in data {
            if atLineStart && b == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            out.append(b)
            atLineStart = b == 10
        }
        if out.count < 2 || out[out.count - 2] != 13 || out[out.count - 1] != 10 { out += [13, 10] }
        out += [UInt8(ascii: "."), 13, 10]
        return out
    }
}
