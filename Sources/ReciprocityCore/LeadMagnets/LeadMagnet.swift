import Foundation

public typealias LeadMagnetID = Int64

/// What a lead magnet gives.
public enum GiftKind: String, Sendable, Codable, CaseIterable {
    /// An uploaded file (PDF, checklist), downloaded through an expiring signed link.
    case file
    /// A link (webinar, video).
    case link
    /// A code from a pool, each handed out exactly once.
    case voucher
    /// A physical sample: a postal address is collected, stock is counted, a fulfilment list is exported.
    case sample
}

/// An optional form field the merchant adds (company, role, …). Its value is stored with the signup.
public struct LeadField: Sendable, Codable, Equatable {
    public var key: String
    public var label: String
    public var required: Bool
    public init(key: String, label: String, required: Bool = false) {
        self.key = key
        self.label = label
        self.required = required
    }
}

/// One step of the "give, then ask" sequence after the gift: sent `afterSeconds` after the confirmation, as a
/// marketing mail (consent, caps and quiet hours apply), unless the contact bought in the meantime.
public struct FollowUpStep: Sendable, Codable, Equatable {
    public var afterSeconds: Int64
    public var subject: String
    public var body: String
    public init(afterSeconds: Int64, subject: String, body: String) {
        self.afterSeconds = afterSeconds
        self.subject = subject
        self.body = body
    }
    enum CodingKeys: String, CodingKey {
        case afterSeconds = "after_seconds"
        case subject, body
    }
}

/// A gift offered in exchange for contact data, with its landing page, consent text and rules.
public struct LeadMagnet: Sendable, Equatable {
    public var id: LeadMagnetID
    public var workspaceID: WorkspaceID
    public var slug: String
    /// Internal name, for the admin.
    public var name: String
    public var locale: String
    public var headline: String
    public var body: String
    public var imageURL: String?
    public var giftKind: GiftKind
    public var giftTitle: String
    public var giftURL: String?
    public var sampleStock: Int?
    /// The consent text shown on the form now. Each signup records the version it showed.
    public var consentText: String
    public var purpose: ConsentPurpose
    public var askName: Bool
    public var fields: [LeadField]
    /// Origins (scheme://host[:port]) allowed to post the embedded form.
    public var allowedOrigins: [String]
    public var unitCost: Money
    public var fixedCost: Money
    public var downloadLinkLifetime: TimeInterval
    public var pendingLifetime: TimeInterval
    public var resendWindow: TimeInterval
    public var minimumFillTime: TimeInterval
    public var voucherLowWater: Int
    public var followUps: [FollowUpStep]
    public var active: Bool
    public var file: StoredFile?
    public var createdAt: Date
    public var updatedAt: Date

    public struct StoredFile: Sendable, Equatable {
        public var key: String
        public var name: String
        public var contentType: String
        public var size: Int64
        public var sha256: String
        public init(key: String, name: String, contentType: String, size: Int64, sha256: String) {
            self.key = key
            self.name = name
            self.contentType = contentType
            self.size = size
            self.sha256 = sha256
        }
    }

    public init(
        id: LeadMagnetID = 0, workspaceID: WorkspaceID, slug: String, name: String, locale: String = "de",
        headline: String, body: String, imageURL: String? = nil, giftKind: GiftKind, giftTitle: String,
        giftURL: String? = nil, sampleStock: Int? = nil, consentText: String, purpose: ConsentPurpose = .newsletter,
        askName: Bool = true, fields: [LeadField] = [], allowedOrigins: [String] = [],
        unitCost: Money = Money(minor: 0, currency: .eur), fixedCost: Money = Money(minor: 0, currency: .eur),
        downloadLinkLifetime: TimeInterval = LeadMagnet.defaultDownloadLinkLifetime,
        pendingLifetime: TimeInterval = LeadMagnet.defaultPendingLifetime,
        resendWindow: TimeInterval = LeadMagnet.defaultResendWindow,
        minimumFillTime: TimeInterval = LeadMagnet.defaultMinimumFillTime, voucherLowWater: Int = 20,
        followUps: [FollowUpStep] = [], active: Bool = true, file: StoredFile? = nil, createdAt: Date = .distantPast,
        updatedAt: Date = .distantPast
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.slug = slug
        self.name = name
        self.locale = locale
        self.headline = headline
        self.body = body
        self.imageURL = imageURL
        self.giftKind = giftKind
        self.giftTitle = giftTitle
        self.giftURL = giftURL
        self.sampleStock = sampleStock
        self.consentText = consentText
        self.purpose = purpose
        self.askName = askName
        self.fields = fields
        self.allowedOrigins = allowedOrigins
        self.unitCost = unitCost
        self.fixedCost = fixedCost
        self.downloadLinkLifetime = downloadLinkLifetime
        self.pendingLifetime = pendingLifetime
        self.resendWindow = resendWindow
        self.minimumFillTime = minimumFillTime
        self.voucherLowWater = voucherLowWater
        self.followUps = followUps
        self.active = active
        self.file = file
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    public static let defaultDownloadLinkLifetime: TimeInterval = 7 * 86_400
    public static let defaultPendingLifetime: TimeInterval = 30 * 86_400
    public static let defaultResendWindow: TimeInterval = 600
    public static let defaultMinimumFillTime: TimeInterval = 2

    /// The most "give, then ask" steps a magnet has (the API and the admin form alike).
    public static let maxFollowUps = 5

    /// Every rule a magnet must satisfy before it is saved; the first broken one is thrown.
    public func validate() throws(DomainError) {
        guard slug.count >= 2, slug.count <= 64,
            slug.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }),
            !slug.hasPrefix("-"), !slug.hasSuffix("-")
        else {
            throw .invalid(
                "slug_invalid", "A slug has 2–64 characters: lower-case letters, digits and hyphens.", field: "slug")
        }
        try Self.text(name, "name", max: 200)
        // Bounded (NaN and infinity are in no range): they become whole seconds in the database, and would trap there.
        for (value, field, range) in [
            (downloadLinkLifetime, "download_link_seconds", 1.0...(5 * 365 * 86_400)),
            (pendingLifetime, "pending_seconds", 1.0...(365 * 86_400)),
            (resendWindow, "resend_window_seconds", 0.0...(30 * 86_400)),
            (minimumFillTime, "min_fill_seconds", 0.0...3600),
        ] where !range.contains(value) {
            throw .invalid(
                "out_of_range",
                "\(field) must be from \(Int64(range.lowerBound)) to \(Int64(range.upperBound)) seconds.", field: field)
        }
        try Self.text(headline, "headline", max: 200)
        try Self.text(body, "body", max: 20_000, allowEmpty: true)
        try Self.text(giftTitle, "gift_title", max: 200)
        guard ["de", "en"].contains(locale) else {
            throw .invalid("locale_invalid", "The page language is de or en.", field: "locale")
        }
        let consent = consentText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !consent.isEmpty else {
            throw .invalid(
                "consent_text_missing", "A lead magnet needs the consent text the form shows.", field: "consent_text")
        }
        guard consentText.count <= 10_000 else {
            throw .invalid(
                "consent_text_too_long", "A consent text has at most 10,000 characters.", field: "consent_text")
        }
        if let imageURL { try Self.httpURL(imageURL, "image_url") }
        switch giftKind {
        case .link:
            guard let giftURL else {
                throw .invalid("gift_url_missing", "A link gift needs its URL.", field: "gift_url")
            }
            try Self.httpURL(giftURL, "gift_url")
        case .sample:
            guard let sampleStock, sampleStock >= 0 else {
                throw .invalid("sample_stock_missing", "A sample needs its stock (0 or more).", field: "sample_stock")
            }
        case .file, .voucher: break
        }
        var keys = Set<String>()
        for (i, f) in fields.enumerated() {
            guard f.key.count <= 40, !f.key.isEmpty,
                f.key.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }),
                keys.insert(f.key).inserted
            else {
                throw .invalid(
                    "field_key_invalid", "A field key is unique and has 1–40 characters: a–z, 0–9 and _.",
                    field: "fields[\(i)].key")
            }
            try Self.text(f.label, "fields[\(i)].label", max: 200)
        }
        guard fields.count <= 10 else {
            throw .invalid("too_many_fields", "A form has at most 10 extra fields.", field: "fields")
        }
        for (i, origin) in allowedOrigins.enumerated() where FormGuard.normalizedOrigin(origin) == nil {
            throw .invalid(
                "origin_invalid", "An allowed origin looks like https://shop.example (no path).",
                field: "allowed_origins[\(i)]")
        }
        guard unitCost.minor >= 0, fixedCost.minor >= 0 else {
            throw .invalid("cost_negative", "Costs are 0 or more.", field: "unit_cost_minor")
        }
        guard unitCost.minor <= 100_000_000, fixedCost.minor <= 100_000_000_000 else {
            throw .invalid(
                "cost_too_high", "A unit cost is at most 1,000,000.00 and a fixed cost at most 1,000,000,000.00.",
                field: "unit_cost_minor")
        }
        // Follow-ups and the confirmation speak of the newsletter; other purposes have their own consent flows.
        guard purpose == .newsletter else {
            throw .invalid("purpose_invalid", "A lead magnet asks for newsletter consent.", field: "purpose")
        }
        guard downloadLinkLifetime >= 1, downloadLinkLifetime <= 366 * 86_400 else {
            throw .invalid(
                "download_link_seconds_invalid", "A download link lives 1 second to 366 days.",
                field: "download_link_seconds")
        }
        guard pendingLifetime >= 1, pendingLifetime <= 90 * 86_400 else {
            throw .invalid(
                "pending_seconds_invalid", "An unconfirmed signup is kept 1 second to 90 days.",
                field: "pending_seconds")
        }
        guard resendWindow >= 0, resendWindow <= 86_400 else {
            throw .invalid(
                "resend_window_seconds_invalid", "The resend window is 0 to 86,400 seconds.",
                field: "resend_window_seconds")
        }
        guard minimumFillTime >= 0, minimumFillTime <= 60 else {
            throw .invalid(
                "min_fill_seconds_invalid", "The minimum fill time is 0 to 60 seconds.", field: "min_fill_seconds")
        }
        guard voucherLowWater >= 0 else {
            throw .invalid("voucher_low_water_invalid", "The low-water mark is 0 or more.", field: "voucher_low_water")
        }
        guard followUps.count <= Self.maxFollowUps else {
            throw .invalid(
                "too_many_follow_ups", "A sequence has at most \(Self.maxFollowUps) steps.", field: "follow_ups")
        }
        for (i, step) in followUps.enumerated() {
            guard step.afterSeconds >= 1, step.afterSeconds <= 365 * 86_400 else {
                throw .invalid(
                    "follow_up_delay_invalid", "A step follows 1 second to 365 days after the confirmation.",
                    field: "follow_ups[\(i)].after_seconds")
            }
            try Self.text(step.subject, "follow_ups[\(i)].subject", max: 200)
            try Self.text(step.body, "follow_ups[\(i)].body", max: 20_000)
        }
    }

    static func text(_ value: String, _ field: String, max: Int, allowEmpty: Bool = false) throws(DomainError) {
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if !allowEmpty && trimmed.isEmpty {
            throw .invalid("\(field.split(separator: "[").first ?? "")_missing", "\(field) is required.", field: field)
        }
        guard value.count <= max else {
            throw .invalid(
                "\(field.split(separator: "[").first ?? "")_too_long", "\(field) has at most \(max) characters.",
                field: field)
        }
    }

    static func httpURL(_ value: String, _ field: String) throws(DomainError) {
        guard let url = URL(string: value), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
            url.host?.isEmpty == false
        else { throw .invalid("\(field)_invalid", "\(field) must be an http(s) URL.", field: field) }
    }

    /// An `Origin` header judged for this magnet: `ownOrigin` is the installation's public URL.
    public func origin(_ header: String?, ownOrigin: String) -> FormGuard.Origin {
        FormGuard.origin(header, ownOrigin: ownOrigin, allowed: allowsOrigin)
    }

    /// Plain text as paragraphs: blank lines separate them (landing page text, follow-up mails).
    public static func paragraphs(_ text: String) -> [String] {
        text.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n\n")
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    public func allowsOrigin(_ origin: String) -> Bool {
        guard let given = FormGuard.normalizedOrigin(origin) else { return false }
        return allowedOrigins.contains { FormGuard.normalizedOrigin($0) == given }
    }
}
