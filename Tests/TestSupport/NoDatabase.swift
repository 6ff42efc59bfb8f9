import Storage

/// A database for code that must not touch one (building a router, composing mails): every query fails.
public struct NoDatabase: SQLDatabase {
    public init() {}
    public var dialect: SQLDialect { .sqlite }
    public func query(_ sql: String, _ binds: [any SQLBindable]) async throws -> [SQLRow] {
        throw StorageError.connection("none")
    }
    public func execute(_ sql: String, _ binds: [any SQLBindable]) async throws -> Int {
        throw StorageError.connection("none")
    }
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any SQLExecutor) async throws -> T) async throws
        -> T
    { throw StorageError.connection("none") }
    public func ping() async throws {}
    public func close() async {}
}
