import Foundation
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
