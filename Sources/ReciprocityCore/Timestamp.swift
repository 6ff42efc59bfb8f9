import Foundation

/// Storage representation of instants: whole milliseconds since the Unix epoch, portable across engines.
extension Date {
    /// To the nearest millisecond. `Date` keeps seconds since 2001 as a `Double`, so a date made from whole
    /// milliseconds often comes back a hair below them: rounding down turned one in 24 of them into the millisecond
    /// before, on every trip through the database.
    public var epochMillis: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    public init(epochMillis: Int64) { self.init(timeIntervalSince1970: Double(epochMillis) / 1000) }
    /// The UTC day, as whole days since 1970-01-01 (earlier instants count down from -1).
    public var epochDay: Int64 { CivilDate.floorDivision(epochMillis, 86_400_000).quotient }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible Low-Level Date
/// Algorithms"): the formatters of instants use it instead of a Calendar, which costs more than the rest of them.
public enum CivilDate {
    /// The English abbreviations that mail (RFC 5322) and HTTP (RFC 9110) dates use, whatever the locale.
    public static let weekdayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    public static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// A UTC date and time of day, to the second.
    public struct Fields: Sendable {
        public var year: Int
        /// 1...12
        public var month: Int
        public var day: Int
        /// 0 = Sunday
        public var weekday: Int
        public var hour: Int
        public var minute: Int
        public var second: Int
    }

    /// The UTC fields of the second `epochSeconds` after 1970-01-01T00:00:00Z (before it when negative).
    public static func fields(epochSeconds: Int64) -> Fields {
        let (days, secondOfDay) = floorDivision(epochSeconds, 86_400)
        let (year, month, day) = from(daysSince1970: days)
        let second = Int(secondOfDay)
        return Fields(
            year: Int(year), month: Int(month), day: Int(day),
            weekday: Int(floorDivision(days + 4, 7).remainder),  // 1970-01-01 was a Thursday
            hour: second / 3600, minute: second / 60 % 60, second: second % 60)
    }

    public static func from(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = floorDivision(z, 146_097).quotient
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Division rounding down, and the remainder that goes with it (never negative for a positive divisor).
    static func floorDivision(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        let q = a / b - (a % b < 0 ? 1 : 0)
        return (q, a - q * b)
    }
}

/// ISO 8601 with optional fractional seconds, the wire format of every instant in the API.
public enum ISO8601 {
    public static func parse(_ string: String) -> Date? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        if let d = try? withFraction.parse(string) { return d }
        return try? Date.ISO8601FormatStyle().parse(string)
    }
    /// `2026-11-23T00:29:32.893Z`: UTC, to the millisecond (`epochMillis`). Written by hand: it is called for every
    /// instant of every API response, and `ISO8601FormatStyle` both cost more than the rest of a small response and
    /// cut the milliseconds down, so a stored `.893` came out as `.892`.
    public static func format(_ date: Date) -> String {
        let ms = date.epochMillis
        let (days, msOfDay) = CivilDate.floorDivision(ms, 86_400_000)
        let (year, month, day) = CivilDate.from(daysSince1970: days)
        guard (0...9999).contains(year) else {
            return date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        }
        var out = [UInt8]()
        out.reserveCapacity(24)
        func digits(_ value: Int64, _ count: Int) {
            var divisor: Int64 = 1
            for _ in 1..<count { divisor *= 10 }
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(year, 4)
        out.append(UInt8(ascii: "-"))
        digits(month, 2)
        out.append(UInt8(ascii: "-"))
        digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(msOfDay / 3_600_000, 2)
        out.append(UInt8(ascii: ":"))
        digits(msOfDay / 60_000 % 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(msOfDay / 1000 % 60, 2)
        out.append(UInt8(ascii: "."))
        digits(msOfDay % 1000, 3)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }
}
