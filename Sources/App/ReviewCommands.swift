import Foundation
import ReciprocityCore
import Reviews
import Storage

/// The review capability's CLI commands, as functions tests call.
extension Commands {
    /// `reciprocity reviews import`: old reviews from a CSV file, labelled imported with their source. All rows
    /// are checked first; one bad row names its line and nothing is written.
    public static func importReviews(_ rt: Runtime, workspace slug: String, source: String, file: String)
        async throws -> String
    {
        let w = try await workspace(rt, slug)
        let name = source.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 100 else {
            throw DomainError.invalid(
                "import_source", "Name the source of the reviews (1–100 characters), e.g. --source \"Trusted Shops\".",
                field: "source")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw DomainError.invalid("file_unreadable", "Cannot read \(file).", field: "file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DomainError.invalid("file_encoding", "\(file) is not UTF-8 text.", field: "file")
        }
        let rows = try ReviewImport.parse(text, now: rt.clock.now())
        let n = try await rt.store.importReviews(workspaceID: w.id, source: name, rows: rows, actor: "cli")
        rt.reviews.cache.invalidate(workspaceID: w.id)
        return "imported \(n.imported) reviews from \(name) (labelled \"importiert\")"
            + (n.skipped > 0 ? "; skipped \(n.skipped) already imported" : "")
    }
}

extension Commands {
    /// `reciprocity reviews bench-schedule`: puts `orders` delivered orders, then schedules their review requests
    /// (what the `reviews.schedule` job does) and reports the rate per slice. Linear scheduling shows as a flat
    /// rate: a slice of the last 10k orders costs what the first did. Run it on a throw-away database.
    public static func benchReviewScheduling(_ rt: Runtime, workspace slug: String, orders: Int, slice: Int)
        async throws -> String
    {
        let w = try await workspace(rt, slug)
        let clock = rt.clock
        var ids: [OrderID] = []
        ids.reserveCapacity(orders)
        let putStart = clock.now()
        for i in 0..<orders {
            let payload = OrderPayload(
                customer: .init(email: "bench\(i % 50_000)@example.com", firstName: "B", lastName: "Ench"),
                currency: "EUR",
                items: [.init(sku: "SKU-\(i % 500)", name: "Artikel \(i % 500)", quantity: 1, unitPrice: "9.90")],
                totals: .init(total: "9.90"), status: "delivered")
            let submission = try OrderSubmission.validate(
                externalID: "BENCH-\(i)", payload: payload, receivedAt: clock.now())
            let result = try await rt.store.upsertOrder(
                workspaceID: w.id, submission: submission, fingerprint: Store.fingerprint(payload))
            ids.append(result.order.id)
        }
        let putSeconds = clock.now().timeIntervalSince(putStart)
        var lines = ["put \(orders) delivered orders in \(String(format: "%.1f", putSeconds)) s"]
        var rates: [Double] = []
        for start in stride(from: 0, to: ids.count, by: slice) {
            let chunk = ids[start..<min(ids.count, start + slice)]
            let t0 = clock.now()
            for id in chunk {
                try await rt.store.db.transaction { tx in
                    _ = try await rt.store.scheduleReviewRequest(tx, workspaceID: w.id, orderID: id)
                }
            }
            let rate = Double(chunk.count) / max(1e-9, clock.now().timeIntervalSince(t0))
            rates.append(rate)
            lines.append(
                "scheduled orders \(start + 1)–\(start + chunk.count): \(Int(rate)) orders/s")
        }
        if let first = rates.first, let last = rates.last {
            lines.append(String(format: "last slice / first slice = %.2f× (1.00× is linear)", last / first))
        }
        return lines.joined(separator: "\n")
    }
}
