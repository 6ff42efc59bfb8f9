import Crypto
import Foundation
import ReciprocityCore
import _CryptoExtras

/// A DKIM signing key (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256).
public enum DKIMKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    public enum Algorithm: String, Sendable, CaseIterable {
        case rsaSHA256 = "rsa-sha256"
        case ed25519SHA256 = "ed25519-sha256"
    }

    public var algorithm: Algorithm {
        switch self {
        case .rsa: .rsaSHA256
        case .ed25519: .ed25519SHA256
        }
    }

    /// A new key: RSA 2048 bits, or Ed25519.
    public static func generate(_ algorithm: Algorithm) throws -> DKIMKey {
        switch algorithm {
        case .rsaSHA256: .rsa(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        case .ed25519SHA256: .ed25519(Curve25519.Signing.PrivateKey())
        }
    }

    /// The stored form: PKCS#8 PEM for RSA; base64 of the raw 32-byte seed for Ed25519.
    public var storedForm: String {
        switch self {
        case .rsa(let k): k.pkcs8PEMRepresentation
        case .ed25519(let k): k.rawRepresentation.base64EncodedString()
        }
    }

    public init(algorithm: Algorithm, storedForm: String) throws {
        switch algorithm {
        case .rsaSHA256: self = .rsa(try _RSA.Signing.PrivateKey(pemRepresentation: storedForm))
        case .ed25519SHA256:
            guard let raw = Data(base64Encoded: storedForm) else {
                throw DomainError.invalid("dkim_key_invalid", "The stored Ed25519 key is not base64.")
            }
            self = .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: raw))
        }
    }

    /// The `p=` value of the DNS record: SubjectPublicKeyInfo for RSA, the raw public key for Ed25519.
    public var publicKeyBase64: String {
        switch self {
        case .rsa(let k): k.publicKey.derRepresentation.base64EncodedString()
        case .ed25519(let k): k.publicKey.rawRepresentation.base64EncodedString()
        }
    }

    /// The TXT record's value, e.g. `v=DKIM1; k=rsa; p=MIIB…`.
    public var dnsRecordValue: String {
        switch self {
        case .rsa: "v=DKIM1; k=rsa; p=" + publicKeyBase64
        case .ed25519: "v=DKIM1; k=ed25519; p=" + publicKeyBase64
        }
    }

    /// A zone-file line for `selector._domainkey.domain`, the value split into quoted strings of at most 255
    /// characters as DNS requires.
    public func zoneFileLine(domain: String, selector: String) -> String {
        let value = Array(dnsRecordValue)
        var chunks: [String] = []
        var i = 0
        while i < value.count {
            chunks.append("\"" + String(value[i..<min(i + 255, value.count)]) + "\"")
            i += 255
        }
        return "\(selector)._domainkey.\(domain). IN TXT " + chunks.joined(separator: " ")
    }

    func sign(_ data: [UInt8]) throws -> [UInt8] {
        switch self {
        case .rsa(let k):
            return Array(try k.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .ed25519(let k):
            // RFC 8463: Ed25519 signs the SHA-256 hash of the canonicalized data (PureEdDSA over the digest).
            return Array(try k.signature(for: Data(SHA256.hash(data: data))))
        }
    }
}

/// Signs rendered mails with DKIM, relaxed/relaxed canonicalization (RFC 6376 §3.4.2 and §3.4.4).
public struct DKIMSigner: Sendable {
    public var domain: String
    public var selector: String
    public var key: DKIMKey
    /// Header names to sign, lower case. Those a message lacks are skipped, except `from`, which must be there.
    public var signedHeaders: [String]

    public static let defaultHeaders = [
        "from", "to", "reply-to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post",
        "list-id", "mime-version", "content-type",
    ]

    /// Whether a signature with `d=domain` aligns with a From address at `senderDomain` for DMARC in relaxed mode
    /// (RFC 7489 §3.1.1): both have the same organizational domain (`DomainNames.organizationalDomain`, as far as
    /// its built-in list of public suffixes knows them). Both ASCII (punycode); case does not matter.
    public static func aligns(domain: String, senderDomain: String) -> Bool {
        guard let d = DomainNames.organizationalDomain(domain) else { return false }
        return d == DomainNames.organizationalDomain(senderDomain)
    }

    public init(domain: String, selector: String, key: DKIMKey, signedHeaders: [String] = DKIMSigner.defaultHeaders) {
        self.domain = domain
        self.selector = selector
        self.key = key
        self.signedHeaders = signedHeaders
    }

    /// The `DKIM-Signature` header field for this message. `timestamp` is the `t=` tag (seconds since 1970).
    public func signature(for message: RenderedMessage, timestamp: Date) throws -> HeaderField {
        // Our own bodies (quoted-printable or base64 parts) are mostly canonical already: hashed as they are.
        let body = Self.isRelaxedCanonical(message.body) ? message.body : Self.relaxedBody(message.body)
        let bodyHash = Data(SHA256.hash(data: body)).base64EncodedString()
        var names: [String] = []
        var signedData: [UInt8] = []
        signedData.reserveCapacity(1024)
        // For each name, the last instance not yet used (§5.4.2); here each signed header appears once.
        for name in signedHeaders {
            guard let field = message.headers.last(where: { Self.sameName($0.name, name) }) else { continue }
            names.append(name)
            Self.appendRelaxedHeader(name: field.name, value: field.value, to: &signedData)
            signedData.append(13)
            signedData.append(10)
        }
        guard names.contains("from") else {
            throw DomainError.invalid("dkim_no_from", "A DKIM signature must cover the From header.")
        }
        let value =
            "v=1; a=\(key.algorithm.rawValue); c=relaxed/relaxed; d=\(domain); s=\(selector); "
            + "t=\(Int(timestamp.timeIntervalSince1970)); h=\(names.joined(separator: ":")); bh=\(bodyHash); b="
        Self.appendRelaxedHeader(name: "DKIM-Signature", value: value, to: &signedData)
        let signature = Array(Data(try key.sign(signedData)).base64EncodedData())
        // b= goes at the end, broken into pieces so that the folded header keeps short lines; verifiers ignore
        // whitespace inside b= (§3.5).
        var pieces: [String] = []
        var i = 0
        while i < signature.count {
            pieces.append(String(decoding: signature[i..<min(i + 64, signature.count)], as: UTF8.self))
            i += 64
        }
        return HeaderField("DKIM-Signature", value + pieces.joined(separator: " "))
    }

    /// ASCII case-insensitive equality of a header name with a lower-case one, without allocating.
    static func sameName(_ name: String, _ lower: String) -> Bool {
        guard name.utf8.count == lower.utf8.count else { return false }
        // On the contiguous UTF-8 of native strings (all of ours): zipping the two UTF-8 views cost more than the
        // rest of the header look-up.
        let fast = name.utf8.withContiguousStorageIfAvailable { a in
            lower.utf8.withContiguousStorageIfAvailable { b in
                for i in 0..<a.count where (a[i] >= 65 && a[i] <= 90 ? a[i] + 32 : a[i]) != b[i] { return false }
                return true
            }
        }
        if let fast, let same = fast { return same }
        for (a, b) in zip(name.utf8, lower.utf8) where (a >= 65 && a <= 90 ? a + 32 : a) != b { return false }
        return true
    }

    /// The signed message: the DKIM-Signature header first, then the rest.
    public func sign(_ message: RenderedMessage, timestamp: Date) throws -> RenderedMessage {
        var signed = message
        signed.headers.insert(try signature(for: message, timestamp: timestamp), at: 0)
        return signed
    }

    /// Relaxed header canonicalization of one `Name: value` field (possibly folded), without the final CRLF.
    static func relaxedHeader(_ line: String) -> [UInt8] {
        let bytes = Array(line.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return bytes }
        var out: [UInt8] = []
        bytes.withUnsafeBufferPointer {
            appendRelaxed(
                name: UnsafeBufferPointer(rebasing: $0[..<colon]),
                value: UnsafeBufferPointer(rebasing: $0[(colon + 1)...]),
                to: &out)
        }
        return out
    }

    /// The relaxed form of the field `HeaderEncoding.fold(name:value:)` writes, straight from its parts: folding
    /// only turns spaces into CRLF SP, which relaxed canonicalization removes again.
    static func appendRelaxedHeader(name: String, value: String, to out: inout [UInt8]) {
        // A name with a colon (no header of ours has one) splits where the folded line's first colon is.
        guard !name.utf8.contains(UInt8(ascii: ":")) else {
            out += relaxedHeader(HeaderEncoding.fold(name: name, value: value))
            return
        }
        out.reserveCapacity(out.count + name.utf8.count + value.utf8.count + 3)
        appendRelaxed(name: name, value: value, to: &out)
    }

    /// Name lower-cased without WSP, ":", the value unfolded with WSP runs as one SP and none at either end. On
    /// contiguous UTF-8 (the String views' iterators were most of its cost), the value's runs between blanks and
    /// line breaks appended whole rather than byte by byte.
    private static func appendRelaxed(
        name n: UnsafeBufferPointer<UInt8>, value v: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]
    ) {
        for b in n where b != 32 && b != 9 { out.append(b >= 65 && b <= 90 ? b + 32 : b) }
        out.append(UInt8(ascii: ":"))
        let start = out.count
        var pendingSpace = false
        var i = 0
        while i < v.count {
            let b = v[i]
            if b == 13 || b == 10 {  // unfold
                i += 1
                continue
            }
            if b == 32 || b == 9 {
                pendingSpace = true
                i += 1
                continue
            }
            if pendingSpace && out.count > start { out.append(32) }
            pendingSpace = false
            var j = i + 1
            while j < v.count, v[j] != 32, v[j] != 9, v[j] != 13, v[j] != 10 { j += 1 }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: v[i..<j]))
            i = j
        }
    }

    private static func appendRelaxed(name: String, value: String, to out: inout [UInt8]) {
        var name = name
        var value = value
        name.withUTF8 { n in value.withUTF8 { v in appendRelaxed(name: n, value: v, to: &out) } }
    }

    /// Whether `relaxedBody(body) == body`: no tab, no two spaces in a row, no space before a CRLF, and the body
    /// ends with one CRLF after a line that is not empty. One read-only pass, eight bytes at a time, and no copy.
    static func isRelaxedCanonical(_ body: [UInt8]) -> Bool {
        let n = body.count
        guard n >= 3, body[n - 2] == 13, body[n - 1] == 10, !(body[n - 4 < 0 ? 0 : n - 4] == 13 && body[n - 3] == 10)
        else { return false }
        return body.withUnsafeBufferPointer { input in
            guard let base = input.baseAddress else { return false }
            var i = 0
            // A tab, or a space followed by a space or a CR (the CR of a CRLF; a bare CR is content, but refusing
            // it only costs the copy).
            while i + 9 <= n {
                let v = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                let next = UnsafeRawPointer(base + i + 1).loadUnaligned(as: UInt64.self)
                if SWAR.equal(v, 9) | (SWAR.equal(v, 32) & (SWAR.equal(next, 32) | SWAR.equal(next, 13))) != 0 {
                    return false
                }
                i += 8
            }
            while i < n {
                let b = input[i]
                if b == 9 { return false }
                if b == 32, i + 1 < n, input[i + 1] == 32 || input[i + 1] == 13 { return false }
                i += 1
            }
            return true
        }
    }

    /// Relaxed body canonicalization: whitespace runs to one space, none at line ends, no empty lines at the end.
    /// One pass over the bytes.
    static func relaxedBody(_ body: [UInt8]) -> [UInt8] {
        body.withUnsafeBufferPointer { input in
            let n = input.count
            // Never longer than the input plus a CRLF for a last line without one.
            return [UInt8](unsafeUninitializedCapacity: n + 2) { out, count in
                var o = 0
                var pendingSpace = false
                var lineStart = 0  // index in `out` where the current line began
                var lastContentEnd = 0  // `o` after the last non-empty line's CRLF
                var i = 0
                let src = input.baseAddress
                let dst = out.baseAddress
                while i < n {
                    // Eight bytes at a time while they need nothing: no CR, LF or tab, no two spaces in a row,
                    // none pending and none last (a space there may end the line). (SWAR on a UInt64: Swift's
                    // SIMD types made this loop four times slower than byte by byte.)
                    if let src, let dst, !pendingSpace, i + 9 <= n, src[i + 7] != 32 {
                        let v = UnsafeRawPointer(src + i).loadUnaligned(as: UInt64.self)
                        let next = UnsafeRawPointer(src + i + 1).loadUnaligned(as: UInt64.self)
                        let special =
                            SWAR.equal(v, 13) | SWAR.equal(v, 10) | SWAR.equal(v, 9)
                            | (SWAR.equal(v, 32) & SWAR.equal(next, 32))
                        if special == 0 {
                            UnsafeMutableRawPointer(dst + o).storeBytes(of: v, as: UInt64.self)
                            o += 8
                            i += 8
                            continue
                        }
                    }
                    let b = input[i]
                    if b == 13, i + 1 < n, input[i + 1] == 10 {
                        pendingSpace = false
                        let empty = o == lineStart
                        out[o] = 13
                        out[o + 1] = 10
                        o += 2
                        lineStart = o
                        if !empty { lastContentEnd = o }
                        i += 2
                        continue
                    }
                    if b == 32 || b == 9 {
                        pendingSpace = true
                    } else {
                        if pendingSpace {
                            out[o] = 32
                            o += 1
                        }
                        pendingSpace = false
                        out[o] = b
                        o += 1
                    }
                    i += 1
                }
                if o > lineStart {
                    // A last line without CRLF gets one.
                    out[o] = 13
                    out[o + 1] = 10
                    o += 2
                    lastContentEnd = o
                }
                count = lastContentEnd
            }
        }
    }
}
