import Foundation
import ReciprocityCore

/// One order upsert as the API hands it over.
struct OrderUpsert: Sendable {
    var workspaceID: WorkspaceID
    var submission: OrderSubmission
    var fingerprint: String
}

/// The key that keeps two upserts of one order out of the same batch and out of two batches at once.
struct OrderKey: Hashable, Sendable {
    var workspaceID: WorkspaceID
    var externalID: String
}

typealias OrderBatchQueue = BatchQueue<OrderKey, OrderUpsert, OrderUpsertResult>

/// Order upserts written together: several in one transaction, with one statement per table and chunk
/// ([decision 0010](../../docs/decisions/0010-order-batches.md)).
///
/// Why: on PostgreSQL every statement is a round trip, and an order alone takes about ten. Batching whole
/// transactions (as SQLite's group commit does) would still send every order's statements one by one.
///
/// How a batch runs, in one transaction, per workspace in it:
/// - the orders' existing rows are read and locked in one statement (`SQLDialect.keyedLookup`);
/// - an order whose transition is impossible, or whose checkout consent is invalid, is answered with its error
///   before anything is written;
/// - an order that exists runs the single-order path (updates are one by one);
/// - the new orders are written set-wise (`insertNewOrders`).
///
/// The batch is thus one serial order of its members: per workspace, the existing orders, then the new ones, each
/// in arrival order. Concurrent requests have no order of their own, so every answer is one they could have got.
/// If a statement fails (a unique index lost to a writer outside the batch, a deadlock with another node), the
/// transaction rolls back and every member runs alone, in its own transaction, as it would have without batching.
/// A lost connection is not retried member by member: every caller gets the error.
extension Store {
    func upsertOrderBatched(_ u: OrderUpsert) async throws -> OrderUpsertResult {
        try await orderBatches.submit(
            key: OrderKey(workspaceID: u.workspaceID, externalID: u.submission.externalID), u
        ) { batch in
            await runOrderBatch(batch)
        }
    }

    func runOrderBatch(_ batch: [OrderUpsert]) async -> [Result<OrderUpsertResult, any Error>] {
        if batch.count > 1 {
            do {
                return try await db.transaction { tx in
                    var results = Self.unanswered(batch.count)
                    // One workspace after the other, in the order they first came, each in arrival order.
                    var workspaces: [WorkspaceID] = []
                    for u in batch where !workspaces.contains(u.workspaceID) { workspaces.append(u.workspaceID) }
                    for workspaceID in workspaces {
                        let indices = batch.indices.filter { batch[$0].workspaceID == workspaceID }
                        let answers = try await upsertOrdersTogether(tx, indices.map { batch[$0] })
                        for (i, answer) in zip(indices, answers) { results[i] = answer }
                    }
                    return results
                }
            } catch StorageError.connection(let message) {
                return batch.map { _ in .failure(StorageError.connection(message)) }
            } catch {
                // Fall through: each runs alone, so the one at fault fails by itself.
            }
        }
        // One after the other: a member that failed in the batch fails here again, quickly; the rest are the
        // writes of a normal batch, one transaction each.
        var results: [Result<OrderUpsertResult, any Error>] = []
        results.reserveCapacity(batch.count)
        for u in batch {
            do { results.append(.success(try await upsertOrderAlone(u))) } catch { results.append(.failure(error)) }
        }
        return results
    }

    /// The upserts of one workspace (distinct external ids) in the transaction `tx`.
    func upsertOrdersTogether(_ tx: any SQLExecutor, _ batch: [OrderUpsert]) async throws
        -> [Result<OrderUpsertResult, any Error>]
    {
        let workspaceID = batch[0].workspaceID
        precondition(batch.allSatisfy { $0.workspaceID == workspaceID }, "one workspace at a time")
        var existing: [String: SQLRow] = [:]
        // Sorted, so that batches on several nodes lock the rows they share in the same order.
        for chunk in MultiRow.chunks(batch.map(\.submission.externalID).sorted(), dialect: tx.dialect) {
            let lookup = tx.dialect.keyedLookup(
                table: "orders", columns: Self.orderStateColumns, scopeColumn: "workspace_id",
                keyColumn: "external_id", scope: workspaceID, keys: Array(chunk))
            let rows = try await tx.query(lookup.sql, lookup.binds)
            for row in rows { existing[row.text("external_id")] = row }
        }
        var results = Self.unanswered(batch.count)
        var fresh: [Int] = []
        for (i, u) in batch.enumerated() {
            let row = existing[u.submission.externalID]
            let changes = row?.text("body_hash") != u.fingerprint
            // Refusals the single-order path would reach before (or without) writing anything that lasts.
            if changes, let row, let previous = OrderStatus(rawValue: row.text("status")),
                let refusal = Self.refusedTransition(from: previous, to: u.submission.status)
            {
                results[i] = .failure(refusal)
                continue
            }
            if changes, let refusal = Self.refusedCheckoutConsent(u.submission) {
                results[i] = .failure(refusal)
                continue
            }
            if row == nil {
                fresh.append(i)
                continue
            }
            results[i] = .success(
                try await upsertOrderOnce(tx, workspaceID: workspaceID, s: u.submission, fingerprint: u.fingerprint))
        }
        let created = try await insertNewOrders(
            tx, workspaceID: workspaceID, fresh.map { (batch[$0].submission, batch[$0].fingerprint) })
        for (i, result) in zip(fresh, created) { results[i] = .success(result) }
        return results
    }

    /// Answers to fill in, one per member; one left unfilled is an error, not a crash.
    static func unanswered(_ count: Int) -> [Result<OrderUpsertResult, any Error>] {
        Array(repeating: .failure(StorageError.database("the order batch gave this order no answer")), count: count)
    }
}
