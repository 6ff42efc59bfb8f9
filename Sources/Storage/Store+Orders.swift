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
    /// Jobs of events recorded before, enqueued now because the order gained a tag their subscribers wait for.
    public var lateJobKinds: [String] = []

    /// Every job kind the upsert enqueued, for waking the worker.
    public var jobKinds: [String] { events.flatMap(\.jobKinds) + lateJobKinds }
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
        let currency = Currency(stored: r.text("currency"))
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
    /// - Concurrent upserts are written together (`Store+OrderBatches.swift`): the answer is the same as if each
    ///   had run alone, and it comes after the shared commit.
    public func upsertOrder(workspaceID: WorkspaceID, submission: OrderSubmission, fingerprint: String) async throws
        -> OrderUpsertResult
    {
        try await upsertOrderBatched(
            OrderUpsert(workspaceID: workspaceID, submission: submission, fingerprint: fingerprint))
    }

    /// One upsert in a transaction of its own, retried when it loses a race on a unique index.
    func upsertOrderAlone(_ u: OrderUpsert) async throws -> OrderUpsertResult {
        try await retryingUniqueViolations(attempts: 4) {
            try await db.transaction { tx in
                try await upsertOrderOnce(tx, workspaceID: u.workspaceID, s: u.submission, fingerprint: u.fingerprint)
            }
        }
    }

    /// The columns `SELECT … FOR UPDATE` reads to decide an upsert: which row, where it stands, and which body
    /// it was written from.
    static let orderStateColumns = ["id", "external_id", "status", "body_hash"]

    /// The link fields (`OrderSubmission.linkFields`) a stored order carries, from its state columns.
    static func linkTags(_ row: SQLRow) -> Set<String> {
        OrderSubmission.linkFields.filter { row.optionalText($0) != nil }
    }

    /// Why an order that stands at `previous` cannot take `next`, or nil if it can.
    static func refusedTransition(from previous: OrderStatus, to next: OrderStatus) -> DomainError? {
        previous.canTransition(to: next)
            ? nil
            : DomainError.conflict(
                "transition_impossible", "An order cannot go from '\(previous.rawValue)' to '\(next.rawValue)'.",
                field: "status")
    }

    func upsertOrderOnce(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, s: OrderSubmission, fingerprint: String
    )
        async throws -> OrderUpsertResult
    {
        let forUpdate = tx.dialect == .postgres ? " FOR UPDATE" : ""
        // With the link fields, whose change can fan out late (below).
        let existing = try await tx.first(
            "SELECT \((Self.orderStateColumns + OrderSubmission.linkFields.sorted()).joined(separator: ", ")) FROM orders WHERE workspace_id = ? AND external_id = ?\(forUpdate)",
            workspaceID, s.externalID)
        if let existing, existing.text("body_hash") == fingerprint {
            let order = try await loadOrder(tx, workspaceID: workspaceID, id: existing.int("id"))
            return OrderUpsertResult(order: order!, outcome: .unchanged, events: [])
        }
        let previous = existing.flatMap { OrderStatus(rawValue: $0.text("status")) }
        if let previous, let refusal = Self.refusedTransition(from: previous, to: s.status) { throw refusal }
        let t = now
        guard let existing else {
            return try await insertNewOrders(tx, workspaceID: workspaceID, [(s, fingerprint)])[0]
        }
        let orderID = existing.int("id")
        // An order of an erased person stays theirs, and what identified them stays gone: the shop sends the whole
        // order on every change, so without this a status update would write the name, address, payment and
        // device back, make a new contact with the real address and grant the checkout consents again.
        let owner = try await tx.first(
            "SELECT o.contact_id, c.erased_at FROM orders o JOIN contacts c ON c.id = o.contact_id WHERE o.id = ?",
            orderID)
        let erased = owner?.optionalDate("erased_at") != nil
        let contactID: ContactID
        if erased, let owner {
            contactID = owner.int("contact_id")
        } else {
            contactID = try await upsertContact(
                tx, workspaceID: workspaceID, email: s.email, firstName: s.firstName, lastName: s.lastName,
                locale: s.locale, source: "order", sourceRef: s.externalID)
        }
        // What identifies the person, written only while they are not erased (the country stays, as erasure keeps it).
        let identifying = erased ? nil : s
        let a = identifying?.shippingAddress
        // Times already known are kept: the first report of a status is the one that counts.
        let timeSets = OrderStatus.allCases.map { "\($0.timeColumn) = COALESCE(\($0.timeColumn), ?)" }
            .joined(separator: ", ")
        let orderRow = try await tx.query(
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
                a?.name, a?.street, a?.postalCode, a?.city, s.shippingAddress?.country, s.couponCode, s.referralCode,
                identifying?.referredBy, identifying?.paymentFingerprint, identifying.flatMap { device($0) },
            ] + OrderStatus.allCases.map { s.statusTimes[$0] } + [fingerprint, t, orderID, workspaceID])[0]
        var returnedBefore = ReturnedUnits()
        for r in try await tx.query(
            "SELECT sku, returned_quantity FROM order_items WHERE order_id = ? AND workspace_id = ? AND returned_quantity > 0",
            orderID, workspaceID)
        {
            returnedBefore.add(sku: r.text("sku"), units: r.int("returned_quantity"))
        }
        try await tx.execute(
            "DELETE FROM order_items WHERE order_id = ? AND workspace_id = ?", orderID, workspaceID)
        try await insertItems(tx, workspaceID: workspaceID, [(orderID, s.items)])
        let events = try await recordStatusChanges(
            tx, workspaceID: workspaceID,
            Self.statusChanges(orderID: orderID, contactID: contactID, s: s, previous: previous, now: t),
            also: Self.itemsReturned(
                workspaceID: workspaceID, orderID: orderID, contactID: contactID, s: s, before: returnedBefore, now: t
            ).map { [$0] } ?? [])
        if !erased {
            try await recordCheckoutConsents(
                tx, workspaceID: workspaceID, contactID: contactID, s: s, isNew: false, at: t)
        }
        // A link the order names only now reaches its placed event's subscribers then, unless the order has come
        // back or was cancelled meanwhile: the jobs of those events have run, and nothing would undo a late
        // referral (the device is kept, above, so it stays a tag).
        var late: [String] = []
        if !erased, [.placed, .paid, .shipped, .delivered].contains(s.status) {
            let linked = Self.linkTags(existing)
            late = try await fanOut(
                tx, workspaceID: workspaceID, eventType: OrderStatus.placed.eventType,
                dedupeKey: "order:\(orderID):\(OrderStatus.placed.rawValue)",
                tags: s.linkTags.union(linked.intersection(["client_device"])), known: linked)
        }
        // The row as written (RETURNING) and the items as sent: no second read.
        return OrderUpsertResult(
            order: Self.order(orderRow, items: s.items), outcome: .updated, events: events, lateJobKinds: late)
    }

    /// Writes orders that do not exist yet, with one statement per table and chunk: their contacts, rows, items,
    /// status history and events. Answers each order's result, in the given order.
    func insertNewOrders(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, _ orders: [(s: OrderSubmission, fingerprint: String)]
    ) async throws -> [OrderUpsertResult] {
        let t = now
        let contactIDs = try await upsertContacts(
            tx, workspaceID: workspaceID,
            orders.map {
                ContactUpsert(
                    email: $0.s.email, firstName: $0.s.firstName, lastName: $0.s.lastName, locale: $0.s.locale,
                    source: "order", sourceRef: $0.s.externalID)
            })
        let timeCols = OrderStatus.allCases.map(\.timeColumn).joined(separator: ", ")
        let types: [MultiRow.ColumnType] =
            [.int, .text, .int, .text, .text] + Array(repeating: .int, count: 5) + Array(repeating: .text, count: 10)
            + OrderStatus.allCases.map { _ in .int } + [.text, .int, .int]
        var rowsByExternalID: [String: SQLRow] = [:]
        for chunk in MultiRow.inserts(
            rows: orders.count, types: types, dialect: tx.dialect,
            row: { i in
                let (s, fingerprint) = orders[i]
                let a = s.shippingAddress
                let row: [any SQLBindable] = [
                    workspaceID, s.externalID, contactIDs[i], s.status.rawValue, s.totals.total.currency.code,
                    s.totals.subtotal.minor, s.totals.shipping.minor, s.totals.tax.minor, s.totals.discount.minor,
                    s.totals.total.minor, a?.name, a?.street, a?.postalCode, a?.city, a?.country, s.couponCode,
                    s.referralCode, s.referredBy, s.paymentFingerprint, device(s),
                ]
                return row + OrderStatus.allCases.map { s.statusTimes[$0] } + [fingerprint, t, t]
            })
        {
            let rows = try await tx.query(
                """
                INSERT INTO orders (workspace_id, external_id, contact_id, status, currency, subtotal_minor,
                  shipping_minor, tax_minor, discount_minor, total_minor, shipping_name, shipping_street,
                  shipping_postal_code, shipping_city, shipping_country, coupon_code, referral_code, referred_by,
                  payment_fingerprint, client_device, \(timeCols), body_hash, created_at, updated_at)
                \(chunk.source) RETURNING \(Self.orderColumns)
                """, chunk.binds)
            for row in rows { rowsByExternalID[row.text("external_id")] = row }
        }
        let rows = try orders.map { o in
            guard let row = rowsByExternalID[o.s.externalID] else {
                throw StorageError.database("order \(o.s.externalID) was not written")
            }
            return row
        }
        try await insertItems(tx, workspaceID: workspaceID, zip(rows, orders).map { ($0.int("id"), $1.s.items) })
        let changes = zip(rows, zip(orders, contactIDs)).flatMap { row, o in
            Self.statusChanges(orderID: row.int("id"), contactID: o.1, s: o.0.s, previous: nil, now: t)
        }
        let returns = zip(rows, zip(orders, contactIDs)).compactMap { row, o in
            Self.itemsReturned(
                workspaceID: workspaceID, orderID: row.int("id"), contactID: o.1, s: o.0.s, before: ReturnedUnits(),
                now: t)
        }
        let events = try await recordStatusChanges(tx, workspaceID: workspaceID, changes, also: returns)
        let eventsByOrder = Dictionary(grouping: events, by: \.subjectID)
        var results: [OrderUpsertResult] = []
        results.reserveCapacity(orders.count)
        for (i, row) in rows.enumerated() {
            let s = orders[i].s
            try await recordCheckoutConsents(
                tx, workspaceID: workspaceID, contactID: contactIDs[i], s: s, isNew: true, at: t)
            // The row as written (RETURNING) and the items as sent: no second read.
            results.append(
                OrderUpsertResult(
                    order: Self.order(row, items: s.items), outcome: .created,
                    events: eventsByOrder[row.int("id")] ?? []))
        }
        return results
    }

    private func device(_ s: OrderSubmission) -> String? {
        s.clientIP.map { deviceHash(ip: $0, userAgent: s.clientUserAgent ?? "") }
    }

    private func insertItems(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, _ orders: [(orderID: OrderID, items: [OrderItem])]
    ) async throws {
        let rows = orders.flatMap { o in o.items.enumerated().map { (o.orderID, $0.offset, $0.element) } }
        for chunk in MultiRow.inserts(
            rows: rows.count, types: [.int, .int, .int, .text, .text, .int, .int, .text, .int], dialect: tx.dialect,
            row: {
                let (orderID, position, item) = rows[$0]
                return [
                    workspaceID, orderID, position, item.sku, item.name, item.quantity, item.unitPrice.minor,
                    item.category, item.returnedQuantity,
                ]
            })
        {
            try await tx.execute(
                """
                INSERT INTO order_items (workspace_id, order_id, position, sku, name, quantity, unit_price_minor,
                  category, returned_quantity) \(chunk.source)
                """, chunk.binds)
        }
    }

    /// A status an order reached in this upsert.
    struct StatusReached {
        var orderID: OrderID
        var externalID: String
        var contactID: ContactID
        var from: OrderStatus?
        var to: OrderStatus
        var at: Date
        /// The submission's `linkTags`, for the event's subscribers.
        var tags: Set<String>
    }

    /// The statuses an upsert moves through: a new order has been placed (and may already be further along).
    static func statusChanges(
        orderID: OrderID, contactID: ContactID, s: OrderSubmission, previous: OrderStatus?, now: Date
    ) -> [StatusReached] {
        var reached: [OrderStatus] = []
        if previous == nil {
            reached.append(.placed)
            if s.status != .placed { reached.append(s.status) }
        } else if previous != s.status {
            reached.append(s.status)
        }
        var from = previous
        return reached.map { status in
            defer { from = status }
            return StatusReached(
                orderID: orderID, externalID: s.externalID, contactID: contactID, from: from, to: status,
                at: s.statusTimes[status] ?? now, tags: s.linkTags)
        }
    }

    /// `OrderItemsReturned` when the submission reports more returned units of some item than the order had
    /// (`ReturnedUnits.exceeds`). Deduplicated per order and set of returned units.
    static func itemsReturned(
        workspaceID: WorkspaceID, orderID: OrderID, contactID: ContactID, s: OrderSubmission, before: ReturnedUnits,
        now: Date
    ) -> EventDraft? {
        let returned = ReturnedUnits(s.items)
        guard returned.exceeds(before) else { return nil }
        return EventDraft(
            workspaceID: workspaceID, type: Order.itemsReturnedEvent, subjectType: "order", subjectID: orderID,
            payload:
                #"{"order_id":\#(orderID),"external_id":"\#(JSONText.escape(s.externalID))","contact_id":\#(contactID),"returned_units":\#(returned.total)}"#,
            dedupeKey: "order:\(orderID):returned:" + fingerprint(body: Array(returned.canonical.utf8)).prefix(32),
            occurredAt: now)
    }

    /// The status history rows, and the domain events they raise (each once per order and status), with `also`
    /// recorded in the same statement.
    private func recordStatusChanges(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, _ changes: [StatusReached], also: [EventDraft] = []
    )
        async throws -> [DomainEvent]
    {
        for chunk in MultiRow.inserts(
            rows: changes.count, types: [.int, .int, .text, .text, .int], dialect: tx.dialect,
            row: {
                [workspaceID, changes[$0].orderID, changes[$0].from?.rawValue, changes[$0].to.rawValue, changes[$0].at]
            })
        {
            try await tx.execute(
                """
                INSERT INTO order_status_changes (workspace_id, order_id, from_status, to_status, at)
                \(chunk.source) ON CONFLICT (order_id, to_status) DO NOTHING
                """, chunk.binds)
        }
        return try await recordEvents(
            tx,
            changes.map { c in
                EventDraft(
                    workspaceID: workspaceID, type: c.to.eventType, subjectType: "order", subjectID: c.orderID,
                    payload:
                        #"{"order_id":\#(c.orderID),"external_id":"\#(JSONText.escape(c.externalID))","contact_id":\#(c.contactID),"status":"\#(c.to.rawValue)"}"#,
                    dedupeKey: "order:\(c.orderID):\(c.to.rawValue)", occurredAt: c.at, tags: c.tags)
            } + also)
    }

    /// The consent changes an order's checkout consents make.
    static func checkoutConsentChanges(_ s: OrderSubmission) -> [ConsentChange] {
        s.consents.map { consent in
            ConsentChange(
                purpose: consent.purpose, action: .grant, legalBasis: .consent, text: consent.text,
                textLocale: s.locale, source: "checkout", formID: "order:\(s.externalID)", evidence: consent.evidence)
        }
    }

    /// Why writing the order's checkout consents would fail (and with it the whole upsert), or nil.
    static func refusedCheckoutConsent(_ s: OrderSubmission) -> DomainError? {
        for change in checkoutConsentChanges(s) {
            do { try ConsentRules.validate(change) } catch { return error }
        }
        return nil
    }

    /// Consents captured at checkout, and the existing-customer notice shown with a new order.
    ///
    /// The shop sends the whole order, its checkout consents included, on every change. An update applies a
    /// checkout consent only for a purpose the person has never decided on: it must not grant again what they
    /// withdrew since (in the preference centre, by one click), nor rewrite the evidence of a consent that stands.
    private func recordCheckoutConsents(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, s: OrderSubmission, isNew: Bool,
        at t: Date
    ) async throws {
        var decided: Set<String> = []
        if !isNew {
            for r in try await tx.query(
                "SELECT purpose, state FROM consents WHERE workspace_id = ? AND contact_id = ?", workspaceID, contactID)
            where ConsentRules.decided(ConsentState(rawValue: r.text("state"))) {
                decided.insert(r.text("purpose"))
            }
        }
        for change in Self.checkoutConsentChanges(s) where !decided.contains(change.purpose.rawValue) {
            try await applyConsent(tx, workspaceID: workspaceID, contactID: contactID, change: change)
        }
        if let notice = s.existingCustomerNotice, isNew {
            try await recordNotice(
                tx, workspaceID: workspaceID, contactID: contactID, kind: "existing_customer_notice", text: notice,
                locale: s.locale, source: "order:\(s.externalID)", at: s.statusTimes[.placed] ?? t)
        }
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
            SELECT i.order_id, i.sku, i.name, i.quantity, i.unit_price_minor, i.category, i.returned_quantity,
              o.currency
            FROM order_items i JOIN orders o ON o.id = i.order_id
            WHERE i.workspace_id = ? AND i.order_id IN (\(marks)) ORDER BY i.order_id, i.position
            """, [workspaceID] + orderIDs.map { $0 as any SQLBindable })
        var result: [OrderID: [OrderItem]] = [:]
        for r in rows {
            let currency = Currency(stored: r.text("currency"))
            result[r.int("order_id"), default: []].append(
                OrderItem(
                    sku: r.text("sku"), name: r.text("name"), quantity: Int(r.int("quantity")),
                    unitPrice: Money(minor: r.int("unit_price_minor"), currency: currency),
                    category: r.optionalText("category"), returnedQuantity: Int(r.int("returned_quantity"))))
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
