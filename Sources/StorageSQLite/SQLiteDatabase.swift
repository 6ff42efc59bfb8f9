import Foundation
import GRDB
import GRDBSQLite
import Logging
import Storage
import Synchronization

/// The embedded engine: one SQLite file in WAL mode through GRDB.
///
/// Reads run concurrently on GRDB's reader connections. Writes and transactions run on the single writer
/// connection, serialised by an async lock so that a transaction's statements never interleave with another's.
public final class SQLiteDatabase: SQLDatabase {
    public let dialect = SQLDialect.sqlite
    let pool: DatabasePool
    let writer: SQLiteWriter
    let committer: GroupCommitter
    let checkpointer: WALCheckpointer
    private let closed = Mutex(false)
    var writerLock: AsyncLock { writer.lock }

    public struct Options: Sendable {
        /// `FULL` makes every commit durable against power loss; `NORMAL` only against a process crash.
        public var synchronous: String = "FULL"
        public var busyTimeoutSeconds: Double = 5
        public var maximumReaderCount: Int = 8
        /// The most transactions one group commit takes.
        public var maxBatch: Int = 128
        /// The WAL size (pages) at which a checkpoint starts on its own connection, and the size at which the
        /// committing connection checkpoints itself (`WALCheckpointer`).
        public var checkpointPages: Int32 = 1_000
        public var checkpointFallbackPages: Int32 = 8_000
        public init() {}
    }

    public init(path: String, options: Options = Options()) throws {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(options.busyTimeoutSeconds)
        config.maximumReaderCount = options.maximumReaderCount
        // Transactions span several hops onto the writer queue; the writer lock keeps them whole.
        config.allowsUnsafeTransactions = true
        let synchronous =
            ["OFF", "NORMAL", "FULL", "EXTRA"].contains(options.synchronous.uppercased())
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
        do {
            let checkpointer = try WALCheckpointer(
                path: path, synchronous: synchronous, busyMode: config.busyMode,
                thresholds: .init(pages: options.checkpointPages, fallbackPages: options.checkpointFallbackPages))
            try Self.syncWrite(pool) { db in
                // GRDB's WAL set-up sets `synchronous = NORMAL` on the writer after `prepareDatabase` ran: set it
                // again, or a commit would be durable against a crash of the process but not against a power loss.
                try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
                checkpointer.install(on: db)
            }
            self.checkpointer = checkpointer
        } catch {
            try? pool.close()
            throw StorageError.connection("cannot open SQLite database at \(path): \(error)")
        }
        let writer = SQLiteWriter(pool: pool, lock: AsyncLock())
        self.writer = writer
        committer = GroupCommitter(maxBatch: options.maxBatch) { batch in await writer.commitBatch(batch) }
    }

    // MARK: SQLExecutor

    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        if Self.isReadOnly(sql) {
            // Reads run in place on a reader connection: there are more readers than cooperative threads, and a
            // read takes microseconds, so this beats a hop to GRDB's reader queue and back.
            do {
                return try Self.syncRead(pool) { db in try SQLiteRunner.query(db, sql, binds) }
            } catch {
                throw SQLiteRunner.translate(error)
            }
        }
        return try await writerLock.withLock {
            try writer.inPlace { db in try SQLiteRunner.query(db, sql, binds) }
        }
    }

    public func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await writerLock.withLock {
            try writer.inPlace { db in try SQLiteRunner.execute(db, sql, binds) }
        }
    }

    /// Group commit: concurrent transactions join one batch that runs on the writer inside a single
    /// `BEGIN IMMEDIATE … COMMIT`, each body in its own savepoint. A body that throws rolls back only its savepoint.
    /// Every caller is answered after the shared COMMIT, so an acknowledged write is durable, while one fsync serves
    /// the whole batch (docs/decisions/0005-group-commit.md).
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLExecutor) async throws -> T) async throws
        -> T
    {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let outcome = Outcome<T>()
            committer.submit(
                GroupCommitter.Member(
                    run: { tx in
                        // A body can run twice: once optimistically, and again with a savepoint when another body
                        // of its batch failed (SQLiteWriter.commitBatch). The last run is its outcome.
                        outcome.value = nil
                        outcome.error = nil
                        do { outcome.value = try await body(tx) } catch { outcome.error = error }
                        return outcome.error == nil
                    },
                    finish: { batchError in
                        // A failed batch is everyone's outcome: a body's own error may be from a run that the
                        // batch's later failure left behind.
                        if let error = batchError ?? outcome.error {
                            continuation.resume(throwing: error)
                        } else if let value = outcome.value {
                            continuation.resume(returning: value)
                        } else {
                            continuation.resume(throwing: StorageError.database("transaction produced no result"))
                        }
                    }))
        }
    }

    public func ping() async throws {
        _ = try await query("SELECT 1", [])
    }

    /// Closes the connections; a second call does nothing. (A second close used to reach the closed writer's
    /// connection, a null pointer by then, and `serve` crashed on SIGTERM after closing its runtime twice.)
    public func close() async {
        let first = closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        // The hook first: it points at the checkpointer, which must not be asked again once it is closed.
        try? Self.syncWrite(pool) { db in checkpointer.uninstall(from: db) }
        checkpointer.close()
        try? pool.close()
    }

    /// A synchronous context, so that overload resolution picks GRDB's blocking `writeWithoutTransaction`.
    private static func syncWrite<T>(_ pool: DatabasePool, _ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction(body)
    }

    /// A synchronous context, so that overload resolution picks GRDB's blocking access. `unsafeRead` skips the
    /// BEGIN/COMMIT that `read` wraps around its body: each call here is one statement, which is atomic anyway.
    private static func syncRead<T>(_ pool: DatabasePool, _ body: (Database) throws -> T) throws -> T {
        try pool.unsafeRead(body)
    }

    /// Whether a statement only reads: it starts with SELECT or WITH and has no RETURNING (our SQL keywords are
    /// upper case). Checked on UTF-8 bytes: this runs for every statement outside a transaction.
    static func isReadOnly(_ sql: String) -> Bool {
        var utf8 = sql.utf8.drop(while: { $0 == 0x20 || $0 == 0x0A || $0 == 0x09 || $0 == 0x0D })
        let starts = utf8.starts(with: "SELECT".utf8) || utf8.starts(with: "WITH".utf8)
        guard starts else { return false }
        let returning = Array("RETURNING".utf8)
        while !utf8.isEmpty {
            if utf8.starts(with: returning) { return false }
            utf8 = utf8.dropFirst()
        }
        return true
    }
}

/// The single writer connection and the lock that keeps each transaction (or batch) whole on it.
struct SQLiteWriter: Sendable {
    let pool: DatabasePool
    let lock: AsyncLock
    let failures = RecentFailures()

    /// Runs on the writer connection from the calling thread. Only while holding `lock`: the writer queue is then
    /// idle, so GRDB's synchronous access runs in place, without a thread hop. Statements take microseconds; the
    /// slow part, COMMIT's fsync, goes through `onWriter` instead so no cooperative thread blocks on the disk.
    func inPlace<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try Self.syncWrite(pool, body) } catch { throw SQLiteRunner.translate(error) }
    }

    /// A synchronous context, so that overload resolution picks GRDB's blocking `writeWithoutTransaction`.
    private static func syncWrite<T>(_ pool: DatabasePool, _ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction(body)
    }

    func onWriter<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            pool.asyncWriteWithoutTransaction { db in
                continuation.resume(with: Result { try body(db) }.mapError(SQLiteRunner.translate))
            }
        }
    }

    /// Runs one batch: the writer lock is held from BEGIN to COMMIT.
    ///
    /// Optimistically first: the bodies run one after another in the open transaction, with no savepoints (a
    /// SAVEPOINT and RELEASE around every body cost a fifth of the order PUT's throughput). When every body
    /// succeeds, that is the batch. When one throws, the whole transaction is rolled back and the batch runs again,
    /// each body in its own savepoint, so a failed body undoes only itself and the others are answered as if it had
    /// never run. After such a failure the next `savepointBatchesAfterFailure` batches go straight to savepoints,
    /// so a workload with many failing bodies does not pay twice for every batch.
    func commitBatch(_ members: [GroupCommitter.Member]) async {
        await lock.lock()
        var batchError: (any Error)? = nil
        do {
            let optimistic = members.count == 1 || !failures.recent()
            var committed = false
            if optimistic { committed = try await runOptimistically(members) }
            if !committed { try await runWithSavepoints(members) }
        } catch {
            batchError = error
            try? await onWriter { db in if db.isInsideTransaction { try db.execute(sql: "ROLLBACK") } }
        }
        await lock.unlock()
        for member in members { member.finish(batchError) }
    }

    /// True when every body succeeded and the batch committed; false when one threw (nothing is left of the batch).
    /// A batch of one needs no second run: its body's failure is its whole outcome.
    private func runOptimistically(_ members: [GroupCommitter.Member]) async throws -> Bool {
        try inPlace { db in try db.execute(sql: "BEGIN IMMEDIATE") }
        let tx = SQLiteTransaction(writer: self)
        for member in members {
            if await member.run(tx) {
                // Even a body that succeeded: it may have swallowed the error of that rollback.
                try inPlace(Self.requireOpenTransaction)
                continue
            }
            try inPlace { db in if db.isInsideTransaction { try db.execute(sql: "ROLLBACK") } }
            if members.count == 1 { return true }
            failures.record()
            return false
        }
        try await onWriter { db in try db.execute(sql: "COMMIT") }
        return true
    }

    private func runWithSavepoints(_ members: [GroupCommitter.Member]) async throws {
        try inPlace { db in try db.execute(sql: "BEGIN IMMEDIATE") }
        let tx = SQLiteTransaction(writer: self)
        for member in members {
            try inPlace { db in try db.execute(sql: "SAVEPOINT member") }
            if await member.run(tx) {
                try inPlace { db in try db.execute(sql: "RELEASE member") }
            } else {
                // Undo this member only (if SQLite rolled everything back, the savepoint is gone: nobody is
                // acknowledged).
                try inPlace { db in
                    try Self.requireOpenTransaction(db)
                    try db.execute(sql: "ROLLBACK TO member")
                    try db.execute(sql: "RELEASE member")
                }
            }
        }
        try await onWriter { db in try db.execute(sql: "COMMIT") }
    }

    /// After an I/O error or a full disk SQLite may have rolled the whole transaction back by itself: then the batch
    /// fails as a whole, and no later body may write in autocommit mode.
    private static func requireOpenTransaction(_ db: Database) throws {
        guard db.isInsideTransaction else { throw StorageError.database("the transaction was rolled back by SQLite") }
    }
}

/// How many of the coming batches run with savepoints from the start, because a body failed recently. Touched only
/// while the writer lock is held.
final class RecentFailures: @unchecked Sendable {
    static let savepointBatchesAfterFailure = 16
    private var left = 0

    func record() { left = Self.savepointBatchesAfterFailure }

    /// Whether this batch should use savepoints from the start; counts the batch.
    func recent() -> Bool {
        guard left > 0 else { return false }
        left -= 1
        return true
    }
}

/// The executor handed to a transaction body: every statement runs on the writer inside the open transaction.
struct SQLiteTransaction: SQLExecutor {
    let writer: SQLiteWriter
    var dialect: SQLDialect { .sqlite }

    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try writer.inPlace { db in try SQLiteRunner.query(db, sql, binds) }
    }
    func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try writer.inPlace { db in try SQLiteRunner.execute(db, sql, binds) }
    }
    func insertEach(
        into table: String, columns: [String], types: [MultiRow.ColumnType], count: Int,
        value: (_ row: Int, _ column: Int) -> SQLValue
    ) async throws {
        precondition(columns.count == types.count, "\(columns.count) columns, \(types.count) types")
        let insert = "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
        try writer.inPlace { db in try SQLiteRunner.insertEach(db, insert, count: count, columns: columns.count, value)
        }
    }
}

enum SQLiteRunner {
    /// SQLite's `SQLITE_TRANSIENT`: SQLite copies a bound value before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    static func query(_ db: Database, _ sql: String, _ binds: [any SQLBindable]) throws -> [SQLRow] {
        try run(db, sql, binds).rows
    }

    static func execute(_ db: Database, _ sql: String, _ binds: [any SQLBindable]) throws -> Int {
        if binds.isEmpty && !sql.contains("?") {
            // Possibly several statements (migrations, set-up): GRDB splits and runs them.
            try db.execute(sql: sql)
            return db.changesCount
        }
        return try run(db, sql, binds).changes
    }

    /// One statement through SQLite's C API, on the statement GRDB prepared and caches for this SQL. GRDB's own
    /// execution (argument values, validation, `Row` objects) cost more than SQLite's work for the small statements
    /// of an order, and on the writer every microsecond is spent while the whole batch waits (decision 0005).
    /// GRDB still owns the connection, the statement cache, transactions and savepoints.
    static func run(_ db: Database, _ sql: String, _ binds: [any SQLBindable]) throws -> (rows: [SQLRow], changes: Int)
    {
        let statement = try db.cachedStatement(sql: sql)
        let handle = statement.sqliteStatement
        func failure(_ code: CInt) -> DatabaseError { Self.failure(db, code, sql) }
        guard Int(sqlite3_bind_parameter_count(handle)) == binds.count else {
            throw DatabaseError(
                resultCode: .SQLITE_MISUSE, message: "wrong number of statement arguments: \(binds.count)", sql: sql)
        }
        sqlite3_reset(handle)
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        for (offset, bind) in binds.enumerated() {
            let code = try self.bind(handle, CInt(offset + 1), bind.sqlValue)
            guard code == SQLITE_OK else { throw failure(code) }
        }
        var rows: [SQLRow] = []
        var columns: [String: Int]?
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { break }
            guard code == SQLITE_ROW else { throw failure(code) }
            if columns == nil { columns = SQLRow.columnIndexes(statement.columnNames) }
            let count = sqlite3_column_count(handle)
            var values: [SQLValue] = []
            values.reserveCapacity(Int(count))
            for column in 0..<count {
                switch sqlite3_column_type(handle, column) {
                case SQLITE_INTEGER: values.append(.int(sqlite3_column_int64(handle, column)))
                case SQLITE_FLOAT: values.append(.double(sqlite3_column_double(handle, column)))
                case SQLITE_TEXT:
                    let bytes = Int(sqlite3_column_bytes(handle, column))
                    let text = sqlite3_column_text(handle, column).map {
                        String(decoding: UnsafeBufferPointer(start: $0, count: bytes), as: UTF8.self)
                    }
                    values.append(.text(text ?? ""))
                case SQLITE_BLOB:
                    let bytes = Int(sqlite3_column_bytes(handle, column))
                    let blob = sqlite3_column_blob(handle, column).map {
                        [UInt8](UnsafeRawBufferPointer(start: $0, count: bytes))
                    }
                    values.append(.blob(blob ?? []))
                default: values.append(.null)
                }
            }
            rows.append(SQLRow(columns: columns!, values: values))
        }
        return (rows, Int(sqlite3_changes(db.sqliteConnection)))
    }

    /// SQLite's error for a failed call on `db`'s connection, with its extended code and message.
    private static func failure(_ db: Database, _ code: CInt, _ sql: String) -> DatabaseError {
        let connection = db.sqliteConnection
        let extended = connection.map { sqlite3_extended_errcode($0) } ?? code
        let message = connection.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) }
        return DatabaseError(resultCode: ResultCode(rawValue: extended), message: message, sql: sql)
    }

    /// Binds one value to parameter `index` (from 1) of a prepared statement; SQLite's result code.
    private static func bind(_ handle: SQLiteStatement, _ index: CInt, _ value: SQLValue) throws -> CInt {
        switch value {
        case .null: return sqlite3_bind_null(handle, index)
        case .int(let v): return sqlite3_bind_int64(handle, index, v)
        case .double(let v): return sqlite3_bind_double(handle, index, v)
        case .text(var v):
            // By byte count, so a NUL inside the text is kept; "" stays text, not NULL.
            return v.withUTF8 { utf8 in
                guard let base = utf8.baseAddress, !utf8.isEmpty else {
                    return sqlite3_bind_text(handle, index, "", 0, transient)
                }
                return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) {
                    sqlite3_bind_text(handle, index, $0, CInt(utf8.count), transient)
                }
            }
        case .blob(let v):
            return v.isEmpty
                ? sqlite3_bind_zeroblob(handle, index, 0)
                : v.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, CInt($0.count), transient) }
        case .array:
            // `MultiRow.inserts` passes arrays only to a column-wise dialect; SQLite's is row-wise.
            throw StorageError.database("SQLite takes no array binds")
        }
    }

    /// `SQLExecutor.insertEach`: `MultiRow`'s statement shapes (64 rows, then powers of two), each value bound
    /// straight from `value`. Building `MultiRow.inserts` cost more than SQLite's own work per click row: an
    /// existential per value and arrays per row and per chunk. (One single-row statement stepped per row cost more
    /// still: SQLite opens the table's and the indexes' cursors again for every statement it steps.)
    static func insertEach(
        _ db: Database, _ insert: String, count: Int, columns: Int, _ value: (Int, Int) -> SQLValue
    ) throws {
        let marks = "(" + MultiRow.list(columns) + ")"
        var texts: [Int: String] = [:]
        var start = 0
        for size in MultiRow.chunkSizes(count, dialect: .sqlite) {
            let sql = texts[size] ?? insert + MultiRow.values(rows: size, row: marks)
            texts[size] = sql
            let handle = try db.cachedStatement(sql: sql).sqliteStatement
            sqlite3_reset(handle)
            defer {
                sqlite3_reset(handle)
                sqlite3_clear_bindings(handle)
            }
            var index: CInt = 1
            for row in start..<start + size {
                for column in 0..<columns {
                    let code = try bind(handle, index, value(row, column))
                    guard code == SQLITE_OK else { throw failure(db, code, sql) }
                    index += 1
                }
            }
            let code = sqlite3_step(handle)
            guard code == SQLITE_DONE else { throw failure(db, code, sql) }
            start += size
        }
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

/// The result of one transaction body, written by the batch runner and read by the waiting caller.
final class Outcome<T>: @unchecked Sendable {
    var value: T?
    var error: (any Error)?
}

/// Collects transactions that arrive while a batch is committing; one drainer at a time runs them in batches.
/// No artificial delay: a batch is whatever queued up during the previous commit.
final class GroupCommitter: @unchecked Sendable {
    struct Member: Sendable {
        /// Runs the body inside the open transaction; false when it threw (its savepoint is rolled back).
        let run: @Sendable (SQLiteTransaction) async -> Bool
        /// Answers the caller once the batch has committed (nil) or failed.
        let finish: @Sendable ((any Error)?) -> Void
    }

    private let lock = NSLock()
    private var pending: [Member] = []
    private var draining = false
    private let maxBatch: Int
    private let commit: @Sendable ([Member]) async -> Void

    init(maxBatch: Int, commit: @escaping @Sendable ([Member]) async -> Void) {
        self.maxBatch = max(1, maxBatch)
        self.commit = commit
    }

    func submit(_ member: Member) {
        let startDrainer: Bool = lock.withLock {
            pending.append(member)
            if draining { return false }
            draining = true
            return true
        }
        if startDrainer { Task { await self.drain() } }
    }

    private func drain() async {
        while true {
            let batch: [Member] = lock.withLock {
                let take = Array(pending.prefix(maxBatch))
                pending.removeFirst(take.count)
                if take.isEmpty { draining = false }
                return take
            }
            if batch.isEmpty { return }
            await commit(batch)
        }
    }
}
