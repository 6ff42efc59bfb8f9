import Foundation
import PostgresNIO
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

    /// SQLite caches a prepared statement per text, so few shapes; PostgreSQL parses every statement, so fewest.
    @Test func multiRowStatementsAreCutPerEngine() {
        #expect(MultiRow.chunkSizes(0, dialect: .sqlite).isEmpty && MultiRow.chunkSizes(0, dialect: .postgres).isEmpty)
        #expect(MultiRow.chunkSizes(11, dialect: .sqlite) == [8, 2, 1])
        #expect(MultiRow.chunkSizes(11, dialect: .postgres) == [11])
        #expect(MultiRow.chunkSizes(150, dialect: .sqlite) == [64, 64, 16, 4, 2])
        #expect(MultiRow.chunkSizes(150, dialect: .postgres) == [64, 64, 22])
        #expect(MultiRow.chunks(Array(0..<11), dialect: .postgres).map(\.count) == [11])
    }

    /// SQLite takes a multi-row insert row by row, in few statement texts; PostgreSQL column by column, one array
    /// per column, in one text whatever the number of rows.
    @Test func multiRowInsertsPassTheirValuesPerEngine() {
        let rows: [[any SQLBindable]] = [[1, "a"], [2, nil as String?], [3, "c"]]
        let sqlite = MultiRow.inserts(rows: 3, types: [.int, .text], dialect: .sqlite) { rows[$0] }
        #expect(sqlite.map(\.range) == [0..<2, 2..<3])
        #expect(sqlite.map(\.source) == ["VALUES (?, ?), (?, ?)", "VALUES (?, ?)"])
        #expect(sqlite[0].binds.map(\.sqlValue) == [.int(1), .text("a"), .int(2), .null])
        let postgres = MultiRow.inserts(rows: 3, types: [.int, .text], dialect: .postgres) { rows[$0] }
        #expect(postgres.map(\.range) == [0..<3])
        #expect(postgres[0].source == "SELECT * FROM unnest(?::int8[], ?::text[])")
        #expect(
            postgres[0].binds.map(\.sqlValue) == [
                .array(.int, [.int(1), .int(2), .int(3)]), .array(.text, [.text("a"), .null, .text("c")]),
            ])
        let many = MultiRow.inserts(rows: MultiRow.maxArrayRows + 1, types: [.int], dialect: .postgres) { [$0] }
        #expect(many.map(\.range) == [0..<MultiRow.maxArrayRows, MultiRow.maxArrayRows..<MultiRow.maxArrayRows + 1])
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

    /// A multi-row write's NULL cells vary from batch to batch; named, nearly every batch would take a new name
    /// until the registry is full.
    @Test func manyParametersWithANullGoOutUnnamed() {
        let wide = MultiRow.values(rows: 8, row: "(?, ?, ?, ?, ?)")
        let types = Array(repeating: PostgresDataType.text, count: 40)
        #expect(PreparedSQL.name("INSERT INTO probe_wide VALUES \(wide)", types: types) != nil)
        var withNull = types
        withNull[17] = .null
        #expect(PreparedSQL.name("INSERT INTO probe_wide VALUES \(wide)", types: withNull) == nil)
        #expect(PreparedSQL.name("INSERT INTO probe_narrow VALUES ($1, $2)", types: [.text, .null]) != nil)
    }

    @Test func theyAreOptInAndTheURLRefusesNonsense() async throws {
        let base = "postgres://u@localhost/db"
        for (suffix, expected) in [("", false), ("?prepared_statements=on", true), ("?prepared_statements=off", false)]
        {
            let db = try PostgresDatabase(url: base + suffix, logger: Engine.logger)
            #expect(db.prepared == expected, "\(suffix)")
            await db.close()
        }
        #expect(throws: StorageError.self) {
            _ = try PostgresDatabase(url: base + "?prepared_statements=maybe", logger: Engine.logger)
        }
    }

    /// Several nodes starting together on a fresh database all migrate it. Before the bookkeeping table was created
    /// under the migrations' advisory lock, about one `migrate` in five failed here on pg_type's unique index.
    @Test(.enabled(if: Engine.postgresAdminURL != nil))
    func nodesMigratingAFreshDatabaseAtOnceAllSucceed() async throws {
        for _ in 0..<4 {
            try await Engine.postgres.withDatabaseURL { url in
                let nodes = try (0..<4).map { _ in
                    try PostgresDatabase(url: url + "?pool_size=2", logger: Engine.logger)
                }
                let failures = await withTaskGroup(of: String?.self) { group in
                    for db in nodes {
                        group.addTask {
                            do {
                                try await Migrator.migrate(db, logger: Engine.logger)
                                return nil
                            } catch {
                                return "\(error)"
                            }
                        }
                    }
                    return await group.reduce(into: [String]()) { if let f = $1 { $0.append(f) } }
                }
                for db in nodes { await db.close() }
                #expect(failures.isEmpty, "\(failures)")
                let check = try PostgresDatabase(url: url, logger: Engine.logger)
                let version = try await Migrator.currentVersion(check)
                await check.close()
                #expect(version == Migrator.latest)
            }
        }
    }

    /// A transaction's body continues on its connection's event loop after each statement (decision 0019), so no
    /// statement costs a hop to the cooperative pool and back.
    @Test(.enabled(if: Engine.postgresAdminURL != nil))
    func aTransactionRunsOnItsConnectionsEventLoop() async throws {
        try await Engine.postgres.withDatabaseURL { url in
            let db = try PostgresDatabase(url: url, logger: Engine.logger)
            do {
                let onLoop = try await db.transaction { tx in
                    let conn = try #require(tx as? PostgresTransaction).connection
                    var answers: [Bool] = [conn.eventLoop.inEventLoop]
                    for _ in 0..<3 {
                        _ = try await tx.query("SELECT 1 AS one")
                        answers.append(conn.eventLoop.inEventLoop)
                    }
                    return answers
                }
                #expect(onLoop == [true, true, true, true])
            } catch {
                await db.close()
                throw error
            }
            await db.close()
        }
    }

    /// PostgresNIO remembers a failed preparation for the statement's name on that connection. A statement first met
    /// inside a transaction that already failed must not be poisoned for every later use on the connection.
    @Test(.enabled(if: Engine.postgresAdminURL != nil))
    func aStatementFirstSeenInAFailedTransactionStillWorksAfterwards() async throws {
        try await Engine.postgres.withDatabaseURL { url in
            var components = try #require(URLComponents(string: url))
            components.queryItems = [
                URLQueryItem(name: "pool_size", value: "1"), URLQueryItem(name: "prepared_statements", value: "on"),
            ]
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

/// Every kind of value comes back from both engines exactly as it was bound.
@Suite struct SQLValueRoundTrips {
    @Test(arguments: Engine.available)
    func valuesComeBackExactlyAsBound(engine: Engine) async throws {
        try await engine.withDatabase { db in
            let blob = db.dialect == .postgres ? "BYTEA" : "BLOB"
            try await db.execute("CREATE TABLE probe (n BIGINT, d DOUBLE PRECISION, t TEXT, b \(blob))")
            let texts = ["", "a\u{0}b", "Grüße 😀 'quoted' \"double\" ?", String(repeating: "x", count: 100_000)]
            let blobs: [[UInt8]] = [[], [0, 1, 255], Array(repeating: 7, count: 70_000)]
            for (i, t) in texts.enumerated() where db.dialect == .sqlite || !t.contains("\u{0}") {
                let b = blobs[i % blobs.count]
                let n: Int64 = i == 0 ? .min : .max - Int64(i)
                try await db.execute(
                    "INSERT INTO probe (n, d, t, b) VALUES (?, ?, ?, ?)", n, 0.1 + Double(i), t, SQLValue.blob(b))
                let row = try #require(try await db.first("SELECT n, d, t, b FROM probe WHERE t = ?", t))
                #expect(row["n"] == .int(n))
                #expect(row["d"] == .double(0.1 + Double(i)))
                #expect(row["t"] == .text(t))
                #expect(row["b"] == .blob(b))
            }
            let nulls: String? = nil
            #expect(try await db.execute("INSERT INTO probe (n, t) VALUES (?, ?)", 1, nulls) == 1)
            let row = try #require(try await db.first("SELECT t, b FROM probe WHERE n = ?", 1))
            #expect(row["t"] == .null)
            #expect(row["b"] == .null)
            #expect(
                try await db.execute("UPDATE probe SET d = ? WHERE n <> ?", 2.5, 1) == texts.count
                    - (db.dialect == .sqlite ? 0 : 1))
            await #expect(throws: (any Error).self) { try await db.execute("INSERT INTO probe (n) VALUES (?, ?)", 1) }
        }
    }
}

@Suite struct TransactionContract {
    /// Concurrent transactions share one commit on SQLite (group commit); one that fails must leave nothing behind,
    /// whatever it wrote first, and must not take the others with it.
    @Test(arguments: Engine.available)
    func aFailedTransactionLeavesNothingAndTheConcurrentOnesCommit(engine: Engine) async throws {
        struct Refused: Error {}
        try await engine.withDatabase { db in
            try await db.execute("CREATE TABLE probe (id BIGINT PRIMARY KEY, note TEXT)")
            try await db.execute("INSERT INTO probe (id, note) VALUES (?, ?)", 1000, "taken")
            let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
                for i in 0..<40 {
                    group.addTask {
                        do {
                            try await db.transaction { tx in
                                try await tx.execute("INSERT INTO probe (id, note) VALUES (?, ?)", i, "kept")
                                switch i % 4 {
                                case 1: throw Refused()  // the body gives up after writing
                                case 2: try await tx.execute("INSERT INTO probe (id, note) VALUES (?, ?)", 1000, "dup")
                                default: try await tx.execute("UPDATE probe SET note = ? WHERE id = ?", "updated", i)
                                }
                            }
                            return (i, true)
                        } catch {
                            return (i, false)
                        }
                    }
                }
                return await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
            }
            let rows = try await db.query("SELECT id, note FROM probe WHERE id < ? ORDER BY id", 1000)
            let expected = (0..<40).filter { $0 % 4 == 0 || $0 % 4 == 3 }
            #expect(rows.map { Int($0.int("id")) } == expected)
            #expect(rows.allSatisfy { $0.text("note") == "updated" })
            #expect(outcomes.filter(\.value).keys.sorted() == expected)
        }
    }
}

@Suite struct MultiRowInsertContract {
    /// Every kind of cell a multi-row insert writes comes back as it went in, on both engines: NULLs among values,
    /// the empty string (not NULL), umlauts and emoji, quotes and braces, and the extremes of a 64-bit integer. On
    /// PostgreSQL they travel as binary arrays that `ColumnArray` encodes by hand.
    @Test(arguments: Engine.available)
    func cellsComeBackAsTheyWentIn(engine: Engine) async throws {
        try await engine.withStore { store, _, _ in
            try await store.db.execute(
                "CREATE TABLE probe_rows (n BIGINT, t TEXT, d DOUBLE PRECISION, k BIGINT NOT NULL)", [])
            let rows: [[any SQLBindable]] = [
                [Int64.max, "Grüße 👋", 1.5, 0],
                [nil as Int64?, "", nil as Double?, 1],
                [Int64.min, nil as String?, -0.25, 2],
                [0, "a 'q' \"d\" \\ ,{}", 3, 3],
            ]
            let written = try await store.db.transaction { tx in
                var count = 0
                for chunk in MultiRow.inserts(
                    rows: rows.count, types: [.int, .text, .double, .int], dialect: tx.dialect, row: { rows[$0] })
                {
                    count += try await tx.execute("INSERT INTO probe_rows (n, t, d, k) \(chunk.source)", chunk.binds)
                }
                return count
            }
            #expect(written == rows.count)
            let back = try await store.db.query("SELECT n, t, d FROM probe_rows ORDER BY k", [])
            #expect(back.map { $0["n"] } == [.int(.max), .null, .int(.min), .int(0)])
            #expect(back.map { $0["t"] } == [.text("Grüße 👋"), .text(""), .null, .text("a 'q' \"d\" \\ ,{}")])
            #expect(back.map { $0["d"] } == [.double(1.5), .null, .double(-0.25), .double(3)])
        }
    }
}
