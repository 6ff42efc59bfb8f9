import Benchmark
import Foundation
import Logging
import ReciprocityCore
import Storage
import StorageSQLite

/// The order path without HTTP, each step against a reference measured in the same run:
/// - decoding + validating a body vs decoding the same bytes into a dictionary (JSONSerialization);
/// - one order upsert on SQLite vs one bare INSERT through the same engine.
let body = Data(
    #"""
    {"customer":{"email":"anna.muster@example.com","first_name":"Anna","last_name":"Muster","locale":"de-DE"},
     "currency":"EUR","items":[{"sku":"TEE-1","name":"Grüner Tee","quantity":2,"unit_price":"9.90"}],
     "totals":{"total":"19.80"},"status":"placed",
     "shipping_address":{"name":"Anna Muster","street":"Hauptstraße 1","postal_code":"10115","city":"Berlin","country":"DE"}}
    """#.utf8)

func freshStore() async throws -> (Store, WorkspaceID) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rcp-bench-\(UUID().uuidString)")
    let db = try SQLiteDatabase(path: dir.appendingPathComponent("bench.sqlite").path)
    try await Migrator.migrate(db, logger: Logger(label: "bench"))
    let store = Store(db: db, clock: SystemClock(), secret: Array(repeating: 1, count: 32))
    let w = try await store.createWorkspace(NewWorkspace(slug: "bench", name: "Bench", senderEmail: "b@example.com"))
    try await db.execute("CREATE TABLE bare (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return (store, w.id)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(3))

    Benchmark("reference: JSONSerialization of the body") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try JSONSerialization.jsonObject(with: body))
        }
    }

    Benchmark("order body: decode + validate") { benchmark in
        for _ in benchmark.scaledIterations {
            let payload = try JSONDecoder().decode(OrderPayload.self, from: body)
            blackHole(try OrderSubmission.validate(externalID: "A-1", payload: payload, receivedAt: Date()))
        }
    }

    Benchmark("reference: bare INSERT, SQLite, one transaction each") { benchmark in
        let (store, _) = try await freshStore()
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            _ = try await store.db.transaction { tx in try await tx.execute("INSERT INTO bare (v) VALUES (?)", "v\(i)")
            }
        }
    }

    Benchmark("order upsert, SQLite, new order each") { benchmark in
        let (store, workspace) = try await freshStore()
        let payload = try JSONDecoder().decode(OrderPayload.self, from: body)
        let fingerprint = Store.fingerprint(payload)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let s = try OrderSubmission.validate(externalID: "B-\(i)", payload: payload, receivedAt: Date())
            blackHole(try await store.upsertOrder(workspaceID: workspace, submission: s, fingerprint: fingerprint))
        }
    }
}
