import Foundation

/// Transactional mail is what the person asked for just now (a DOI confirmation, the download they requested).
/// Marketing is everything else (review requests, follow-ups, thank-you offers): it needs consent or §7(3).
public enum MailClass: String, Sendable, Codable, CaseIterable {
    case transactional, marketing
}

/// Every kind of mail the product sends, with its class and, for marketing, the consent purpose it needs.
public enum MessageKind: String, Sendable, Codable, CaseIterable {
    case doiConfirmation = "doi_confirmation"
    case giftDelivery = "gift_delivery"
    case reviewRequest = "review_request"
    case reviewReminder = "review_reminder"
    case thankYou = "thank_you"
    /// A step of a lead magnet's "give, then ask" sequence.
    case leadFollowUp = "lead_follow_up"
    /// The advocate's personal link and code, right after joining the referral programme.
    case referralWelcome = "referral_welcome"
    /// A referral reward was issued (voucher, credit, payout or premium).
    case referralReward = "referral_reward"
    /// A premium in kind the advocate earned went out (marked as shipped).
    case referralPremiumShipped = "referral_premium_shipped"

    public var mailClass: MailClass {
        switch self {
        case .doiConfirmation, .giftDelivery, .referralWelcome, .referralReward, .referralPremiumShipped: .transactional
        case .reviewRequest, .reviewReminder, .thankYou, .leadFollowUp: .marketing
        }
    }

    /// The consent purpose a marketing mail of this kind needs.
    public var purpose: ConsentPurpose? {
        switch self {
        case .doiConfirmation, .giftDelivery, .referralWelcome, .referralReward, .referralPremiumShipped: nil
        case .reviewRequest, .reviewReminder: .reviewRequest
        case .thankYou, .leadFollowUp: .newsletter
        }
    }
}

/// "At most `count` marketing mails per contact in `days` days". Default 2 in 7.
public struct FrequencyCap: Sendable, Equatable, Codable {
    public var count: Int
    public var days: Int
    public init(count: Int = 2, days: Int = 7) {
        self.count = count
        self.days = days
    }
}

/// Hours in the workspace's time zone when no marketing mail goes out; a mail due then waits for the end.
/// `start` may be after `end` (the usual overnight window, e.g. 20 → 8).
public struct QuietHours: Sendable, Equatable, Codable {
    public var startHour: Int
    public var endHour: Int
    public var timeZone: String
    public init(startHour: Int = 20, endHour: Int = 8, timeZone: String = "Europe/Berlin") {
        self.startHour = startHour
        self.endHour = endHour
        self.timeZone = timeZone
    }

    public var isDisabled: Bool { startHour == endHour }

    /// nil when `date` is outside the window; otherwise the moment the window ends.
    public func end(ifQuietAt date: Date) -> Date? {
        guard !isDisabled, let tz = TimeZone(identifier: timeZone) else { return nil }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = tz
        let hour = cal.component(.hour, from: date)
        let quiet = startHour < endHour ? (hour >= startHour && hour < endHour) : (hour >= startHour || hour < endHour)
        guard quiet else { return nil }
        var day = cal.startOfDay(for: date)
        if hour >= endHour { day = cal.date(byAdding: .day, value: 1, to: day) ?? day }
        return cal.date(bySettingHour: endHour, minute: 0, second: 0, of: day)
    }
}

/// What the send-time policy needs to know about one mail and its recipient.
public struct SendCheck: Sendable {
    public var kind: MessageKind
    /// The address is on the suppression list, and why (objection, unsubscribe, bounce, complaint).
    public var suppression: String?
    /// The state of the kind's consent purpose for this contact (nil: none on record).
    public var consent: ConsentState?
    /// The workspace switched on the §7(3) UWG mode for this kind, and the contact's address came from a sale with
    /// the objection notice recorded at checkout.
    public var existingCustomerBasis: Bool
    /// When the recipient's recent marketing mails went out (any order).
    public var recentMarketing: [Date]
    public var cap: FrequencyCap
    public var quietHours: QuietHours
    public var now: Date

    public init(
        kind: MessageKind, suppression: String?, consent: ConsentState?, existingCustomerBasis: Bool = false,
        recentMarketing: [Date] = [], cap: FrequencyCap = FrequencyCap(), quietHours: QuietHours = QuietHours(),
        now: Date
    ) {
        self.kind = kind
        self.suppression = suppression
        self.consent = consent
        self.existingCustomerBasis = existingCustomerBasis
        self.recentMarketing = recentMarketing
        self.cap = cap
        self.quietHours = quietHours
        self.now = now
    }
}

public enum SendDecision: Sendable, Equatable {
    case send(LegalBasis?)
    /// Not now: the frequency cap or quiet hours. Try again at `until`.
    case wait(until: Date, reason: String)
    /// Never: no legal basis, or the address is suppressed. The reason is logged with the outbox row.
    case skip(reason: String)
}

/// The one place that decides whether a mail may go out now. Pure: the pipeline asks it at send time.
public enum SendPolicy {
    /// Suppression reasons that stop even transactional mail: the address does not work or complained.
    public static let deliverabilityReasons: Set = ["bounce", "complaint"]

    public static func decide(_ c: SendCheck) -> SendDecision {
        if let reason = c.suppression {
            if c.kind.mailClass == .marketing || deliverabilityReasons.contains(reason) {
                return .skip(reason: "suppressed: \(reason)")
            }
        }
        guard c.kind.mailClass == .marketing else { return .send(nil) }
        let basis: LegalBasis
        if c.consent == .granted {
            basis = .consent
        } else if c.existingCustomerBasis && c.consent != .withdrawn {
            basis = .existingCustomer
        } else {
            let state = c.consent?.rawValue ?? "none"
            return .skip(reason: "no consent for \(c.kind.purpose?.rawValue ?? "marketing") (state: \(state))")
        }
        let window = TimeInterval(c.cap.days) * 86_400
        let recent = c.recentMarketing.filter { $0 > c.now.addingTimeInterval(-window) }.sorted()
        if recent.count >= c.cap.count, c.cap.count > 0 {
            // The earliest moment at which one of the recent mails leaves the window.
            let until = recent[recent.count - c.cap.count].addingTimeInterval(window + 1)
            return .wait(until: until, reason: "frequency cap: \(c.cap.count) in \(c.cap.days) days")
        }
        if c.cap.count == 0 { return .skip(reason: "frequency cap is 0") }
        if let end = c.quietHours.end(ifQuietAt: c.now) {
            return .wait(until: end, reason: "quiet hours")
        }
        return .send(basis)
    }
}

/// A per-workspace sending rate (RFC-less, provider limits): `rate` tokens per second, up to `burst` saved.
public struct TokenBucket: Sendable, Equatable {
    public var rate: Double
    public var burst: Double
    public private(set) var tokens: Double
    public private(set) var updated: Date

    public init(rate: Double, burst: Double, now: Date) {
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = max(1, burst)
        self.updated = now
    }

    /// Takes a token if there is one; otherwise returns how long until there will be.
    public mutating func take(now: Date) -> TimeInterval? {
        let elapsed = max(0, now.timeIntervalSince(updated))
        tokens = min(burst, tokens + elapsed * rate)
        updated = now
        if tokens >= 1 {
            tokens -= 1
            return nil
        }
        return (1 - tokens) / rate
    }
}
