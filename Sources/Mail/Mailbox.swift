import Foundation
import ReciprocityCore

/// An address a mail goes to or comes from: validated, domain in ASCII (IDN → Punycode), with an optional display
/// name. Anything that could inject a header (CR, LF, NUL, other controls) is refused here, before a header exists.
public struct Mailbox: Sendable, Equatable, CustomStringConvertible {
    public let displayName: String?
    public let localPart: String
    /// ASCII-compatible form (`xn--…` labels for internationalised domains).
    public let domain: String

    /// Display names longer than this are shortened (with "…"): a shop's customer names come from elsewhere and a
    /// mail should not fail for a long one, but a header must stay within limits.
    public static let maxDisplayNameCharacters = 100

    public init(_ address: String, displayName: String? = nil) throws(DomainError) {
        guard !address.unicodeScalars.contains(where: Self.isControl) else {
            throw .invalid("mail_header_injection", "The address contains a line break or control character.")
        }
        // The display name before the address's own checks, so a name with a line break is named as the fault.
        try Self.checkDisplayName(displayName)
        try self.init(checked: try EmailAddress(address), displayName: displayName)
    }

    /// From an address already validated (`EmailAddress` refuses control characters): only the domain's IDNA
    /// form and the display name are left to check.
    public init(_ email: EmailAddress, displayName: String? = nil) throws(DomainError) {
        try Self.checkDisplayName(displayName)
        try self.init(checked: email, displayName: displayName)
    }

    private static func checkDisplayName(_ displayName: String?) throws(DomainError) {
        if let displayName, displayName.unicodeScalars.contains(where: isControl) {
            throw .invalid("mail_header_injection", "The display name contains a line break or control character.")
        }
    }

    private init(checked email: EmailAddress, displayName: String?) throws(DomainError) {
        let raw = email.raw
        guard let at = raw.utf8.lastIndex(of: UInt8(ascii: "@")) else {
            throw .invalid("email_invalid", "'\(raw)' is not an address.")
        }
        let local = String(raw[..<at])
        guard let ascii = IDNA.toASCII(String(raw[raw.index(after: at)...])) else {
            throw .invalid("email_domain_invalid", "The domain of '\(raw)' cannot be encoded for DNS (IDNA).")
        }
        localPart = local
        domain = ascii
        let trimmed = displayName?.trimming(.whitespaces) ?? ""
        if trimmed.isEmpty {
            self.displayName = nil
        } else if trimmed.count > Self.maxDisplayNameCharacters {
            self.displayName = String(trimmed.prefix(Self.maxDisplayNameCharacters - 1)) + "…"
        } else {
            self.displayName = trimmed
        }
    }

    /// `local@domain`, with the domain in ASCII.
    public var address: String { localPart + "@" + domain }

    /// A non-ASCII local part can only travel over SMTPUTF8 (RFC 6531).
    public var needsSMTPUTF8: Bool { !localPart.unicodeScalars.allSatisfy(\.isASCII) }

    public var description: String { address }

    /// The header form: `"Name" <addr>`, with RFC 2047 encoded words where the name is not ASCII.
    public var headerValue: String {
        guard let displayName else { return address }
        return HeaderEncoding.phrase(displayName) + " <" + address + ">"
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool { s.value < 0x20 || s.value == 0x7F }
}
