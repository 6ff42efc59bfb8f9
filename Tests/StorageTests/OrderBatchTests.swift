import Foundation
import ReciprocityCore
import Synchronization
import TestSupport
import Testing

@testable import Storage

/// The queue that gathers concurrent order upserts into batches: who shares a batch, and that every caller gets its
/// own answer.
@Suite struct BatchQueueBehaviour {
    /// Holds the first batch until `open()`, so that the calls behind it queue up.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { c in
                let resume = state.withLock { s -> Bool in
                    if s.open { return true }
                    s.waiters.append(c)
                    return false
                }
                if resume { c.resume() }
            }
        }
        func open() {
            for c in state.withLock({ s -> [CheckedContinuation<Void, Never>] in
                s.open = true
                defer { s.waiters = [] }
                return s.waiters
            }) { c.resume() }
        }
    }

    /// What a runner saw: each batch's items, and the most keys that were in batches at once.
    final class Log: Sendable {
        let state = Mutex<(batches: [[String]], running: Set<String>, overlap: Bool)>(([], [], false))
        func start(_ keys: [String]) {
            state.withLock { s in
                s.batches.append(keys)
                if !s.running.isDisjoint(with: keys) || Set(keys).count != keys.count { s.overlap = true }
                s.running.formUnion(keys)
            }
        }
        func end(_ keys: [String]) { state.withLock { $0.running.subtract(keys) } }
        var batches: [[String]] { state.withLock { $0.batches } }
        var overlap: Bool { state.withLock { $0.overlap } }
    }

    struct Item: Sendable {
        var key: String
        var value: Int
    }

    /// Submits `items` in order, each once the one before is queued or running, and answers their results.
    func submitInOrder(
        _ queue: BatchQueue<String, Item, Int>, _ items: [Item], log: Log, gate: Gate
    ) async throws -> [Int] {
        try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for (i, item) in items.enumerated() {
                group.addTask {
                    let value = try await queue.submit(key: item.key, item) { batch in
                        log.start(batch.map(\.key))
                        await gate.wait()
                        log.end(batch.map(\.key))
                        return batch.map { .success($0.value * 10) }
                    }
                    return (i, value)
                }
                // The first call starts a lane; the rest must be queued behind it, in this order.
                try await waitUntil("call \(i) is queued") {
                    queue.waitingCount + queue.counts.items == i + 1
                }
            }
            gate.open()
            var results = Array(repeating: 0, count: items.count)
            for try await (i, value) in group { results[i] = value }
            return results
        }
    }

    @Test func callsThatArriveWhileALaneIsBusyShareTheNextBatch() async throws {
        let queue = BatchQueue<String, Item, Int>(lanes: 1, maxBatch: 64)
        let log = Log()
        let items = (1...10).map { Item(key: "k\($0)", value: $0) }
        let results = try await submitInOrder(queue, items, log: log, gate: Gate())
        #expect(results == items.map { $0.value * 10 }, "each caller gets its own item's result")
        #expect(log.batches == [["k1"], (2...10).map { "k\($0)" }])
        #expect(queue.counts == (2, 10))
    }

    @Test func aKeyIsInOneBatchAtATimeAndKeepsItsOrder() async throws {
        let queue = BatchQueue<String, Item, Int>(lanes: 2, maxBatch: 3)
        let log = Log()
        let items = [("x", 1), ("x", 2), ("y", 3), ("z", 4), ("x", 5), ("v", 6), ("w", 7), ("u", 8)].map {
            Item(key: $0.0, value: $0.1)
        }
        let results = try await submitInOrder(queue, items, log: log, gate: Gate())
        #expect(results == items.map { $0.value * 10 })
        #expect(!log.overlap, "a key was in two running batches, or twice in one: \(log.batches)")
        #expect(log.batches.allSatisfy { $0.count <= 3 }, "\(log.batches)")
        // The three calls for x ran in the order they came: each in a later batch than the one before.
        let xBatches = log.batches.enumerated().filter { $0.element.contains("x") }.map(\.offset)
        #expect(xBatches.count == 3 && xBatches == xBatches.sorted())
    }
}

/// Order upserts written together answer and write exactly what they would have alone.
@Suite struct OrderBatchContract {
    /// Everything a workspace's orders left in the database, with row ids replaced by external ids and addresses,
    /// so that two workspaces that received the same upserts compare equal.
    static func snapshot(_ store: Store, _ workspaceID: WorkspaceID) async throws -> [String] {
        let db = store.db
        func render(_ v: SQLValue) -> String {
            switch v {
            case .null: "NULL"
            case .int(let i): "\(i)"
            case .double(let d): "\(d)"
            case .text(let t): t
            case .blob(let b): "\(b)"
            case .array(_, let a): "\(a)"
            }
        }
        var lines: [String] = []
        func add(_ prefix: String, _ sql: String) async throws {
            for row in try await db.query(sql, [workspaceID]) {
                lines.append(prefix + ": " + row.values.map(render).joined(separator: " | "))
            }
        }
        try await add(
            "order",
            """
            SELECT o.external_id, o.status, c.email_normalized, o.currency, o.subtotal_minor, o.total_minor,
              o.shipping_street, o.placed_at, o.paid_at, o.delivered_at, o.body_hash, o.created_at, o.updated_at
            FROM orders o JOIN contacts c ON c.id = o.contact_id WHERE o.workspace_id = ? ORDER BY o.external_id
            """)
        try await add(
            "item",
            """
            SELECT o.external_id, i.position, i.sku, i.name, i.quantity, i.unit_price_minor FROM order_items i
            JOIN orders o ON o.id = i.order_id WHERE i.workspace_id = ? ORDER BY o.external_id, i.position
            """)
        try await add(
            "status",
            """
            SELECT o.external_id, s.from_status, s.to_status, s.at FROM order_status_changes s
            JOIN orders o ON o.id = s.order_id WHERE s.workspace_id = ? ORDER BY o.external_id, s.at, s.to_status
            """)
        try await add(
            "event",
            """
            SELECT o.external_id, e.type, e.occurred_at, e.recorded_at FROM domain_events e
            JOIN orders o ON o.id = e.subject_id AND e.subject_type = 'order'
            WHERE e.workspace_id = ? ORDER BY o.external_id, e.type
            """)
        try await add(
            "job",
            """
            SELECT o.external_id, e.type, j.kind, j.state, j.run_at, j.max_attempts FROM jobs j
            JOIN domain_events e ON j.idempotency_key = 'event:' || e.id || ':' || j.kind
            JOIN orders o ON o.id = e.subject_id WHERE j.workspace_id = ? ORDER BY o.external_id, e.type, j.kind
            """)
        try await add(
            "contact",
            """
            SELECT email, email_normalized, first_name, last_name, locale, source, source_ref, created_at, updated_at
            FROM contacts WHERE workspace_id = ? ORDER BY email_normalized
            """)
        try await add(
            "consent",
            """
            SELECT c.email_normalized, k.purpose, k.state FROM consents k JOIN contacts c ON c.id = k.contact_id
            WHERE k.workspace_id = ? ORDER BY c.email_normalized, k.purpose
            """)
        return lines
    }

    static func upsert(_ store: Store, _ workspace: Workspace, _ id: String, _ payload: OrderPayload) throws
        -> OrderUpsert
    {
        OrderUpsert(
            workspaceID: workspace.id,
            submission: try OrderSubmission.validate(externalID: id, payload: payload, receivedAt: store.clock.now()),
            fingerprint: Store.fingerprint(payload))
    }

    /// What a caller learns from one upsert: outcome and events, or the error's code.
    static func answer(_ r: Result<OrderUpsertResult, any Error>) -> String {
        switch r {
        case .success(let u):
            "\(u.order.externalID) \(u.outcome) \(u.order.status) items=\(u.order.items.count) "
                + "events=\(u.events.map(\.type)) total=\(u.order.totals.total.minor)"
        case .failure(let e as DomainError): "error \(e.code)"
        case .failure(let e): "error \(e)"
        }
    }

    static var subscriptions: EventSubscriptions {
        var s = EventSubscriptions()
        s.subscribe("test.placed", to: "OrderPlaced")
        s.subscribe("test.paid", to: "OrderPaid")
        s.subscribe("test.also-paid", to: "OrderPaid")
        return s
    }

    @Test(arguments: Engine.available)
    func oneBatchWritesWhatTheSameUpsertsWriteOneByOne(engine: Engine) async throws {
        try await engine.withStore(subscriptions: Self.subscriptions) { store, alone, clock in
            let together = try await store.createWorkspace(
                NewWorkspace(slug: "shop-b", name: "Shop B", senderEmail: "b@shop.example"))
            // Orders both workspaces already have, written one by one.
            for w in [alone, together] {
                try await store.put(w, "E-1", samplePayload(email: "erika@example.com"))
                try await store.put(w, "E-2", samplePayload(email: "erika@example.com", status: "delivered"))
                try await store.put(w, "E-3", samplePayload(email: "emil@example.com", firstName: "Emil"))
            }
            clock.advance(by: 60)
            var withNotice = samplePayload(
                email: "nora@example.com",
                consents: [.init(purpose: "newsletter", text: "Ja, Newsletter.", grantedAt: "2026-05-01T10:00:00Z")])
            withNotice.existingCustomerNotice = "Sie können jederzeit widersprechen."
            let script: [(String, OrderPayload)] = [
                ("N-1", samplePayload(email: "Neu.Kunde@Example.com", firstName: "Nina")),
                ("N-2", samplePayload(email: "neu.kunde@example.com", firstName: nil)),  // same person, name kept
                ("N-3", samplePayload(email: "neu.kunde@example.com", items: 3, firstName: "Nine")),
                ("N-4", samplePayload(email: "emil@example.com", firstName: "Emilio")),  // known customer, new name
                ("N-5", samplePayload(email: "paul@example.com", status: "paid")),  // two statuses at once
                ("N-6", withNotice),
                ("E-1", samplePayload(email: "erika@example.com", status: "paid")),  // an update
                ("E-2", samplePayload(email: "erika@example.com", status: "placed")),  // impossible: 409
                ("E-3", samplePayload(email: "emil@example.com", firstName: "Emil")),  // the same body: unchanged
                ("N-7", samplePayload(email: "o'brien+tag@example.com", firstName: "Robert'); DROP TABLE orders;--")),
            ]
            // MUT: one by one in `alone`, as one batch in `together`
            var oneByOne: [String] = []
            for (id, payload) in script {
                do {
                    oneByOne.append(Self.answer(.success(try await store.put(alone, id, payload))))
                } catch {
                    oneByOne.append(Self.answer(.failure(error)))
                }
            }
            let batch = try script.map { try Self.upsert(store, together, $0.0, $0.1) }
            let batched = await store.runOrderBatch(batch).map(Self.answer)
            // validate
            #expect(batched == oneByOne)
            #expect(oneByOne.contains("error transition_impossible"), "\(oneByOne)")
            let a = try await Self.snapshot(store, alone.id)
            let b = try await Self.snapshot(store, together.id)
            #expect(a == b)
            #expect(a.count > 40, "the snapshot reads what was written: \(a.count) lines")
        }
    }

    @Test(arguments: Engine.available)
    func aMemberWhoseConsentIsRefusedFailsAloneAndLeavesNothing(engine: Engine) async throws {
        try await engine.withStore(subscriptions: Self.subscriptions) { store, shop, _ in
            var bad = try Self.upsert(store, shop, "BAD", samplePayload(email: "bad@example.com"))
            // Validation passed; the consent's text is lost on the way, so writing the consent would fail.
            bad.submission.consents = [(.newsletter, "", ConsentEvidence(at: store.clock.now()))]
            try await Self.expectOnlyTheBadOneFails(store, shop, bad, error: "error consent_text_missing")
        }
    }

    /// A write the database refuses mid-batch (here a trigger) rolls the batch back; every member then runs alone.
    @Test(arguments: Engine.available)
    func aMemberTheDatabaseRefusesFailsAloneAndLeavesNothing(engine: Engine) async throws {
        try await engine.withStore(subscriptions: Self.subscriptions) { store, shop, _ in
            switch store.db.dialect {
            case .sqlite:
                try await store.db.execute(
                    """
                    CREATE TRIGGER refuse_bad BEFORE INSERT ON orders WHEN NEW.external_id = 'BAD'
                    BEGIN SELECT RAISE(ABORT, 'refused by the test'); END
                    """, [])
            case .postgres:
                try await store.db.execute(
                    """
                    CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN IF NEW.external_id = 'BAD' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END
                    $$
                    """, [])
                try await store.db.execute(
                    "CREATE TRIGGER refuse_bad BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse_bad()", [])
            }
            let bad = try Self.upsert(store, shop, "BAD", samplePayload(email: "bad@example.com"))
            try await Self.expectOnlyTheBadOneFails(store, shop, bad, error: "refused by the test")
        }
    }

    static func expectOnlyTheBadOneFails(_ store: Store, _ shop: Workspace, _ bad: OrderUpsert, error: String)
        async throws
    {
        let batch = [
            try upsert(store, shop, "G-1", samplePayload(email: "g1@example.com")),
            bad,
            try upsert(store, shop, "G-2", samplePayload(email: "g2@example.com", status: "paid")),
        ]
        // MUT
        let answers = await store.runOrderBatch(batch).map(answer)
        // validate
        #expect(answers[0].hasPrefix("G-1 created"), "\(answers)")
        #expect(answers[1].hasPrefix("error") && answers[1].contains(error), "\(answers)")
        #expect(answers[2].hasPrefix("G-2 created"), "\(answers)")
        #expect(try await store.order(workspaceID: shop.id, externalID: "BAD") == nil)
        #expect(try await store.contact(workspaceID: shop.id, email: EmailAddress("bad@example.com")) == nil)
        #expect(try await store.db.scalar("SELECT COUNT(*) FROM orders") == 2)
        #expect(try await store.db.scalar("SELECT COUNT(*) FROM domain_events") == 3)
        #expect(try await store.db.scalar("SELECT COUNT(*) FROM jobs") == 4)
    }

    @Test(arguments: Engine.available)
    func concurrentUpsertsAreWrittenTogetherAndEachGetsItsOwnOrder(engine: Engine) async throws {
        try await engine.withStore(subscriptions: Self.subscriptions) { store, shop, _ in
            let other = try await store.createWorkspace(
                NewWorkspace(slug: "shop-b", name: "Shop B", senderEmail: "b@shop.example"))
            let n = 48
            // MUT: the same external ids in two workspaces, at once
            let results = try await withThrowingTaskGroup(of: (Int, OrderUpsertResult).self) { group in
                for i in 0..<n {
                    group.addTask {
                        let payload = samplePayload(email: "c\(i % 7)@example.com", items: 1 + i % 3)
                        return (i, try await store.put(i % 2 == 0 ? shop : other, "C-\(i / 2)", payload))
                    }
                }
                return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            // validate
            for i in 0..<n {
                let r = try #require(results[i])
                #expect(r.outcome == .created)
                #expect(r.order.externalID == "C-\(i / 2)")
                #expect(r.order.workspaceID == (i % 2 == 0 ? shop.id : other.id))
                #expect(r.order.items.count == 1 + i % 3)
                #expect(r.events.map(\.type) == ["OrderPlaced"])
                #expect(r.events.first?.subjectID == r.order.id)
            }
            #expect(Set(results.values.map(\.order.id)).count == n)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM contacts") == 14)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'test.placed'") == Int64(n))
            let counts = store.orderBatches.counts
            #expect(counts.items == n)
            #expect(counts.batches < n, "concurrent upserts were not batched: \(counts)")
        }
    }

    /// Several entries for one address end as they would one after another.
    @Test(arguments: Engine.available)
    func contactsUpsertedTogetherEndAsOneAfterAnother(engine: Engine) async throws {
        try await engine.withStore { store, alone, _ in
            let together = try await store.createWorkspace(
                NewWorkspace(slug: "shop-b", name: "Shop B", senderEmail: "b@shop.example"))
            let entries: [(String, String?, String?, String)] = [
                ("Anna@Example.com", "Anna", "Alt", "de"), ("kai@example.com", "Kai", nil, "de"),
                ("anna@example.com", nil, "Neu", "en"), ("anna@example.com", "Annika", nil, "en"),
            ]
            let list = try entries.map {
                ContactUpsert(
                    email: try EmailAddress($0.0), firstName: $0.1, lastName: $0.2, locale: $0.3, source: "test",
                    sourceRef: $0.0)
            }
            try await store.db.transaction { tx in
                for c in list {
                    _ = try await store.upsertContact(
                        tx, workspaceID: alone.id, email: c.email, firstName: c.firstName, lastName: c.lastName,
                        locale: c.locale, source: c.source, sourceRef: c.sourceRef)
                }
            }
            let ids = try await store.db.transaction { tx in
                try await store.upsertContacts(tx, workspaceID: together.id, list)
            }
            #expect(ids[0] == ids[2] && ids[2] == ids[3] && ids[0] != ids[1])
            let a = try await Self.snapshot(store, alone.id)
            #expect(a == (try await Self.snapshot(store, together.id)))
            #expect(a.contains { $0.contains("Annika | Neu | en | test | Anna@Example.com") }, "\(a)")
        }
    }
}

/// The batch's look-up of existing orders probes the unique index, whatever the planner knows about the table.
@Suite struct OrderLookupPlan {
    @Test(.enabled(if: Engine.postgresAdminURL != nil))
    func postgresProbesTheUniqueIndexOnATableItHasNotAnalyzed() async throws {
        try await Engine.postgres.withStore { store, shop, _ in
            // A fresh install's first minute: thousands of orders, and statistics from when there were none.
            try await store.db.execute("ALTER TABLE orders SET (autovacuum_enabled = false)", [])
            let contact = try await store.db.transaction { tx in
                try await store.upsertContact(
                    tx, workspaceID: shop.id, email: try EmailAddress("a@example.com"), firstName: nil, lastName: nil,
                    locale: "de", source: "test", sourceRef: nil)
            }
            try await store.db.execute(
                """
                INSERT INTO orders (workspace_id, external_id, contact_id, status, currency, subtotal_minor,
                  shipping_minor, tax_minor, discount_minor, total_minor, body_hash, created_at, updated_at)
                SELECT ?, 'X-' || g, ?, 'placed', 'EUR', 0, 0, 0, 0, 0, '', g, g FROM generate_series(1, 5000) AS g
                """, shop.id, contact)
            let keys = (1...32).map { "Y-\($0)" }
            func plan(_ lookup: (sql: String, binds: [any SQLBindable])) async throws -> String {
                try await store.db.transaction { tx in
                    try await tx.query("EXPLAIN " + lookup.sql, lookup.binds).map { $0.text("QUERY PLAN") }
                }.joined(separator: "\n")
            }
            let lookup = try await plan(
                SQLDialect.postgres.keyedLookup(
                    table: "orders", columns: Store.orderStateColumns, scopeColumn: "workspace_id",
                    keyColumn: "external_id", scope: shop.id, keys: keys))
            #expect(lookup.contains("orders_workspace_id_external_id_key"), "\(lookup)")
            #expect(lookup.contains("external_id = "), "each key is an index condition: \(lookup)")
            #expect(!lookup.contains("Filter"), "\(lookup)")
            // The check can fail: the plain IN list, planned on the same table, scans the workspace and filters.
            var plainLookup = SQLDialect.sqlite.keyedLookup(
                table: "orders", columns: Store.orderStateColumns, scopeColumn: "workspace_id",
                keyColumn: "external_id", scope: shop.id, keys: keys)
            plainLookup.sql += " FOR UPDATE"
            let plain = try await plan(plainLookup)
            #expect(plain.contains("Filter"), "\(plain)")
        }
    }
}
