import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import Storage

/// The scale-out engine: PostgreSQL through PostgresNIO's connection pool. Several stateless nodes share one
/// database; jobs are claimed with `FOR UPDATE SKIP LOCKED` and schedulers take advisory locks.
public final class PostgresDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgres
    let client: PostgresClient
    let logger: Logger
    /// Data statements go out as named prepared statements, parsed once per connection (`prepared_statements=on` in
    /// the URL). Off by default: on a freshly created database PostgreSQL's cached generic plans can pick the wrong
    /// index until autovacuum analyses the tables, and in the standard benchmark that cost what the saved planning
    /// won (docs/decisions/0008-postgres-prepared-statements.md).
    let prepared: Bool
    private let runTask: Task<Void, Never>

    /// Opens a pool for a URL like `postgres://user:pass@host:5432/db?sslmode=disable&pool_size=20`
    /// (`&prepared_statements=on` prepares data statements per connection).
    public init(url: String, logger: Logger) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme),
            let host = components.host, !host.isEmpty
        else { throw StorageError.badURL("expected postgres://user:pass@host:port/database, got '\(url)'") }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let tls: PostgresClient.Configuration.TLS
        switch query["sslmode"] ?? "prefer" {
        case "disable": tls = .disable
        case "require", "verify-full": tls = .require(.makeClientConfiguration())
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case let other: throw StorageError.badURL("unknown sslmode '\(other)'")
        }
        var config = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: components.password, database: database.isEmpty ? nil : database, tls: tls)
        if let size = query["pool_size"].flatMap(Int.init), size > 0 {
            config.options.maximumConnections = size
        }
        let prepared: Bool
        switch query["prepared_statements"] ?? "off" {
        case "on": prepared = true
        case "off": prepared = false
        case let other: throw StorageError.badURL("prepared_statements must be on or off, got '\(other)'")
        }
        self.prepared = prepared
        self.logger = logger
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        runTask = Task { await client.run() }
    }

    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try await client.withConnection { conn in
            try await PostgresRunner.run(conn, sql, binds, logger, prepared: prepared, wantsRows: true).rows
        }
    }

    public func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await client.withConnection { conn in
            try await PostgresRunner.run(conn, sql, binds, logger, prepared: prepared, wantsRows: false).affected
        }
    }

    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLExecutor) async throws -> T) async throws
        -> T
    {
        try await client.withConnection { conn in
            // The body runs on the connection's event loop: each answer is read there, and the body continues with
            // its next statement on the same thread, instead of a hop to the cooperative pool and back per statement
            // (docs/decisions/0019-postgres-transactions-on-the-event-loop.md). A body must not block.
            try await withTaskExecutorPreference(EventLoopTaskExecutor(conn.eventLoop)) {
                _ = try await PostgresRunner.run(conn, "BEGIN", [], logger, prepared: false)
                do {
                    let result = try await body(
                        PostgresTransaction(connection: conn, logger: logger, prepared: prepared))
                    _ = try await PostgresRunner.run(conn, "COMMIT", [], logger, prepared: false)
                    return result
                } catch {
                    _ = try? await PostgresRunner.run(conn, "ROLLBACK", [], logger, prepared: false)
                    throw error
                }
            }
        }
    }

    public func ping() async throws {
        _ = try await query("SELECT 1", [])
    }

    public func close() async {
        runTask.cancel()
        await runTask.value
    }
}

struct PostgresTransaction: SQLExecutor {
    let connection: PostgresConnection
    let logger: Logger
    let prepared: Bool
    /// Set once a statement failed: PostgreSQL refuses everything else in the transaction until ROLLBACK, and a
    /// statement's first preparation refused that way would stay refused on this connection (PostgresNIO keeps a
    /// failed preparation's error for the name). So the rest of a failed transaction goes out unnamed.
    private let failed = NIOLockedValueBox(false)
    var dialect: SQLDialect { .postgres }

    init(connection: PostgresConnection, logger: Logger, prepared: Bool) {
        self.connection = connection
        self.logger = logger
        self.prepared = prepared
    }

    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try await run(sql, binds, wantsRows: true).rows
    }
    func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await run(sql, binds, wantsRows: false).affected
    }

    private func run(_ sql: String, _ binds: [any SQLBindable], wantsRows: Bool) async throws
        -> (rows: [SQLRow], affected: Int)
    {
        do {
            let named = prepared && !failed.withLockedValue { $0 }
            return try await PostgresRunner.run(connection, sql, binds, logger, prepared: named, wantsRows: wantsRows)
        } catch {
            failed.withLockedValue { $0 = true }
            throw error
        }
    }
}

enum PostgresRunner {
    /// Turns portable `?` placeholders into `$1, $2, …`, leaving quoted literals and identifiers alone.
    /// Works on UTF-8 bytes (ASCII syntax never occurs inside a multi-byte character); the rewritten SQL is
    /// cached, as the same few statements come again and again.
    static func numberPlaceholders(_ sql: String) -> String {
        if let cached = placeholderCache.withLockedValue({ $0[sql] }) { return cached }
        var out: [UInt8] = []
        out.reserveCapacity(sql.utf8.count + 32)
        var n = 0
        var quote: UInt8? = nil
        for byte in sql.utf8 {
            if let q = quote {
                if byte == q { quote = nil }
                out.append(byte)
            } else if byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"") {
                quote = byte
                out.append(byte)
            } else if byte == UInt8(ascii: "?") {
                n += 1
                out.append(UInt8(ascii: "$"))
                out.append(contentsOf: String(n).utf8)
            } else {
                out.append(byte)
            }
        }
        let result = String(decoding: out, as: UTF8.self)
        placeholderCache.withLockedValue { cache in
            if cache.count > 2_000 { cache.removeAll() }  // statements built with IN (?, ?, …) vary; stay bounded
            cache[sql] = result
        }
        return result
    }

    static let placeholderCache = NIOLockedValueBox<[String: String]>([:])

    static func run(
        _ conn: PostgresConnection, _ sql: String, _ binds: [any SQLBindable], _ logger: Logger, prepared: Bool,
        wantsRows: Bool = false
    ) async throws -> (rows: [SQLRow], affected: Int) {
        var bindings = PostgresBindings(capacity: binds.count)
        for bind in binds {
            switch bind.sqlValue {
            case .null: bindings.appendNull()
            case .int(let v): bindings.append(v)
            case .double(let v): bindings.append(v)
            case .text(let v): bindings.append(v)
            case .blob(let v): bindings.append(ByteBuffer(bytes: v))
            case .array(let type, let values): try bindings.append(ColumnArray(type: type, values: values))
            }
        }
        let numbered = numberPlaceholders(sql)
        do {
            if prepared, let kind = PreparedSQL.kind(of: numbered, wantsRows: wantsRows),
                case let sent = kind == .count ? numbered + " RETURNING 1" : numbered,
                case let types = binds.map({ PreparedSQL.type(of: $0.sqlValue) }),
                let name = PreparedSQL.name(sent, types: types)
            {
                return try await PreparedSQL.run(
                    conn, PreparedSQL.Current(name: name, sql: sent, types: types), kind: kind,
                    bindings: bindings, logger: logger)
            }
            let result = try await conn.query(PostgresQuery(unsafeSQL: numbered, binds: bindings), logger: logger)
                .get()
            let rows = try self.rows(result.rows)
            return (rows, result.metadata.rows ?? rows.count)
        } catch let error as PSQLError {
            throw translate(error)
        }
    }

    static func rows(_ rows: some Sequence<PostgresRow>) throws -> [SQLRow] {
        var columns: [String: Int]?
        return try rows.map { row in
            if columns == nil { columns = SQLRow.columnIndexes(row.map(\.columnName)) }
            return SQLRow(columns: columns!, values: try row.map(value))
        }
    }

    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2: return .int(Int64(try cell.decode(Int16.self)))
        case .int4: return .int(Int64(try cell.decode(Int32.self)))
        case .int8: return .int(try cell.decode(Int64.self))
        case .bool: return .int(try cell.decode(Bool.self) ? 1 : 0)
        case .float4, .float8: return .double(try cell.decode(Double.self))
        case .bytea: return .blob(Array(buffer: try cell.decode(ByteBuffer.self)))
        case .numeric:
            let text = try cell.decode(String.self)
            if let i = Int64(text) { return .int(i) }
            return .double(Double(text) ?? 0)
        default: return .text(try cell.decode(String.self))
        }
    }

    static func translate(_ error: PSQLError) -> any Error {
        guard let info = error.serverInfo else { return StorageError.connection("\(error)") }
        let state = info[.sqlState] ?? ""
        let message = info[.message] ?? "\(error)"
        switch state {
        case "23505": return StorageError.uniqueViolation(constraint: info[.constraintName] ?? message)
        case "23503": return StorageError.foreignKeyViolation(message)
        default: return StorageError.database("\(state): \(message)")
        }
    }
}

/// Named prepared statements for SQL built at run time. PostgresNIO prepares a statement once per connection and
/// then only binds and executes it, but it takes the name, SQL and parameter types from static requirements of a
/// `PostgresPreparedStatement` type. `Statement` answers them from a task-local value that `run` sets around the
/// call; PostgresNIO reads them when the call starts (docs/decisions/0008-postgres-prepared-statements.md).
enum PreparedSQL {
    struct Current: Sendable {
        var name: String
        var sql: String
        var types: [PostgresDataType]
    }
    @TaskLocal static var current: Current?

    /// A statement that returns rows (SELECT, or a write with RETURNING).
    struct Statement: PostgresPreparedStatement {
        typealias Row = PostgresRow
        static var name: String { current!.name }
        static var sql: String { current!.sql }
        static var bindingDataTypes: [PostgresDataType] { current!.types }
        let bindings: PostgresBindings
        func makeBindings() throws -> PostgresBindings { bindings }
        func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
    }

    /// `rows`: the statement as written. `count`: a write without RETURNING, sent with `RETURNING 1` appended and
    /// answered with the number of rows (PostgresNIO 1.33's prepared path has no working command tag for writes:
    /// reading it traps before the rows are consumed).
    enum Kind { case rows, count }

    /// Only plain data statements are prepared; transaction control and DDL go out unnamed. What the caller asked
    /// for decides the kind: rows (`query`), or the row count (`execute`, then only for writes without RETURNING,
    /// whose rows the command tag would not account for).
    static func kind(of sql: String, wantsRows: Bool) -> Kind? {
        let head = sql.utf8.drop(while: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") })
            .prefix(while: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "(") })
        switch String(decoding: head, as: UTF8.self).uppercased() {
        case "SELECT", "WITH": return wantsRows ? .rows : nil
        case "INSERT", "UPDATE", "DELETE":
            if wantsRows { return .rows }
            // Appending must stay safe: no RETURNING of its own, no comment or second statement at the end.
            let appendable = ["returning", "--", ";", "/*"].allSatisfy {
                sql.range(of: $0, options: .caseInsensitive) == nil
            }
            return appendable ? .count : nil
        default: return nil
        }
    }

    /// One name per statement text and parameter types: the same SQL with a NULL where a value was before is a
    /// different statement to PostgreSQL's type inference. A name, once given, always means the same statement
    /// (connections keep what they prepared), so the registry only grows; past `limit` statements (SQL built with a
    /// varying `IN (?, ?, …)` list) new ones go out unnamed.
    static func name(_ sql: String, types: [PostgresDataType]) -> String? {
        // A multi-row write (`MultiRow`) declares a NULL wherever one of its many cells is empty, and which cells
        // are empty changes from one batch to the next: named, nearly every batch would be a new statement.
        if types.count > maxParametersWithNulls, types.contains(.null) { return nil }
        var key = sql
        key.unicodeScalars.append("\u{0}")
        for t in types { key += String(t.rawValue, radix: 36) + "," }
        return names.withLockedValue { names in
            if let name = names[key] { return name }
            guard names.count < limit else { return nil }
            let name = "rcp_\(names.count + 1)"
            names[key] = name
            return name
        }
    }

    /// The parameter type the bindings above declare for a value (`appendNull` declares none).
    static func type(of value: SQLValue) -> PostgresDataType {
        switch value {
        case .null: .null
        case .int: .int8
        case .double: .float8
        case .text: .text
        case .blob: .bytea
        case .array(let type, _): ColumnArray.arrayType(type)
        }
    }

    static let limit = 4_000
    static let maxParametersWithNulls = 32
    static let names = NIOLockedValueBox<[String: String]>([:])

    static func run(
        _ conn: PostgresConnection, _ current: Current, kind: Kind, bindings: PostgresBindings, logger: Logger
    ) async throws -> (rows: [SQLRow], affected: Int) {
        try await $current.withValue(current) {
            var rows: [PostgresRow] = []
            for try await row in try await conn.execute(Statement(bindings: bindings), logger: logger) {
                rows.append(row)
            }
            switch kind {
            case .rows:
                let converted = try PostgresRunner.rows(rows)
                return (converted, converted.count)
            case .count:
                return ([], rows.count)
            }
        }
    }
}

/// Runs a task's jobs on one NIO event loop: a transaction's statements then continue on the thread that read the
/// database's answer, with no hop to the cooperative pool and back per statement. (This swift-nio has no task
/// executor of its own for an event loop.)
final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    let eventLoop: any EventLoop
    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A column of a multi-row insert as one PostgreSQL array (`MultiRow.inserts`), in the binary array format:
/// dimensions, a has-NULL flag, the element type, the length and lower bound, then each element as its length
/// (-1 for NULL) and its bytes.
struct ColumnArray: PostgresThrowingDynamicTypeEncodable {
    let type: MultiRow.ColumnType
    let values: [SQLValue]

    static func arrayType(_ type: MultiRow.ColumnType) -> PostgresDataType {
        switch type {
        case .int: .int8Array
        case .double: .float8Array
        case .text: .textArray
        }
    }

    var psqlType: PostgresDataType { Self.arrayType(type) }
    var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(
        into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>
    ) throws {
        let element: PostgresDataType =
            switch type {
            case .int: .int8
            case .double: .float8
            case .text: .text
            }
        buffer.writeInteger(Int32(values.isEmpty ? 0 : 1))
        buffer.writeInteger(Int32(values.contains(.null) ? 1 : 0))
        buffer.writeInteger(element.rawValue)
        guard !values.isEmpty else { return }
        buffer.writeInteger(Int32(values.count))
        buffer.writeInteger(Int32(1))
        for value in values {
            switch (type, value) {
            case (_, .null):
                buffer.writeInteger(Int32(-1))
            case (.int, .int(let v)):
                buffer.writeInteger(Int32(8))
                buffer.writeInteger(v)
            case (.double, .double(let v)):
                buffer.writeInteger(Int32(8))
                buffer.writeInteger(v.bitPattern)
            case (.double, .int(let v)):
                buffer.writeInteger(Int32(8))
                buffer.writeInteger(Double(v).bitPattern)
            case (.text, .text(let v)):
                buffer.writeInteger(Int32(v.utf8.count))
                buffer.writeString(v)
            default:
                throw StorageError.database("a value that is not \(type.rawValue) in an array of \(type.rawValue)")
            }
        }
    }
}
