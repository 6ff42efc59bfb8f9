import Foundation
import ReciprocityCore

/// A value crossing the storage boundary. Both engines map their types onto the first five.
public enum SQLValue: Sendable, Equatable, Hashable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
    /// A one-dimensional array of one column type, NULL elements allowed: a bind only, and only on PostgreSQL,
    /// where `MultiRow.inserts` passes a multi-row insert column by column (docs/decisions/0023-postgres-column-arrays.md).
    case array(MultiRow.ColumnType, [SQLValue])
}

/// Anything that can be bound as a parameter.
public protocol SQLBindable: Sendable {
    var sqlValue: SQLValue { get }
}
extension Int64: SQLBindable { public var sqlValue: SQLValue { .int(self) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .int(Int64(self)) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .int(self ? 1 : 0) } }
extension Date: SQLBindable { public var sqlValue: SQLValue { .int(epochMillis) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// One result row, addressed by column name.
public struct SQLRow: Sendable {
    public let columns: [String: Int]
    public let values: [SQLValue]

    public init(columns: [String: Int], values: [SQLValue]) {
        self.columns = columns
        self.values = values
    }

    /// The `columns` of a result whose columns carry these names, in order. A repeated name means its first column.
    /// Concrete, not generic over the sequence: called once per result from the engines' modules, where an
    /// unspecialized generic paid for metadata look-ups on every call.
    public static func columnIndexes(_ names: [String]) -> [String: Int] {
        var columns: [String: Int] = [:]
        columns.reserveCapacity(names.count)
        for index in names.indices where columns[names[index]] == nil { columns[names[index]] = index }
        return columns
    }

    public subscript(_ name: String) -> SQLValue {
        guard let index = columns[name] else { preconditionFailure("no column \(name) in result") }
        return values[index]
    }
    public func int(_ name: String) -> Int64 {
        switch self[name] {
        case .int(let v): return v
        case .double(let v): return Int64(v)
        case .text(let s): return Int64(s) ?? 0
        default: return 0
        }
    }
    public func optionalInt(_ name: String) -> Int64? {
        if case .null = self[name] { return nil }
        return int(name)
    }
    public func text(_ name: String) -> String {
        switch self[name] {
        case .text(let s): return s
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null, .array: return ""
        }
    }
    public func optionalText(_ name: String) -> String? {
        if case .null = self[name] { return nil }
        return text(name)
    }
    public func bool(_ name: String) -> Bool { int(name) != 0 }
    public func date(_ name: String) -> Date { Date(epochMillis: int(name)) }
    public func optionalDate(_ name: String) -> Date? { optionalInt(name).map(Date.init(epochMillis:)) }
}

/// Failures the engines report in a shared vocabulary, so repositories handle them once.
public enum StorageError: Error, Sendable, CustomStringConvertible {
    /// A unique constraint or primary key rejected the write. `constraint` names the index or columns if known.
    case uniqueViolation(constraint: String)
    case foreignKeyViolation(String)
    case connection(String)
    case database(String)
    case badURL(String)

    public var description: String {
        switch self {
        case .uniqueViolation(let c): "unique constraint violated: \(c)"
        case .foreignKeyViolation(let m): "foreign key violated: \(m)"
        case .connection(let m): "database connection failed: \(m)"
        case .database(let m): "database error: \(m)"
        case .badURL(let m): "bad database URL: \(m)"
        }
    }
}

/// Runs portable SQL. Parameters are written `?` in every statement; engines translate as needed.
public protocol SQLExecutor: Sendable {
    var dialect: SQLDialect { get }
    func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow]
    @discardableResult
    func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int
    /// `INSERT INTO table (columns)` of `count` rows of one shape, the value of row `r`, column `c` being
    /// `value(r, c)`, in `types`. For the largest batches (the click flush); call it inside a transaction, as a
    /// batch takes more than one statement. The default cuts the rows into `MultiRow.inserts`; SQLite uses the same
    /// statement shapes and binds each value as the closure gives it, with no boxing and no arrays in between
    /// (docs/decisions/0025-click-rows-bound-directly.md).
    func insertEach(
        into table: String, columns: [String], types: [MultiRow.ColumnType], count: Int,
        value: (_ row: Int, _ column: Int) -> SQLValue
    ) async throws
}

extension SQLExecutor {
    public func insertEach(
        into table: String, columns: [String], types: [MultiRow.ColumnType], count: Int,
        value: (_ row: Int, _ column: Int) -> SQLValue
    ) async throws {
        precondition(columns.count == types.count, "\(columns.count) columns, \(types.count) types")
        for chunk in MultiRow.inserts(
            rows: count, types: types, dialect: dialect,
            row: { r in types.indices.map { value(r, $0) as any SQLBindable } })
        {
            _ = try await execute(
                "INSERT INTO \(table) (\(columns.joined(separator: ", "))) \(chunk.source)", chunk.binds)
        }
    }

    public func query(_ sql: String, _ binds: any SQLBindable...) async throws -> [SQLRow] {
        try await query(sql, binds)
    }
    @discardableResult
    public func execute(_ sql: String, _ binds: any SQLBindable...) async throws -> Int {
        try await execute(sql, binds)
    }
    public func first(_ sql: String, _ binds: any SQLBindable...) async throws -> SQLRow? {
        try await query(sql, binds).first
    }
    public func scalar(_ sql: String, _ binds: any SQLBindable...) async throws -> Int64 {
        try await query(sql, binds).first.map {
            $0.values.first.map { v in
                if case .int(let i) = v { return i }
                if case .text(let t) = v { return Int64(t) ?? 0 }
                if case .double(let d) = v { return Int64(d) }
                return 0
            } ?? 0
        } ?? 0
    }
}

/// A database: an executor that can also run transactions. One per process, shared by every request.
public protocol SQLDatabase: SQLExecutor {
    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws. The body must do all
    /// its work through the executor it is given: calling the database itself from inside would wait for the very
    /// transaction it is part of.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLExecutor) async throws -> T) async throws -> T
    /// Checks the connection answers.
    func ping() async throws
    func close() async
}

/// Statements over many rows at once (multi-row `VALUES`, `IN` lists), at most `maxRows` rows each, so that no
/// statement comes near an engine's bind limit.
///
/// How rows are cut into statements depends on the engine (`SQLDialect.multiRowShapes`):
/// - SQLite keeps a prepared statement per statement text, so row counts are cut into powers of two: a statement
///   kind has at most seven texts (1, 2, 4, … 64 rows), each prepared once.
/// - PostgreSQL parses and plans every (unnamed) statement anew, and each statement is a round trip inside the
///   transaction, so fewest statements win: one per `maxRows` rows (docs/decisions/0018-postgres-statement-shapes.md).
public enum MultiRow {
    public static let maxRows = 64

    /// How an engine cuts rows into statements.
    public enum Shapes: Sendable {
        /// Powers of two: few statement texts.
        case powersOfTwo
        /// As many rows per statement as allowed: few statements.
        case fewest
    }

    /// Row counts that add up to `count`, each at most `maxRows`.
    public static func chunkSizes(_ count: Int, dialect: SQLDialect) -> [Int] {
        var sizes: [Int] = []
        var left = count
        while left > 0 {
            let most = min(left, maxRows)
            let size =
                switch dialect.multiRowShapes {
                case .fewest: most
                // The largest power of two that fits.
                case .powersOfTwo: 1 << (Int.bitWidth - 1 - most.leadingZeroBitCount)
                }
            sizes.append(size)
            left -= size
        }
        return sizes
    }

    /// `rows` copies of one row's text, e.g. `(?, ?, 'queued', 0)`.
    public static func values(rows: Int, row: String) -> String {
        Array(repeating: row, count: rows).joined(separator: ", ")
    }

    /// `items` cut into slices of `chunkSizes(items.count, dialect:)`.
    public static func chunks<T>(_ items: [T], dialect: SQLDialect) -> [ArraySlice<T>] {
        var start = 0
        return chunkSizes(items.count, dialect: dialect).map { size in
            defer { start += size }
            return items[start..<start + size]
        }
    }

    /// `?, ?, ?`: the marks of an `IN (…)` list of `count` values.
    public static func list(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ", ")
    }

    /// A column's type, which PostgreSQL needs to read a column of values as one typed array. The raw value is the
    /// PostgreSQL element type.
    public enum ColumnType: String, Sendable, Hashable {
        case int = "int8"
        case double = "float8"
        case text
    }

    /// One statement's share of a multi-row insert.
    public struct InsertRows: Sendable {
        /// The rows it writes.
        public let range: Range<Int>
        /// What follows `INSERT INTO t (columns)`: the rows' source.
        public let source: String
        public let binds: [any SQLBindable]
    }

    /// A multi-row insert of `count` rows of `types.count` columns, `row(i)` giving row `i`'s values, cut into
    /// statements as the engine wants them (`SQLDialect.multiRowBinds`):
    /// - row-wise (SQLite): `VALUES (?, ?), (?, ?)`, the values row by row, in `chunkSizes` statements;
    /// - column-wise (PostgreSQL): `SELECT * FROM unnest(?::int8[], ?::text[])`, one array per column, up to
    ///   `maxArrayRows` rows a statement. The text is the same for one row or a thousand, and PostgreSQL parses and
    ///   plans it in the time of one row (docs/decisions/0023-postgres-column-arrays.md).
    ///
    /// The rows arrive in `range`'s order either way (`unnest` reads its arrays in order), and `ON CONFLICT` and
    /// `RETURNING` after the source work alike.
    public static func inserts(
        rows count: Int, types: [ColumnType], dialect: SQLDialect, row: (Int) -> [any SQLBindable]
    ) -> [InsertRows] {
        switch dialect.multiRowBinds {
        case .rowWise:
            let marks = "(" + list(types.count) + ")"
            var start = 0
            return chunkSizes(count, dialect: dialect).map { size in
                defer { start += size }
                var binds: [any SQLBindable] = []
                binds.reserveCapacity(size * types.count)
                for i in start..<start + size { binds += row(i) }
                return InsertRows(
                    range: start..<start + size, source: "VALUES " + values(rows: size, row: marks), binds: binds)
            }
        case .columnWise:
            let source = "SELECT * FROM unnest(" + types.map { "?::\($0.rawValue)[]" }.joined(separator: ", ") + ")"
            return stride(from: 0, to: count, by: maxArrayRows).map { start in
                let range = start..<min(count, start + maxArrayRows)
                var columns = Array(repeating: [SQLValue](), count: types.count)
                for j in columns.indices { columns[j].reserveCapacity(range.count) }
                for i in range {
                    let values = row(i)
                    precondition(
                        values.count == types.count, "a row of \(values.count) values for \(types.count) columns")
                    for j in values.indices { columns[j].append(values[j].sqlValue) }
                }
                return InsertRows(
                    range: range, source: source,
                    binds: zip(types, columns).map { SQLValue.array($0, $1) as any SQLBindable })
            }
        }
    }

    /// The most rows a column-wise insert passes in one statement: arrays have no bind limit, but a statement's
    /// binds are held in memory at once.
    public static let maxArrayRows = 1_024

    /// How an engine takes a multi-row insert's values.
    public enum Binds: Sendable {
        /// One mark per value, row after row.
        case rowWise
        /// One array per column.
        case columnWise
    }
}
