import Foundation

// The review itself: where it came from (the label it carries), its moderation state, what a customer may submit,
// and the workspace's review settings. Pure values; Storage keeps them, Web shows them.

/// Where a review came from. The label shown is derived from this and nothing else: "Verifizierter Kauf" only for
/// a review submitted through a token from an order (UWG Annex No. 23b).
public enum ReviewSource: String, Sendable, Codable, CaseIterable {
    /// Through a signed link from a review request: tied to an order.
    case verified
    /// Through the open form (if the merchant enables it): nothing ties it to a purchase.
    case unverified
    /// From the CSV import of old reviews, with the source named.
    case imported
}

public enum ReviewStatus: String, Sendable, Codable, CaseIterable {
    case published
    /// Held by an automatic check for a person to look at (never because of the rating).
    case held
    /// Hidden by the merchant, with a logged reason. The text is never edited.
    case hidden
    /// Deleted by its author through their link: the text is gone, the id stays for the feed's deleted list.
    case deleted
}

/// What a customer submits through the review form (verified or open).
public struct ReviewInput: Sendable, Equatable {
    public var rating: Int?
    public var title: String
    public var body: String
    public var displayName: String

    public static let displayNameMax = 60

    public init(rating: Int?, title: String, body: String, displayName: String) {
        self.rating = rating
        self.title = title
        self.body = body
        self.displayName = displayName
    }

    /// Trims, normalises line ends and returns every problem at once (a form shows them all), keyed by field.
    /// The length limits are the moderation limits' hard outer bound: anything longer is refused outright.
    public func validated(limits: ReviewModeration.Limits = .init()) -> Result<ReviewInput, ReviewInputErrors> {
        var v = self
        func clean(_ s: String) -> String {
            s.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
                .unicodeScalars.filter { $0 == "\n" || $0 == "\t" || !CharacterSet.controlCharacters.contains($0) }
                .reduce(into: "") { $0.unicodeScalars.append($1) }
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        v.title = clean(title).replacingOccurrences(of: "\n", with: " ")
        v.body = clean(body)
        v.displayName = clean(displayName).replacingOccurrences(of: "\n", with: " ")
        var errors: [String: String] = [:]
        if !(1...5).contains(v.rating ?? 0) { errors["rating"] = "rating_required" }
        if v.title.count > limits.titleMax { errors["title"] = "title_too_long" }
        if v.body.count < limits.textMin { errors["body"] = "body_too_short" }
        if v.body.count > limits.textMax { errors["body"] = "body_too_long" }
        if v.displayName.isEmpty { errors["display_name"] = "display_name_required" }
        if v.displayName.count > Self.displayNameMax { errors["display_name"] = "display_name_too_long" }
        return errors.isEmpty ? .success(v) : .failure(ReviewInputErrors(byField: errors))
    }
}

public struct ReviewInputErrors: Error, Sendable, Equatable {
    /// field → message code (e.g. `body` → `body_too_short`).
    public var byField: [String: String]
    public init(byField: [String: String]) { self.byField = byField }
}

/// A photo attached to a review: JPEG, PNG or WebP, recognised by its first bytes (never by the name or the
/// declared type), and limited in size.
public enum ReviewPhoto {
    public static let maxBytes = 5 * 1_048_576
    public static let maxCount = 3

    public enum Kind: String, Sendable, Equatable {
        case jpeg = "image/jpeg"
        case png = "image/png"
        case webp = "image/webp"
    }

    public static func sniff(_ bytes: some Collection<UInt8>) -> Kind? {
        let head = Array(bytes.prefix(12))
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if head.count == 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) {
            return .webp
        }
        return nil
    }

    /// The kind, or the reason it is refused (`photo_type`, `photo_too_large`, `photo_empty`).
    public static func check(_ bytes: [UInt8]) -> Result<Kind, ReviewInputErrors> {
        if bytes.isEmpty { return .failure(.init(byField: ["photos": "photo_empty"])) }
        if bytes.count > maxBytes { return .failure(.init(byField: ["photos": "photo_too_large"])) }
        guard let kind = sniff(bytes) else { return .failure(.init(byField: ["photos": "photo_type"])) }
        return .success(kind)
    }
}

/// The workspace's review settings (issue 4): timing, the disclosure text, the open form, link lifetimes and the
/// incentive a campaign gives, if any.
public struct ReviewSettings: Sendable, Equatable {
    public var timing = ReviewTiming()
    /// §5b(3) UWG: how reviews are checked. Required before any widget goes live; shown beside every widget.
    public var disclosure = ""
    /// An open form on the widget page, for reviews labelled unverified.
    public var openForm = false
    /// How long a review link works (default 180 days).
    public var tokenLifetime: TimeInterval = 180 * 86_400
    /// How long after submitting the author may still edit or delete the review through the link.
    public var editWindow: TimeInterval = 30 * 86_400
    /// The incentive the current campaign gives for a review (e.g. "5 € Gutschein für jede Bewertung"), or nil.
    /// Requests sent while it is set carry it; their reviews show the incentive badge. The reward is the same for
    /// every review: nothing about it depends on the rating.
    public var incentive: String?

    public init() {}

    public var isLive: Bool { !disclosure.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }

    /// Whether the author may still write, change or delete through their link: always before the first
    /// submission, then for the edit window; never after deleting.
    public func isEditable(submittedAt: Date?, deleted: Bool, now: Date) -> Bool {
        guard let submittedAt else { return true }
        return !deleted && now < submittedAt.addingTimeInterval(editWindow)
    }

    public static let maxDelay: TimeInterval = 365 * 86_400

    public func validate() throws(DomainError) {
        func check(_ value: TimeInterval, _ field: String, min: TimeInterval = 0) throws(DomainError) {
            guard value.isFinite, value >= min, value <= Self.maxDelay else {
                throw .invalid(
                    "out_of_range", "\(field) must be between \(Int(min)) seconds and 365 days.", field: field)
            }
        }
        try check(timing.delay, "delay_seconds")
        try check(timing.transit, "transit_seconds")
        // A reminder the next day lowers reviews; still, the merchant decides. One hour is the floor.
        try check(timing.reminderAfter, "reminder_seconds", min: 1)
        for (category, delay) in timing.categoryDelays {
            guard !category.isEmpty, category.count <= 100 else {
                throw .invalid(
                    "category_invalid", "A category name must be 1–100 characters.", field: "category_delays")
            }
            try check(delay, "category_delays.\(category)")
        }
        guard disclosure.count <= 2_000 else {
            throw .invalid("too_long", "The disclosure text must be at most 2000 characters.", field: "disclosure_text")
        }
        guard tokenLifetime >= 0, tokenLifetime <= 730 * 86_400 else {
            throw .invalid("out_of_range", "token_days must be between 0 and 730.", field: "token_days")
        }
        guard editWindow >= 0, editWindow <= 365 * 86_400 else {
            throw .invalid("out_of_range", "edit_days must be between 0 and 365.", field: "edit_days")
        }
        if let incentive, incentive.count > 300 {
            throw .invalid("too_long", "The incentive must be at most 300 characters.", field: "incentive")
        }
    }

    /// The default disclosure offered in the admin (the merchant must save it, or their own, to go live).
    public static func suggestedDisclosure(locale: String) -> String {
        locale == "en"
            ? "Reviews marked “Verified purchase” can only be written through a personal link we send after delivery of an order. Other reviews are labelled as unverified or imported. Every review is published, whatever its rating; texts with insults, links or personal data wait until a person has checked them. We hide a review only for a stated reason (such as an insult), never because of its rating."
            : "Bewertungen mit dem Hinweis „Verifizierter Kauf“ können nur über einen persönlichen Link abgegeben werden, den wir nach der Lieferung einer Bestellung senden. Andere Bewertungen sind als „nicht verifiziert“ oder „importiert“ gekennzeichnet. Jede Bewertung wird veröffentlicht, unabhängig von der Sternzahl; Texte mit Beleidigungen, Links oder persönlichen Daten prüft vorher ein Mensch. Wir blenden eine Bewertung nur mit einem festgehaltenen Grund aus (etwa einer Beleidigung), nie wegen der Sternzahl."
    }
}

/// Removes metadata from review photos before they are stored: EXIF (camera, time, GPS position), XMP and text
/// chunks. The image data itself is left as it is. A file that does not parse as expected is refused, not stored
/// half-cleaned.
public enum PhotoMetadata {
    public static func strip(_ bytes: [UInt8], kind: ReviewPhoto.Kind) -> [UInt8]? {
        switch kind {
        case .jpeg: stripJPEG(bytes)
        case .png: stripPNG(bytes)
        case .webp: stripWebP(bytes)
        }
    }

    /// Drops APP1 (EXIF, XMP) … APP15 segments and comments before the scan; keeps APP0 (JFIF) and the rest.
    static func stripJPEG(_ b: [UInt8]) -> [UInt8]? {
        guard b.count >= 4, b[0] == 0xFF, b[1] == 0xD8 else { return nil }
        var out: [UInt8] = [0xFF, 0xD8]
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { return nil }
            let marker = b[i + 1]
            if marker == 0xDA {  // start of scan: the rest is image data
                out += b[i...]
                return out
            }
            if marker == 0xD8 || (0xD0...0xD7).contains(marker) || marker == 0x01 {
                out += b[i..<(i + 2)]
                i += 2
                continue
            }
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2, i + 2 + length <= b.count else { return nil }
            let metadata = (0xE1...0xEF).contains(marker) || marker == 0xFE
            if !metadata { out += b[i..<(i + 2 + length)] }
            i += 2 + length
        }
        return nil
    }

    /// Drops eXIf, tEXt, zTXt, iTXt and tIME chunks.
    static func stripPNG(_ b: [UInt8]) -> [UInt8]? {
        guard b.count >= 8 else { return nil }
        var out = Array(b[0..<8])
        var i = 8
        let dropped: Set<String> = ["eXIf", "tEXt", "zTXt", "iTXt", "tIME"]
        while i + 12 <= b.count {
            let length = Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 0, i + 12 + length <= b.count else { return nil }
            let type = String(decoding: b[(i + 4)..<(i + 8)], as: UTF8.self)
            if !dropped.contains(type) { out += b[i..<(i + 12 + length)] }
            i += 12 + length
            if type == "IEND" { return out }
        }
        return nil
    }

    /// Drops EXIF and XMP chunks, clears their flags in VP8X, and fixes the RIFF size.
    static func stripWebP(_ b: [UInt8]) -> [UInt8]? {
        guard b.count >= 12 else { return nil }
        var body: [UInt8] = Array("WEBP".utf8)
        var i = 12
        while i + 8 <= b.count {
            let type = String(decoding: b[i..<(i + 4)], as: UTF8.self)
            let size = Int(b[i + 4]) | Int(b[i + 5]) << 8 | Int(b[i + 6]) << 16 | Int(b[i + 7]) << 24
            let padded = size + (size & 1)
            guard i + 8 + size <= b.count else { return nil }
            var chunk = Array(b[i..<min(b.count, i + 8 + padded)])
            if type == "VP8X", chunk.count > 8 { chunk[8] &= ~UInt8(0x08 | 0x04) }  // EXIF and XMP flags
            if type != "EXIF" && type != "XMP " { body += chunk }
            i += 8 + padded
        }
        let n = UInt32(body.count)
        return Array("RIFF".utf8) + [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)]
            + body
    }
}
