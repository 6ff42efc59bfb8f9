import Configuration
import Foundation
import Logging
import ReciprocityCore
import SMTP

/// Every setting, read once at start-up from `RECIPROCITY_*` environment variables and, optionally, a JSON file
/// (`RECIPROCITY_CONFIG_FILE`; keys without the prefix, e.g. `{"database": {"url": "…"}}`). Environment wins.
/// docs/configuration.md lists every key; keep the two in step.
public struct AppConfig: Sendable {
    public enum Database: Sendable, Equatable {
        case sqlite(path: String)
        case postgres(url: String)
    }

    public var database: Database
    public var databaseURL: String
    public var host: String
    public var port: Int
    public var baseURL: String
    public var smtpURL: String?
    /// PEM file of an extra CA trusted for SMTP TLS (a private relay; tests).
    public var smtpCAFile: String?
    /// EHLO name: the host of the base URL unless `RECIPROCITY_SMTP_HELO` says otherwise.
    public var smtpHelo: String
    public var secretKey: String?
    public var dataDirectory: String
    public var logLevel: Logger.Level
    public var autoMigrate: Bool
    public var workerConcurrency: Int
    public var jobLeaseSeconds: Double
    /// Days a succeeded job stays in the table before the hourly purge deletes it.
    public var jobRetentionDays: Int
    /// Days a referral click row is kept (the hourly retention purge); more than the longest attribution window.
    public var clickRetentionDays: Int
    /// Days a mail's body is kept after its delivery ended; the outbox row itself stays.
    public var mailBodyRetentionDays: Int
    public var sqliteSynchronous: String
    public var bcryptCost: Int
    public var maxBodyBytes: Int
    public var testHooks: Bool
    /// Posts per IP to public forms before the limit (then one every 6 s).
    public var publicFormBurst: Int
    /// Reverse proxies whose X-Forwarded-For names the client (comma-separated IPs).
    public var trustedProxies: Set<String>
    /// Answer the cached redirects on the event loop, before the router (docs/decisions/0011-event-loop-routes.md).
    public var httpFastPath: Bool
    /// How often the referral clicks gathered in memory are written (their group commit).
    public var referralClickFlush: Duration

    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment) async throws
        -> AppConfig
    {
        var providers: [any ConfigProvider] = [EnvironmentVariablesProvider(environmentVariables: environment)]
        if let file = environment["RECIPROCITY_CONFIG_FILE"], !file.isEmpty {
            let fileProvider = try await FileProvider<JSONSnapshot>(filePath: .init(file))
            providers.append(
                fileProvider.mapKeys { key in
                    AbsoluteConfigKey(Array(key.components.dropFirst()), context: key.context)
                })
        }
        return try AppConfig(reader: ConfigReader(providers: providers))
    }

    init(reader: ConfigReader) throws {
        let c = reader.scoped(to: "reciprocity")
        host = c.string(forKey: "host", default: "127.0.0.1")
        let portValue = c.int(forKey: "port").map(String.init) ?? c.string(forKey: "port", default: "8080")
        guard let port = Int(portValue), (1...65535).contains(port) else {
            throw ConfigError("RECIPROCITY_PORT must be a port number from 1 to 65535, got '\(portValue)'.")
        }
        self.port = port
        dataDirectory = c.string(forKey: "data.dir", default: "./data")
        let defaultPath = (dataDirectory.hasSuffix("/") ? dataDirectory : dataDirectory + "/") + "reciprocity.sqlite"
        databaseURL = c.string(forKey: "database.url", default: "sqlite://" + defaultPath)
        database = try Self.parseDatabase(databaseURL)
        let base = c.string(forKey: "base.url", default: "http://\(host):\(port)")
        guard let url = URL(string: base), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw ConfigError("RECIPROCITY_BASE_URL must be an http(s) URL, got '\(base)'.")
        }
        baseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        smtpURL = c.string(forKey: "smtp.url").flatMap { $0.isEmpty ? nil : $0 }
        smtpCAFile = c.string(forKey: "smtp.ca.file").flatMap { $0.isEmpty ? nil : $0 }
        smtpHelo = c.string(forKey: "smtp.helo").flatMap { $0.isEmpty ? nil : $0 } ?? (url.host ?? "localhost")
        if let smtp = smtpURL {
            do {
                _ = try SMTPConfiguration.parse(smtp, heloName: smtpHelo, caFile: smtpCAFile)
            } catch {
                throw ConfigError(error.message)
            }
        }
        if let ca = smtpCAFile, !FileManager.default.isReadableFile(atPath: ca) {
            throw ConfigError("RECIPROCITY_SMTP_CA_FILE: cannot read '\(ca)'.")
        }
        secretKey = c.string(forKey: "secret.key", isSecret: true).flatMap { $0.isEmpty ? nil : $0 }
        let level = c.string(forKey: "log.level", default: "info")
        guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
            throw ConfigError(
                "RECIPROCITY_LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical.")
        }
        logLevel = parsed
        autoMigrate = c.bool(forKey: "auto.migrate", default: true)
        workerConcurrency = max(1, c.int(forKey: "workers", default: 4))
        jobLeaseSeconds = max(1, Double(c.int(forKey: "job.lease.seconds", default: 300)))
        jobRetentionDays = max(1, c.int(forKey: "job.retention.days", default: 14))
        clickRetentionDays = c.int(forKey: "click.retention.days", default: 400)
        guard clickRetentionDays > ReferralProgramme.longestAttributionDays else {
            throw ConfigError(
                "RECIPROCITY_CLICK_RETENTION_DAYS must be more than \(ReferralProgramme.longestAttributionDays) (the "
                    + "longest attribution window), got \(clickRetentionDays).")
        }
        mailBodyRetentionDays = c.int(forKey: "mail.body.retention.days", default: 90)
        guard mailBodyRetentionDays >= 1 else {
            throw ConfigError("RECIPROCITY_MAIL_BODY_RETENTION_DAYS must be at least 1, got \(mailBodyRetentionDays).")
        }
        sqliteSynchronous = c.string(forKey: "sqlite.synchronous", default: "FULL").uppercased()
        guard ["NORMAL", "FULL", "EXTRA"].contains(sqliteSynchronous) else {
            throw ConfigError("RECIPROCITY_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA.")
        }
        bcryptCost = min(16, max(4, c.int(forKey: "bcrypt.cost", default: 12)))
        maxBodyBytes = max(1024, c.int(forKey: "max.body.bytes", default: 1_048_576))
        testHooks = c.bool(forKey: "test.hooks", default: false)
        trustedProxies = Set(
            c.string(forKey: "trusted.proxies", default: "").split(separator: ",")
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        publicFormBurst = min(1_000_000, max(1, c.int(forKey: "public.form.burst", default: 20)))
        httpFastPath = c.bool(forKey: "http.fast.path", default: true)
        // Read as text: an unparsable number ("250ms") must stop the start, not fall back to the default.
        let flushText =
            c.int(forKey: "referral.click.flush.ms").map(String.init)
            ?? c.string(forKey: "referral.click.flush.ms", default: "1000")
        guard let flushMS = Int(flushText.trimmingCharacters(in: .whitespaces)), (10...60_000).contains(flushMS) else {
            throw ConfigError("RECIPROCITY_REFERRAL_CLICK_FLUSH_MS must be from 10 to 60000, got '\(flushText)'.")
        }
        referralClickFlush = .milliseconds(flushMS)
    }

    static func parseDatabase(_ url: String) throws -> Database {
        if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard !path.isEmpty else { throw ConfigError("RECIPROCITY_DATABASE_URL: sqlite:// needs a file path.") }
            return .sqlite(path: path)
        }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") { return .postgres(url: url) }
        throw ConfigError(
            "RECIPROCITY_DATABASE_URL must start with sqlite:// or postgres://, got '\(url.prefix(40))'.")
    }

    /// Settings that work but are probably a mistake, logged at start-up.
    public var warnings: [String] {
        var w: [String] = []
        if smtpURL != nil, URL(string: baseURL)?.scheme?.lowercased() != "https" {
            w.append(
                "RECIPROCITY_SMTP_URL is set but RECIPROCITY_BASE_URL (\(baseURL)) is not https: the unsubscribe and "
                    + "preference links in real mail must be https (RFC 8058) and reachable by the recipients.")
        }
        return w
    }

    /// The database URL with any password hidden, for logs.
    public var redactedDatabaseURL: String {
        guard var c = URLComponents(string: databaseURL), c.password != nil else { return databaseURL }
        c.password = "***"
        return c.string ?? databaseURL
    }
}

/// A configuration mistake, reported as one clear line at start-up.
public struct ConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
