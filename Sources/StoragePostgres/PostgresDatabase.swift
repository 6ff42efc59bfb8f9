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
    private let runTask: Task<Void, Never>

    /// Opens a pool for a URL like `postgres://user:pass@host:5432/db?sslmode=disable&pool_size=20`.
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
        self.logger = logger
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        runTask = Task { await client.run() }
    }

    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try await client.withConnection { conn in try await PostgresRunner.run(conn, sql, binds, logger).rows }
    }

    public func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await client.withConnection { conn in try await PostgresRunner.run(conn, sql, binds, logger).affected }
    }

    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLExecutor) async throws -> T) async throws
        -> T
    {
        try await client.withConnection { conn in
            _ = try await PostgresRunner.run(conn, "BEGIN", [], logger)
            do {
                let result = try await body(PostgresTransaction(connection: conn, logger: logger))
                _ = try await PostgresRunner.run(conn, "COMMIT", [], logger)
                return result
            } catch {
                _ = try? await PostgresRunner.run(conn, "ROLLBACK", [], logger)
                throw error
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
    var dialect: SQLDialect { .postgres }

    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        try await PostgresRunner.run(connection, sql, binds, logger).rows
    }
    func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        try await PostgresRunner.run(connection, sql, binds, logger).affected
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

    static func run(_ conn: PostgresConnection, _ sql: String, _ binds: [any SQLBindable], _ logger: Logger)
        async throws -> (rows: [SQLRow], affected: Int)
    {
        var bindings = PostgresBindings(capacity: binds.count)
        for bind in binds {
            switch bind.sqlValue {
            case .null: bindings.appendNull()
            case .int(let v): bindings.append(v)
            case .double(let v): bindings.append(v)
            case .text(let v): bindings.append(v)
            case .blob(let v): bindings.append(ByteBuffer(bytes: v))
            }
        }
        let query = PostgresQuery(unsafeSQL: numberPlaceholders(sql), binds: bindings)
        let result: PostgresQueryResult
        do {
            result = try await conn.query(query, logger: logger).get()
        } catch let error as PSQLError {
            throw translate(error)
        }
        guard let first = result.rows.first else { return ([], result.metadata.rows ?? 0) }
        var columns: [String: Int] = [:]
        for cell in first where columns[cell.columnName] == nil { columns[cell.columnName] = cell.columnIndex }
        let rows = try result.rows.map { row in SQLRow(columns: columns, values: try row.map(value)) }
        return (rows, result.metadata.rows ?? rows.count)
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
