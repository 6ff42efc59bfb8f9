import Foundation
import GRDB
import Logging
import Storage

/// The embedded engine: one SQLite file in WAL mode through GRDB.
///
/// Reads run concurrently on GRDB's reader connections. Writes and transactions run on the single writer
/// connection, serialised by an async lock so that a transaction's statements never interleave with another's.
public final class SQLiteDatabase: SQLDatabase {
    public let dialect = SQLDialect.sqlite
    let pool: DatabasePool
    let writerLock = AsyncLock()

    public struct Options: Sendable {
        /// `FULL` makes every commit durable against power loss; `NORMAL` only against a process crash.
        public var synchronous: String = "FULL"
        public var busyTimeoutSeconds: Double = 5
        public var maximumReaderCount: Int = 8
        public init() {}
    }

    public init(path: String, options: Options = Options()) throws {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(options.busyTimeoutSeconds)
        config.maximumReaderCount = options.maximumReaderCount
        // Transactions span several hops onto the writer queue; the writer lock keeps them whole.
        config.allowsUnsafeTransactions = true
        let synchronous = ["OFF", "NORMAL", "FULL", "EXTRA"].contains(options.synchronous.uppercased())
            ? options.synchronous.uppercased() : "FULL"
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            pool = try DatabasePool(path: path, configuration: config)
        } catch {
            throw StorageError.connection("cannot open SQLite database at \(path): \(error)")
        }
    }

    // MARK: SQLExecutor

    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        if Self.isReadOnly(sql) {
            return try await onReader { db in try SQLiteRunner.query(db, sql, binds) }
        }
        return try await writerLock.withLock {
            try await onWriter { db in try SQLiteRunner.query(db, sql, binds) }
        }
    }

    public func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await writerLock.withLock {
            try await onWriter { db in try SQLiteRunner.execute(db, sql, binds) }
        }
    }

    public func transaction<T: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> T) async throws -> T {
        try await writerLock.withLock {
            try await onWriter { db in try db.execute(sql: "BEGIN IMMEDIATE") }
            let tx = SQLiteTransaction(database: self)
            do {
                let result = try await body(tx)
                try await onWriter { db in try db.execute(sql: "COMMIT") }
                return result
            } catch {
                try? await onWriter { db in if db.isInsideTransaction { try db.execute(sql: "ROLLBACK") } }
                throw error
            }
        }
    }

    public func ping() async throws {
        _ = try await onReader { db in try SQLiteRunner.query(db, "SELECT 1", []) }
    }

    public func close() async {
        try? pool.close()
    }

    // MARK: Hops onto GRDB's queues, immune to task cancellation so a transaction is never left half-done.

    func onWriter<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            pool.asyncWriteWithoutTransaction { db in
                continuation.resume(with: Result { try body(db) }.mapError(SQLiteRunner.translate))
            }
        }
    }

    func onReader<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            pool.asyncRead { result in
                continuation.resume(
                    with: Result { try body(try result.get()) }.mapError(SQLiteRunner.translate))
            }
        }
    }

    static func isReadOnly(_ sql: String) -> Bool {
        let head = sql.prefix(12).trimmingCharacters(in: .whitespacesAndNewlines).uppercased()
        return (head.hasPrefix("SELECT") || head.hasPrefix("WITH")) && !sql.uppercased().contains("RETURNING")
    }
}

/// The executor handed to a transaction body: every statement runs on the writer inside the open transaction.
struct SQLiteTransaction: SQLExecutor {
    let database: SQLiteDatabase
    var dialect: SQLDialect { .sqlite }

    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try await database.onWriter { db in try SQLiteRunner.query(db, sql, binds) }
    }
    func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await database.onWriter { db in try SQLiteRunner.execute(db, sql, binds) }
    }
}

enum SQLiteRunner {
    static func arguments(_ binds: [any SQLBindable]) -> StatementArguments {
        StatementArguments(
            binds.map { bind -> DatabaseValue in
                switch bind.sqlValue {
                case .null: .null
                case .int(let v): v.databaseValue
                case .double(let v): v.databaseValue
                case .text(let v): v.databaseValue
                case .blob(let v): Data(v).databaseValue
                }
            })
    }

    static func query(_ db: Database, _ sql: String, _ binds: [any SQLBindable]) throws -> [SQLRow] {
        let statement = try db.cachedStatement(sql: sql)
        let rows = try Row.fetchAll(statement, arguments: arguments(binds))
        guard let first = rows.first else { return [] }
        var columns: [String: Int] = [:]
        for (index, name) in first.columnNames.enumerated() where columns[name] == nil { columns[name] = index }
        return rows.map { row in
            SQLRow(
                columns: columns,
                values: row.databaseValues.map { value in
                    switch value.storage {
                    case .null: .null
                    case .int64(let v): .int(v)
                    case .double(let v): .double(v)
                    case .string(let v): .text(v)
                    case .blob(let v): .blob([UInt8](v))
                    }
                })
        }
    }

    static func execute(_ db: Database, _ sql: String, _ binds: [any SQLBindable]) throws -> Int {
        if binds.isEmpty && !sql.contains("?") {
            try db.execute(sql: sql)
        } else {
            let statement = try db.cachedStatement(sql: sql)
            try statement.execute(arguments: arguments(binds))
        }
        return db.changesCount
    }

    @Sendable static func translate(_ error: any Error) -> any Error {
        guard let error = error as? DatabaseError else { return error }
        switch error.extendedResultCode {
        case .SQLITE_CONSTRAINT_UNIQUE, .SQLITE_CONSTRAINT_PRIMARYKEY:
            return StorageError.uniqueViolation(constraint: error.message ?? "unique")
        case .SQLITE_CONSTRAINT_FOREIGNKEY:
            return StorageError.foreignKeyViolation(error.message ?? "foreign key")
        default:
            return StorageError.database(error.description)
        }
    }
}
