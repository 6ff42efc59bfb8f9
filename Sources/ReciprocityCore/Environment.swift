import Foundation

/// The wall clock, injected so that domain code and tests never read `Date()` directly.
public protocol WallClock: Sendable {
    func now() -> Date
}

/// The system clock.
public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that only moves when told to; for tests and simulations.
public final class ManualClock: WallClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    public init(_ start: Date = Date(timeIntervalSince1970: 1_790_000_000)) { current = start }
    public func now() -> Date { lock.withLock { current } }
    public func advance(by seconds: TimeInterval) { lock.withLock { current += seconds } }
    public func set(_ date: Date) { lock.withLock { current = date } }
}

/// Source of unguessable tokens and random numbers, injected so tests can pin them.
public protocol RandomSource: Sendable {
    /// `count` cryptographically random bytes.
    func bytes(_ count: Int) -> [UInt8]
    /// A uniformly random double in [0, 1).
    func unit() -> Double
}

public struct SystemRandom: RandomSource {
    public init() {}
    /// Eight bytes per draw: each draw of `SystemRandomNumberGenerator` is a `getrandom` call on Linux, and a draw per
    /// byte made the request id alone cost about 6% of the bare route.
    public func bytes(_ count: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        var result = [UInt8]()
        result.reserveCapacity(count + 7)
        while result.count < count {
            withUnsafeBytes(of: rng.next() as UInt64) { result.append(contentsOf: $0) }
        }
        result.removeLast(result.count - count)
        return result
    }
    public func unit() -> Double { Double.random(in: 0..<1) }
}

/// A deterministic random source (SplitMix64) for tests and the demo seeder.
public final class SeededRandom: RandomSource, @unchecked Sendable {
    private let lock = NSLock()
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public func next() -> UInt64 {
        lock.withLock {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
    public func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
    public func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    public func int(below n: Int) -> Int { Int(next() % UInt64(n)) }
    public func pick<T>(_ items: [T]) -> T { items[int(below: items.count)] }
}

extension RandomSource {
    /// A URL-safe token with `bytes` bytes of entropy (base32, lower case, no padding).
    public func token(bytes: Int = 20) -> String { Base32.encode(self.bytes(bytes)) }
}

/// RFC 4648 base32 without padding, lower-cased: readable, URL-safe, case-insensitive.
public enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
    public static func encode(_ data: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((data.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in data {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
