import Foundation

/// An email address as given, validated, with its normalized form for matching.
///
/// The normalized form lower-cases the whole address and converts an IDN domain to ASCII-compatible form is not
/// attempted here: non-ASCII domains are accepted as given and lower-cased (SMTPUTF8); the mail engine punycodes.
public struct EmailAddress: Sendable, Hashable, Codable, CustomStringConvertible {
    public let raw: String
    public let normalized: String

    public init(_ input: String, field: String = "email") throws(DomainError) {
        let trimmed = input.trimming(.whitespaces)
        guard !trimmed.isEmpty else { throw .invalid("email_missing", "An email address is required.", field: field) }
        guard trimmed.utf8.count <= 254 else {
            throw .invalid("email_too_long", "The email address is longer than 254 characters.", field: field)
        }
        // Header injection and control characters are refused outright.
        guard !trimmed.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw .invalid("email_invalid", "The email address contains control characters.", field: field)
        }
        let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, let local = parts.first, let domain = parts.last, !local.isEmpty, local.utf8.count <= 64
        else { throw .invalid("email_invalid", "'\(trimmed)' is not a valid email address.", field: field) }
        guard local.unicodeScalars.allSatisfy({ Self.allowed($0, Self.localAllowed, Self.localASCII) }),
            !local.hasPrefix("."), !local.hasSuffix("."),
            // On bytes: `contains("..")` goes through Foundation's `range(of:)`.
            !zip(local.utf8, local.utf8.dropFirst()).contains(where: { $0 == 46 && $1 == 46 })
        else { throw .invalid("email_invalid", "'\(trimmed)' is not a valid email address.", field: field) }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2,
            labels.allSatisfy({
                !$0.isEmpty && $0.count <= 63 && !$0.hasPrefix("-") && !$0.hasSuffix("-")
                    && $0.unicodeScalars.allSatisfy { Self.allowed($0, Self.labelAllowed, Self.labelASCII) }
            }),
            let tld = labels.last, tld.count >= 2, !tld.allSatisfy(\.isNumber)
        else { throw .invalid("email_invalid", "'\(trimmed)' is not a valid email address.", field: field) }
        raw = trimmed
        normalized = trimmed.lowercased()
    }

    // Built once: a CharacterSet union costs more than checking a whole address against it.
    private static let localAllowed = CharacterSet.alphanumerics.union(
        CharacterSet(charactersIn: "!#$%&'*+/=?^_`{|}~.-"))
    private static let labelAllowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-"))
    // Asking a CharacterSet per character was most of the cost of checking an address.
    private static let localASCII = ASCIIMembership(localAllowed)
    private static let labelASCII = ASCIIMembership(labelAllowed)

    private static func allowed(_ scalar: Unicode.Scalar, _ set: CharacterSet, _ ascii: ASCIIMembership) -> Bool {
        scalar.isASCII ? ascii.contains(UInt8(scalar.value)) : set.contains(scalar)
    }

    public var domain: String { String(normalized.split(separator: "@").last ?? "") }

    /// A syntactically valid address that can never be delivered (RFC 2606 `.invalid`), for samples.
    public static let placeholder = EmailAddress(unchecked: "someone@example.invalid")

    private init(unchecked: String) {
        raw = unchecked
        normalized = unchecked
    }
    public var description: String { raw }

    /// The identity used for fraud matching: besides case, drops `+tag` at providers that support sub-addressing,
    /// and dots in Gmail's local part; googlemail.com is gmail.com.
    public var canonicalIdentity: String {
        let parts = normalized.split(separator: "@")
        var local = String(parts[0])
        var domain = String(parts[1])
        if domain == "googlemail.com" { domain = "gmail.com" }
        if Self.subAddressingDomains.contains(domain), let plus = local.firstIndex(of: "+") {
            local = String(local[..<plus])
        }
        if domain == "gmail.com" { local = local.replacingOccurrences(of: ".", with: "") }
        return "\(local)@\(domain)"
    }

    static let subAddressingDomains: Set<String> = [
        "gmail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com",
        "posteo.de", "mailbox.org", "gmx.de", "gmx.net", "web.de", "proton.me", "protonmail.com", "yahoo.com",
    ]

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        try self.init(try c.decode(String.self))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(raw)
    }
}
