import Foundation
import Hummingbird
import ReciprocityCore
import Storage

/// Routes and a job kind that exist only for the crash tests (RECIPROCITY_TEST_HOOKS=1): a job whose effect is one
/// row in `test_effects`, so a test can count effects after killing the server mid-job.
public enum TestHooks {
    public static let jobKind = "test.effect"

    /// `{"count": N, "sleep_ms": M}` on the route; `{"sleep_ms": M}` as a job's payload.
    struct Body: Decodable {
        var count: Int?
        var sleepMilliseconds: Int
        enum CodingKeys: String, CodingKey {
            case count
            case sleepMilliseconds = "sleep_ms"
        }
    }

    public static func prepare(_ db: any SQLDatabase) async throws {
        try await db.execute(
            "CREATE TABLE IF NOT EXISTS test_effects (job_id BIGINT NOT NULL, attempt BIGINT NOT NULL, at BIGINT NOT NULL)"
        )
    }

    /// The effect is written in the job's own transaction: it commits only together with the fenced completion.
    public static func effect(job: Job, tx: any SQLExecutor, clock: any WallClock) async throws {
        let payload = try JSONDecoder().decode(Body.self, from: Data(job.payload.utf8))
        if payload.sleepMilliseconds > 0 { try await Task.sleep(for: .milliseconds(payload.sleepMilliseconds)) }
        try await tx.execute(
            "INSERT INTO test_effects (job_id, attempt, at) VALUES (?, ?, ?)", job.id, job.attempts, clock.now())
    }

    static func register(on router: Router<AppContext>, env: WebEnvironment) {
        router.post(SiteURL.Route.apiTestJobs.routerPath) { request, context in
            let principal = try context.principal()
            let body = try await Bodies.json(Body.self, from: request, limit: 4096)
            guard let count = body.count, (1...10_000).contains(count) else {
                throw DomainError.invalid("count_invalid", "count must be 1…10000", field: "count")
            }
            try await env.store.db.transaction { tx in
                for _ in 0..<count {
                    try await env.store.enqueue(
                        tx,
                        JobRequest(
                            kind: jobKind, workspaceID: principal.workspaceID,
                            payload: #"{"sleep_ms":\#(body.sleepMilliseconds)}"#, maxAttempts: 20))
                }
            }
            env.wakeWorkers()
            return Response(status: .accepted)
        }
        router.get(SiteURL.Route.apiTestJobs.routerPath) { _, context in
            let principal = try context.principal()
            let counts = try await env.store.jobCounts(workspaceID: principal.workspaceID)
            // One statement, one snapshot: two separate counts could straddle a commit.
            let row = try await env.store.db.first(
                "SELECT COUNT(*) AS effects, COUNT(DISTINCT job_id) AS jobs FROM test_effects")
            let effects = row?.int("effects") ?? 0
            let distinct = row?.int("jobs") ?? 0
            struct Status: Encodable {
                var queued, running, succeeded, dead: Int
                var effects, duplicateEffects: Int64
            }
            return try Bodies.jsonResponse(
                Status(
                    queued: counts[.queued] ?? 0, running: counts[.running] ?? 0, succeeded: counts[.succeeded] ?? 0,
                    dead: counts[.dead] ?? 0, effects: effects, duplicateEffects: effects - distinct))
        }
    }
}
