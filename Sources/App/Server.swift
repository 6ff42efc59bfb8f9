import Foundation
import Hummingbird
import Jobs
import LeadMagnets
import Logging
import Messaging
import ReciprocityCore
import Referrals
import Reviews
import ServiceLifecycle
import Storage
import Web

/// The job kinds this build handles, and the periodic tasks that feed them.
public enum BuiltInJobs {
    public static let purgeSessions = "system.sessions.purge"
    public static let purgeJobs = "system.jobs.purge"
    public static let purgeRetention = "system.retention.purge"

    public static func handlers(runtime: Runtime) -> [JobHandler] {
        var handlers = [
            JobHandler(kind: purgeSessions) { _, tx in
                try await runtime.store.purgeExpiredSessions(in: tx)
            },
            // Deletes in chunks, each its own transaction: outside the job's.
            JobHandler(kind: purgeJobs) { _ in
                let days = Double(runtime.config.jobRetentionDays)
                let deleted = try await runtime.store.purgeSucceededJobs(
                    finishedBefore: runtime.clock.now().addingTimeInterval(-days * 86_400))
                if deleted > 0 {
                    runtime.logger.info("succeeded jobs purged", metadata: ["jobs": "\(deleted)", "days": "\(days)"])
                }
            },
            // Storage limitation: old click rows and the bodies of old mails. In chunks, outside the job's
            // transaction, like the job purge.
            JobHandler(kind: purgeRetention) { _ in
                let now = runtime.clock.now()
                let clickDays = Double(runtime.config.clickRetentionDays)
                let bodyDays = Double(runtime.config.mailBodyRetentionDays)
                let clicks = try await runtime.store.purgeClicks(before: now.addingTimeInterval(-clickDays * 86_400))
                let bodies = try await runtime.store.purgeMailBodies(
                    endedBefore: now.addingTimeInterval(-bodyDays * 86_400))
                if clicks + bodies > 0 {
                    runtime.logger.info(
                        "retention purge", metadata: ["clicks": "\(clicks)", "mail_bodies": "\(bodies)"])
                }
            },
            // SMTP I/O must not hold a transaction: the outbox state machine keeps delivery consistent.
            JobHandler(kind: Store.mailDeliveryJob) { job in
                guard let data = job.payload.data(using: .utf8),
                    let payload = try? JSONDecoder().decode(MailJobPayload.self, from: data)
                else { throw PermanentJobError("bad mail job payload: \(job.payload)") }
                _ = try await runtime.mailer.delivery.deliver(outboxID: payload.outboxID, random: runtime.random)
            },
        ]
        handlers += reviewHandlers(runtime)
        handlers += leadHandlers(runtime)
        handlers += referralHandlers(runtime)
        if runtime.config.testHooks {
            handlers.append(
                // Sleeps inside its transaction (the crash tests' slow job): one at a time, never a batch.
                JobHandler(kind: TestHooks.jobKind, batched: false) { job, tx in
                    try await TestHooks.effect(job: job, tx: tx, clock: runtime.clock)
                })
        }
        return handlers
    }

    /// Which jobs each domain event fans out to.
    public static var subscriptions: EventSubscriptions {
        var s = EventSubscriptions()
        ReviewModule.subscribe(&s)
        ReferralModule.subscribe(&s)
        return s
    }

    static func reviewHandlers(_ runtime: Runtime) -> [JobHandler] {
        let requests = runtime.reviews.requests
        return [
            JobHandler(kind: Store.reviewScheduleJob) { job, tx in
                try await requests.schedule(eventID: try field(job, "event_id"), tx: tx)
            },
            // Composing reads templates and settings: outside the job's transaction, like delivery.
            JobHandler(kind: Store.reviewRequestJob) { job in
                try await requests.send(requestID: try field(job, "request_id"))
            },
            JobHandler(kind: Store.reviewReminderJob) { job in
                try await requests.remind(requestID: try field(job, "request_id"))
            },
        ]
    }

    static func leadHandlers(_ runtime: Runtime) -> [JobHandler] {
        let leads = runtime.leads
        return [
            JobHandler(kind: Store.leadFollowUpJob) { job in
                try await leads.followUps.run(signupID: try field(job, "signup_id"), step: Int(try field(job, "step")))
            },
            JobHandler(kind: Store.leadExpireJob) { _ in
                _ = try await leads.service.expire()
            },
        ]
    }

    static func referralHandlers(_ runtime: Runtime) -> [JobHandler] {
        let service = runtime.referrals.service
        return [
            // The disposable-domain list is the module's, cached and re-read from the database every five minutes:
            // `prepare` refreshes it before the job's transaction, so the read inside finds it fresh and takes no
            // second connection. The decision runs inside the transaction.
            JobHandler(
                kind: Store.referralAttributeJob,
                runMany: { jobs, tx in
                    try await service.attribute(
                        eventIDs: try jobs.map { try field($0, "event_id") }, tx: tx,
                        disposable: await service.currentDisposable())
                }
            ).preparing { _ = await service.currentDisposable() },
            JobHandler(kind: Store.referralHoldJob) { job, tx in
                try await service.hold(eventID: try field(job, "event_id"), tx: tx)
            },
            JobHandler(kind: Store.referralVoidJob) { job, tx in
                try await service.void(eventID: try field(job, "event_id"), tx: tx)
            },
            // Issuing composes a mail: outside the job's transaction, guarded by the reward's state.
            JobHandler(kind: Store.referralReleaseJob) { job in
                try await service.release(rewardID: try field(job, "reward_id"))
            },
            JobHandler(kind: Store.referralSweepJob) { _ in _ = try await service.sweep() },
        ]
    }

    /// One integer field of a job's JSON payload.
    static func field(_ job: Job, _ name: String) throws -> Int64 {
        guard let object = try? JSONSerialization.jsonObject(with: Data(job.payload.utf8)) as? [String: Any],
            let value = (object[name] as? NSNumber)?.int64Value
        else { throw PermanentJobError("job payload lacks \(name): \(job.payload)") }
        return value
    }

    struct MailJobPayload: Decodable {
        var outboxID: Int64
        enum CodingKeys: String, CodingKey { case outboxID = "outbox_id" }
    }

    public static let periodic = [
        PeriodicTask(name: "purge-sessions", kind: purgeSessions, interval: 3600),
        // Succeeded jobs older than RECIPROCITY_JOB_RETENTION_DAYS; without it the table grows by a row per event.
        PeriodicTask(name: "purge-jobs", kind: purgeJobs, interval: 3600),
        // Click rows older than RECIPROCITY_CLICK_RETENTION_DAYS, mail bodies RECIPROCITY_MAIL_BODY_RETENTION_DAYS
        // after their delivery ended.
        PeriodicTask(name: "purge-retention", kind: purgeRetention, interval: 3600),
        // Unconfirmed lead signups past their expiry are deleted (their lifetime may be as short as seconds).
        PeriodicTask(name: "expire-lead-signups", kind: Store.leadExpireJob, interval: 60),
        // Backs up the per-reward release jobs (a reward approved in review, a node that died mid-issue).
        PeriodicTask(name: "referral-sweep", kind: Store.referralSweepJob, interval: 60),
    ]
}

/// Builds the HTTP application; with `workers`, the job worker and scheduler run in the same service group.
public func buildApplication(runtime: Runtime, workers: Bool = true) async throws -> some ApplicationProtocol {
    if runtime.config.testHooks { try await TestHooks.prepare(runtime.db) }
    let worker = makeWorker(runtime)
    var env = WebEnvironment(
        store: runtime.store, clock: runtime.clock, random: runtime.random, baseURL: runtime.config.baseURL,
        templates: try await Templates.load(),
        metricsText: { MetricsBootstrap.registry.emitToString() },
        wakeWorkers: { worker.wake() }, maxBodyBytes: runtime.config.maxBodyBytes,
        bcryptCost: UInt8(runtime.config.bcryptCost), testHooks: runtime.config.testHooks, mailer: runtime.mailer,
        reviews: runtime.reviews, leads: runtime.leads, publicFormBurst: runtime.config.publicFormBurst,
        logger: runtime.logger)
    env.trustedProxies = runtime.config.trustedProxies
    env.wakeWorkersForKinds = { worker.wake(kinds: $0) }
    env.referrals = runtime.referrals
    _ = MetricsBootstrap.registry
    let (views, clicks) = (runtime.leads.views, runtime.referrals.clicks)
    var services: [any Service] = [
        PeriodicFlush(what: "lead page views", interval: .seconds(5), logger: runtime.logger) {
            try await views.flush()
        },
        // The referral clicks' group commit.
        PeriodicFlush(what: "referral clicks", interval: runtime.config.referralClickFlush, logger: runtime.logger) {
            try await clicks.flush()
        },
    ]
    if workers {
        services.append(worker)
        services.append(
            Scheduler(
                store: runtime.store, tasks: BuiltInJobs.periodic, logger: runtime.logger, onEnqueue: { worker.wake() })
        )
    }
    let fastPath = runtime.config.httpFastPath ? WebApp.buildFastPath(env) : nil
    return Application(
        router: WebApp.buildRouter(env),
        server: .http1(configuration: .init(additionalChannelHandlers: fastPath.map { [$0.handler()] } ?? [])),
        configuration: .init(
            address: .hostname(runtime.config.host, port: runtime.config.port), serverName: WebApp.serverName),
        services: services,
        onServerRunning: { channel in
            runtime.logger.info("serving", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
        },
        logger: runtime.logger)
}

func makeWorker(_ runtime: Runtime) -> JobWorker {
    var options = JobWorker.Options()
    options.concurrency = runtime.config.workerConcurrency
    options.lease = runtime.config.jobLeaseSeconds
    return JobWorker(
        store: runtime.store, handlers: BuiltInJobs.handlers(runtime: runtime), options: options,
        random: runtime.random,
        logger: runtime.logger)
}

/// `reciprocity serve`: web and workers together, until SIGTERM or SIGINT; then in-flight work finishes. The
/// caller that opened the runtime closes it.
public func serve(runtime: Runtime) async throws {
    let app = try await buildApplication(runtime: runtime, workers: true)
    try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
}

/// `reciprocity worker`: workers and scheduler alone, for scaling jobs apart from web nodes. The caller that opened
/// the runtime closes it.
public func runWorkers(runtime: Runtime) async throws {
    if runtime.config.testHooks { try await TestHooks.prepare(runtime.db) }
    let worker = makeWorker(runtime)
    let group = ServiceGroup(
        configuration: .init(
            services: [
                .init(service: worker),
                .init(
                    service: Scheduler(
                        store: runtime.store, tasks: BuiltInJobs.periodic, logger: runtime.logger,
                        onEnqueue: { worker.wake() })),
            ], gracefulShutdownSignals: [.sigterm, .sigint], logger: runtime.logger))
    try await group.run()
}

/// Writes what a capability gathers in memory (lead page views, referral clicks) every `interval`, and once more at
/// shutdown.
struct PeriodicFlush: Service {
    let what: String
    let interval: Duration
    let logger: Logger
    let flush: @Sendable () async throws -> Void

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            do { try await flush() } catch { logger.warning("\(what) not written yet: \(error)") }
        }
        try? await flush()
    }
}
