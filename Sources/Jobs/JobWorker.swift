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
    /// Runs several jobs of this kind in one transaction, with the effect of running them one by one in the given
    /// order: by default `run` for each job; a handler may do it set-wise. Nil for external handlers and for
    /// transactional ones that opted out of batches: those run one job at a time.
    public var runMany: (@Sendable (_ jobs: [Job], _ tx: any SQLExecutor) async throws -> Void)?
    /// For work that must not hold a transaction open (network I/O such as SMTP): runs first, outside any
    /// transaction; the handler keeps its own effects consistent (e.g. the outbox state machine).
    public var external: (@Sendable (_ job: Job) async throws -> Void)?
    /// Runs before the transaction of each batch (or single job) of this kind, for what the handler reads through
    /// the database itself rather than the transaction, such as refreshing a cache: inside, a read through the
    /// database would take a second connection while the transaction holds one.
    public var prepare: (@Sendable () async -> Void)?

    /// A transactional handler. With `batched` (the default) the worker runs its jobs in batches, `run` for each;
    /// a handler whose run may take long (beside its statements) opts out, since every job of a batch must finish
    /// within its lease and, on SQLite, holds the single writer meanwhile.
    public init(
        kind: String, batched: Bool = true,
        run: @escaping @Sendable (_ job: Job, _ tx: any SQLExecutor) async throws -> Void
    ) {
        self.kind = kind
        self.run = run
        if batched {
            self.runMany = { jobs, tx in
                for job in jobs { try await run(job, tx) }
            }
        }
    }

    /// A transactional handler that does many jobs at once (fewer statements than one by one); one job alone
    /// goes the same way.
    public init(
        kind: String, runMany: @escaping @Sendable (_ jobs: [Job], _ tx: any SQLExecutor) async throws -> Void
    ) {
        self.kind = kind
        self.run = { job, tx in try await runMany([job], tx) }
        self.runMany = runMany
    }

    /// This handler with `prepare` run before each of its transactions.
    public func preparing(_ prepare: @escaping @Sendable () async -> Void) -> JobHandler {
        var handler = self
        handler.prepare = prepare
        return handler
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
/// External jobs (network I/O) run one at a time in `concurrency` slots. Transactional jobs run in batch lanes:
/// a lane takes up to `batchSize` of them and runs them in one transaction with one fenced completion, because
/// a job's own statements are few (an order's `referrals.attribute` is three look-ups) and a transaction and a
/// claim per job cost more than the work. A batch that fails is rolled back and its jobs run one by one, so the
/// job at fault fails alone. The worker claims only what its free slots and lanes can start at once, so nothing
/// it holds sits idle. On graceful shutdown it stops claiming and lets running jobs finish and commit; their
/// leases end with them.
public final class JobWorker: Service, @unchecked Sendable {
    public struct Options: Sendable {
        /// Slots for external jobs.
        public var concurrency = 4
        /// Lanes for batches of transactional jobs, and the most jobs one batch takes.
        public var batchLanes = 2
        public var batchSize = 64
        /// The least time between two claims of batchable jobs: jobs enqueued meanwhile (an order batch's fan-out)
        /// wait for it and come in one claim, instead of a claim round per order batch. Not after a claim that
        /// found more jobs than it could take: a backlog is claimed as fast as lanes free. Zero claims at once.
        public var batchGather: Duration = .milliseconds(50)
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
    public func wake() { wake(Self.bothGroups) }

    /// Which groups a wake-up may have given work (bit 0: slots, bit 1: lanes), read by the loop after its wait.
    private let woken = Atomic<UInt8>(0)
    static let slotGroup: UInt8 = 1
    static let laneGroup: UInt8 = 2
    static let bothGroups: UInt8 = 3

    /// Wakes the worker for jobs of these kinds (just enqueued here): only their claim groups are asked again.
    public func wake(kinds: [String]) {
        var groups: UInt8 = 0
        for kind in kinds {
            guard let handler = handlers[kind] else { continue }
            groups |= handler.runMany == nil ? Self.slotGroup : Self.laneGroup
        }
        if groups != 0 { wake(groups) }
    }

    func wake(_ groups: UInt8) {
        woken.bitwiseOr(groups, ordering: .relaxed)
        wakeups.signal()
    }

    public func run() async throws {
        logger.info("job worker started", metadata: ["worker": "\(workerID)", "kinds": "\(handlers.keys.sorted())"])
        guard !handlers.isEmpty else {
            try? await gracefulShutdown()  // nothing to claim, ever
            return
        }
        let singleKinds = handlers.values.filter { $0.runMany == nil }.map(\.kind).sorted()
        let batchKinds = handlers.values.filter { $0.runMany != nil }.map(\.kind).sorted()
        let capacity = Capacity(
            slots: singleKinds.isEmpty ? 0 : max(1, options.concurrency),
            lanes: batchKinds.isEmpty ? 0 : max(1, options.batchLanes))
        let batchSize = max(1, options.batchSize)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                // A group is dry when its last claim found fewer jobs than it asked for: until a wake-up that may
                // concern it (an enqueue here: both groups; a freed slot or lane: its own group) or the poll,
                // claiming it again would find nothing new. Under load a lane's batch then costs one claim, with
                // no empty claim for the idle slots beside it.
                var dry = (singles: false, batches: false)
                // A worker that has just started claims at once (no gathering before its first claim).
                var claimedAt = (singles: ContinuousClock.now, batches: ContinuousClock.now - options.batchGather)
                var backlog = false
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    let (slots, lanes) = await capacity.free
                    // The poll: a group dry for `idlePoll` is asked again (jobs another node enqueued, or that
                    // came due), even while the other group's releases keep the loop from sleeping that long.
                    let now = ContinuousClock.now
                    if dry.singles && now - claimedAt.singles >= options.idlePoll { dry.singles = false }
                    if dry.batches && now - claimedAt.batches >= options.idlePoll { dry.batches = false }
                    var want = (singles: dry.singles ? 0 : slots, batches: dry.batches ? 0 : lanes)
                    // Gathering: after a claim that emptied the queue, batchable jobs are left for the rest of
                    // `batchGather`, so that the jobs enqueued meanwhile come in one claim. After a full claim (a
                    // backlog) a freed lane claims at once.
                    var gathering: ContinuousClock.Instant? = nil
                    if want.batches > 0 && !backlog && now - claimedAt.batches < options.batchGather {
                        gathering = claimedAt.batches + options.batchGather
                        want.batches = 0
                    }
                    guard want.singles > 0 || want.batches > 0 else {
                        if slots == 0 && lanes == 0 {
                            await capacity.waitForRelease()
                        } else {
                            // Until the older dry group is due for its poll, or a wake-up.
                            let oldest = min(
                                slots > 0 ? claimedAt.singles : .now, lanes > 0 ? claimedAt.batches : .now)
                            var until = oldest + options.idlePoll
                            if let gathering { until = min(until, gathering) }
                            await wakeups.wait(upTo: max(.milliseconds(1), until - now))
                            // A freed lane says nothing new about the slots' kinds, and a freed slot nothing about
                            // the lanes'; an enqueue here may have news for both.
                            let groups = woken.exchange(0, ordering: .relaxed)
                            if groups & Self.slotGroup != 0 { dry.singles = false }
                            if groups & Self.laneGroup != 0 { dry.batches = false }
                        }
                        continue
                    }
                    var singles: [Job] = []
                    var batched: [Job] = []
                    rounds.add(1, ordering: .relaxed)
                    do {
                        let claimed = try await store.claimJobs(
                            worker: workerID, lease: options.lease,
                            groups: [
                                ClaimGroup(kinds: singleKinds, limit: want.singles),
                                ClaimGroup(kinds: batchKinds, limit: want.batches * batchSize),
                            ])
                        (singles, batched) = (claimed[0], claimed[1])
                    } catch {
                        logger.error("claiming jobs failed", metadata: ["error": "\(error)"])
                    }
                    if want.singles > 0 { (dry.singles, claimedAt.singles) = (singles.count < want.singles, now) }
                    if want.batches > 0 {
                        (dry.batches, claimedAt.batches) = (batched.count < want.batches * batchSize, now)
                        backlog = !dry.batches
                    }
                    for job in singles {
                        await capacity.takeSlot()
                        group.addTask {
                            await self.execute(job)
                            if await capacity.releaseSlot() { self.wake(Self.slotGroup) }
                        }
                    }
                    // Spread over the free lanes, so a short backlog is not run by one lane while another idles.
                    for batch in Self.split(batched, into: want.batches) {
                        await capacity.takeLane()
                        group.addTask {
                            await self.execute(batch: batch)
                            if await capacity.releaseLane() { self.wake(Self.laneGroup) }
                        }
                    }
                }
                // Leaving the group waits for the jobs still running: they finish and commit.
            }
        } onGracefulShutdown: {
            self.wakeups.signal()
        }
        logger.info("job worker stopped", metadata: ["worker": "\(workerID)"])
    }

    /// `jobs` in at most `parts` consecutive runs of nearly equal size (none empty).
    static func split(_ jobs: [Job], into parts: Int) -> [ArraySlice<Job>] {
        guard !jobs.isEmpty, parts > 0 else { return [] }
        let n = min(parts, jobs.count)
        var start = 0
        return (0..<n).map { i in
            let size = jobs.count / n + (i < jobs.count % n ? 1 : 0)
            defer { start += size }
            return jobs[start..<start + size]
        }
    }

    /// Free slots (external jobs) and lanes (batches); the loop waits on a release when all are taken.
    ///
    /// A release answers whether none of its kind was free before: the loop's last claim then asked for none of
    /// those jobs, and may be sleeping out `idlePoll` with free capacity of the other kind, so the caller wakes it.
    actor Capacity {
        private var slots: Int
        private var lanes: Int
        private var waiter: CheckedContinuation<Void, Never>?
        init(slots: Int, lanes: Int) {
            self.slots = slots
            self.lanes = lanes
        }
        var free: (slots: Int, lanes: Int) { (slots, lanes) }
        func takeSlot() { slots -= 1 }
        func takeLane() { lanes -= 1 }
        func releaseSlot() -> Bool {
            slots += 1
            wake()
            return slots == 1
        }
        func releaseLane() -> Bool {
            lanes += 1
            wake()
            return lanes == 1
        }
        private func wake() {
            waiter?.resume()
            waiter = nil
        }
        func waitForRelease() async {
            guard slots == 0 && lanes == 0 else { return }
            await withCheckedContinuation { waiter = $0 }
        }
    }

    /// Runs a batch in one transaction: each run of one kind through its handler's `runMany`, in claim order,
    /// then one fenced completion for all. If anything fails (a handler's error, a lost lease, the database),
    /// the batch rolls back and each job runs alone, so that one job's fault costs only its own attempt.
    ///
    /// Jobs taken over after their worker died (`Store.leaseExpiredNote`) run alone, after the others: one of them may
    /// be what killed it, and in a batch it would take its neighbours down with it on every attempt.
    func execute(batch: ArraySlice<Job>) async {
        guard batch.count > 1 else {
            if let job = batch.first { await execute(job) }
            return
        }
        if batch.contains(where: { $0.lastError == Store.leaseExpiredNote }) {
            await execute(batch: batch.filter { $0.lastError != Store.leaseExpiredNote }[...])
            for job in batch where job.lastError == Store.leaseExpiredNote { await execute(job) }
            return
        }
        let jobs = Array(batch)
        let started = ContinuousClock.now
        var prepared: Set<String> = []
        for job in jobs where prepared.insert(job.kind).inserted { await handlers[job.kind]?.prepare?() }
        do {
            try await store.db.transaction { tx in
                var start = 0
                while start < jobs.count {
                    let kind = jobs[start].kind
                    let end = jobs[start...].firstIndex { $0.kind != kind } ?? jobs.count
                    guard let runMany = self.handlers[kind]?.runMany else { throw NoBatchHandler() }
                    try await runMany(Array(jobs[start..<end]), tx)
                    start = end
                }
                guard try await self.store.completeJobs(tx, jobs) == jobs.count else { throw LeaseLost() }
            }
        } catch {
            Counter(label: "reciprocity_job_batches_total", dimensions: [("outcome", "split")]).increment()
            logger.notice(
                "job batch failed; its jobs run one by one",
                metadata: ["jobs": "\(jobs.count)", "error": "\(error)"])
            for job in jobs { await execute(job) }
            return
        }
        Counter(label: "reciprocity_job_batches_total", dimensions: [("outcome", "committed")]).increment()
        let nanoseconds = Self.nanoseconds(since: started)
        for job in jobs {
            Counter(label: "reciprocity_jobs_completed_total", dimensions: [("kind", job.kind)]).increment()
            Timer(label: "reciprocity_job_duration_seconds", dimensions: [("kind", job.kind)])
                .recordNanoseconds(nanoseconds)
        }
    }

    static func nanoseconds(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = (ContinuousClock.now - start).components
        return elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000
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
            await handler.prepare?()
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
        Timer(label: "reciprocity_job_duration_seconds", dimensions: [("kind", job.kind)])
            .recordNanoseconds(Self.nanoseconds(since: started))
    }

    struct LeaseLost: Error {}
    struct NoBatchHandler: Error {}
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
