import Foundation
import GRDB
import GRDBSQLite
import Synchronization

/// Copies the write-ahead log back into the database file on a connection of its own, so that no commit waits for it
/// (docs/decisions/0016-sqlite-checkpoints.md).
///
/// SQLite's default is to checkpoint inside the COMMIT that takes the WAL past 1,000 pages: that commit copies the
/// pages and syncs the database file while the writer lock is held, and every transaction of the next group commit
/// waits. Here the writer connection's WAL hook only reports the WAL's size. At `pages` it wakes this checkpointer,
/// which runs a PASSIVE checkpoint on its own connection, beside the writer and the readers. A PASSIVE checkpoint takes
/// no lock the writer needs; once it has copied every frame, the writer's next transaction starts the WAL from the
/// beginning again. Should the WAL still reach `fallbackPages` (a long burst of commits that never lets a checkpoint
/// catch up), the committing connection checkpoints in place, as SQLite would have done.
final class WALCheckpointer: Sendable {
    struct Thresholds: Sendable {
        /// The WAL size, in pages, at which the background checkpoint starts.
        var pages: Int32 = 1_000
        /// The WAL size at which the committing connection checkpoints itself.
        var fallbackPages: Int32 = 8_000
    }

    private struct State {
        var running = false
        /// A commit passed the threshold while a checkpoint ran: it may not have copied that commit's frames.
        var again = false
        var closed = false
        var completed = 0
        var lastWALPages: Int32 = 0
        var fallbacks = 0
    }

    let thresholds: Thresholds
    private let connection: DatabaseQueue
    /// Where the checkpoints run (internal: the tests suspend it to hold a checkpoint back).
    let queue = DispatchQueue(label: "reciprocity.sqlite.checkpoint")
    private let state = Mutex(State())

    /// Opens the checkpointing connection to the file at `path` (already in WAL mode: the pool has opened it).
    init(path: String, synchronous: String, busyMode: Database.BusyMode, thresholds: Thresholds) throws {
        self.thresholds = thresholds
        var config = Configuration()
        config.label = "checkpoint"
        config.busyMode = busyMode
        config.prepareDatabase { db in
            // The checkpoint's sync of the database file follows the same durability setting as the commits.
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        connection = try DatabaseQueue(path: path, configuration: config)
    }

    /// Installs the WAL hook on the writer connection. The hook replaces SQLite's automatic checkpoint.
    func install(on db: Database) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_wal_hook(db.sqliteConnection, walHook, context)
    }

    /// Removes the hook again (before `close`): SQLite's own automatic checkpoint is back.
    func uninstall(from db: Database) {
        guard let connection = db.sqliteConnection else { return }
        sqlite3_wal_hook(connection, nil, nil)
        sqlite3_wal_autocheckpoint(connection, 1_000)
    }

    /// Called by SQLite on the writer after each commit, with the WAL's size in pages.
    fileprivate func committed(walPages: Int32, db: OpaquePointer?, schema: UnsafePointer<CChar>?) -> Int32 {
        let fallback = walPages >= thresholds.fallbackPages
        state.withLock {
            $0.lastWALPages = walPages
            if fallback { $0.fallbacks += 1 }
        }
        if fallback {
            // What SQLite's own hook does (sqlite3WalDefaultHook). Its result is not the commit's: the commit has
            // happened, and a busy checkpoint is simply tried again after the next one.
            _ = sqlite3_wal_checkpoint(db, schema)
        } else if walPages >= thresholds.pages {
            start()
        }
        return SQLITE_OK
    }

    private func start() {
        let go = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            guard !state.running else {
                state.again = true
                return false
            }
            state.running = true
            return true
        }
        guard go else { return }
        queue.async { self.run() }
    }

    /// Checkpoints until no commit has passed the threshold meanwhile, so that the WAL is copied to its end and the
    /// writer's next transaction can start it over.
    private func run() {
        var again = !state.withLock { state in
            // Closed after `start` let this run in: the connection may be gone already.
            if state.closed { state.running = false }
            return state.closed
        }
        while again {
            // A failure (the file is gone, a disk error) leaves the WAL as it is; the next commit past the threshold
            // tries again, and the fallback keeps the WAL bounded.
            _ = try? connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }
            again = state.withLock { state -> Bool in
                state.completed += 1
                let again = state.again && !state.closed
                state.again = false
                if !again { state.running = false }
                return again
            }
        }
    }

    /// Background checkpoints run so far, whether one is running or due, the WAL's size after the last commit, and
    /// in-place checkpoints.
    var statistics: (completed: Int, running: Bool, lastWALPages: Int32, fallbacks: Int) {
        state.withLock { ($0.completed, $0.running, $0.lastWALPages, $0.fallbacks) }
    }

    /// Waits for a running checkpoint and closes the connection. Call after the writer has stopped committing.
    func close() {
        state.withLock { $0.closed = true }
        queue.sync {}
        try? connection.close()
    }
}

/// The WAL hook: SQLite calls it on the committing connection after every commit.
private func walHook(
    context: UnsafeMutableRawPointer?, db: OpaquePointer?, schema: UnsafePointer<CChar>?, pages: Int32
) -> Int32 {
    guard let context else { return SQLITE_OK }
    let checkpointer = Unmanaged<WALCheckpointer>.fromOpaque(context).takeUnretainedValue()
    return checkpointer.committed(walPages: pages, db: db, schema: schema)
}
