import Foundation
import Storage
import TestSupport
import Testing

@testable import StoragePostgres
@testable import StorageSQLite

@Suite struct DialectHelpers {
    @Test func placeholdersAreNumberedOutsideQuotesOnly() {
        #expect(
            PostgresRunner.numberPlaceholders("SELECT '?', ?, \"a?b\", ? WHERE x = 'ä?'")
                == "SELECT '?', $1, \"a?b\", $2 WHERE x = 'ä?'")
        #expect(PostgresRunner.numberPlaceholders("INSERT INTO t (a) VALUES (?)") == "INSERT INTO t (a) VALUES ($1)")
        // cached: the same answer twice
        #expect(PostgresRunner.numberPlaceholders("INSERT INTO t (a) VALUES (?)") == "INSERT INTO t (a) VALUES ($1)")
    }

    @Test func onlyPlainSelectsGoToTheReaders() {
        #expect(SQLiteDatabase.isReadOnly("SELECT 1"))
        #expect(SQLiteDatabase.isReadOnly("\n  WITH x AS (SELECT 1) SELECT * FROM x"))
        #expect(!SQLiteDatabase.isReadOnly("UPDATE jobs SET a = 1 RETURNING id"))
        #expect(!SQLiteDatabase.isReadOnly("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x RETURNING id"))
        #expect(!SQLiteDatabase.isReadOnly("INSERT INTO t VALUES (1)"))
    }
}

@Suite struct PostgresPreparedStatements {
    @Test func onlyDataStatementsArePreparedAndOnlyWritesThatCanTakeReturningAreCounted() {
        #expect(PreparedSQL.kind(of: "SELECT 1", wantsRows: true) == .rows)
        #expect(PreparedSQL.kind(of: "\n  WITH x AS (SELECT 1) SELECT * FROM x", wantsRows: true) == .rows)
        #expect(PreparedSQL.kind(of: "SELECT pg_advisory_lock(1)", wantsRows: false) == nil)
        #expect(PreparedSQL.kind(of: "INSERT INTO t (a) VALUES ($1)", wantsRows: false) == .count)
        #expect(PreparedSQL.kind(of: "INSERT INTO t (a) VALUES ($1) RETURNING id", wantsRows: true) == .rows)
        #expect(PreparedSQL.kind(of: "INSERT INTO t (a) VALUES ($1) returning id", wantsRows: false) == nil)
        #expect(PreparedSQL.kind(of: "update t set a = 1", wantsRows: false) == .count)
        #expect(PreparedSQL.kind(of: "DELETE FROM t", wantsRows: false) == .count)
        for unnamed in [
            "BEGIN", "COMMIT", "ROLLBACK", "CREATE TABLE t (a int)", "SAVEPOINT s", "PREPARE x AS SELECT 1",
        ] {
            #expect(PreparedSQL.kind(of: unnamed, wantsRows: true) == nil, "\(unnamed)")
            #expect(PreparedSQL.kind(of: unnamed, wantsRows: false) == nil, "\(unnamed)")
        }
        #expect(PreparedSQL.kind(of: "DELETE FROM t -- all of it", wantsRows: false) == nil)
        #expect(PreparedSQL.kind(of: "DELETE FROM t; SELECT 1", wantsRows: false) == nil)
    }

    @Test func aNameAlwaysMeansOneStatementTextWithOneSetOfTypes() {
        let a = PreparedSQL.name("SELECT $1::text AS probe_a", types: [.text])
        #expect(a != nil)
        #expect(PreparedSQL.name("SELECT $1::text AS probe_a", types: [.text]) == a)
        #expect(PreparedSQL.name("SELECT $1::text AS probe_a", types: [.null]) != a)
        #expect(PreparedSQL.name("SELECT $1::text AS probe_b", types: [.text]) != a)
    }

    @Test func theURLCanTurnThemOff() throws {
        #expect(throws: StorageError.self) {
            _ = try PostgresDatabase(url: "postgres://u@localhost/db?prepared_statements=maybe", logger: Engine.logger)
        }
    }

    /// PostgresNIO remembers a failed preparation for the statement's name on that connection. A statement first met
    /// inside a transaction that already failed must not be poisoned for every later use on the connection.
    @Test(.enabled(if: Engine.postgresAdminURL != nil))
    func aStatementFirstSeenInAFailedTransactionStillWorksAfterwards() async throws {
        try await Engine.postgres.withDatabaseURL { url in
            var components = try #require(URLComponents(string: url))
            components.queryItems = [URLQueryItem(name: "pool_size", value: "1")]
            let db = try PostgresDatabase(url: try #require(components.string), logger: Engine.logger)
            do {
                try await db.execute("CREATE TABLE probe (id BIGINT PRIMARY KEY)")
                try await db.execute("INSERT INTO probe (id) VALUES (?)", 1)
                let probe = "SELECT COUNT(*) AS n FROM probe WHERE id > ? -- first seen in a failed transaction"
                await #expect(throws: (any Error).self) {
                    try await db.transaction { tx in
                        do {
                            try await tx.execute("INSERT INTO probe (id) VALUES (?)", 1)
                        } catch {
                            _ = try await tx.query(probe, 0)  // refused: the transaction has failed
                        }
                    }
                }
                // One connection in the pool: the same connection that saw the refusal.
                #expect(try await db.query(probe, 0).first?.int("n") == 1)
                #expect(try await db.execute("UPDATE probe SET id = id + 10 WHERE id > ?", 0) == 1)
            } catch {
                await db.close()
                throw error
            }
            await db.close()
        }
    }
}
