import Foundation

/// Storage representation of instants: whole milliseconds since the Unix epoch, portable across engines.
extension Date {
    public var epochMillis: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }
    public init(epochMillis: Int64) { self.init(timeIntervalSince1970: Double(epochMillis) / 1000) }
}

/// ISO 8601 with optional fractional seconds, the wire format of every instant in the API.
public enum ISO8601 {
    public static func parse(_ string: String) -> Date? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        if let d = try? withFraction.parse(string) { return d }
        return try? Date.ISO8601FormatStyle().parse(string)
    }
    public static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
