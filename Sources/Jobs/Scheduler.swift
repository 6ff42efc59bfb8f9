import Foundation
import Logging
import ReciprocityCore
import ServiceLifecycle
import Storage

/// A periodic task: every `interval`, one job of `kind` is enqueued for the whole installation.
public struct PeriodicTask: Sendable {
    public var name: String
    public var kind: String
    public var interval: TimeInterval
    public init(name: String, kind: String, interval: TimeInterval) {
        self.name = name
        self.kind = kind
        self.interval = interval
    }
}

/// Turns periodic tasks into jobs. Each tick runs under the scheduler's advisory lock (one node at a time on
/// PostgreSQL), and each slot's job has an idempotency key, so even overlapping ticks enqueue a slot once.
public struct Scheduler: Service {
    let store: Store
    let tasks: [PeriodicTask]
    let tick: Duration
    let logger: Logger
    let onEnqueue: @Sendable () -> Void

    public init(
        store: Store, tasks: [PeriodicTask], tick: Duration = .seconds(5), logger: Logger,
        onEnqueue: @escaping @Sendable () -> Void = {}
    ) {
        self.store = store
        self.tasks = tasks
        self.tick = tick
        self.logger = logger
        self.onEnqueue = onEnqueue
    }

    /// Enqueues the jobs due now. Returns how many were new.
    @discardableResult
    public func runOnce() async throws -> Int {
        let now = store.clock.now()
        let tasks = self.tasks
        let store = self.store
        let added = try await store.withSchedulerLock { tx in
            var added = 0
            for task in tasks {
                let slot = Int64(now.timeIntervalSince1970 / task.interval)
                if try await store.enqueue(
                    tx,
                    JobRequest(
                        kind: task.kind, workspaceID: nil, payload: #"{"slot":\#(slot)}"#, runAt: now,
                        idempotencyKey: "schedule:\(task.name):\(slot)", maxAttempts: 3)) != nil
                {
                    added += 1
                }
            }
            return added
        }
        if let added, added > 0 { onEnqueue() }
        return added ?? 0
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do { try await runOnce() } catch { logger.error("scheduler tick failed", metadata: ["error": "\(error)"]) }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
        }
    }
}
