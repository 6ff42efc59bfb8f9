import Foundation
import ReciprocityCore
import Storage
import TestSupport
import Testing

@Suite struct OrderStoreContract {
    @Test(arguments: Engine.available)
    func migrationsRunOnceAndReportTheLatestVersion(engine: Engine) async throws {
        try await engine.withDatabase { db in
            // MUT: the harness migrated once; a second run must apply nothing
            let again = try await Migrator.migrate(db, logger: Engine.logger)
            // validate
            #expect(again.isEmpty)
            #expect(try await Migrator.currentVersion(db) == Migrator.latest)
        }
    }

    @Test(arguments: Engine.available)
    func theSameBodyTwiceChangesNothing(engine: Engine) async throws {
        try await engine.withStore { store, shop, clock in
            let first = try await store.put(shop, "A-1", samplePayload())
            clock.advance(by: 60)
            let second = try await store.put(shop, "A-1", samplePayload())
            #expect(first.outcome == .created)
            #expect(second.outcome == .unchanged)
            #expect(second.order.updatedAt == first.order.updatedAt)
            #expect(second.events.isEmpty)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM domain_events") == 1)
        }
    }

    @Test(arguments: Engine.available)
    func aNewStatusIsRecordedAsATransitionAndADomainEventWithSubscriberJobs(engine: Engine) async throws {
        var subs = EventSubscriptions()
        subs.subscribe("reviews.schedule", to: "OrderDelivered")
        try await engine.withStore(subscriptions: subs) { store, shop, clock in
            // setup
            try await store.put(shop, "A-2", samplePayload(status: "shipped"))
            clock.advance(by: 3600)
            // MUT
            let delivered = try await store.put(shop, "A-2", samplePayload(status: "delivered"))
            let repeated = try await store.put(shop, "A-2", samplePayload(status: "delivered", items: 2))
            // validate
            #expect(delivered.outcome == .updated)
            #expect(delivered.events.map(\.type) == ["OrderDelivered"])
            #expect(repeated.events.isEmpty, "a status reached once raises its event once")
            let jobs = try await store.jobs(workspaceID: shop.id, state: .queued)
            #expect(jobs.map(\.kind) == ["reviews.schedule"])
            #expect(jobs.first?.idempotencyKey == "event:\(delivered.events[0].id):reviews.schedule")
            let history = try await store.statusChanges(workspaceID: shop.id, orderID: delivered.order.id)
            #expect(history.map(\.to) == ["placed", "shipped", "delivered"])
            #expect(repeated.order.items.count == 2)
        }
    }

    /// A subscriber that waits for a tag gets a job only for the events that carry one. An order that names its
    /// link only in a later update gets that job then, for its placed event, and only once.
    @Test(arguments: Engine.available)
    func aTaggedSubscriberGetsAJobOnlyForAnOrderThatNamesALink(engine: Engine) async throws {
        var subs = EventSubscriptions()
        subs.subscribe("every", to: "OrderPlaced")
        subs.subscribe("linked", to: "OrderPlaced", ifTaggedWithAnyOf: OrderSubmission.linkFields)
        try await engine.withStore(subscriptions: subs) { store, shop, clock in
            // MUT: one order without a link, one with a coupon
            var plain = samplePayload(email: "plain@example.com")
            let unlinked = try await store.put(shop, "T-1", plain)
            var coupon = samplePayload(email: "coupon@example.com")
            coupon.couponCode = "SOMMER24"
            let linked = try await store.put(shop, "T-2", coupon)
            // validate
            #expect(unlinked.jobKinds == ["every"])
            #expect(linked.jobKinds == ["every", "linked"])

            // MUT: T-1 names a referral code only now, then a coupon too
            clock.advance(by: 60)
            plain.referralCode = "ANNA-7K2M"
            let late = try await store.put(shop, "T-1", plain)
            plain.couponCode = "SOMMER24"
            let again = try await store.put(shop, "T-1", plain)
            // T-2 drops its coupon and sends the checkout device: it was linked before
            coupon.couponCode = nil
            coupon.clientIP = "203.0.113.9"
            let relinked = try await store.put(shop, "T-2", coupon)
            // validate
            #expect(late.events.isEmpty)
            #expect(late.lateJobKinds == ["linked"])
            #expect(again.lateJobKinds.isEmpty, "one job per event and subscriber")
            #expect(relinked.lateJobKinds.isEmpty)
            let placed = Dictionary(
                uniqueKeysWithValues: (unlinked.events + linked.events).map { ($0.subjectID, $0.id) })
            let keys = try await store.jobs(workspaceID: shop.id, state: .queued)
                .filter { $0.kind == "linked" }.compactMap(\.idempotencyKey).sorted()
            #expect(
                keys == [unlinked.order.id, linked.order.id].map { "event:\(placed[$0]!):linked" }.sorted())

            // MUT: the jobs are purged, T-1 drops every link and names one again
            try await store.db.execute("DELETE FROM jobs")
            plain.referralCode = nil
            plain.couponCode = nil
            let dropped = try await store.put(shop, "T-1", plain)
            plain.referredBy = "Anna Muster"
            let renamed = try await store.put(shop, "T-1", plain)
            // validate: the event remembers its tags, so no second job
            #expect(dropped.lateJobKinds.isEmpty)
            #expect(renamed.lateJobKinds.isEmpty, "the event had its linked job already")
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM jobs") == 0)

            // MUT: an order without a link is returned, and the return names a coupon
            var returned = samplePayload(email: "later@example.com", status: "delivered")
            try await store.put(shop, "T-3", returned)
            returned.status = "returned"
            returned.couponCode = "SOMMER24"
            let back = try await store.put(shop, "T-3", returned)
            // validate: its events' jobs have run; a late referral would be one nothing voids
            #expect(back.lateJobKinds.isEmpty)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'linked'") == 0)
        }
    }

    /// Returned units are kept per item, and each report of more units back raises one `OrderItemsReturned`.
    @Test(arguments: Engine.available)
    func moreReturnedUnitsRaiseOneEventEach(engine: Engine) async throws {
        var subs = EventSubscriptions()
        subs.subscribe("referrals.void", to: Order.itemsReturnedEvent)
        try await engine.withStore(subscriptions: subs) { store, shop, _ in
            var payload = samplePayload(status: "delivered", items: 2)
            try await store.put(shop, "R-1", payload)
            payload.status = "partially_returned"
            payload.items?[1].returnedQuantity = 1
            let first = try await store.put(shop, "R-1", payload)
            #expect(first.events.map(\.type) == ["OrderPartiallyReturned", Order.itemsReturnedEvent])
            #expect(first.order.items.map(\.returnedQuantity) == [0, 1])
            #expect(
                try await store.order(workspaceID: shop.id, externalID: "R-1")?.items.map(\.returnedQuantity)
                    == [0, 1])
            // The same report again, or fewer units (a correction), raises nothing; more units raise one more.
            payload.customer?.firstName = "Anna-Lena"
            #expect(try await store.put(shop, "R-1", payload).events.isEmpty)
            payload.items?[1].returnedQuantity = 0
            #expect(try await store.put(shop, "R-1", payload).events.isEmpty)
            payload.items?[0].returnedQuantity = 1
            payload.items?[1].returnedQuantity = 2
            let more = try await store.put(shop, "R-1", payload)
            #expect(more.events.map(\.type) == [Order.itemsReturnedEvent])
            #expect(more.events.first?.payload.contains(#""returned_units":3"#) == true)
            // The same number of units, but another item back: that is news too.
            payload.items?[0].returnedQuantity = 0
            payload.items?[1].returnedQuantity = 1
            #expect(try await store.put(shop, "R-1", payload).events.isEmpty)
            payload.items?[0].returnedQuantity = 1
            payload.items?[1].returnedQuantity = 0
            #expect(try await store.put(shop, "R-1", payload).events.map(\.type) == [Order.itemsReturnedEvent])
            // An order first reported with units already back raises it at once.
            var late = samplePayload(email: "ben@example.com", status: "partially_returned", items: 1)
            late.items?[0].returnedQuantity = 1
            #expect(
                try await store.put(shop, "R-2", late).events.map(\.type) == [
                    "OrderPlaced", "OrderPartiallyReturned", Order.itemsReturnedEvent,
                ])
            let jobs = try await store.jobs(workspaceID: shop.id, state: .queued)
            #expect(jobs.filter { $0.kind == "referrals.void" }.count == 4)
        }
    }

    @Test(arguments: Engine.available)
    func anImpossibleTransitionIsRefusedAndNothingIsWritten(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            try await store.put(shop, "A-3", samplePayload(status: "delivered"))
            await #expect(throws: DomainError.self) {
                try await store.put(shop, "A-3", samplePayload(email: "other@example.com", status: "placed"))
            }
            let order = try #require(try await store.order(workspaceID: shop.id, externalID: "A-3"))
            #expect(order.status == .delivered)
            #expect(
                try await store.contact(workspaceID: shop.id, email: EmailAddress("other@example.com")) == nil,
                "the refused body's contact must not have been written")
        }
    }

    @Test(arguments: Engine.available)
    func tenConcurrentIdenticalPutsCreateOneOrderAndOneEvent(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            let outcomes = try await withThrowingTaskGroup(of: UpsertOutcome.self) { group in
                for _ in 0..<10 {
                    group.addTask { try await store.put(shop, "RACE-1", samplePayload(status: "delivered")).outcome }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 == .created }.count == 1)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM orders") == 1)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM contacts") == 1)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM domain_events WHERE type = 'OrderDelivered'") == 1)
        }
    }

    @Test(arguments: Engine.available)
    func anotherWorkspaceCannotReadOrWriteAWorkspacesData(engine: Engine) async throws {
        try await engine.withStore { store, shopA, _ in
            let shopB = try await store.createWorkspace(
                NewWorkspace(slug: "shop-b", name: "Shop B", senderEmail: "b@shop.example"))
            let a = try await store.put(shopA, "SHARED-ID", samplePayload())
            // B sees nothing of A
            #expect(try await store.order(workspaceID: shopB.id, externalID: "SHARED-ID") == nil)
            #expect(try await store.contact(workspaceID: shopB.id, id: a.order.contactID) == nil)
            #expect(try await store.orders(workspaceID: shopB.id).total == 0)
            // B cannot erase or object to A's contact
            await #expect(throws: DomainError.notFound("Contact")) {
                try await store.erase(workspaceID: shopB.id, contactID: a.order.contactID, actor: "test")
            }
            await #expect(throws: DomainError.notFound("Contact")) {
                try await store.object(workspaceID: shopB.id, contactID: a.order.contactID, actor: "test")
            }
            // the same external id in B is B's own order
            let b = try await store.put(shopB, "SHARED-ID", samplePayload(status: "paid"))
            #expect(b.outcome == .created)
            #expect(try await store.order(workspaceID: shopA.id, externalID: "SHARED-ID")?.status == .placed)
            let contactA = try #require(try await store.contact(workspaceID: shopA.id, id: a.order.contactID))
            #expect(contactA.erasedAt == nil && contactA.firstName == "Anna")
        }
    }

    @Test(arguments: Engine.available)
    func sqlAndHTMLMetacharactersAreStoredVerbatim(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            let nasty = "Robert'); DROP TABLE orders;-- <script>alert(\"x\")</script> ?"
            var payload = samplePayload(firstName: nasty)
            payload.items?[0].name = nasty
            let r = try await store.put(shop, "Q'1?", payload)
            let order = try #require(try await store.order(workspaceID: shop.id, externalID: "Q'1?"))
            #expect(order.items[0].name == nasty)
            #expect(try await store.contact(workspaceID: shop.id, id: r.order.contactID)?.firstName == nasty)
        }
    }

    @Test(arguments: Engine.available)
    func checkoutConsentsAndTheExistingCustomerNoticeAreKeptAsProof(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            var payload = samplePayload(consents: [
                .init(
                    purpose: "review_request", text: "Ja, fragen Sie mich nach einer Bewertung.",
                    grantedAt: "2026-05-01T10:00:00Z",
                    ip: "203.0.113.9", userAgent: "Firefox")
            ])
            payload.existingCustomerNotice = "Sie können der Nutzung jederzeit widersprechen."
            let r = try await store.put(shop, "C-1", payload)
            let consents = try await store.consents(workspaceID: shop.id, contactID: r.order.contactID)
            #expect(consents.map(\.purpose) == [.reviewRequest])
            #expect(consents[0].state == .granted)
            #expect(consents[0].granted?.ip == "203.0.113.9")
            let export = try await store.exportContact(workspaceID: shop.id, contactID: r.order.contactID)
            #expect(export.consents[0].text == "Ja, fragen Sie mich nach einer Bewertung.")
            #expect(
                export.consentHistory.contains {
                    $0.action == "notice_shown" && $0.text == "Sie können der Nutzung jederzeit widersprechen."
                })
            #expect(export.orders.map(\.externalId) == ["C-1"])
        }
    }
}
