import Crypto
import Foundation

/// Signed, stateless tokens for links in mails (unsubscribe, preference centre, and later review and DOI links).
/// `<payload>.<mac>`, both base64url; the MAC is HMAC-SHA256 (truncated to 128 bits) under a key derived from the
/// secret per purpose, so a token for one purpose is worthless for another.
extension Store {
    public func signToken(purpose: String, fields: [String]) -> String {
        let payload = Base64URL.encode(Array(fields.joined(separator: "|").utf8))
        return payload + "." + Base64URL.encode(mac(purpose: purpose, payload: payload))
    }

    /// The fields of a valid token, or nil when it was altered, is malformed, or belongs to another purpose.
    public func verifyToken(_ token: String, purpose: String) -> [String]? {
        guard token.utf8.count <= 2048 else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let given = Base64URL.decode(String(parts[1])),
            let payload = Base64URL.decode(String(parts[0]))
        else { return nil }
        let expected = mac(purpose: purpose, payload: String(parts[0]))
        guard given.count == expected.count, zip(given, expected).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else {
            return nil
        }
        return String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
            .map(String.init)
    }

    /// A token that stops working at `expiresAt` (review links: 180 days; DOI links; download links). The expiry is
    /// signed with the fields, so it cannot be extended.
    public func signToken(purpose: String, fields: [String], expiresAt: Date) -> String {
        signToken(purpose: purpose, fields: fields + [String(Int64(expiresAt.timeIntervalSince1970))])
    }

    public enum TokenCheck: Sendable, Equatable {
        case valid([String])
        /// Genuine but too old: show a friendly page (and offer a fresh link), not a 404.
        case expired([String])
        /// Altered, malformed, or for another purpose: 404.
        case invalid
    }

    /// Checks a token made by `signToken(purpose:fields:expiresAt:)` at the store's clock.
    public func checkToken(_ token: String, purpose: String) -> TokenCheck {
        guard var fields = verifyToken(token, purpose: purpose), let last = fields.popLast(), let expiry = Int64(last)
        else { return .invalid }
        return now.timeIntervalSince1970 < Double(expiry) ? .valid(fields) : .expired(fields)
    }

    private func mac(purpose: String, payload: String) -> [UInt8] {
        tokenHasher(purpose).mac(Array(payload.utf8), bytes: 16)
    }

    /// HMAC under the purpose's key (derived once per store and purpose), with the key already absorbed.
    private func tokenHasher(_ purpose: String) -> PreparedHMAC {
        tokenHashers.hasher(purpose) {
            PreparedHMAC(
                key: SymmetricKey(
                    data: HKDF<SHA256>.deriveKey(
                        inputKeyMaterial: hashKey, info: Array("reciprocity.token.\(purpose)".utf8),
                        outputByteCount: 32)))
        }
    }
}

/// Keyed token hashers per purpose, memoised (HKDF per link was measurable when composing mail in bulk, and so was
/// HMAC's key schedule).
final class TokenHashers: @unchecked Sendable {
    private let lock = NSLock()
    private var hashers: [String: PreparedHMAC] = [:]
    func hasher(_ purpose: String, make: () -> PreparedHMAC) -> PreparedHMAC {
        lock.withLock {
            if let h = hashers[purpose] { return h }
            let h = make()
            hashers[purpose] = h
            return h
        }
    }
}

public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// RFC 4648 §5, without padding. Straight into the string's storage (every token of every mail: an array
    /// literal per three bytes was a visible share of composing one).
    public static func encode(_ bytes: [UInt8]) -> String {
        let length = bytes.count / 3 * 4 + [0, 2, 3][bytes.count % 3]
        return bytes.withUnsafeBufferPointer { input in
            alphabet.withUnsafeBufferPointer { a in
                String(unsafeUninitializedCapacity: length) { out in
                    var i = 0
                    var o = 0
                    while i + 2 < input.count {
                        let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                        out[o] = a[Int(n >> 18)]
                        out[o + 1] = a[Int(n >> 12 & 63)]
                        out[o + 2] = a[Int(n >> 6 & 63)]
                        out[o + 3] = a[Int(n & 63)]
                        i += 3
                        o += 4
                    }
                    if input.count - i > 0 {
                        let n = UInt32(input[i]) << 16 | (input.count - i == 2 ? UInt32(input[i + 1]) << 8 : 0)
                        out[o] = a[Int(n >> 18)]
                        out[o + 1] = a[Int(n >> 12 & 63)]
                        o += 2
                        if input.count - i == 2 {
                            out[o] = a[Int(n >> 6 & 63)]
                            o += 1
                        }
                    }
                    return o
                }
            }
        }
    }

    public static func decode(_ string: String) -> [UInt8]? {
        guard string.utf8.allSatisfy({ $0 < 128 && $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "/") }) else {
            return nil
        }
        var s = string.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map(Array.init)
    }
}
