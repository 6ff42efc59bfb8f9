import Foundation

/// What an advocate (or the referred friend) receives.
public enum RewardType: String, Sendable, Codable, CaseIterable {
    /// A voucher code: from the programme's pool, or generated with a prefix when the pool is empty.
    case voucher
    /// Store credit, booked in the credit ledger (the shop reads the balance: `GET /api/v1/referrals/credit`).
    case credit
    /// Money, put on the payout list (CSV and SEPA credit transfer).
    case cash
    /// A premium in kind from the catalogue; the advocate chooses it on the personal page.
    case premium
}

/// One reward: a type and, except for premiums (whose value is the item's cost plus shipping), a value.
public struct RewardSpec: Sendable, Codable, Equatable {
    public var type: RewardType
    /// In minor units of the programme's currency; ignored for premiums.
    public var valueMinor: Int64
    /// For generated voucher codes, e.g. `DANKE` → `DANKE-7K3Q-M2PX`.
    public var voucherPrefix: String?

    public init(type: RewardType, valueMinor: Int64, voucherPrefix: String? = nil) {
        self.type = type
        self.valueMinor = valueMinor
        self.voucherPrefix = voucherPrefix
    }
    enum CodingKeys: String, CodingKey {
        case type
        case valueMinor = "value_minor"
        case voucherPrefix = "voucher_prefix"
    }
}

/// "The n-th successful referral earns an extra reward", once per advocate.
public struct Milestone: Sendable, Codable, Equatable {
    public var count: Int
    public var reward: RewardSpec
    public init(count: Int, reward: RewardSpec) {
        self.count = count
        self.reward = reward
    }
}

/// Which touch wins when an order could be attributed to more than one advocate.
public enum TouchModel: String, Sendable, Codable, CaseIterable {
    case first, last
}

/// A workspace's referral programme ("Kunden werben Kunden"): rewards, conditions, attribution and fraud limits.
public struct ReferralProgramme: Sendable, Codable, Equatable {
    public var active: Bool
    public var currency: String
    /// Where `/r/{code}` sends the friend; the code is appended as `ref`.
    public var targetURL: String
    public var advocateReward: RewardSpec
    /// Double-sided programmes also reward the friend. The friend is never mailed: a voucher reward is the code
    /// itself working as the friend's coupon at checkout, credit is booked to the friend's ledger.
    public var friendReward: RewardSpec?
    /// Shown on the optional landing page and the advocate's share texts ("10 € off your first order").
    public var friendIncentive: String
    public var newCustomersOnly: Bool
    public var minimumOrderMinor: Int64
    /// Items that do not count towards a referral (price-bound books, medical products).
    public var excludedSKUs: [String]
    public var excludedCategories: [String]
    /// At most this many rewarded referrals per advocate in `capDays` days (nil: no cap).
    public var capCount: Int?
    public var capDays: Int
    public var milestones: [Milestone]
    /// Days between a click and an order for a click to count (attribution by device, without cookies).
    public var attributionDays: Int
    /// The longest attribution window a programme may have; click rows are kept longer than this.
    public static let longestAttributionDays = 365
    public var touch: TouchModel
    /// Seconds after delivery before a reward can be approved (Widerrufsrecht: 14 days).
    public var returnWindowSeconds: Int64
    /// Approve rewards when the window has passed; otherwise they wait for a person.
    public var autoApprove: Bool
    /// A referral cookie is set only when the merchant enables it (shops with a cookie consent, §25 TDDDG).
    public var cookie: Bool
    /// The domain the cookie is set for, so that the shop can read it: the shop's domain when Reciprocity runs on a
    /// host below it (`ref.shop.example` for `shop.example`). Empty: the cookie stays on Reciprocity's host.
    public var cookieDomain: String
    /// `/r/{code}` shows a page with the friend's incentive before the shop.
    public var landingPage: Bool
    /// More referrals than this for one advocate in 24 hours are flagged for review.
    public var velocityPerDay: Int
    /// Show advocates a pseudonymized leaderboard on their page.
    public var leaderboard: Bool
    /// The merchant's account that cash rewards are paid from (the SEPA file's debtor).
    public var payerName: String
    public var payerIBAN: String
    public var payerBIC: String

    public init(
        active: Bool = false, currency: String = "EUR", targetURL: String = "",
        advocateReward: RewardSpec = RewardSpec(type: .voucher, valueMinor: 1000, voucherPrefix: "DANKE"),
        friendReward: RewardSpec? = nil, friendIncentive: String = "", newCustomersOnly: Bool = true,
        minimumOrderMinor: Int64 = 0, excludedSKUs: [String] = [], excludedCategories: [String] = [],
        capCount: Int? = nil, capDays: Int = 365, milestones: [Milestone] = [], attributionDays: Int = 30,
        touch: TouchModel = .last, returnWindowSeconds: Int64 = 14 * 86_400, autoApprove: Bool = true,
        cookie: Bool = false, landingPage: Bool = false, velocityPerDay: Int = 5, leaderboard: Bool = false,
        payerName: String = "", payerIBAN: String = "", payerBIC: String = "", cookieDomain: String = ""
    ) {
        self.cookieDomain = cookieDomain
        self.payerName = payerName
        self.payerIBAN = payerIBAN
        self.payerBIC = payerBIC
        self.active = active
        self.currency = currency
        self.targetURL = targetURL
        self.advocateReward = advocateReward
        self.friendReward = friendReward
        self.friendIncentive = friendIncentive
        self.newCustomersOnly = newCustomersOnly
        self.minimumOrderMinor = minimumOrderMinor
        self.excludedSKUs = excludedSKUs
        self.excludedCategories = excludedCategories
        self.capCount = capCount
        self.capDays = capDays
        self.milestones = milestones
        self.attributionDays = attributionDays
        self.touch = touch
        self.returnWindowSeconds = returnWindowSeconds
        self.autoApprove = autoApprove
        self.cookie = cookie
        self.landingPage = landingPage
        self.velocityPerDay = velocityPerDay
        self.leaderboard = leaderboard
    }

    enum CodingKeys: String, CodingKey {
        case active, currency, touch, cookie, milestones, leaderboard
        case targetURL = "target_url"
        case advocateReward = "advocate_reward"
        case friendReward = "friend_reward"
        case friendIncentive = "friend_incentive"
        case newCustomersOnly = "new_customers_only"
        case minimumOrderMinor = "minimum_order_minor"
        case excludedSKUs = "excluded_skus"
        case excludedCategories = "excluded_categories"
        case capCount = "cap_count"
        case capDays = "cap_days"
        case attributionDays = "attribution_days"
        case returnWindowSeconds = "return_window_seconds"
        case autoApprove = "auto_approve"
        case landingPage = "landing_page"
        case velocityPerDay = "velocity_per_day"
        case payerName = "payer_name"
        case payerIBAN = "payer_iban"
        case payerBIC = "payer_bic"
        case cookieDomain = "cookie_domain"
    }

    /// Missing keys take their defaults, so a partial document (API, older stored settings) is complete.
    public init(from decoder: any Decoder) throws {
        let d = ReferralProgramme()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func v<T: Decodable>(_ k: CodingKeys, _ fallback: T) throws -> T {
            try c.decodeIfPresent(T.self, forKey: k) ?? fallback
        }
        self.init(
            active: try v(.active, d.active), currency: try v(.currency, d.currency),
            targetURL: try v(.targetURL, d.targetURL), advocateReward: try v(.advocateReward, d.advocateReward),
            friendReward: try c.decodeIfPresent(RewardSpec.self, forKey: .friendReward),
            friendIncentive: try v(.friendIncentive, d.friendIncentive),
            newCustomersOnly: try v(.newCustomersOnly, d.newCustomersOnly),
            minimumOrderMinor: try v(.minimumOrderMinor, d.minimumOrderMinor),
            excludedSKUs: try v(.excludedSKUs, d.excludedSKUs),
            excludedCategories: try v(.excludedCategories, d.excludedCategories),
            capCount: try c.decodeIfPresent(Int.self, forKey: .capCount), capDays: try v(.capDays, d.capDays),
            milestones: try v(.milestones, d.milestones), attributionDays: try v(.attributionDays, d.attributionDays),
            touch: try v(.touch, d.touch), returnWindowSeconds: try v(.returnWindowSeconds, d.returnWindowSeconds),
            autoApprove: try v(.autoApprove, d.autoApprove), cookie: try v(.cookie, d.cookie),
            landingPage: try v(.landingPage, d.landingPage), velocityPerDay: try v(.velocityPerDay, d.velocityPerDay),
            leaderboard: try v(.leaderboard, d.leaderboard), payerName: try v(.payerName, d.payerName),
            payerIBAN: try v(.payerIBAN, d.payerIBAN), payerBIC: try v(.payerBIC, d.payerBIC),
            cookieDomain: Self.cookieDomain(typed: try v(.cookieDomain, d.cookieDomain)))
    }

    /// A cookie domain as given (API, admin form) in the form it is stored and compared in: trimmed and in lower
    /// case, as browsers compare domain names.
    public static func cookieDomain(typed: String) -> String {
        typed.trimmingCharacters(in: .whitespaces).lowercased()
    }

    /// Whether a cookie set for `domain` reaches `host` (RFC 6265 domain-match): the host is the domain or lies
    /// below it. The domain must be a lower-case name with at least two labels, not an address, and not one of the
    /// public suffixes in `DomainNames.publicSuffixes`.
    public static func covers(_ domain: String, host: String) -> Bool {
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, domain.count <= 253,
            labels.allSatisfy({ l in
                !l.isEmpty && l.count <= 63 && l.first != "-" && l.last != "-"
                    && l.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
            }),
            !(labels.last!.unicodeScalars.allSatisfy { ("0"..."9").contains($0) }),
            !DomainNames.publicSuffixes.contains(domain)
        else { return false }
        return host == domain || host.hasSuffix("." + domain)
    }

    /// Checks the settings as a whole; every problem is reported, each with its field.
    public func validate() -> [DomainError] {
        var errors: [DomainError] = []
        if (try? Currency(currency)) == nil {
            errors.append(.invalid("currency_unknown", "Unknown currency '\(currency)'.", field: "currency"))
        }
        let url = URL(string: targetURL)
        if active && !(["http", "https"].contains(url?.scheme?.lowercased()) && url?.host != nil) {
            errors.append(
                .invalid(
                    "target_url_invalid", "An active programme needs the shop's http(s) address.", field: "target_url"))
        }
        for (field, spec) in [("advocate_reward", advocateReward)]
            + (friendReward.map { [("friend_reward", $0)] } ?? []) + milestones.map { ("milestones", $0.reward) }
        {
            if spec.type != .premium && spec.valueMinor <= 0 {
                errors.append(.invalid("reward_value_invalid", "A reward needs a value above zero.", field: field))
            }
            if let p = spec.voucherPrefix, !p.isEmpty,
                p.count > 12 || !p.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || ("0"..."9").contains($0) })
            {
                errors.append(
                    .invalid(
                        "voucher_prefix_invalid", "A voucher prefix has 1–12 characters A–Z and 0–9.", field: field))
            }
        }
        if let f = friendReward, f.type == .cash || f.type == .premium {
            errors.append(
                .invalid(
                    "friend_reward_type", "The friend is never contacted: their reward is a voucher or credit.",
                    field: "friend_reward"))
        }
        if minimumOrderMinor < 0 {
            errors.append(
                .invalid(
                    "minimum_order_invalid", "The minimum order value cannot be negative.", field: "minimum_order_minor"
                ))
        }
        if let cap = capCount, cap < 1 {
            errors.append(.invalid("cap_invalid", "A cap allows at least one referral.", field: "cap_count"))
        }
        if capDays < 1 {
            errors.append(.invalid("cap_days_invalid", "A cap period is at least one day.", field: "cap_days"))
        }
        if Set(milestones.map(\.count)).count != milestones.count || milestones.contains(where: { $0.count < 2 }) {
            errors.append(
                .invalid("milestone_invalid", "Milestones are distinct counts of 2 or more.", field: "milestones"))
        }
        if !(1...Self.longestAttributionDays).contains(attributionDays) {
            errors.append(
                .invalid("attribution_days_invalid", "The attribution window is 1–365 days.", field: "attribution_days")
            )
        }
        if !(1...(365 * 86_400)).contains(returnWindowSeconds) {
            errors.append(
                .invalid(
                    "return_window_invalid", "The return window is between one second and a year.",
                    field: "return_window_seconds"))
        }
        if !cookieDomain.isEmpty && !Self.covers(cookieDomain, host: url?.host?.lowercased() ?? "") {
            errors.append(
                .invalid(
                    "cookie_domain_invalid",
                    "The cookie domain is a domain name that the shop's address lies in (shop.example for www.shop.example).",
                    field: "cookie_domain"))
        }
        if velocityPerDay < 1 {
            errors.append(.invalid("velocity_invalid", "The velocity limit is at least 1.", field: "velocity_per_day"))
        }
        if !payerIBAN.isEmpty && IBAN(payerIBAN) == nil {
            errors.append(.invalid("iban_invalid", "This is not a valid IBAN.", field: "payer_iban"))
        }
        if !payerBIC.isEmpty && BIC(payerBIC) == nil {
            errors.append(.invalid("bic_invalid", "This is not a valid BIC.", field: "payer_bic"))
        }
        if payerName.count > 70 {
            errors.append(.invalid("payer_name_too_long", "At most 70 characters.", field: "payer_name"))
        }
        if friendIncentive.count > 300 {
            errors.append(.invalid("incentive_too_long", "At most 300 characters.", field: "friend_incentive"))
        }
        return errors
    }

    /// The merchant's account for the SEPA file, when a name and a valid IBAN are set.
    public var payer: SEPA.Debtor? {
        guard let iban = IBAN(payerIBAN), !payerName.isEmpty else { return nil }
        return SEPA.Debtor(name: payerName, iban: iban, bic: BIC(payerBIC))
    }

    /// Whether the advocate can earn a reward of this type (the referral reward or a milestone bonus).
    public func offers(_ type: RewardType) -> Bool {
        advocateReward.type == type || milestones.contains { $0.reward.type == type }
    }

    /// The value a reward counts with (tax report, cost): the spec's value, or a premium's cost plus shipping.
    public func value(of spec: RewardSpec, premiumCost: Int64? = nil) -> Int64 {
        spec.type == .premium ? (premiumCost ?? 0) : spec.valueMinor
    }
}
