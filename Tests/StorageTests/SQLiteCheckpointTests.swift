import Foundation
import Storage
import TestSupport
import Testing

@testable import StorageSQLite

/// The WAL is checkpointed beside the writer, not inside a commit (decision 0016).
@Suite struct SQLiteCheckpoints {
    /// Forty commits of an 8 KB row each: about 3 WAL pages per commit.
    static let commits = 40

    static func withDatabase(
        pages: Int32, fallbackPages: Int32, _ body: (SQLiteDatabase) async throws -> Void
    ) async throws {
        var options = SQLiteDatabase.Options()
        options.checkpointPages = pages
        options.checkpointFallbackPages = fallbackPages
        try await withTemporarySQLite(options) { db in
            _ = try await db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data TEXT NOT NULL)", [])
            try await body(db)
        }
    }

    static func writeRows(_ db: SQLiteDatabase) async throws {
        for i in 0..<commits {
            try await db.transaction { tx in
                _ = try await tx.execute(
                    "INSERT INTO blobs (id, data) VALUES (?, ?)", [Int64(i), String(repeating: "x", count: 8_192)])
            }
        }
    }

    @Test func aCheckpointOnItsOwnConnectionLetsTheWALStartOver() async throws {
        try await Self.withDatabase(pages: 8, fallbackPages: 1_000_000) { db in
            // Held back while the rows are written: the WAL grows, as no commit checkpoints by itself.
            db.checkpointer.queue.suspend()
            do {
                try await Self.writeRows(db)
            } catch {
                db.checkpointer.queue.resume()  // or closing the database would wait for it forever
                throw error
            }
            let grown = db.checkpointer.statistics
            db.checkpointer.queue.resume()
            #expect(grown.lastWALPages > 8 * 4, "without SQLite's own checkpoint the WAL grows")
            #expect(grown.running && grown.completed == 0)
            // The checkpoint runs until it has copied the whole WAL; then the next commit writes at its start again.
            try await waitUntil("the checkpoint has copied the WAL") { !db.checkpointer.statistics.running }
            _ = try await db.execute("INSERT INTO blobs (id, data) VALUES (?, ?)", [Int64(1_000), "y"])
            let after = db.checkpointer.statistics
            #expect(after.completed >= 1)
            #expect(after.lastWALPages < 8, "the WAL started over (\(after.lastWALPages) pages after \(grown))")
            #expect(after.fallbacks == 0)
            let rows = try await db.query("SELECT count(*) AS n FROM blobs", [])
            #expect(rows.first?.int("n") == Int64(Self.commits + 1))
        }
    }

    @Test func theCommittingConnectionCheckpointsWhenTheWALReachesTheFallback() async throws {
        try await Self.withDatabase(pages: 1_000_000, fallbackPages: 16) { db in
            try await Self.writeRows(db)
            let statistics = db.checkpointer.statistics
            #expect(statistics.completed == 0)
            #expect(statistics.fallbacks > 0)
            #expect(statistics.lastWALPages < 16 + 8, "the WAL stays near the fallback, at \(statistics.lastWALPages)")
        }
    }
}

/// The writer commits with the configured durability (GRDB's WAL set-up would leave it at NORMAL).
@Suite struct SQLiteDurability {
    @Test(arguments: ["FULL", "NORMAL"])
    func theWriterUsesTheConfiguredSynchronousSetting(setting: String) async throws {
        var options = SQLiteDatabase.Options()
        options.synchronous = setting
        try await withTemporarySQLite(options) { db in
            let rows = try await db.query("PRAGMA synchronous", [])  // not a SELECT: it runs on the writer
            #expect(rows.first?.int("synchronous") == (setting == "FULL" ? 2 : 1))
        }
    }

    /// A second close does nothing. It used to reach the closed writer's connection (a null pointer by then) and
    /// crash the process: `serve` closed its runtime twice on SIGTERM.
    @Test func closingTwiceIsHarmless() async throws {
        try await withTemporarySQLite { db in
            _ = try await db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY)", [])
            await db.close()
            await db.close()
        }
    }
}

/// An SQLite database in a directory of its own, closed (again, if the body closed it) and removed afterwards.
private func withTemporarySQLite(
    _ options: SQLiteDatabase.Options = SQLiteDatabase.Options(), _ body: (SQLiteDatabase) async throws -> Void
) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcp-sqlite-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    let db = try SQLiteDatabase(path: dir.appendingPathComponent("test.sqlite").path, options: options)
    do {
        try await body(db)
    } catch {
        await db.close()
        throw error
    }
    await db.close()
}
