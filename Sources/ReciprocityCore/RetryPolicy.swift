import Foundation

/// Exponential backoff with full jitter: attempt n waits a random time in [0, min(cap, base · 2^(n-1))].
/// Jitter spreads the retries of many jobs that failed together (an outage) instead of stampeding.
public struct RetryPolicy: Sendable, Equatable {
    public var base: TimeInterval
    public var cap: TimeInterval

    public init(base: TimeInterval = 10, cap: TimeInterval = 3600) {
        self.base = base
        self.cap = cap
    }

    public func delay(afterAttempt attempt: Int, random: any RandomSource) -> TimeInterval {
        let exponent = Double(max(0, min(attempt - 1, 30)))
        let ceiling = min(cap, base * pow(2, exponent))
        // Never zero: a failing job must not spin.
        return max(1, ceiling * random.unit())
    }
}
