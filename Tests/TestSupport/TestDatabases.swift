import Foundation
import Logging
import ReciprocityCore
import Storage
import StoragePostgres
import StorageSQLite

/// The engines every storage test runs on. PostgreSQL joins when `RECIPROCITY_TEST_POSTGRES_URL` names a server
/// whose user may create databases; each test gets a database of its own.
public enum Engine: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite, postgres

    public var description: String { rawValue }

    public static var postgresAdminURL: String? {
        ProcessInfo.processInfo.environment["RECIPROCITY_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    public static var available: [Engine] { postgresAdminURL == nil ? [.sqlite] : [.sqlite, .postgres] }

    public static let logger: Logger = {
        var l = Logger(label: "test")
        l.logLevel = .warning
        return l
    }()

    /// Opens a fresh, migrated database, runs `body`, and removes the database again.
    @discardableResult
    public func withDatabase<T>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        func use(_ db: any SQLDatabase) async throws -> T {
            do {
                try await Migrator.migrate(db, logger: Self.logger)
                let result = try await body(db)
                await db.close()
                return result
            } catch {
                await db.close()
                throw error
            }
        }
        switch self {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcp-test-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            return try await use(SQLiteDatabase(path: dir.appendingPathComponent("test.sqlite").path))
        case .postgres:
            return try await Self.withFreshPostgresDatabase(prefix: "rcp_t_") { url in
                // The contract suite runs the opt-in prepared path; the application tests (withDatabaseURL) run the
                // default, unnamed one.
                let on = (url.contains("?") ? "&" : "?") + "prepared_statements=on"
                return try await use(PostgresDatabase(url: url + on, logger: Self.logger))
            }
        }
    }

    /// Creates an empty PostgreSQL database, hands its URL to `body`, and drops it afterwards, however `body` ends.
    static func withFreshPostgresDatabase<T>(prefix: String, _ body: (String) async throws -> T) async throws -> T {
        guard let adminURL = postgresAdminURL else { throw TestSetupError("RECIPROCITY_TEST_POSTGRES_URL is not set") }
        let name = prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        let admin = try PostgresDatabase(url: adminURL, logger: logger)
        func drop() async {
            _ = try? await admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            await admin.close()
        }
        try await admin.execute("CREATE DATABASE \(name)")
        guard var components = URLComponents(string: adminURL) else {
            throw TestSetupError("bad RECIPROCITY_TEST_POSTGRES_URL")
        }
        components.path = "/\(name)"
        do {
            let result = try await body(components.string ?? "")
            await drop()
            return result
        } catch {
            await drop()
            throw error
        }
    }

    /// A fresh, empty database's URL for the whole application (which migrates it itself).
    public func withDatabaseURL<T>(_ body: (String) async throws -> T) async throws -> T {
        switch self {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcp-app-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            return try await body("sqlite://" + dir.appendingPathComponent("app.sqlite").path)
        case .postgres:
            return try await Self.withFreshPostgresDatabase(prefix: "rcp_a_", body)
        }
    }

    /// A store on a fresh database with a manual clock, plus one workspace to work in.
    @discardableResult
    public func withStore<T>(
        clock: ManualClock = ManualClock(), subscriptions: EventSubscriptions = .init(),
        _ body: (Store, Workspace, ManualClock) async throws -> T
    ) async throws -> T {
        try await withDatabase { db in
            let store = Store(
                db: db, clock: clock, secret: Array(repeating: 7, count: 32), subscriptions: subscriptions)
            let workspace = try await store.createWorkspace(
                NewWorkspace(slug: "shop-a", name: "Shop A", senderEmail: "a@shop.example"))
            return try await body(store, workspace, clock)
        }
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// An order body like a shop sends it.
public func samplePayload(
    email: String = "anna.muster@example.com", status: String = "placed", items: Int = 1,
    firstName: String? = "Anna", statusTimes: [String: String]? = nil, referralCode: String? = nil,
    consents: [OrderPayload.CheckoutConsent]? = nil
) -> OrderPayload {
    OrderPayload(
        customer: .init(email: email, firstName: firstName, lastName: "Muster", locale: "de-DE"), currency: "EUR",
        items: (0..<items).map { .init(sku: "SKU-\($0)", name: "Artikel \($0)", quantity: 1 + $0, unitPrice: "9.90") },
        totals: .init(total: "19.80"), status: status, statusTimes: statusTimes,
        shippingAddress: .init(
            name: "Anna Muster", street: "Hauptstraße 1", postalCode: "10115", city: "Berlin", country: "DE"),
        referralCode: referralCode, consents: consents)
}

extension Store {
    /// A mail in the outbox (queued), as a composer would have written it; its id.
    @discardableResult
    public func enqueueTestMail(
        _ workspace: Workspace, contactID: ContactID? = nil, to: String = "anna@example.com", messageID: String,
        subject: String = "Danke", message: String = "Hallo Anna"
    ) async throws -> Int64 {
        try await db.transaction { tx in
            try await self.enqueueMail(
                tx,
                OutboxDraft(
                    workspaceID: workspace.id, contactID: contactID, kind: .thankYou, recipient: try EmailAddress(to),
                    messageID: messageID, subject: subject, message: message))
        }
    }

    @discardableResult
    public func put(_ workspace: Workspace, _ id: String, _ payload: OrderPayload) async throws -> OrderUpsertResult {
        let submission = try OrderSubmission.validate(externalID: id, payload: payload, receivedAt: clock.now())
        return try await upsertOrder(
            workspaceID: workspace.id, submission: submission, fingerprint: Store.fingerprint(payload))
    }
}

/// Polls `condition` until it holds; throws, naming `what`, if it does not within `timeout`.
public func waitUntil(_ what: String, timeout: Duration = .seconds(20), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while await !condition() {
        guard ContinuousClock.now < deadline else { throw TestSetupError("timed out waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(5))
    }
}
