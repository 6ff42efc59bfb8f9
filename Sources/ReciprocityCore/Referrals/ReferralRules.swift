import Foundation

/// Whether a referred order earns a reward under the programme's conditions, and on which value.
public enum ReferralEligibility: Sendable, Equatable {
    case eligible(baseMinor: Int64)
    case ineligible(reason: ReferralReason)
}

/// A reason recorded with a referral decision. Codes are stored and shown; never rename one.
public enum ReferralReason: String, Sendable, Codable, CaseIterable {
    // Blocking: an obvious self-referral.
    case sameEmail = "same_email"
    case samePayment = "same_payment"
    // Flagging: a doubtful case for the review queue.
    case sameAddress = "same_address"
    case sameDevice = "same_device"
    case disposableEmail = "disposable_email"
    case velocity
    // Conditions: no reward, not fraud.
    case existingCustomer = "existing_customer"
    case belowMinimum = "below_minimum"
    case onlyExcludedItems = "only_excluded_items"
    /// Every unit of the order came back (a return the shop reported with the order).
    case allReturned = "all_returned"
    case capReached = "cap_reached"

    public var blocks: Bool { self == .sameEmail || self == .samePayment }
    public var flags: Bool { [.sameAddress, .sameDevice, .disposableEmail, .velocity].contains(self) }
}

/// What the checks decided about one referred order.
public enum ReferralStatus: String, Sendable, Codable, CaseIterable {
    /// Clean and eligible: rewards follow the lifecycle.
    case accepted
    /// Doubtful: waits in the review queue; its rewards stay pending.
    case flagged
    /// An obvious self-referral.
    case blocked
    /// Attributed, but the conditions give no reward (existing customer, below the minimum, cap).
    case rejected
    /// The order was returned or cancelled.
    case void
    /// The return window passed and the reward was approved: the advocate did the shop a favour.
    case confirmed

    /// Attributed and still on its way to a reward (the advocate's "open" referrals).
    public static let open: [ReferralStatus] = [.accepted, .flagged]
    /// What counts as a referred order in the figures: open or confirmed.
    public static let referred: [ReferralStatus] = open + [.confirmed]
    /// A referral whose held rewards may be approved once their window passes (a flagged one waits for a person).
    public static let approvable: [ReferralStatus] = [.accepted, .confirmed]
}

public struct ReferralDecision: Sendable, Equatable {
    public var status: ReferralStatus
    public var reasons: [ReferralReason]
    public var baseMinor: Int64
}

/// Everything the fraud checks and conditions look at, gathered by the store; the rules stay pure.
public struct ReferralFacts: Sendable {
    public var advocateEmail: EmailAddress
    public var friendEmail: EmailAddress
    /// Normalized shipping addresses of the advocate's own orders.
    public var advocateAddresses: Set<String>
    public var friendAddress: String?
    public var advocatePayments: Set<String>
    public var friendPayment: String?
    /// Hashed IP + user agent seen from the advocate (their page, their orders).
    public var advocateDevices: Set<String>
    public var orderDevice: String?
    public var friendDomainDisposable: Bool
    public var advocateReferralsLast24h: Int
    public var friendHadEarlierOrder: Bool
    public var advocateRewardsInCapPeriod: Int
    public var items: [OrderItem]

    public init(
        advocateEmail: EmailAddress, friendEmail: EmailAddress, advocateAddresses: Set<String> = [],
        friendAddress: String? = nil, advocatePayments: Set<String> = [], friendPayment: String? = nil,
        advocateDevices: Set<String> = [], orderDevice: String? = nil, friendDomainDisposable: Bool = false,
        advocateReferralsLast24h: Int = 0, friendHadEarlierOrder: Bool = false, advocateRewardsInCapPeriod: Int = 0,
        items: [OrderItem] = []
    ) {
        self.advocateEmail = advocateEmail
        self.friendEmail = friendEmail
        self.advocateAddresses = advocateAddresses
        self.friendAddress = friendAddress
        self.advocatePayments = advocatePayments
        self.friendPayment = friendPayment
        self.advocateDevices = advocateDevices
        self.orderDevice = orderDevice
        self.friendDomainDisposable = friendDomainDisposable
        self.advocateReferralsLast24h = advocateReferralsLast24h
        self.friendHadEarlierOrder = friendHadEarlierOrder
        self.advocateRewardsInCapPeriod = advocateRewardsInCapPeriod
        self.items = items
    }
}

public enum ReferralRules {
    /// The decision for a referred order: blocking reasons first, then flags, then the programme's conditions.
    /// Every reason found is listed, so the review queue and the log show the whole picture.
    public static func decide(_ f: ReferralFacts, programme p: ReferralProgramme) -> ReferralDecision {
        var reasons: [ReferralReason] = []
        if f.advocateEmail.canonicalIdentity == f.friendEmail.canonicalIdentity { reasons.append(.sameEmail) }
        if let pay = f.friendPayment, f.advocatePayments.contains(pay) { reasons.append(.samePayment) }
        if let a = f.friendAddress, f.advocateAddresses.contains(a) { reasons.append(.sameAddress) }
        if let d = f.orderDevice, f.advocateDevices.contains(d) { reasons.append(.sameDevice) }
        if f.friendDomainDisposable { reasons.append(.disposableEmail) }
        if f.advocateReferralsLast24h >= p.velocityPerDay { reasons.append(.velocity) }
        var base: Int64 = 0
        switch eligibility(items: f.items, programme: p) {
        case .eligible(let b): base = b
        case .ineligible(let reason): reasons.append(reason)
        }
        if p.newCustomersOnly && f.friendHadEarlierOrder { reasons.append(.existingCustomer) }
        if let cap = p.capCount, f.advocateRewardsInCapPeriod >= cap { reasons.append(.capReached) }

        let status: ReferralStatus =
            if reasons.contains(where: \.blocks) {
                .blocked
            } else if reasons.contains(where: { !$0.blocks && !$0.flags }) {
                .rejected
            } else if reasons.contains(where: \.flags) {
                .flagged
            } else {
                .accepted
            }
        return ReferralDecision(status: status, reasons: reasons, baseMinor: base)
    }

    /// The order value that counts: excluded products and categories do not (price-bound books, medical products),
    /// and neither do returned units. An order whose every unit came back has nothing left that counts.
    public static func eligibility(items: [OrderItem], programme p: ReferralProgramme) -> ReferralEligibility {
        let skus = Set(p.excludedSKUs.map { $0.lowercased() })
        let categories = Set(p.excludedCategories.map { $0.lowercased() })
        let kept = items.filter { $0.keptQuantity > 0 }
        if kept.isEmpty && !items.isEmpty { return .ineligible(reason: .allReturned) }
        let counted = kept.filter {
            !skus.contains($0.sku.lowercased()) && !categories.contains(($0.category ?? "").lowercased())
        }
        if counted.isEmpty && !kept.isEmpty { return .ineligible(reason: .onlyExcludedItems) }
        // Saturating: an order the API took stays below Int64's range, but a job must never trap on one that does not.
        let base = counted.totalMinor(units: \.keptQuantity) ?? .max
        if base < p.minimumOrderMinor { return .ineligible(reason: .belowMinimum) }
        return .eligible(baseMinor: base)
    }

    /// A postal address reduced to what identifies the place: case, spacing, punctuation, umlauts and the usual
    /// street abbreviations do not matter ("Hauptstraße 5" = "hauptstr. 5").
    public static func addressKey(_ a: PostalAddress) -> String {
        func fold(_ s: String) -> String {
            var t = s.lowercased()
                .replacingOccurrences(of: "ä", with: "ae").replacingOccurrences(of: "ö", with: "oe")
                .replacingOccurrences(of: "ü", with: "ue").replacingOccurrences(of: "ß", with: "ss")
            t = t.applyingTransform(.stripDiacritics, reverse: false) ?? t
            for (long, short) in [("strasse", "str"), ("str.", "str"), ("street", "st"), ("st.", "st")] {
                t = t.replacingOccurrences(of: long, with: short)
            }
            return String(t.unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) }.map(Character.init))
        }
        return [fold(a.country), fold(a.postalCode), fold(a.street)].joined(separator: "|")
    }
}

/// The states of a reward. Issue happens once; what follows is a void (before) or a clawback (after).
public enum RewardState: String, Sendable, Codable, CaseIterable {
    /// Earned by an order that is not delivered yet (or a referral under review).
    case pending
    /// Delivered; waits until the return window has passed.
    case held
    /// The window passed and the reward was approved (automatically or by hand).
    case approved
    /// Voucher mailed, credit booked, premium queued or cash on the payout list.
    case issued
    /// Cancelled before issue (return, cancellation, a person's decision).
    case void
    /// Reversed after issue (credit reversed, voucher invalidated, payout cancelled or owed back).
    case clawedBack = "clawed_back"

    public func canTransition(to next: RewardState) -> Bool {
        switch (self, next) {
        case (.pending, .held), (.held, .approved), (.pending, .approved), (.approved, .issued): true
        case (.pending, .void), (.held, .void), (.approved, .void): true
        case (.issued, .clawedBack): true
        default: false
        }
    }
}

/// §22 Nr. 3 EStG: occasional referral premiums are tax-free only below €256 a year in total (a threshold).
public enum RewardTax {
    public static let thresholdMinor: Int64 = 25_600

    public static func reachesThreshold(_ totalMinor: Int64) -> Bool { totalMinor >= thresholdMinor }

    /// The calendar year a reward counts in, in the workspace's time zone.
    public static func year(of date: Date, timeZone: String) -> Int {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: timeZone) ?? TimeZone(identifier: "Europe/Berlin")!
        return cal.component(.year, from: date)
    }
}

/// The programme's figures for a period.
public struct ReferralFigures: Sendable, Equatable, Codable {
    public var clicks: Int64
    /// Active advocates.
    public var advocates: Int64
    /// Customers with a delivered order: the base a K-factor is measured against.
    public var customers: Int64
    public var referredOrders: Int64
    public var revenueMinor: Int64
    public var rewardCostMinor: Int64
    public var currency: String

    public init(
        clicks: Int64, advocates: Int64, customers: Int64, referredOrders: Int64, revenueMinor: Int64,
        rewardCostMinor: Int64, currency: String
    ) {
        self.clicks = clicks
        self.advocates = advocates
        self.customers = customers
        self.referredOrders = referredOrders
        self.revenueMinor = revenueMinor
        self.rewardCostMinor = rewardCostMinor
        self.currency = currency
    }

    /// Referred orders per click.
    public var conversion: Double? { clicks == 0 ? nil : Double(referredOrders) / Double(clicks) }
    /// Shares (clicks that reached a friend) per customer.
    public var sharesPerCustomer: Double? { customers == 0 ? nil : Double(clicks) / Double(customers) }
    /// K-factor = shares per customer × conversion: new customers each customer brings.
    public var kFactor: Double? {
        guard let s = sharesPerCustomer, let c = conversion else { return nil }
        return s * c
    }
    /// (revenue − cost) / cost.
    public var roi: Double? {
        rewardCostMinor == 0 ? nil : Double(revenueMinor - rewardCostMinor) / Double(rewardCostMinor)
    }
}

/// A leaderboard row shows no name: the first letter and the number of confirmed referrals.
public enum Pseudonym {
    public static func of(firstName: String?, advocateID: Int64) -> String {
        let initial = (firstName?.trimmingCharacters(in: .whitespaces).first).map { String($0).uppercased() } ?? "?"
        return "\(initial). #\(advocateID)"
    }
}

/// A user agent reduced to its family, the only part of it a click keeps.
public enum UserAgentFamily {
    /// Byte-wise on the ASCII-lowercased agent: every click is classified at the flush, and Foundation's `contains`
    /// on `String` cost tens of microseconds per agent (docs/decisions/0011-event-loop-routes.md).
    public static func of(_ ua: String) -> String {
        if ua.isEmpty { return "unknown" }
        var u = Array(ua.utf8)
        for i in u.indices where (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(u[i]) { u[i] |= 0x20 }
        func has(_ needle: StaticString) -> Bool {
            let n = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
            guard n.count <= u.count else { return false }
            return (0...(u.count - n.count)).contains { i in n.indices.allSatisfy { u[i + $0] == n[$0] } }
        }
        func starts(_ needle: StaticString) -> Bool {
            let n = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
            return u.starts(with: n)
        }
        if has("bot") || has("spider") || has("crawl") || has("preview") { return "bot" }
        if starts("curl") || starts("wget") || starts("python") || has("wrk") { return "tool" }
        if has("whatsapp") { return "whatsapp" }
        if has("edg/") { return "edge" }
        if has("firefox") { return "firefox" }
        if has("chrome") || has("chromium") { return "chrome" }
        if has("safari") { return "safari" }
        return "other"
    }
}
