import Foundation

/// An advocate's personal code: a readable name part and four random symbols, e.g. `ANNA-7K3Q`.
/// Symbols avoid look-alikes (no 0/O, 1/I/L), so a code read aloud or from a parcel card survives.
public enum ReferralCode {
    static let alphabet = Array("ABCDEFGHJKMNPQRSTUVWXYZ23456789")

    /// A code for a person called `firstName`; `random` supplies at least 4 bytes.
    public static func make(firstName: String?, random: [UInt8]) -> String {
        let suffix = random.prefix(4).map { alphabet[Int($0) % alphabet.count] }
        return namePart(firstName) + "-" + String(suffix)
    }

    /// Up to 8 letters A–Z of the first name (umlauts spelled out), or `FREUND` when there is nothing usable.
    static func namePart(_ firstName: String?) -> String {
        let spelled =
            (firstName ?? "").uppercased()
            .replacingOccurrences(of: "Ä", with: "AE").replacingOccurrences(of: "Ö", with: "OE")
            .replacingOccurrences(of: "Ü", with: "UE").replacingOccurrences(of: "ß", with: "SS")
            .applyingTransform(.stripDiacritics, reverse: false) ?? ""
        let letters = spelled.unicodeScalars.filter { ("A"..."Z").contains($0) }
        let part = String(String.UnicodeScalarView(letters.prefix(8)))
        return part.count >= 2 ? part : "FREUND"
    }

    /// A code as typed by a person or carried in a URL: trimmed and upper-cased; nil when it cannot be a code.
    public static func normalize(_ input: String) -> String? {
        // The usual case (a code from a link, already upper-case) is returned as it is, without allocating.
        if isCode(input) { return input }
        let code = input.trimmingCharacters(in: .whitespacesAndNewlines).uppercased()
        return isCode(code) ? code : nil
    }

    /// 3 to 24 characters, each A–Z, 0–9 or a hyphen.
    static func isCode(_ text: String) -> Bool {
        (3...24).contains(text.utf8.count)
            && text.utf8.allSatisfy {
                (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
            }
    }
}

/// Links an advocate shares through their own channels. The product itself never writes to the friend
/// (BGH I ZR 208/12): these open the advocate's WhatsApp or mail program with an editable text.
public enum ShareLinks {
    /// RFC 3986 unreserved characters; everything else is percent-encoded as UTF-8 (spaces as `%20`, never `+`).
    static let unreserved = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    public static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }

    /// WhatsApp's universal link with a prefilled message.
    public static func whatsApp(text: String) -> String { "https://wa.me/?text=" + encode(text) }

    /// A `mailto:` link (RFC 6068) with no recipient: the advocate picks the friend in their own mail program.
    public static func mailto(subject: String, body: String) -> String {
        "mailto:?subject=" + encode(subject) + "&body="
            + encode(
                body.replacingOccurrences(of: "\r\n", with: "\n")
                    .replacingOccurrences(of: "\n", with: "\r\n"))
    }

    /// The text an advocate shares: theirs if they wrote one, else the shop's suggestion; the link is always in it.
    public static func text(custom: String, suggestion: String, link: String) -> String {
        let custom = String(custom.prefix(1000))
        if custom.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return suggestion + " " + link }
        return custom.contains(link) ? custom : custom + " " + link
    }

    /// `url` with the referral code as a first-party query parameter (`ref`), replacing an existing `ref`.
    public static func withRef(_ url: String, code: String) -> String {
        guard var parts = URLComponents(string: url) else { return url }
        var items = (parts.queryItems ?? []).filter { $0.name != "ref" }
        items.append(URLQueryItem(name: "ref", value: code))
        parts.queryItems = items
        return parts.string ?? url
    }
}
