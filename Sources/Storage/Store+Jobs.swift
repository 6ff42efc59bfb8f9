import Foundation
import ReciprocityCore

/// A job to enqueue. Idempotency keys are unique in the database: enqueueing the same key twice is a no-op.
public struct JobRequest: Sendable {
    public var kind: String
    public var workspaceID: WorkspaceID?
    public var payload: String
    public var runAt: Date?
    public var idempotencyKey: String?
    public var maxAttempts: Int

    public init(
        kind: String, workspaceID: WorkspaceID?, payload: String = "{}", runAt: Date? = nil,
        idempotencyKey: String? = nil, maxAttempts: Int = 8
    ) {
        self.kind = kind
        self.workspaceID = workspaceID
        self.payload = payload
        self.runAt = runAt
        self.idempotencyKey = idempotencyKey
        self.maxAttempts = maxAttempts
    }
}

public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, running, succeeded, dead
}

public struct Job: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID?
    public var kind: String
    public var payload: String
    public var state: JobState
    public var attempts: Int
    public var maxAttempts: Int
    public var runAt: Date
    public var leaseExpiresAt: Date?
    public var lockedBy: String?
    public var lastError: String?
    public var idempotencyKey: String
    public var createdAt: Date
    public var finishedAt: Date?
}

/// A part of a claim: up to `limit` jobs of `kinds` (nil: of every kind; empty: none).
public struct ClaimGroup: Sendable {
    public var kinds: [String]?
    public var limit: Int
    public init(kinds: [String]?, limit: Int) {
        self.kinds = kinds
        self.limit = limit
    }
}

extension Store {
    static let jobColumns = """
        id, workspace_id, kind, payload, state, attempts, max_attempts, run_at, lease_expires_at, locked_by,
        last_error, idempotency_key, created_at, finished_at
        """

    static func job(_ r: SQLRow) -> Job {
        Job(
            id: r.int("id"), workspaceID: r.optionalInt("workspace_id"), kind: r.text("kind"),
            payload: r.text("payload"), state: JobState(rawValue: r.text("state")) ?? .queued,
            attempts: Int(r.int("attempts")), maxAttempts: Int(r.int("max_attempts")), runAt: r.date("run_at"),
            leaseExpiresAt: r.optionalDate("lease_expires_at"), lockedBy: r.optionalText("locked_by"),
            lastError: r.optionalText("last_error"), idempotencyKey: r.text("idempotency_key"),
            createdAt: r.date("created_at"), finishedAt: r.optionalDate("finished_at"))
    }

    /// Enqueues in the caller's transaction, so the job exists exactly when the change that caused it does.
    /// Returns the new job's id, or nil when a job with the same idempotency key exists already.
    @discardableResult
    public func enqueue(_ tx: any SQLExecutor, _ job: JobRequest) async throws -> Int64? {
        try await enqueue(tx, [job])[0]
    }

    /// Enqueues jobs in one statement per chunk. A job whose idempotency key is taken is not enqueued again: its
    /// answer is nil; the others answer their new ids, in the requests' order.
    public func enqueue(_ tx: any SQLExecutor, _ jobs: [JobRequest]) async throws -> [Int64?] {
        let t = now
        let keys = jobs.map { $0.idempotencyKey ?? "anon:\(UUID().uuidString)" }
        var ids: [String: Int64] = [:]
        for chunk in MultiRow.inserts(
            rows: jobs.count, types: [.int, .text, .text, .text, .int, .int, .int, .text, .int, .int],
            dialect: tx.dialect,
            row: {
                let job = jobs[$0]
                return [
                    job.workspaceID, job.kind, job.payload, "queued", 0, job.maxAttempts, job.runAt ?? t, keys[$0], t,
                    t,
                ]
            })
        {
            let rows = try await tx.query(
                """
                INSERT INTO jobs (workspace_id, kind, payload, state, attempts, max_attempts, run_at, idempotency_key,
                  created_at, updated_at) \(chunk.source)
                ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key
                """, chunk.binds)
            for r in rows { ids[r.text("idempotency_key")] = r.int("id") }
        }
        return keys.map { ids.removeValue(forKey: $0) }
    }

    /// Leases up to `limit` due jobs to `worker`: queued ones whose time has come, and running ones whose lease
    /// expired (their worker died). On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets nodes claim side by side.
    public func claimJobs(worker: String, limit: Int, lease: TimeInterval, kinds: [String]? = nil) async throws
        -> [Job]
    {
        try await claimJobs(worker: worker, lease: lease, groups: [ClaimGroup(kinds: kinds, limit: limit)])[0]
    }

    /// One claim transaction for several groups of kinds, each with its own limit (the worker's one-at-a-time
    /// slots and its batch lanes), so that no group starves another. Answers each group's jobs, oldest first.
    public func claimJobs(worker: String, lease: TimeInterval, groups: [ClaimGroup]) async throws -> [[Job]] {
        let t = now
        return try await db.transaction { tx in
            if let setup = tx.dialect.orderedClaimSetup { _ = try await tx.query(setup, []) }
            // Jobs whose lease ran out on their last allowed attempt are dead: their worker crashed every time.
            try await tx.execute(
                """
                UPDATE jobs SET state = 'dead', finished_at = ?, updated_at = ?,
                  last_error = COALESCE(last_error, 'lease expired on the last attempt')
                WHERE state = 'running' AND lease_expires_at < ? AND attempts >= max_attempts
                """, t, t, t)
            var claimed: [[Job]] = []
            for group in groups {
                guard group.limit > 0, group.kinds?.isEmpty != true else {
                    claimed.append([])
                    continue
                }
                let kindBinds = (group.kinds ?? []).map { $0 as any SQLBindable }
                func claim(_ source: ClaimSource, limit: Int) async throws -> [Job] {
                    // A job taken over from a worker that died is marked: it may be what killed it (a trap, a hang),
                    // so the worker runs it alone, never in a batch with the neighbours it was claimed with.
                    let note = source == .expiredLease ? ", last_error = '\(Self.leaseExpiredNote)'" : ""
                    return try await tx.query(
                        """
                        UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_expires_at = ?, locked_by = ?,
                          updated_at = ?\(note)
                        WHERE id IN (\(Self.claimCandidates(source, kinds: kindBinds.count, dialect: tx.dialect)))
                        RETURNING \(Self.jobColumns)
                        """, [t.addingTimeInterval(lease), worker, t, t] + kindBinds + [limit]
                    ).map(Self.job)
                }
                // Expired leases first: their jobs are older than anything still queued.
                var jobs = try await claim(.expiredLease, limit: group.limit)
                if jobs.count < group.limit { jobs += try await claim(.queued, limit: group.limit - jobs.count) }
                claimed.append(jobs.sorted { ($0.runAt, $0.id) < ($1.runAt, $1.id) })
            }
            return claimed
        }
    }

    /// `last_error` of a job taken over after its lease expired, until it fails or completes.
    public static let leaseExpiredNote = "lease expired; taken over"

    /// Where a claim takes jobs from. Each source is one statement that walks the `(state, run_at)` index in order
    /// and stops at its limit. One statement with `queued OR lease expired` made SQLite collect and sort every due
    /// job on every claim, so a backlog made each claim slower than the last.
    enum ClaimSource {
        case expiredLease, queued

        var condition: String {
            switch self {
            case .expiredLease: "state = 'running' AND lease_expires_at < ?"
            case .queued: "state = 'queued' AND run_at <= ?"
            }
        }
    }

    /// The ids one claim statement leases. Binds: the time, then `kinds` kind names (none: every kind), then the
    /// limit.
    static func claimCandidates(_ source: ClaimSource, kinds: Int, dialect: SQLDialect) -> String {
        let kindFilter =
            kinds == 0 ? "" : " AND kind IN (\(Array(repeating: "?", count: kinds).joined(separator: ", ")))"
        return "SELECT id FROM jobs WHERE \(source.condition)\(kindFilter) ORDER BY run_at, id LIMIT ?"
            + dialect.skipLockedClause
    }

    /// The fence: true only if `job` is still leased by its claimer for this attempt. Handlers run their effects
    /// and this in one transaction, so a job whose lease was taken over cannot commit its effect a second time.
    public func completeJob(_ tx: any SQLExecutor, _ job: Job) async throws -> Bool {
        try await completeJobs(tx, [job]) == 1
    }

    /// The fence of a batch: marks every job of `jobs` done that its claimer still holds for that attempt, in
    /// one statement. Answers how many it marked; fewer than `jobs.count` means a lease was lost, and the caller
    /// rolls the batch back.
    public func completeJobs(_ tx: any SQLExecutor, _ jobs: [Job]) async throws -> Int {
        let t = now
        var done = 0
        for chunk in MultiRow.chunks(jobs, dialect: tx.dialect) {
            let cases = Array(repeating: "WHEN ? THEN ?", count: chunk.count).joined(separator: " ")
            // Each job's own attempt: a worker that outlived a lease may hold the job again, for a later attempt.
            var binds: [any SQLBindable] = [t, t]
            for job in chunk { binds += [job.id, job.attempts] }
            for job in chunk { binds += [job.id, job.lockedBy] }
            binds += chunk.map(\.id)
            done += try await tx.execute(
                """
                UPDATE jobs SET state = 'succeeded', finished_at = ?, updated_at = ?, lease_expires_at = NULL,
                  last_error = NULL
                WHERE state = 'running'
                  AND attempts = CASE id \(cases) END
                  AND locked_by = CASE id \(cases) END
                  AND id IN (\(MultiRow.list(chunk.count)))
                """, binds)
        }
        return done
    }

    /// Records a failed attempt: back to the queue at `retryAt`, or dead when no attempts are left.
    @discardableResult
    public func failJob(_ job: Job, error: String, retryAt: Date?) async throws -> JobState {
        let t = now
        let state: JobState = (retryAt == nil || job.attempts >= job.maxAttempts) ? .dead : .queued
        try await db.execute(
            """
            UPDATE jobs SET state = ?, run_at = ?, last_error = ?, lease_expires_at = NULL, locked_by = NULL,
              updated_at = ?, finished_at = ?
            WHERE id = ? AND state = 'running' AND locked_by = ? AND attempts = ?
            """, state.rawValue, retryAt ?? job.runAt, String(error.prefix(2000)), t, state == .dead ? t : nil,
            job.id, job.lockedBy, job.attempts)
        return state
    }

    /// Deletes the succeeded jobs that finished before `cutoff`, oldest first, `chunk` rows per transaction (so that
    /// SQLite's writer is never held for long), at most `maxChunks` transactions per call. Dead jobs stay: they wait
    /// for a person. Answers how many it deleted.
    ///
    /// A deleted job's idempotency key can be enqueued again. Every key in this build is enqueued by a step that
    /// happens once (an event recorded once, tags an event gains for the first time, a state change, a schedule slot
    /// in the past), so none is.
    public func purgeSucceededJobs(finishedBefore cutoff: Date, chunk: Int = 5_000, maxChunks: Int = 100) async throws
        -> Int
    {
        var deleted = 0
        for _ in 0..<maxChunks {
            // A job finishes after its run time, so the (state, run_at) index bounds the walk.
            let n = try await db.transaction { tx in
                try await tx.execute(
                    """
                    DELETE FROM jobs WHERE id IN (
                      SELECT id FROM jobs WHERE state = 'succeeded' AND run_at < ? AND finished_at < ?
                      ORDER BY run_at, id LIMIT ?)
                    """, cutoff, cutoff, chunk)
            }
            deleted += n
            if n < chunk { break }
        }
        return deleted
    }

    /// Puts a dead job of this workspace back in the queue with fresh attempts. False if there is no such dead job.
    public func retryJob(workspaceID: WorkspaceID, id: Int64, actor: String) async throws -> Bool {
        try await db.transaction { tx in
            let t = now
            let n = try await tx.execute(
                """
                UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, finished_at = NULL, updated_at = ?
                WHERE id = ? AND workspace_id = ? AND state = 'dead'
                """, t, t, id, workspaceID)
            if n == 1 {
                try await audit(tx, workspaceID: workspaceID, actor: actor, action: "job.retry", subject: "job:\(id)")
            }
            return n == 1
        }
    }

    public func jobs(workspaceID: WorkspaceID?, state: JobState, limit: Int = 100) async throws -> [Job] {
        if let workspaceID {
            return try await db.query(
                "SELECT \(Self.jobColumns) FROM jobs WHERE workspace_id = ? AND state = ? ORDER BY run_at DESC, id DESC LIMIT ?",
                workspaceID, state.rawValue, limit
            ).map(Self.job)
        }
        return try await db.query(
            "SELECT \(Self.jobColumns) FROM jobs WHERE state = ? ORDER BY run_at DESC, id DESC LIMIT ?", state.rawValue,
            limit
        ).map(Self.job)
    }

    public func job(id: Int64) async throws -> Job? {
        try await db.first("SELECT \(Self.jobColumns) FROM jobs WHERE id = ?", id).map(Self.job)
    }

    /// Jobs per state, for one workspace or (nil) the whole installation.
    public func jobCounts(workspaceID: WorkspaceID?) async throws -> [JobState: Int] {
        let rows =
            if let workspaceID {
                try await db.query(
                    "SELECT state, COUNT(*) AS n FROM jobs WHERE workspace_id = ? GROUP BY state", workspaceID)
            } else {
                try await db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            }
        var counts = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0, 0) })
        for r in rows { if let s = JobState(rawValue: r.text("state")) { counts[s] = Int(r.int("n")) } }
        return counts
    }

    /// Runs `body` only on the one node that holds the scheduler lock for this transaction (PostgreSQL advisory
    /// lock; SQLite's single writer serialises anyway). Returns nil when another node holds it.
    public func withSchedulerLock<T: Sendable>(_ body: @Sendable @escaping (any SQLExecutor) async throws -> T)
        async throws -> T?
    {
        try await db.transaction { tx in
            if let sql = tx.dialect.advisoryLockSQL(key: AdvisoryLockKey.scheduler, wait: false) {
                guard try await tx.first(sql)?.int("locked") == 1 else { return nil }
            }
            return try await body(tx)
        }
    }
}
