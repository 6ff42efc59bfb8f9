import Foundation

/// A magnet's funnel and economics: the counts come from the daily counters (which survive erasure and expiry),
/// the buyers and revenue from the orders of confirmed contacts after their confirmation.
public struct LeadStats: Sendable, Equatable, Codable {
    public var views: Int64
    public var signups: Int64
    public var confirmations: Int64
    public var downloads: Int64
    public var buyers30: Int64
    public var buyers90: Int64
    /// Revenue of the buyers' orders within 90 days of confirming, in the magnet's currency.
    public var revenueMinor: Int64
    public var totalCostMinor: Int64
    public var currency: String

    public init(
        views: Int64 = 0, signups: Int64 = 0, confirmations: Int64 = 0, downloads: Int64 = 0, buyers30: Int64 = 0,
        buyers90: Int64 = 0, revenueMinor: Int64 = 0, totalCostMinor: Int64 = 0, currency: String = "EUR"
    ) {
        self.views = views
        self.signups = signups
        self.confirmations = confirmations
        self.downloads = downloads
        self.buyers30 = buyers30
        self.buyers90 = buyers90
        self.revenueMinor = revenueMinor
        self.totalCostMinor = totalCostMinor
        self.currency = currency
    }

    /// Cost: the fixed cost once, plus the unit cost per gift handed out (one per confirmation).
    public static func cost(unit: Money, fixed: Money, confirmations: Int64) -> Int64 {
        fixed.minor + unit.minor * confirmations
    }

    /// Confirmations per signup, 0…1 (nil without signups).
    public var doiRate: Double? { signups == 0 ? nil : Double(confirmations) / Double(signups) }
    /// Signups per view.
    public var signupRate: Double? { views == 0 ? nil : Double(signups) / Double(views) }
    /// Total cost per confirmed lead (nil without leads).
    public var costPerLeadMinor: Int64? { confirmations == 0 ? nil : totalCostMinor / confirmations }
    /// Total cost per buyer within 90 days (nil without buyers).
    public var costPerBuyerMinor: Int64? { buyers90 == 0 ? nil : totalCostMinor / buyers90 }
}

/// One day of a magnet's counters, for the charts.
public struct LeadDay: Sendable, Equatable {
    public var day: String
    public var views: Int64
    public var signups: Int64
    public var confirmations: Int64
    public var downloads: Int64
    public init(day: String, views: Int64, signups: Int64, confirmations: Int64, downloads: Int64) {
        self.day = day
        self.views = views
        self.signups = signups
        self.confirmations = confirmations
        self.downloads = downloads
    }
}

/// Voucher codes: imported ones are cleaned, generated ones are readable (no 0/O, 1/I/L).
public enum VoucherCodes {
    static let alphabet = Array("ABCDEFGHJKMNPQRSTUVWXYZ23456789")

    /// Codes from a CSV or text import: the first column of each line, trimmed; a header line `code` is skipped.
    public static func clean(_ lines: [String]) throws(DomainError) -> [String] {
        var out: [String] = []
        for (i, line) in lines.enumerated() {
            let code = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if code.isEmpty || (i == 0 && code.lowercased() == "code") { continue }
            guard code.count <= 64, code.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F }) else {
                throw .invalid(
                    "voucher_code_invalid", "Line \(i + 1): a code has 1–64 printable ASCII characters, no spaces.",
                    field: "codes")
            }
            out.append(code)
        }
        return out
    }

    /// `PREFIX-XXXX-XXXX` from 16 `random` bytes (8 symbols, about 39 bits; two bytes per symbol keep the
    /// modulo bias below 0.05 %).
    public static func generate(prefix: String, random: [UInt8]) -> String {
        let symbols = stride(from: 0, to: min(16, random.count - 1), by: 2).map {
            alphabet[(Int(random[$0]) << 8 | Int(random[$0 + 1])) % alphabet.count]
        }
        let body = String(symbols.prefix(4)) + "-" + String(symbols.dropFirst(4))
        return prefix.isEmpty ? body : "\(prefix)-\(body)"
    }

    /// The codes for a pool: `given` ones cleaned, or `generate` new ones (1–100,000) with an A–Z/0–9 prefix.
    public static func batch(given: [String]?, generate: Int?, prefix: String?, random: any RandomSource)
        throws(DomainError) -> [String]
    {
        if let given { return try clean(given) }
        guard let n = generate, (1...100_000).contains(n) else {
            throw .invalid("vouchers_missing", "Give codes, or generate 1 to 100,000.", field: "generate")
        }
        let p = (prefix ?? "").uppercased()
        guard validPrefix(p) else {
            throw .invalid("prefix_invalid", "A prefix has up to 20 letters A–Z and digits.", field: "prefix")
        }
        return (0..<n).map { _ in VoucherCodes.generate(prefix: p, random: random.bytes(16)) }
    }

    public static func validPrefix(_ prefix: String) -> Bool {
        prefix.count <= 20 && prefix.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
    }
}
