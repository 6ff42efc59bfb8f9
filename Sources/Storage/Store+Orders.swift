import Crypto
import Foundation
import ReciprocityCore

public enum UpsertOutcome: String, Sendable, Codable {
    case created, updated, unchanged
}

public struct OrderUpsertResult: Sendable {
    public var order: Order
    public var outcome: UpsertOutcome
    public var events: [DomainEvent]
}

extension OrderStatus {
    /// The column holding the time the order reached this status.
    var timeColumn: String {
        switch self {
        case .placed: "placed_at"
        case .paid: "paid_at"
        case .shipped: "shipped_at"
        case .delivered: "delivered_at"
        case .partiallyReturned: "partially_returned_at"
        case .returned: "returned_at"
        case .cancelled: "cancelled_at"
        }
    }
}

extension Store {
    static let orderColumns = """
        id, workspace_id, external_id, contact_id, status, currency, subtotal_minor, shipping_minor, tax_minor,
        discount_minor, total_minor, shipping_name, shipping_street, shipping_postal_code, shipping_city,
        shipping_country, coupon_code, referral_code, referred_by, payment_fingerprint, placed_at, paid_at,
        shipped_at, delivered_at, partially_returned_at, returned_at, cancelled_at, created_at, updated_at
        """

    static func order(_ r: SQLRow, items: [OrderItem]) -> Order {
        let currency = (try? Currency(r.text("currency"))) ?? .eur
        func money(_ c: String) -> Money { Money(minor: r.int(c), currency: currency) }
        var times: [OrderStatus: Date] = [:]
        for s in OrderStatus.allCases { if let d = r.optionalDate(s.timeColumn) { times[s] = d } }
        let address: PostalAddress? = r.optionalText("shipping_street").map {
            PostalAddress(
                name: r.optionalText("shipping_name"), street: $0, postalCode: r.text("shipping_postal_code"),
                city: r.text("shipping_city"), country: r.text("shipping_country"))
        }
        return Order(
            id: r.int("id"), workspaceID: r.int("workspace_id"), externalID: r.text("external_id"),
            contactID: r.int("contact_id"), status: OrderStatus(rawValue: r.text("status")) ?? .placed,
            statusTimes: times, items: items,
            totals: OrderTotals(
                subtotal: money("subtotal_minor"), shipping: money("shipping_minor"), tax: money("tax_minor"),
                discount: money("discount_minor"), total: money("total_minor")),
            shippingAddress: address, couponCode: r.optionalText("coupon_code"),
            referralCode: r.optionalText("referral_code"), referredBy: r.optionalText("referred_by"),
            paymentFingerprint: r.optionalText("payment_fingerprint"), createdAt: r.date("created_at"),
            updatedAt: r.date("updated_at"))
    }

    /// The fingerprint of an order body given as a value (the demo, imports): its canonical JSON, hashed.
    /// The API hashes the raw request bytes instead (`fingerprint(body:)`), which is cheaper and exact.
    public static func fingerprint(_ payload: OrderPayload) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return fingerprint(body: (try? encoder.encode(payload)).map(Array.init) ?? [])
    }

    /// The fingerprint of raw body bytes: the same body twice is recognised without comparing fields.
    public static func fingerprint(body: [UInt8]) -> String { Hex.encode(Array(SHA256.hash(data: body))) }

    /// The idempotent order upsert behind `PUT /api/v1/orders/{external_id}`.
    ///
    /// - The same body again changes nothing (`unchanged`).
    /// - A status change is checked against `OrderStatus.canTransition`, recorded, and raised as a domain event
    ///   whose subscribers' jobs are enqueued in the same transaction.
    /// - Concurrent first PUTs of one order race on the unique index; the loser retries and sees the winner's row.
    public func upsertOrder(workspaceID: WorkspaceID, submission: OrderSubmission, fingerprint: String) async throws
        -> OrderUpsertResult
    {
        try await retryingUniqueViolations(attempts: 4) {
            try await db.transaction { tx in
                try await upsertOrderOnce(tx, workspaceID: workspaceID, s: submission, fingerprint: fingerprint)
            }
        }
    }

    private func upsertOrderOnce(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, s: OrderSubmission, fingerprint: String
    )
        async throws -> OrderUpsertResult
    {
        let forUpdate = tx.dialect == .postgres ? " FOR UPDATE" : ""
        let existing = try await tx.first(
            "SELECT id, status, body_hash FROM orders WHERE workspace_id = ? AND external_id = ?\(forUpdate)",
            workspaceID, s.externalID)
        if let existing, existing.text("body_hash") == fingerprint {
            let order = try await loadOrder(tx, workspaceID: workspaceID, id: existing.int("id"))
            return OrderUpsertResult(order: order!, outcome: .unchanged, events: [])
        }
        let previous = existing.flatMap { OrderStatus(rawValue: $0.text("status")) }
        if let previous, !previous.canTransition(to: s.status) {
            throw DomainError.conflict(
                "transition_impossible", "An order cannot go from '\(previous.rawValue)' to '\(s.status.rawValue)'.",
                field: "status")
        }
        let contactID = try await upsertContact(
            tx, workspaceID: workspaceID, email: s.email, firstName: s.firstName, lastName: s.lastName,
            locale: s.locale, source: "order", sourceRef: s.externalID)
        let t = now
        let a = s.shippingAddress
        let timeBinds: [any SQLBindable] = OrderStatus.allCases.map { s.statusTimes[$0] }
        let device = s.clientIP.map { deviceHash(ip: $0, userAgent: s.clientUserAgent ?? "") }
        let orderID: Int64
        let orderRow: SQLRow
        if let existing {
            orderID = existing.int("id")
            // Times already known are kept: the first report of a status is the one that counts.
            let timeSets = OrderStatus.allCases.map { "\($0.timeColumn) = COALESCE(\($0.timeColumn), ?)" }
                .joined(separator: ", ")
            orderRow = try await tx.query(
                """
                UPDATE orders SET contact_id = ?, status = ?, currency = ?, subtotal_minor = ?, shipping_minor = ?,
                  tax_minor = ?, discount_minor = ?, total_minor = ?, shipping_name = ?, shipping_street = ?,
                  shipping_postal_code = ?, shipping_city = ?, shipping_country = ?, coupon_code = ?,
                  referral_code = ?, referred_by = ?, payment_fingerprint = ?,
                  client_device = COALESCE(?, client_device), \(timeSets), body_hash = ?,
                  updated_at = ?
                WHERE id = ? AND workspace_id = ? RETURNING \(Self.orderColumns)
                """,
                [
                    contactID, s.status.rawValue, s.totals.total.currency.code, s.totals.subtotal.minor,
                    s.totals.shipping.minor, s.totals.tax.minor, s.totals.discount.minor, s.totals.total.minor,
                    a?.name, a?.street, a?.postalCode, a?.city, a?.country, s.couponCode, s.referralCode,
                    s.referredBy, s.paymentFingerprint, device,
                ] + timeBinds + [fingerprint, t, orderID, workspaceID])[0]
            try await tx.execute(
                "DELETE FROM order_items WHERE order_id = ? AND workspace_id = ?", orderID, workspaceID)
        } else {
            let timeCols = OrderStatus.allCases.map(\.timeColumn).joined(separator: ", ")
            let marks = Array(repeating: "?", count: 20 + OrderStatus.allCases.count + 3).joined(separator: ", ")
            orderRow = try await tx.query(
                """
                INSERT INTO orders (workspace_id, external_id, contact_id, status, currency, subtotal_minor,
                  shipping_minor, tax_minor, discount_minor, total_minor, shipping_name, shipping_street,
                  shipping_postal_code, shipping_city, shipping_country, coupon_code, referral_code, referred_by,
                  payment_fingerprint, client_device, \(timeCols), body_hash, created_at, updated_at)
                VALUES (\(marks)) RETURNING \(Self.orderColumns)
                """,
                [
                    workspaceID, s.externalID, contactID, s.status.rawValue, s.totals.total.currency.code,
                    s.totals.subtotal.minor, s.totals.shipping.minor, s.totals.tax.minor, s.totals.discount.minor,
                    s.totals.total.minor, a?.name, a?.street, a?.postalCode, a?.city, a?.country, s.couponCode,
                    s.referralCode, s.referredBy, s.paymentFingerprint, device,
                ] + timeBinds + [fingerprint, t, t])[0]
            orderID = orderRow.int("id")
        }
        for (position, item) in s.items.enumerated() {
            try await tx.execute(
                """
                INSERT INTO order_items (workspace_id, order_id, position, sku, name, quantity, unit_price_minor,
                  category) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, workspaceID, orderID, position, item.sku, item.name, item.quantity, item.unitPrice.minor,
                item.category)
        }

        // Status history and events: a new order has been placed (and may already be further along).
        var reached: [OrderStatus] = []
        if previous == nil {
            reached.append(.placed)
            if s.status != .placed { reached.append(s.status) }
        } else if previous != s.status {
            reached.append(s.status)
        }
        var events: [DomainEvent] = []
        var from = previous
        for status in reached {
            let at = s.statusTimes[status] ?? t
            try await tx.execute(
                """
                INSERT INTO order_status_changes (workspace_id, order_id, from_status, to_status, at)
                VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id, to_status) DO NOTHING
                """, workspaceID, orderID, from?.rawValue, status.rawValue, at)
            let payload =
                #"{"order_id":\#(orderID),"external_id":"\#(JSONText.escape(s.externalID))","contact_id":\#(contactID),"status":"\#(status.rawValue)"}"#
            if let event = try await recordEvent(
                tx, workspaceID: workspaceID, type: status.eventType, subjectType: "order", subjectID: orderID,
                payload: payload, dedupeKey: "order:\(orderID):\(status.rawValue)", occurredAt: at)
            {
                events.append(event)
            }
            from = status
        }

        for consent in s.consents {
            try await applyConsent(
                tx, workspaceID: workspaceID, contactID: contactID,
                change: ConsentChange(
                    purpose: consent.purpose, action: .grant, legalBasis: .consent, text: consent.text,
                    textLocale: s.locale, source: "checkout", formID: "order:\(s.externalID)",
                    evidence: consent.evidence))
        }
        if let notice = s.existingCustomerNotice, previous == nil {
            try await recordNotice(
                tx, workspaceID: workspaceID, contactID: contactID, kind: "existing_customer_notice", text: notice,
                locale: s.locale, source: "order:\(s.externalID)", at: s.statusTimes[.placed] ?? t)
        }
        // The row as written (RETURNING) and the items as sent: no second read.
        return OrderUpsertResult(
            order: Self.order(orderRow, items: s.items), outcome: existing == nil ? .created : .updated, events: events)
    }

    /// One order with its items, by id or by the shop's external id.
    func loadOrder(_ tx: any SQLExecutor, workspaceID: WorkspaceID, id: OrderID? = nil, externalID: String? = nil)
        async throws -> Order?
    {
        let (column, value): (String, any SQLBindable) =
            if let id { ("id", id) } else { ("external_id", externalID ?? "") }
        guard
            let row = try await tx.first(
                "SELECT \(Self.orderColumns) FROM orders WHERE workspace_id = ? AND \(column) = ?", workspaceID, value)
        else { return nil }
        let orderID = row.int("id")
        let items = try await itemsByOrder(tx, workspaceID: workspaceID, orderIDs: [orderID])[orderID] ?? []
        return Self.order(row, items: items)
    }

    func itemsByOrder(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderIDs: [OrderID]) async throws
        -> [OrderID: [OrderItem]]
    {
        guard !orderIDs.isEmpty else { return [:] }
        let marks = orderIDs.map { _ in "?" }.joined(separator: ", ")
        let rows = try await tx.query(
            """
            SELECT i.order_id, i.sku, i.name, i.quantity, i.unit_price_minor, i.category, o.currency
            FROM order_items i JOIN orders o ON o.id = i.order_id
            WHERE i.workspace_id = ? AND i.order_id IN (\(marks)) ORDER BY i.order_id, i.position
            """, [workspaceID] + orderIDs.map { $0 as any SQLBindable })
        var result: [OrderID: [OrderItem]] = [:]
        for r in rows {
            let currency = (try? Currency(r.text("currency"))) ?? .eur
            result[r.int("order_id"), default: []].append(
                OrderItem(
                    sku: r.text("sku"), name: r.text("name"), quantity: Int(r.int("quantity")),
                    unitPrice: Money(minor: r.int("unit_price_minor"), currency: currency),
                    category: r.optionalText("category")))
        }
        return result
    }

    public func order(workspaceID: WorkspaceID, externalID: String) async throws -> Order? {
        try await loadOrder(db, workspaceID: workspaceID, externalID: externalID)
    }

    public func orders(
        workspaceID: WorkspaceID, status: OrderStatus? = nil, contactID: ContactID? = nil, limit: Int = 50,
        offset: Int = 0
    ) async throws -> Page<Order> {
        let limit = min(max(limit, 1), 500)
        var filter = "workspace_id = ?"
        var binds: [any SQLBindable] = [workspaceID]
        if let status {
            filter += " AND status = ?"
            binds.append(status.rawValue)
        }
        if let contactID {
            filter += " AND contact_id = ?"
            binds.append(contactID)
        }
        let total = try await db.query("SELECT COUNT(*) AS n FROM orders WHERE \(filter)", binds).first?.int("n") ?? 0
        let rows = try await db.query(
            "SELECT \(Self.orderColumns) FROM orders WHERE \(filter) ORDER BY id DESC LIMIT ? OFFSET ?",
            binds + [limit, max(offset, 0)])
        let items = try await itemsByOrder(db, workspaceID: workspaceID, orderIDs: rows.map { $0.int("id") })
        return Page(
            items: rows.map { Self.order($0, items: items[$0.int("id")] ?? []) }, total: Int(total), limit: limit,
            offset: max(offset, 0))
    }

    public func orderCounts(workspaceID: WorkspaceID) async throws -> [OrderStatus: Int] {
        var counts: [OrderStatus: Int] = [:]
        for r in try await db.query(
            "SELECT status, COUNT(*) AS n FROM orders WHERE workspace_id = ? GROUP BY status", workspaceID)
        {
            if let s = OrderStatus(rawValue: r.text("status")) { counts[s] = Int(r.int("n")) }
        }
        return counts
    }

    public struct StatusChange: Sendable, Equatable, Codable {
        public var from: String?
        public var to: String
        public var at: Date
    }

    public func statusChanges(workspaceID: WorkspaceID, orderID: OrderID) async throws -> [StatusChange] {
        try await db.query(
            "SELECT from_status, to_status, at FROM order_status_changes WHERE workspace_id = ? AND order_id = ? ORDER BY at, id",
            workspaceID, orderID
        ).map { StatusChange(from: $0.optionalText("from_status"), to: $0.text("to_status"), at: $0.date("at")) }
    }
}

/// Escapes a string for embedding in hand-built JSON.
public enum JSONText {
    public static func escape(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
