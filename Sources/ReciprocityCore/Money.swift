import Foundation

/// ISO 4217 currency with its minor-unit exponent. Only currencies a shop plausibly sells in are accepted.
public struct Currency: Sendable, Hashable, Codable, CustomStringConvertible {
    public let code: String
    public let minorUnits: Int

    static let known: [String: Int] = [
        "EUR": 2, "CHF": 2, "GBP": 2, "USD": 2, "PLN": 2, "CZK": 2, "DKK": 2, "SEK": 2, "NOK": 2, "HUF": 2,
        "RON": 2, "BGN": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0, "ISK": 0, "TRY": 2,
    ]

    public init(_ code: String, field: String = "currency") throws(DomainError) {
        let upper = code.uppercased()
        guard let units = Self.known[upper] else {
            throw .invalid("currency_unknown", "'\(code)' is not a supported ISO 4217 currency code.", field: field)
        }
        self.code = upper
        self.minorUnits = units
    }
    private init(validated code: String, minorUnits: Int) {
        self.code = code
        self.minorUnits = minorUnits
    }
    public static let eur = Currency(validated: "EUR", minorUnits: 2)

    /// A code read back from storage or settings, which were validated when written: EUR for one this build no
    /// longer knows, so that reading an old row never fails.
    public init(stored code: String) {
        self = (try? Currency(code)) ?? .eur
    }
    public var description: String { code }
    /// How a form labels an amount: € for the euro, the code for the others.
    public var symbol: String { code == "EUR" ? "€" : code }
}

/// An amount in a currency's minor units. Decimal strings on the wire, integers in storage.
public struct Money: Sendable, Hashable, Codable {
    public var minor: Int64
    public var currency: Currency

    public init(minor: Int64, currency: Currency) {
        self.minor = minor
        self.currency = currency
    }

    /// Parses a decimal string like `"19.99"` exactly (no floating point). At most the currency's minor digits.
    public init(decimal: String, currency: Currency, field: String, allowNegative: Bool = false) throws(DomainError) {
        var s = Substring(decimal.trimming(.whitespaces))
        var negative = false
        if s.hasPrefix("-") { negative = true; s = s.dropFirst() }
        let pieces = s.split(separator: ".", omittingEmptySubsequences: false)
        guard !s.isEmpty, pieces.count <= 2, let whole = pieces.first, !whole.isEmpty, whole.allSatisfy(\.isASCII),
            whole.allSatisfy(\.isNumber), whole.count <= 13
        else { throw .invalid("amount_invalid", "'\(decimal)' is not a decimal amount like \"19.99\".", field: field) }
        let fraction = pieces.count == 2 ? pieces[1] : ""
        guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }), pieces.count == 1 || !fraction.isEmpty else {
            throw .invalid("amount_invalid", "'\(decimal)' is not a decimal amount like \"19.99\".", field: field)
        }
        guard fraction.count <= currency.minorUnits else {
            throw .invalid(
                "amount_precision", "\(currency.code) amounts have at most \(currency.minorUnits) decimal places.",
                field: field)
        }
        if negative && !allowNegative {
            throw .invalid("amount_negative", "The amount must not be negative.", field: field)
        }
        let padded = String(fraction) + String(repeating: "0", count: currency.minorUnits - fraction.count)
        let value = Int64(whole)! * Self.pow10(currency.minorUnits) + (padded.isEmpty ? 0 : Int64(padded)!)
        minor = negative ? -value : value
        self.currency = currency
    }

    static func pow10(_ n: Int) -> Int64 { (0..<n).reduce(1) { acc, _ in acc * 10 } }

    /// The canonical decimal string, e.g. `"19.90"`.
    public var decimalString: String {
        let scale = Self.pow10(currency.minorUnits)
        let sign = minor < 0 ? "-" : ""
        let absolute = minor.magnitude
        let whole = absolute / UInt64(scale)
        guard currency.minorUnits > 0 else { return "\(sign)\(whole)" }
        let frac = String(absolute % UInt64(scale))
        return "\(sign)\(whole).\(String(repeating: "0", count: currency.minorUnits - frac.count))\(frac)"
    }

    /// German display, e.g. `19,90 €`.
    public func formatted(locale: String) -> String {
        let decimal = decimalString
        if locale.hasPrefix("de") {
            let de = decimal.replacingOccurrences(of: ".", with: ",")
            return currency.code == "EUR" ? "\(de) €" : "\(de) \(currency.code)"
        }
        return currency.code == "EUR" ? "€\(decimal)" : "\(currency.code) \(decimal)"
    }
}
