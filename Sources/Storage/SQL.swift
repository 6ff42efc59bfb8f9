import Foundation
import ReciprocityCore

/// A value crossing the storage boundary. Both engines map their types onto these five.
public enum SQLValue: Sendable, Equatable, Hashable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
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
        case .null: return ""
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
}

extension SQLExecutor {
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
