import Foundation

// Pure rules for the review capability (issue 4): when to ask, how to moderate, how to show.
// Nothing here looks at storage; the review slice's store and pages call these.

/// When a review request (and its one reminder) is due for an order.
public struct ReviewTiming: Sendable, Equatable {
    /// Days after delivery before the first request (per workspace, overridable per product category).
    public var delay: TimeInterval = 7 * 86_400
    /// Without a delivery event: shipped + this transit time counts as delivered.
    public var transit: TimeInterval = 3 * 86_400
    /// The reminder, only if nothing was reviewed. Field experiments: next-day reminders lower reviews, two
    /// weeks later raise them.
    public var reminderAfter: TimeInterval = 7 * 86_400
    public var remindersEnabled = true
    /// A product asked about within this window is not asked about again.
    public var sameProductWindow: TimeInterval = 365 * 86_400
    public var categoryDelays: [String: TimeInterval] = [:]
    /// A request due longer ago than this is not sent: an imported order history must not mail every old buyer.
    public var maxLateness: TimeInterval = 30 * 86_400

    public init() {}

    /// The moment the first request is due: delivery (or shipping + transit) plus the longest wait among the
    /// order's items, so every item has been had long enough. An item's wait is its category's delay, or the
    /// workspace delay when its category has none (so a category may also be shorter). Nil without either event.
    public func requestDue(deliveredAt: Date?, shippedAt: Date?, categories: [String?]) -> Date? {
        guard let arrived = deliveredAt ?? shippedAt.map({ $0.addingTimeInterval(transit) }) else { return nil }
        let waits = categories.map { $0.flatMap { categoryDelays[$0] } ?? delay }
        return arrived.addingTimeInterval(waits.max() ?? delay)
    }

    public func reminderDue(requestSentAt: Date) -> Date? {
        remindersEnabled ? requestSentAt.addingTimeInterval(reminderAfter) : nil
    }
}

/// Why a review request is not sent (logged with the order).
public enum ReviewRequestSkip: String, Sendable, Equatable, CaseIterable {
    case orderCancelled = "order_cancelled"
    case orderReturned = "order_returned"
    case noConsent = "no_consent"
    case objected
    case frequencyCap = "frequency_cap"
    case alreadyAskedRecently = "product_asked_within_12_months"
    case tooOld = "order_too_old"
    case nothingToAsk = "no_items_left"
}

/// The items of an order worth asking about, and whether to ask at all. Consent, objection and the frequency cap
/// are checked again by the mail engine at send time; checking them here logs a skip with its real reason (a review
/// request that hits the cap is dropped, not postponed into a later week).
public enum ReviewRequestPlanner {
    public struct Item: Sendable, Equatable {
        public var sku: String
        public var name: String
        /// False for a product that went back in full: nobody is asked to review what they returned.
        public var kept: Bool
        public init(sku: String, name: String, kept: Bool = true) {
            self.sku = sku
            self.name = name
            self.kept = kept
        }
    }

    /// An order's products as the planner sees them; a product is kept while any of its lines has a unit that was
    /// not sent back.
    public static func items(of order: Order) -> [Item] {
        let kept = Set(order.items.filter { $0.keptQuantity > 0 }.map(\.sku))
        return order.items.map { Item(sku: $0.sku, name: $0.name, kept: kept.contains($0.sku)) }
    }

    /// The products a request asked about, marked by what the order keeps now (for the reminder).
    public static func items(_ asked: [Item], keptIn order: Order) -> [Item] {
        let kept = Set(items(of: order).filter(\.kept).map(\.sku))
        return asked.map { Item(sku: $0.sku, name: $0.name, kept: kept.contains($0.sku)) }
    }

    public static func plan(
        status: OrderStatus, consentGranted: Bool, existingCustomerModeApplies: Bool, objected: Bool, items: [Item],
        askedRecently: Set<String>, capReached: Bool = false
    ) -> Result<[Item], ReviewRequestSkipReason> {
        switch status {
        case .cancelled: return .failure(.init(.orderCancelled))
        case .returned: return .failure(.init(.orderReturned))
        default: break
        }
        if objected { return .failure(.init(.objected)) }
        if !consentGranted && !existingCustomerModeApplies { return .failure(.init(.noConsent)) }
        if capReached { return .failure(.init(.frequencyCap)) }
        var seen: Set<String> = []
        let wanted = items.filter { $0.kept && !askedRecently.contains($0.sku) && seen.insert($0.sku).inserted }
        if wanted.isEmpty {
            return .failure(.init(items.contains(where: \.kept) ? .alreadyAskedRecently : .nothingToAsk))
        }
        return .success(wanted)
    }
}

public struct ReviewRequestSkipReason: Error, Sendable, Equatable {
    public var skip: ReviewRequestSkip
    public init(_ skip: ReviewRequestSkip) { self.skip = skip }
}

/// Automatic moderation, the same for every star level: the rating is not an input, so no rule can look at it.
public enum ReviewModeration {
    public enum Outcome: Sendable, Equatable {
        case publish
        case hold(reasons: [String])
    }

    public struct Limits: Sendable, Equatable {
        public var titleMax = 120
        public var textMin = 10
        public var textMax = 5_000
        public init() {}

        /// Old reviews from another service: short texts ("Top!") are common, so no minimum length.
        public static var imported: Limits {
            var l = Limits()
            l.textMin = 1
            return l
        }
    }

    /// Checks title and text: profanity (shipped German and English lists), links, email addresses, phone
    /// numbers and length. Any hit holds the review for a person; nothing is rejected automatically.
    /// `name` (the display name) gets the content checks but not the length checks.
    public static func check(title: String, text: String, name: String = "", limits: Limits = Limits()) -> Outcome {
        var reasons: [String] = []
        let all = title + "\n" + text + "\n" + name
        if title.count > limits.titleMax { reasons.append("title_too_long") }
        if text.trimmingCharacters(in: .whitespacesAndNewlines).count < limits.textMin {
            reasons.append("text_too_short")
        }
        if text.count > limits.textMax { reasons.append("text_too_long") }
        let words = Set(
            all.lowercased().split(whereSeparator: { !$0.isLetter }).map { String($0) })
        if !words.isDisjoint(with: ProfanityList.words) { reasons.append("profanity") }
        if all.range(
            of: #"(https?://|www\.)\S+|\b[a-z0-9-]+\.(de|com|net|org|eu|at|ch|io|info|shop)\b"#,
            options: [.regularExpression, .caseInsensitive]) != nil
        {
            reasons.append("link")
        }
        if all.range(of: #"[A-Z0-9._%+-]+@[A-Z0-9.-]+\.[A-Z]{2,}"#, options: [.regularExpression, .caseInsensitive])
            != nil
        {
            reasons.append("email")
        }
        // A phone number starts with + or 0 and has at least 8 digits with spaces, slashes, brackets or hyphens
        // between; dates ("am 12.03.2024") and prices are not phone numbers.
        if all.range(of: #"(?:\+|\b0)\d[\d /()-]{6,}\d"#, options: .regularExpression) != nil {
            reasons.append("phone")
        }
        return reasons.isEmpty ? .publish : .hold(reasons: reasons)
    }
}

/// A short shipped list (German and English); merchants' additions would extend it.
public enum ProfanityList {
    public static let words: Set<String> = [
        // German
        "arschloch", "scheiße", "scheisse", "scheiß", "scheiss", "wichser", "fotze", "hurensohn", "missgeburt",
        "spast", "vollidiot", "drecksladen", "verpiss", "fick", "ficken", "schlampe", "bastard",
        // English
        "fuck", "fucking", "shit", "bullshit", "asshole", "bitch", "cunt", "dickhead", "motherfucker",
        "wanker", "twat",
    ]
}

/// A rating as five stars, e.g. "★★★★☆" for 4 (an average is rounded to whole stars).
public enum ReviewStars {
    public static func text(_ rating: Int) -> String {
        let full = min(5, max(0, rating))
        return String(repeating: "★", count: full) + String(repeating: "☆", count: 5 - full)
    }

    public static func text(average: Double) -> String { text(Int(average.rounded())) }
}

/// The name shown with a review: by default "Vorname N.".
public enum ReviewDisplayName {
    public static func defaultName(firstName: String?, lastName: String?, fallback: String) -> String {
        let first = firstName?.trimmingCharacters(in: .whitespaces) ?? ""
        guard !first.isEmpty else { return fallback }
        guard let initial = lastName?.trimmingCharacters(in: .whitespaces).first else { return first }
        return "\(first) \(initial)."
    }
}

/// The aggregate shown beside a widget: average, count, distribution, and the period in words.
public struct RatingSummary: Sendable, Equatable {
    public var count: Int
    public var average: Double
    /// Index 0 is 1 star, index 4 is 5 stars.
    public var distribution: [Int]

    public init(ratings: [Int]) {
        var d = [0, 0, 0, 0, 0]
        for r in ratings where (1...5).contains(r) { d[r - 1] += 1 }
        distribution = d
        count = d.reduce(0, +)
        average = count == 0 ? 0 : Double(zip(1...5, d).reduce(0) { $0 + $1.0 * $1.1 }) / Double(count)
    }

    /// e.g. "4,6 von 5 aus 124 Bewertungen der letzten 12 Monate" / "4.6 out of 5 from 124 reviews in the last
    /// 12 months". The average is rounded half up to one decimal.
    public func sentence(locale: String, months: Int = 12) -> String {
        let rounded = (average * 10).rounded(.toNearestOrAwayFromZero) / 10
        let whole = Int(rounded)
        let tenth = Int(((rounded - Double(whole)) * 10).rounded())
        if locale == "en" {
            let noun = count == 1 ? "review" : "reviews"
            return "\(whole).\(tenth) out of 5 from \(count) \(noun) in the last \(months) months"
        }
        let noun = count == 1 ? "Bewertung" : "Bewertungen"
        return "\(whole),\(tenth) von 5 aus \(count) \(noun) der letzten \(months) Monate"
    }
}
