import Foundation

public typealias WorkspaceID = Int64

/// A shop or brand. Every workspace-owned row carries its id and every query is scoped to it.
public struct Workspace: Sendable, Equatable, Codable {
    public var id: WorkspaceID
    public var slug: String
    public var name: String
    public var locale: String
    public var timeZone: String
    public var senderName: String
    public var senderEmail: String
    public var imprintURL: String
    public var privacyURL: String
    public var createdAt: Date

    public init(
        id: WorkspaceID, slug: String, name: String, locale: String = "de", timeZone: String = "Europe/Berlin",
        senderName: String, senderEmail: String, imprintURL: String = "", privacyURL: String = "", createdAt: Date
    ) {
        self.id = id
        self.slug = slug
        self.name = name
        self.locale = locale
        self.timeZone = timeZone
        self.senderName = senderName
        self.senderEmail = senderEmail
        self.imprintURL = imprintURL
        self.privacyURL = privacyURL
        self.createdAt = createdAt
    }
}

/// What is needed to create a workspace; validated before anything is written.
public struct NewWorkspace: Sendable {
    public var slug: String
    public var name: String
    public var locale: String
    public var timeZone: String
    public var senderName: String
    public var senderEmail: String
    public var imprintURL: String
    public var privacyURL: String

    public init(
        slug: String, name: String, locale: String = "de", timeZone: String = "Europe/Berlin",
        senderName: String? = nil, senderEmail: String, imprintURL: String = "", privacyURL: String = ""
    ) throws(DomainError) {
        let slug = slug.trimmingCharacters(in: .whitespaces).lowercased()
        guard (2...40).contains(slug.count),
            slug.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }),
            !slug.hasPrefix("-"), !slug.hasSuffix("-")
        else {
            throw .invalid("slug_invalid", "A slug has 2–40 characters: a–z, 0–9 and inner hyphens.", field: "slug")
        }
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...120).contains(name.count) else {
            throw .invalid("name_invalid", "A name has 1–120 characters.", field: "name")
        }
        guard Locale.supported.contains(locale) else {
            throw .invalid(
                "locale_unsupported", "Locale must be one of \(Locale.supported.joined(separator: ", ")).",
                field: "locale")
        }
        guard TimeZone(identifier: timeZone) != nil else {
            throw .invalid("time_zone_unknown", "'\(timeZone)' is not an IANA time zone.", field: "time_zone")
        }
        let sender = try EmailAddress(senderEmail, field: "sender_email")
        for (value, field) in [(imprintURL, "imprint_url"), (privacyURL, "privacy_url")] where !value.isEmpty {
            guard let url = URL(string: value), ["https", "http"].contains(url.scheme ?? "") else {
                throw .invalid("url_invalid", "'\(value)' is not an http(s) URL.", field: field)
            }
        }
        self.slug = slug
        self.name = name
        self.locale = locale
        self.timeZone = timeZone
        self.senderName = senderName ?? name
        self.senderEmail = sender.raw
        self.imprintURL = imprintURL
        self.privacyURL = privacyURL
    }
}

/// The product's UI and mail languages. German first.
public enum Locale {
    public static let supported = ["de", "en"]
    public static let fallback = "de"
    /// Picks a supported locale for a customer's locale tag such as `de-AT` or `en_GB`.
    public static func resolve(_ tag: String?) -> String {
        guard let tag = tag?.lowercased(), let lang = tag.split(whereSeparator: { $0 == "-" || $0 == "_" }).first
        else { return fallback }
        return supported.contains(String(lang)) ? String(lang) : fallback
    }
}
