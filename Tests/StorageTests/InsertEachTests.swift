import Foundation
import Storage
import TestSupport
import Testing

@Suite struct InsertEachContract {
    /// Every row arrives with its values, texts byte for byte (empty, umlauts, long), across more rows than one
    /// multi-row statement holds; a row the table refuses takes the whole transaction's rows with it.
    @Test(arguments: Engine.available)
    func rowsArriveAsGivenAndAFailedRowLeavesNothing(engine: Engine) async throws {
        try await engine.withDatabase { db in
            try await db.execute("CREATE TABLE insert_each (n BIGINT NOT NULL UNIQUE, label TEXT NOT NULL)")
            let labels = ["", "a b", "Grüße", String(repeating: "x", count: 300)]
            let count = 1_000
            try await db.transaction { tx in
                try await tx.insertEach(
                    into: "insert_each", columns: ["n", "label"], types: [.int, .text], count: count
                ) { row, column in
                    column == 0 ? .int(Int64(row)) : .text(labels[row % labels.count])
                }
            }
            let rows = try await db.query("SELECT n, label FROM insert_each ORDER BY n")
            #expect(rows.count == count)
            #expect(rows.map { $0.int("n") } == (0..<Int64(count)).map { $0 })
            #expect(rows.allSatisfy { $0.text("label") == labels[Int($0.int("n")) % labels.count] })

            // The last of 70 rows repeats an existing n: the transaction fails, and the rows before it, which went
            // in earlier statements (on SQLite 64 + 4 + 2 rows), are not there either.
            await #expect(throws: (any Error).self) {
                try await db.transaction { tx in
                    try await tx.insertEach(
                        into: "insert_each", columns: ["n", "label"], types: [.int, .text], count: 70
                    ) { row, column in
                        column == 0 ? .int(row == 69 ? 0 : Int64(10_000 + row)) : .text("later")
                    }
                }
            }
            #expect(try await db.scalar("SELECT COUNT(*) FROM insert_each") == Int64(count))
            #expect(try await db.scalar("SELECT COUNT(*) FROM insert_each WHERE label = 'later'") == 0)

            // Nothing to insert is no statement at all.
            try await db.transaction { tx in
                try await tx.insertEach(into: "insert_each", columns: ["n"], types: [.int], count: 0) { _, _ in .null }
            }
        }
    }
}
