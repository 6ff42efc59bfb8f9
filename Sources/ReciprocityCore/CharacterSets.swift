import Foundation

extension String {
    /// `trimmingCharacters(in: set)`, without Foundation's work when neither end is in `set`: the usual case for
    /// every field of every request, where that work was a visible share of validating an order.
    public func trimming(_ set: CharacterSet) -> String {
        guard let first = unicodeScalars.first, let last = unicodeScalars.last,
            set.contains(first) || set.contains(last)
        else { return self }
        return trimmingCharacters(in: set)
    }
}

/// A `CharacterSet`'s ASCII part as a table built from the set itself, so a hot check of plain ASCII text does not
/// ask Foundation per character, and cannot disagree with the set.
public struct ASCIIMembership: Sendable {
    private let table: [Bool]

    public init(_ set: CharacterSet) {
        table = (0..<128).map { set.contains(Unicode.Scalar(UInt8($0))) }
    }

    /// False for every byte outside ASCII.
    public func contains(_ byte: UInt8) -> Bool { byte < 128 && table[Int(byte)] }
}
