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

    public init(domain: String, selector: String, key: DKIMKey, signedHeaders: [String] = DKIMSigner.defaultHeaders) {
        self.domain = domain
        self.selector = selector
        self.key = key
        self.signedHeaders = signedHeaders
    }

    /// The `DKIM-Signature` header field for this message. `timestamp` is the `t=` tag (seconds since 1970).
    public func signature(for message: RenderedMessage, timestamp: Date) throws -> HeaderField {
        let bodyHash = Data(SHA256.hash(data: Self.relaxedBody(message.body))).base64EncodedString()
        var names: [String] = []
        var signedData: [UInt8] = []
        // For each name, the last instance not yet used (§5.4.2); here each signed header appears once.
        for name in signedHeaders {
            guard let field = message.headers.last(where: { $0.name.lowercased() == name }) else { continue }
            names.append(name)
            signedData += Self.relaxedHeader(field.line)
            signedData += [13, 10]
        }
        guard names.contains("from") else {
            throw DomainError.invalid("dkim_no_from", "A DKIM signature must cover the From header.")
        }
        let value =
            "v=1; a=\(key.algorithm.rawValue); c=relaxed/relaxed; d=\(domain); s=\(selector); "
            + "t=\(Int(timestamp.timeIntervalSince1970)); h=\(names.joined(separator: ":")); bh=\(bodyHash); b="
        let unsigned = HeaderField("DKIM-Signature", value)
        signedData += Self.relaxedHeader(unsigned.line)
        let signature = Data(try key.sign(signedData)).base64EncodedData()
        // b= goes at the end, broken into pieces so that the folded header keeps short lines; verifiers ignore
        // whitespace inside b= (§3.5).
        var pieces: [String] = []
        var i = 0
        let chars = Array(String(decoding: signature, as: UTF8.self))
        while i < chars.count {
            pieces.append(String(chars[i..<min(i + 64, chars.count)]))
            i += 64
        }
        return HeaderField("DKIM-Signature", value + pieces.joined(separator: " "))
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
        let name = bytes[..<colon].map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }.filter { $0 != 32 && $0 != 9 }
        var value: [UInt8] = []
        var pendingSpace = false
        for b in bytes[(colon + 1)...] {
            if b == 13 || b == 10 { continue }  // unfold
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

    /// Relaxed body canonicalization: whitespace runs to one space, none at line ends, no empty lines at the end.
    /// One pass over the bytes.
    static func relaxedBody(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        var pendingSpace = false
        var lineStart = 0  // index in `out` where the current line began
        var lastContentEnd = 0  // `out.count` after the last non-empty line's CRLF
        var i = 0
        let n = body.count
        while i < n {
            let b = body[i]
            if b == 13, i + 1 < n, body[i + 1] == 10 {
                pendingSpace = false
                let empty = out.count == lineStart
                out.append(13)
                out.append(10)
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
            // A last line without CRLF gets one.
            out.append(13)
            out.append(10)
            lastContentEnd = out.count
        }
        out.removeLast(out.count - lastContentEnd)
        return out
    }
}
