import Crypto
import Foundation
import LeadMagnets
import Logging
import Messaging
import Metrics
import Prometheus
import ReciprocityCore
import Referrals
import Reviews
import Storage
import StoragePostgres
import StorageSQLite

/// The opened parts every command needs: configuration, logger, database and store.
public struct Runtime: Sendable {
    public let config: AppConfig
    public let logger: Logger
    public let db: any SQLDatabase
    public let store: Store
    public let clock: any WallClock
    public let random: any RandomSource
    /// The mail engine: composer, outbox delivery over SMTP or the development outbox.
    public let mailer: Mailer
    /// The review capability: requests, form, widgets, feed.
    public let reviews: ReviewModule
    /// The lead magnet capability: landing pages, double opt-in, gifts, follow-ups.
    public let leads: LeadModule
    /// The referral programme: advocates, the tracked redirect, attribution, rewards, payouts.
    public let referrals: ReferralModule

    /// Opens the database, creates the data folder and secret key if needed, and migrates unless told not to.
    public static func open(
        _ config: AppConfig, migrate: Bool? = nil, clock: any WallClock = SystemClock(),
        random: any RandomSource = SystemRandom(), subscriptions: EventSubscriptions = BuiltInJobs.subscriptions
    ) async throws -> Runtime {
        LoggingBootstrap.once(level: config.logLevel)
        var logger = Logger(label: "reciprocity")
        logger.logLevel = config.logLevel
        for warning in config.warnings { logger.warning("\(warning)") }
        try FileManager.default.createDirectory(atPath: config.dataDirectory, withIntermediateDirectories: true)
        let secret = try secretKey(config, random: random)
        let db: any SQLDatabase
        switch config.database {
        case .sqlite(let path):
            var options = SQLiteDatabase.Options()
            options.synchronous = config.sqliteSynchronous
            db = try SQLiteDatabase(path: path, options: options)
        case .postgres(let url):
            db = try PostgresDatabase(url: url, logger: logger)
        }
        if migrate ?? config.autoMigrate {
            try await Migrator.migrate(db, logger: logger, clock: clock)
        }
        let store = Store(db: db, clock: clock, secret: secret, subscriptions: subscriptions)
        let transport = try Mailer.transport(
            smtpURL: config.smtpURL, caFile: config.smtpCAFile, heloName: config.smtpHelo, logger: logger)
        let mailer = Mailer(
            store: store,
            composer: MailComposer(catalog: try MailTemplateCatalog.load(), store: store, baseURL: config.baseURL),
            delivery: MailDelivery(store: store, transport: transport, logger: logger))
        let reviews = ReviewModule(store: store, mailer: mailer, baseURL: config.baseURL, logger: logger)
        let files = URL(fileURLWithPath: config.dataDirectory).appendingPathComponent("files")
        let leads = LeadModule(
            store: store, mailer: mailer, baseURL: config.baseURL, blobs: try LocalDiskBlobStore(root: files),
            random: random, logger: logger)
        let disposable = DisposableList(store: store)
        let referrals = ReferralModule(
            store: store, mailer: mailer, baseURL: config.baseURL, random: random,
            disposable: { await disposable.current() }, logger: logger)
        return Runtime(
            config: config, logger: logger, db: db, store: store, clock: clock, random: random, mailer: mailer,
            reviews: reviews, leads: leads, referrals: referrals)
    }

    public func close() async {
        await mailer.delivery.transport.shutdown()
        await db.close()
    }

    /// `RECIPROCITY_SECRET_KEY`, or a key generated on first run and kept in the data folder (mode 0600).
    static func secretKey(_ config: AppConfig, random: any RandomSource) throws -> [UInt8] {
        if let given = config.secretKey { return Array(SHA256.hash(data: Array(given.utf8))) }
        let path = URL(fileURLWithPath: config.dataDirectory).appendingPathComponent("secret.key").path
        if let existing = FileManager.default.contents(atPath: path), existing.count >= 32 {
            return Array(existing)
        }
        let bytes = random.bytes(32)
        guard
            FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        else { throw ConfigError("Cannot write the secret key to \(path).") }
        return bytes
    }
}

/// Process-wide bootstraps that may run only once (logging and metrics backends).
public enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false
    private static let lock = NSLock()

    public static func once(level: Logger.Level) {
        lock.withLock {
            guard !done else { return }
            done = true
            LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        }
    }
}

public enum MetricsBootstrap {
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}
