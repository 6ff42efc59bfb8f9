import Foundation
import Logging
import Metrics
import ReciprocityCore
import ServiceLifecycle
import Storage
import Synchronization

/// Handles one kind of job. `run` gets the job and an open transaction: effects written through it commit
/// together with the job's completion, and only if this worker still holds the job's lease.
public struct JobHandler: Sendable {
    public var kind: String
    public var run: @Sendable (_ job: Job, _ tx: any SQLExecutor) async throws -> Void
    /// For work that must not hold a transaction open (network I/O such as SMTP): runs first, outside any
    /// transaction; the handler keeps its own effects consistent (e.g. the outbox state machine).
    public var external: (@Sendable (_ job: Job) async throws -> Void)?
    public init(kind: String, run: @escaping @Sendable (_ job: Job, _ tx: any SQLExecutor) async throws -> Void) {
        self.kind = kind
        self.run = run
    }

    /// A handler whose work runs outside the job's transaction; only the fenced completion is transactional.
    public init(kind: String, external: @escaping @Sendable (_ job: Job) async throws -> Void) {
        self.kind = kind
        self.run = { _, _ in }
        self.external = external
    }
}

/// A handler's way of saying "do not retry": the job goes straight to the dead-letter state.
public struct PermanentJobError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Claims due jobs and runs them. Several workers (threads or nodes) can run at once: claims are leases.
///
/// It claims only as many jobs as it has free slots and starts each at once, so nothing it holds sits idle. On
/// graceful shutdown it stops claiming and lets running jobs finish and commit; their leases end with them.
public final class JobWorker: Service, @unchecked Sendable {
    public struct Options: Sendable {
        public var concurrency = 4
        public var lease: TimeInterval = 300
        public var idlePoll: Duration = .milliseconds(500)
        public var retry = RetryPolicy()
        public init() {}
    }

    let store: Store
    let handlers: [String: JobHandler]
    let options: Options
    let random: any RandomSource
    let logger: Logger
    public let workerID: String
    let wakeups = WakeSignal()
    /// Claim rounds so far (each is one claim statement or transaction); an idle worker adds one per `idlePoll`.
    var claimRounds: Int { rounds.load(ordering: .relaxed) }
    private let rounds = Atomic<Int>(0)

    public init(
        store: Store, handlers: [JobHandler], options: Options = Options(), random: any RandomSource = SystemRandom(),
        logger: Logger, workerID: String? = nil
    ) {
        self.store = store
        self.handlers = Dictionary(handlers.map { ($0.kind, $0) }, uniquingKeysWith: { $1 })
        self.options = options
        self.random = random
        self.logger = logger
        self.workerID =
            workerID
            ?? "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier):\(random.token(bytes: 4))"
    }

    /// Asks an idle worker to look for work now (after an enqueue in this process).
    public func wake() { wakeups.signal() }

    public func run() async throws {
        logger.info("job worker started", metadata: ["worker": "\(workerID)", "kinds": "\(handlers.keys.sorted())"])
        let slots = Slots(options.concurrency)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    let free = await slots.free
                    guard free > 0 else {
                        await slots.waitForRelease()
                        continue
                    }
                    var claimed: [Job] = []
                    rounds.add(1, ordering: .relaxed)
                    do {
                        claimed = try await store.claimJobs(
                            worker: workerID, limit: free, lease: options.lease, kinds: Array(handlers.keys))
                    } catch {
                        logger.error("claiming jobs failed", metadata: ["error": "\(error)"])
                    }
                    for job in claimed {
                        await slots.take()
                        group.addTask {
                            await self.execute(job)
                            await slots.release()
                        }
                    }
                    if claimed.isEmpty { await wakeups.wait(upTo: options.idlePoll) }
                }
                // Leaving the group waits for the jobs still running: they finish and commit.
            }
        } onGracefulShutdown: {
            self.wakeups.signal()
        }
        logger.info("job worker stopped", metadata: ["worker": "\(workerID)"])
    }

    /// Counts free execution slots; the loop waits on a release when all are taken.
    actor Slots {
        private(set) var free: Int
        private var waiter: CheckedContinuation<Void, Never>?
        init(_ n: Int) { free = n }
        func take() { free -= 1 }
        func release() {
            free += 1
            waiter?.resume()
            waiter = nil
        }
        func waitForRelease() async {
            guard free == 0 else { return }
            await withCheckedContinuation { waiter = $0 }
        }
    }

    /// Runs one job to an outcome: completed (fenced), retried with backoff, or dead.
    public func execute(_ job: Job) async {
        guard let handler = handlers[job.kind] else {
            _ = try? await store.failJob(job, error: "no handler for kind \(job.kind)", retryAt: nil)
            return
        }
        let started = ContinuousClock.now
        do {
            if let external = handler.external { try await external(job) }
            let committed = try await store.db.transaction { tx in
                try await handler.run(job, tx)
                guard try await self.store.completeJob(tx, job) else { throw LeaseLost() }
                return true
            }
            if committed {
                Counter(label: "reciprocity_jobs_completed_total", dimensions: [("kind", job.kind)]).increment()
            }
        } catch is LeaseLost {
            logger.warning("job lease lost; effect rolled back", metadata: ["job": "\(job.id)", "kind": "\(job.kind)"])
        } catch {
            let permanent = error is PermanentJobError || (error as? DomainError)?.kind == .invalid
            let retryAt =
                permanent
                ? nil
                : store.clock.now().addingTimeInterval(options.retry.delay(afterAttempt: job.attempts, random: random))
            let state = (try? await store.failJob(job, error: "\(error)", retryAt: retryAt)) ?? .queued
            Counter(
                label: "reciprocity_jobs_failed_total", dimensions: [("kind", job.kind), ("state", state.rawValue)]
            )
            .increment()
            logger.warning(
                "job failed",
                metadata: [
                    "job": "\(job.id)", "kind": "\(job.kind)", "attempt": "\(job.attempts)",
                    "next": "\(state.rawValue)", "error": "\(error)",
                ])
        }
        let elapsed = (ContinuousClock.now - started).components
        Timer(label: "reciprocity_job_duration_seconds", dimensions: [("kind", job.kind)])
            .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
    }

    struct LeaseLost: Error {}
}

/// Ends an idle worker's wait early. A signal that finds no one waiting is kept for the next wait, so an enqueue
/// that lands between an empty claim and the wait is not lost. One task waits at a time (the worker's loop).
///
/// The wait is a plain sleep that `signal` cancels. (It used to race the sleep against an `AsyncStream` of
/// wake-ups; cancelling the losing `next()` finishes an `AsyncStream` for good, so after the first quiet
/// `idlePoll` every wait returned at once and an idle worker claimed in a busy loop.)
final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var sleeper: Task<Void, Never>?
    }
    private let state = Mutex(State())

    /// Whether a wait is sleeping now (for tests).
    var isWaiting: Bool { state.withLock { $0.sleeper != nil } }

    func signal() {
        state.withLock { s in
            if let sleeper = s.sleeper {
                sleeper.cancel()
                s.sleeper = nil
            } else {
                s.pending = true
            }
        }
    }

    /// Returns after `timeout`, on a signal, or when the calling task is cancelled; at once if a signal is pending.
    func wait(upTo timeout: Duration) async {
        let sleeper: Task<Void, Never>? = state.withLock { s in
            assert(s.sleeper == nil, "WakeSignal supports one waiter at a time")
            if s.pending {
                s.pending = false
                return nil
            }
            let task = Task { _ = try? await Task.sleep(for: timeout) }
            s.sleeper = task
            return task
        }
        guard let sleeper else { return }
        await withTaskCancellationHandler {
            await sleeper.value
        } onCancel: {
            sleeper.cancel()
        }
        state.withLock { s in
            if s.sleeper == sleeper { s.sleeper = nil }
        }
    }
}
