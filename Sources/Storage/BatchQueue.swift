import Synchronization

/// Gathers concurrent calls into batches, so that one transaction (and one statement per table) serves many callers.
///
/// - A call that finds a lane free starts a batch at once: with no concurrency there is no waiting and no batch of
///   more than one.
/// - Calls that arrive while every lane is busy queue up; the next free lane takes as many as fit into one batch,
///   oldest first.
/// - A batch never holds two items with the same `key` (an order's workspace and external id). An item whose key is
///   already in a running batch waits for that batch to end, so the same key is never written by two batches at once
///   and its calls run in the order they arrived.
/// - Every call is answered exactly once, with its own item's result.
final class BatchQueue<Key: Hashable & Sendable, Item: Sendable, Output: Sendable>: Sendable {
    typealias Runner = @Sendable ([Item]) async -> [Result<Output, any Error>]

    private struct Waiting {
        var key: Key
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var busyLanes = 0
        var inFlight: Set<Key> = []
        /// Batches run so far and items in them: tests read how much coalescing happened.
        var batches = 0
        var items = 0
    }

    /// A runner answered a different number of results than it was given items.
    struct UnansweredItem: Error, CustomStringConvertible {
        var description: String { "the batch ended without an answer for this item" }
    }

    private let state = Mutex(State())
    let lanes: Int
    let maxBatch: Int

    /// - Parameters:
    ///   - lanes: how many batches may run at once.
    ///   - maxBatch: the most items in one batch.
    init(lanes: Int, maxBatch: Int) {
        precondition(lanes >= 1 && maxBatch >= 1)
        self.lanes = lanes
        self.maxBatch = maxBatch
    }

    /// (batches run, items in them) so far.
    var counts: (batches: Int, items: Int) { state.withLock { ($0.batches, $0.items) } }

    /// Calls queued and not yet taken into a batch.
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// Queues `item` and answers its result. `run` runs one batch and answers one result per item, in the items'
    /// order; a lane started by this call uses it for every batch it runs, so all callers must pass the same logic.
    func submit(key: Key, _ item: Item, run: @escaping Runner) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.waiting.append(Waiting(key: key, item: item, continuation: continuation))
                guard s.busyLanes < lanes else { return false }
                s.busyLanes += 1
                return true
            }
            if start { Task { await self.drain(run) } }
        }
    }

    /// Runs batches on one lane until nothing it may take is left.
    private func drain(_ run: Runner) async {
        while let batch = take() {
            let results = await run(batch.map(\.item))
            state.withLock { s in
                for w in batch { s.inFlight.remove(w.key) }
            }
            for (i, w) in batch.enumerated() {
                w.continuation.resume(with: i < results.count ? results[i] : .failure(UnansweredItem()))
            }
        }
    }

    /// The next batch for a lane, or nil (and the lane freed) when nothing can be taken now. Items left behind
    /// because their key is in flight are taken by the lane that finishes that key.
    private func take() -> [Waiting]? {
        state.withLock { s in
            var batch: [Waiting] = []
            var rest: [Waiting] = []
            rest.reserveCapacity(s.waiting.count)
            for w in s.waiting {
                if batch.count < maxBatch, !s.inFlight.contains(w.key) {
                    s.inFlight.insert(w.key)
                    batch.append(w)
                } else {
                    rest.append(w)
                }
            }
            guard !batch.isEmpty else {
                s.busyLanes -= 1
                return nil
            }
            s.waiting = rest
            s.batches += 1
            s.items += batch.count
            return batch
        }
    }
}
