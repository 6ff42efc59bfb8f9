import Foundation
import Messaging
import ReciprocityCore
import Referrals
import Storage
import TestSupport
import Testing

/// The referral programme on both engines: joining, attribution by code, the reward lifecycle through the return
/// window, exactly once under concurrent identical orders, fraud decisions, clawbacks, milestones, payouts, tax.
@Suite struct ReferralFlowTests {
    struct Kit {
        var store: Store
        var shop: Workspace
        var clock: ManualClock
        var referrals: ReferralModule
    }

    static let window: Int64 = 60

    func withKit(
        _ engine: Engine, programme: (inout ReferralProgramme) -> Void = { _ in }, _ body: (Kit) async throws -> Void
    ) async throws {
        var subscriptions = EventSubscriptions()
        ReferralModule.subscribe(&subscriptions)
        try await engine.withStore(subscriptions: subscriptions) { store, shop, clock in
            let mailer = Mailer(
                store: store,
                composer: MailComposer(
                    catalog: try MailTemplateCatalog.load(), store: store, baseURL: "https://shop.example"),
                delivery: MailDelivery(store: store, transport: DevOutboxTransport(), logger: Engine.logger))
            let referrals = ReferralModule(
                store: store, mailer: mailer, baseURL: "https://shop.example", random: SystemRandom(),
                disposable: { DisposableDomains(["wegwerf.example"]) }, logger: Engine.logger)
            var p = ReferralProgramme(
                active: true, targetURL: "https://shop.example/", returnWindowSeconds: Self.window)
            programme(&p)
            try await referrals.service.saveProgramme(workspaceID: shop.id, p, actor: "test")
            try await body(Kit(store: store, shop: shop, clock: clock, referrals: referrals))
        }
    }

    // MARK: Helpers

    /// Cash rewards for the advocate, paid from the shop's account.
    static func paysCash(_ p: inout ReferralProgramme, _ valueMinor: Int64) {
        p.advocateReward = RewardSpec(type: .cash, valueMinor: valueMinor)
        p.payerName = "Kaffee & Co. GmbH"
        p.payerIBAN = "DE89 3704 0044 0532 0130 00"
    }

    func order(
        email: String, status: String = "placed", ref: String? = nil, coupon: String? = nil, asked: String? = nil,
        street: String = "Hauptstraße 1", payment: String? = nil, category: String? = nil, price: String = "40.00",
        firstName: String = "Friederike"
    ) -> OrderPayload {
        OrderPayload(
            customer: .init(email: email, firstName: firstName, lastName: "Muster", locale: "de-DE"), currency: "EUR",
            items: [.init(sku: "KAFFEE-1", name: "Kaffee", quantity: 1, unitPrice: price, category: category)],
            totals: .init(total: price), status: status,
            shippingAddress: .init(
                name: "X", street: street, postalCode: "10115", city: "Berlin", country: "DE"),
            couponCode: coupon, referralCode: ref, referredBy: asked, paymentFingerprint: payment)
    }

    /// Runs the referral jobs the order's events raised, as the worker would.
    func process(_ kit: Kit, _ result: OrderUpsertResult) async throws {
        let list = await kit.referrals.service.currentDisposable()
        for event in result.events {
            try await kit.store.db.transaction { tx in
                switch event.type {
                case "OrderPlaced":
                    try await kit.referrals.service.attribute(eventID: event.id, tx: tx, disposable: list)
                case "OrderDelivered": try await kit.referrals.service.hold(eventID: event.id, tx: tx)
                case "OrderReturned", "OrderCancelled", Order.itemsReturnedEvent:
                    try await kit.referrals.service.void(eventID: event.id, tx: tx)
                default: break
                }
            }
        }
    }

    @discardableResult
    func put(_ kit: Kit, _ id: String, _ payload: OrderPayload) async throws -> OrderUpsertResult {
        let r = try await kit.store.put(kit.shop, id, payload)
        try await process(kit, r)
        return r
    }

    /// A customer with a delivered order who joins.
    func advocate(_ kit: Kit, email: String = "anna@example.com", firstName: String = "Anna") async throws -> Advocate {
        try await put(kit, "A-\(email)", order(email: email, status: "delivered", firstName: firstName))
        return try await kit.referrals.service.join(
            workspace: kit.shop,
            .init(
                email: try EmailAddress(email), orderNumber: "A-\(email)",
                consentText: "Ja, ich möchte am Empfehlungsprogramm teilnehmen und Mails dazu erhalten.",
                locale: "de", evidence: ConsentEvidence(at: kit.clock.now(), ip: "203.0.113.5"), source: "test"))
    }

    func referral(_ kit: Kit) async throws -> Referral? {
        try await kit.store.referrals(workspaceID: kit.shop.id).first
    }

    func count(_ kit: Kit, _ sql: String) async throws -> Int64 { try await kit.store.db.scalar(sql) }

    /// Delivers the friend's order and lets the window pass; returns the advocate's reward afterwards.
    func deliverAndRelease(_ kit: Kit, _ id: String, _ payload: OrderPayload) async throws -> Reward? {
        var delivered = payload
        delivered.status = "delivered"
        try await put(kit, id, delivered)
        kit.clock.advance(by: Double(Self.window) + 1)
        for r in try await kit.store.rewards(workspaceID: kit.shop.id) {
            try await kit.referrals.service.release(rewardID: r.id)
        }
        return try await kit.store.rewards(workspaceID: kit.shop.id).first { $0.beneficiary == "advocate" }
    }

    // MARK: Tests

    @Test(arguments: Engine.available)
    func shareToRewardExactlyOnce(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            #expect(anna.code.hasPrefix("ANNA-"))
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'referral_welcome'") == 1)
            // Joining again changes nothing and sends nothing.
            _ = try await kit.referrals.service.join(
                workspace: kit.shop,
                .init(
                    email: try EmailAddress("anna@example.com"), orderNumber: nil, consentText: "Ja.", locale: "de",
                    evidence: ConsentEvidence(at: kit.clock.now()), source: "test"))
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'referral_welcome'") == 1)

            let friendOrder = order(email: "ben@example.org", ref: anna.code.lowercased(), street: "Ringstr. 9")
            try await put(kit, "F-1", friendOrder)
            let ref = try #require(try await referral(kit))
            #expect(ref.status == .accepted)
            #expect(ref.via == "ref")
            #expect(try await kit.store.rewards(workspaceID: kit.shop.id).map(\.state) == [.pending])

            var delivered = friendOrder
            delivered.status = "delivered"
            try await put(kit, "F-1", delivered)
            let held = try #require(try await kit.store.rewards(workspaceID: kit.shop.id).first)
            #expect(held.state == .held)
            // Not before the window has passed.
            try await kit.referrals.service.release(rewardID: held.id)
            #expect(try await kit.store.reward(id: held.id)?.state == .held)
            kit.clock.advance(by: Double(Self.window) + 1)
            try await kit.referrals.service.release(rewardID: held.id)
            try await kit.referrals.service.release(rewardID: held.id)
            #expect(try await kit.referrals.service.sweep() == 0)
            let issued = try #require(try await kit.store.reward(id: held.id))
            #expect(issued.state == .issued)
            #expect(issued.voucherCode?.hasPrefix("DANKE-") == true)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'referral_reward'") == 1)
            let mail = try #require(
                try await kit.store.db.first("SELECT recipient, message FROM outbox WHERE kind = 'referral_reward'"))
            #expect(mail.text("recipient") == "anna@example.com")
            #expect(mail.text("message").replacingOccurrences(of: "=\r\n", with: "").contains(issued.voucherCode!))
            #expect(try await referral(kit)?.status == .confirmed)
            // The favour, for the thank-you capability; the friend was never mailed.
            #expect(
                try await kit.store.favours(workspaceID: kit.shop.id, contactID: anna.contactID).map { $0.kind } == [
                    "referral"
                ])
            #expect(try await count(kit, "SELECT COUNT(*) FROM domain_events WHERE type = 'FavourRecorded'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE recipient = 'ben@example.org'") == 0)
            let decisions = try await kit.store.auditEntries(workspaceID: kit.shop.id, subject: "referral:\(ref.id)")
            #expect(decisions.contains { $0.action == "referrals.decide" && $0.detail.contains("accepted") })
        }
    }

    /// The issuing job and the sweep can both find an issued reward without its mail: the sweep read the reward
    /// before the job's mail committed. Mailing from that stale reading, twice at once and once more, sends one mail.
    @Test(arguments: Engine.available)
    func anIssuedRewardIsMailedOnceFromStaleReadings(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            var friendOrder = order(email: "ben@example.org", ref: anna.code, street: "Ringstr. 9")
            try await put(kit, "F-1", friendOrder)
            friendOrder.status = "delivered"
            try await put(kit, "F-1", friendOrder)
            let held = try #require(try await kit.store.rewards(workspaceID: kit.shop.id).first)
            kit.clock.advance(by: Double(Self.window) + 1)
            #expect(try await kit.store.approveReward(workspaceID: kit.shop.id, id: held.id, actor: "rules"))
            _ = try #require(
                try await kit.store.issueReward(
                    workspaceID: kit.shop.id, id: held.id, generatedCode: "DANKE-TEST", timeZone: "Europe/Berlin"))
            let stale = try #require(try await kit.store.reward(id: held.id))
            #expect(stale.state == .issued && stale.outboxID == nil)

            async let first: Void = kit.referrals.service.mail(stale)
            async let second: Void = kit.referrals.service.mail(stale)
            _ = try await (first, second)
            try await kit.referrals.service.mail(stale)
            #expect(try await kit.referrals.service.sweep() == 0)

            let mails = try await kit.store.db.query("SELECT id FROM outbox WHERE kind = 'referral_reward'")
            #expect(mails.count == 1)
            #expect(try await kit.store.reward(id: held.id)?.outboxID == mails.first?.int("id"))
        }
    }

    /// Only an order that names a link gets an attribution job. One that names the advocate's code only in a
    /// later update gets the job with that update, and is attributed as if the code had come with it.
    @Test(arguments: Engine.available)
    func aCodeNamedOnlyInALaterUpdateIsAttributedOnce(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let queued = { () async throws -> [Job] in
                try await kit.store.jobs(workspaceID: kit.shop.id, state: .queued).filter {
                    $0.kind == Store.referralAttributeJob
                }
            }
            #expect(try await queued().isEmpty, "the advocate's own order named no link")
            // MUT: the friend's order, first without the code, then with it, then again with it
            let first = try await kit.store.put(kit.shop, "F-9", order(email: "ben@example.org", street: "Ringstr. 9"))
            let named = order(email: "ben@example.org", ref: anna.code, street: "Ringstr. 9", price: "41.00")
            let late = try await kit.store.put(kit.shop, "F-9", named)
            var again = named
            again.couponCode = anna.code
            let repeated = try await kit.store.put(kit.shop, "F-9", again)
            // validate
            #expect(first.jobKinds.isEmpty)
            #expect(late.jobKinds == [Store.referralAttributeJob])
            #expect(repeated.jobKinds.isEmpty)
            let jobs = try await queued()
            #expect(jobs.map(\.payload) == [#"{"event_id":\#(first.events[0].id)}"#])
            // The worker's run of that job attributes the order.
            let list = await kit.referrals.service.currentDisposable()
            try await kit.store.db.transaction { tx in
                try await kit.referrals.service.attribute(eventID: first.events[0].id, tx: tx, disposable: list)
            }
            let ref = try #require(try await referral(kit))
            #expect(ref.advocateID == anna.id)
            #expect(ref.via == "ref")
        }
    }

    /// The worker runs placed orders' attribution in batches: one look-up sorts out the orders with nothing to
    /// attribute, and the others decide as they would one by one, each seeing the ones before it.
    @Test(arguments: Engine.available)
    func ordersAttributedInOneBatchDecideAsOneByOne(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let payloads: [(String, OrderPayload)] = [
                ("F-1", order(email: "ben@example.org", ref: anna.code, street: "Ringstr. 9")),
                ("F-2", order(email: "carl@example.org", street: "Weg 2")),
                ("F-3", order(email: "dora@example.org", asked: "anna@example.com", street: "Allee 3")),
                ("F-4", order(email: "emil@example.org", ref: "NIEMAND-123", street: "Gasse 4")),
            ]
            var events: [Int64] = []
            for (id, payload) in payloads {
                events += try await kit.store.put(kit.shop, id, payload).events.filter { $0.type == "OrderPlaced" }
                    .map(\.id)
            }
            #expect(events.count == 4)
            let placed = events
            let list = await kit.referrals.service.currentDisposable()
            try await kit.store.db.transaction { tx in
                try await kit.referrals.service.attribute(eventIDs: placed, tx: tx, disposable: list)
            }
            let attributed = try await kit.store.db.query(
                """
                SELECT o.external_id, r.via FROM referrals r JOIN orders o ON o.id = r.order_id
                ORDER BY o.external_id
                """
            ).map { "\($0.text("external_id")) \($0.text("via"))" }
            #expect(attributed == ["F-1 ref", "F-3 asked"])
        }
    }

    @Test(arguments: Engine.available)
    func tenConcurrentIdenticalOrdersGiveOneReferral(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let payload = order(email: "ben@example.org", status: "delivered", ref: anna.code, street: "Ringstr. 9")
            let results = try await withThrowingTaskGroup(of: OrderUpsertResult.self) { group in
                for _ in 0..<10 { group.addTask { try await kit.store.put(kit.shop, "F-10", payload) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Every placed event's job runs, even twice at once.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for r in results + results { group.addTask { try await process(kit, r) } }
                try await group.waitForAll()
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM referrals") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_rewards") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM jobs WHERE kind = 'referrals.release'") == 1)
        }
    }

    @Test(arguments: Engine.available)
    func gmailAliasIsBlockedSameAddressIsFlagged(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let alex = try await advocate(kit, email: "a.b+x@gmail.com", firstName: "Alex")
            try await put(kit, "F-1", order(email: "ab@googlemail.com", ref: alex.code, street: "Weg 3"))
            let blocked = try #require(try await referral(kit))
            #expect(blocked.status == .blocked)
            #expect(blocked.reasons.contains(.sameEmail))
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_rewards") == 0)

            // Another person, shipping to the advocate's own address ("Hauptstraße 1" = "hauptstr. 1"): flagged.
            try await put(kit, "F-2", order(email: "cleo@example.net", ref: alex.code, street: "hauptstr. 1"))
            let flagged = try #require(try await kit.store.referrals(workspaceID: kit.shop.id, status: .flagged).first)
            #expect(flagged.reasons == [.sameAddress])
            let reward = try #require(
                try await deliverAndRelease(
                    kit, "F-2", order(email: "cleo@example.net", ref: alex.code, street: "hauptstr. 1")))
            // A flagged referral's reward waits for a person.
            #expect(reward.state == .held)
            try await kit.store.decideReferral(workspaceID: kit.shop.id, id: flagged.id, accept: true, actor: "user:1")
            try await kit.referrals.service.release(rewardID: reward.id)
            #expect(try await kit.store.reward(id: reward.id)?.state == .issued)
        }
    }

    @Test(arguments: Engine.available)
    func samePaymentAndDeviceAndDisposable(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            try await kit.store.db.execute("UPDATE orders SET payment_fingerprint = 'card-42'")
            try await put(
                kit, "F-1", order(email: "ben@example.org", ref: anna.code, street: "Weg 3", payment: "card-42"))
            #expect(try await referral(kit)?.reasons == [.samePayment])
            #expect(try await referral(kit)?.status == .blocked)

            try await kit.store.noteAdvocateDevice(
                advocateID: anna.id, device: kit.store.deviceHash(ip: "203.0.113.5", userAgent: "UA"))
            var p = order(email: "cleo@wegwerf.example", ref: anna.code, street: "Weg 4")
            p.clientIP = "203.0.113.5"
            p.clientUserAgent = "UA"
            try await put(kit, "F-2", p)
            let r = try #require(try await kit.store.referrals(workspaceID: kit.shop.id).first)
            #expect(r.status == .flagged)
            #expect(Set(r.reasons) == [.sameDevice, .disposableEmail])
        }
    }

    /// "The friend is a new customer" looks through spellings of one mailbox: a customer who ordered as
    /// John.Doe@gmail.com is not new as j.o.h.n.doe+freund@googlemail.com. Another person at Gmail is. Erasure
    /// removes the identity with the address, and the migration's backfill computes it for contacts from before.
    @Test(arguments: Engine.available)
    func aCustomerBehindAnotherSpellingIsNoNewCustomer(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            try await put(kit, "P-1", order(email: "John.Doe@gmail.com", street: "Allee 1"))
            try await put(
                kit, "F-1", order(email: "j.o.h.n.doe+freund@googlemail.com", ref: anna.code, street: "Weg 5"))
            let alias = try #require(try await kit.store.referrals(workspaceID: kit.shop.id).first)
            #expect(alias.reasons == [.existingCustomer] && alias.status == .rejected)
            try await put(kit, "F-2", order(email: "jane.doe@gmail.com", ref: anna.code, street: "Weg 6"))
            let other = try #require(try await kit.store.referrals(workspaceID: kit.shop.id).first)
            #expect(other.orderExternalID == "F-2" && other.reasons.isEmpty && other.status == .accepted)

            let john = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("john.doe@gmail.com")))
            func identity() async throws -> SQLValue {
                try #require(try await kit.store.db.first("SELECT identity FROM contacts WHERE id = ?", john.id))[
                    "identity"]
            }
            #expect(try await identity() == .text("johndoe@gmail.com"))
            // A contact from before the column: the backfill computes its identity.
            try await kit.store.db.execute("UPDATE contacts SET identity = NULL WHERE id = ?", john.id)
            let backfill = try #require(Migrator.all.first { $0.name == "contact_identity" }?.backfill)
            try await kit.store.db.transaction { try await backfill($0) }
            #expect(try await identity() == .text("johndoe@gmail.com"))
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: john.id, actor: "test")
            #expect(try await identity() == .null)
        }
    }

    @Test(arguments: Engine.available)
    func conditionsRejectWithoutReward(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: { p in
                p.minimumOrderMinor = 3000
                p.excludedCategories = ["Bücher"]
            }
        ) { kit in
            let anna = try await advocate(kit)
            try await put(
                kit, "F-1", order(email: "ben@example.org", coupon: anna.code, street: "Weg 3", price: "20.00"))
            #expect(try await referral(kit)?.reasons == [.belowMinimum])
            try await put(
                kit, "F-2",
                order(email: "cleo@example.org", asked: "ANNA@example.com", street: "Weg 4", category: "bücher"))
            let second = try #require(try await kit.store.referrals(workspaceID: kit.shop.id).first)
            #expect(second.via == "asked")
            #expect(second.reasons == [.onlyExcludedItems])
            // Ben ordered before: now an existing customer.
            try await put(kit, "F-3", order(email: "ben@example.org", ref: anna.code, street: "Weg 3", price: "50.00"))
            let third = try #require(try await kit.store.referrals(workspaceID: kit.shop.id).first)
            #expect(third.reasons == [.existingCustomer])
            #expect(Set(try await kit.store.referrals(workspaceID: kit.shop.id).map(\.status)) == [.rejected])
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_rewards") == 0)
        }
    }

    @Test(arguments: Engine.available)
    func returnBeforeIssueVoidsAfterIssueClawsBack(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: { p in
                p.advocateReward = RewardSpec(type: .credit, valueMinor: 1500)
            }
        ) { kit in
            let anna = try await advocate(kit)
            let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            try await put(kit, "F-1", friend)
            let reward = try #require(try await deliverAndRelease(kit, "F-1", friend))
            #expect(reward.state == .issued)
            #expect(try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: anna.contactID) == 1500)
            var returned = friend
            returned.status = "returned"
            try await put(kit, "F-1", returned)
            #expect(try await kit.store.reward(id: reward.id)?.state == .clawedBack)
            #expect(try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: anna.contactID) == 0)
            #expect(try await referral(kit)?.status == .void)

            // Returned before the window passed: void, nothing issued.
            let other = order(email: "cleo@example.org", ref: anna.code, street: "Weg 4")
            try await put(kit, "F-2", other)
            var back = other
            back.status = "delivered"
            try await put(kit, "F-2", back)
            back.status = "returned"
            try await put(kit, "F-2", back)
            let voided = try #require(try await kit.store.rewards(workspaceID: kit.shop.id).first)
            #expect(voided.state == .void)
            #expect(voided.endReason == "order_returned")
        }
    }

    /// A partial return judges the referral again on what the friend kept, by the minimum it was decided under.
    @Test(arguments: Engine.available)
    func aPartialReturnJudgesWhatWasKept(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: { p in
                p.advocateReward = RewardSpec(type: .credit, valueMinor: 1500)
                p.minimumOrderMinor = 3000
            }
        ) { kit in
            let anna = try await advocate(kit)
            func twoItems(_ email: String, street: String) -> OrderPayload {
                var p = order(email: email, ref: anna.code, street: street, price: "40.00")
                p.items = [
                    .init(sku: "KAFFEE-1", name: "Kaffee", quantity: 1, unitPrice: "20.00"),
                    .init(sku: "TEE-1", name: "Tee", quantity: 2, unitPrice: "10.00"),
                ]
                return p
            }
            // Ben keeps the coffee and one tea (30.00): still at the minimum, the reward stays.
            var ben = twoItems("ben@example.org", street: "Weg 3")
            try await put(kit, "F-1", ben)
            let bens = try #require(try await deliverAndRelease(kit, "F-1", ben))
            #expect(bens.state == .issued)
            ben.status = "partially_returned"
            ben.items?[1].returnedQuantity = 1
            try await put(kit, "F-1", ben)
            #expect(try await kit.store.reward(id: bens.id)?.state == .issued)
            // The figures count the revenue of what was kept.
            let figures = try await kit.store.referralFigures(
                workspaceID: kit.shop.id, since: Date(timeIntervalSince1970: 0))
            #expect(figures.referredOrders == 1 && figures.revenueMinor == 3000)
            // Sending the second tea back too leaves 20.00: below the minimum, the credit is clawed back.
            ben.items?[1].returnedQuantity = 2
            try await put(kit, "F-1", ben)
            let clawed = try await kit.store.reward(id: bens.id)
            #expect(clawed?.state == .clawedBack)
            #expect(clawed?.endReason == "order_partially_returned:below_minimum")
            #expect(try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: anna.contactID) == 0)

            // Cleo's referral was decided under a minimum of 30.00; the shop raises it to 35.00 later. Her return
            // leaves 30.00, which met the rule she ordered under: the pending reward stays.
            let cleo = twoItems("cleo@example.org", street: "Weg 4")
            try await put(kit, "F-2", cleo)
            var raised = try await kit.store.referralProgramme(workspaceID: kit.shop.id)
            raised.minimumOrderMinor = 3500
            try await kit.referrals.service.saveProgramme(workspaceID: kit.shop.id, raised, actor: "test")
            var back = cleo
            back.status = "delivered"
            back.items?[1].returnedQuantity = 1
            try await put(kit, "F-2", back)
            let cleos = try #require(
                try await kit.store.rewards(workspaceID: kit.shop.id).first { $0.id != bens.id })
            #expect(cleos.state == .held)
            // Everything back under a status that is not "returned": void before issue, with its reason.
            back.status = "partially_returned"
            back.items = back.items?.map {
                var i = $0; i.returnedQuantity = i.quantity; return i
            }
            try await put(kit, "F-2", back)
            let voided = try await kit.store.reward(id: cleos.id)
            #expect(voided?.state == .void)
            #expect(voided?.endReason == "order_partially_returned:all_returned")
        }
    }

    /// 15.00 store credit per confirmed referral, and a 20.00 credit bonus at the second.
    static func creditWithBonusAtTwo(_ p: inout ReferralProgramme) {
        p.advocateReward = RewardSpec(type: .credit, valueMinor: 1500)
        p.milestones = [Milestone(count: 2, reward: RewardSpec(type: .credit, valueMinor: 2000))]
    }

    /// A clawback that takes the advocate below a milestone ends the milestone's bonus; reaching it again earns it
    /// again.
    @Test(arguments: Engine.available)
    func aReturnBelowAMilestoneEndsItsBonus(engine: Engine) async throws {
        try await withKit(engine, programme: Self.creditWithBonusAtTwo) { kit in
            let anna = try await advocate(kit)
            var friends: [OrderPayload] = []
            for (i, email) in ["ben@example.org", "cleo@example.org"].enumerated() {
                let p = order(email: email, ref: anna.code, street: "Weg \(i + 20)")
                friends.append(p)
                try await put(kit, "F-\(i)", p)
                _ = try await deliverAndRelease(kit, "F-\(i)", p)
            }
            let balance = { try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: anna.contactID) }
            #expect(try await balance() == 1500 + 1500 + 2000)
            let bonus = try #require(
                try await kit.store.rewards(workspaceID: kit.shop.id).first { $0.reason == "milestone" })
            #expect(bonus.state == .issued)

            // A void of a referral that never counted leaves the bonus alone, even if the count is below it
            // (as data from before this rule can be).
            try await kit.store.db.execute(
                "UPDATE referrals SET status = 'void' WHERE order_id = (SELECT id FROM orders WHERE external_id = 'F-1')"
            )
            let eve = order(email: "eve@example.org", ref: anna.code, street: "Weg 40")
            try await put(kit, "F-9", eve)
            #expect(
                try await kit.store.referrals(workspaceID: kit.shop.id).first { $0.orderExternalID == "F-9" }?.status
                    == .accepted)
            var cancelled = eve
            cancelled.status = "cancelled"
            try await put(kit, "F-9", cancelled)
            #expect(try await kit.store.reward(id: bonus.id)?.state == .issued)
            try await kit.store.db.execute(
                "UPDATE referrals SET status = 'confirmed' WHERE order_id = (SELECT id FROM orders WHERE external_id = 'F-1')"
            )

            var returned = friends[0]
            returned.status = "returned"
            try await put(kit, "F-0", returned)
            let lost = try await kit.store.reward(id: bonus.id)
            #expect(lost?.state == .clawedBack)
            #expect(lost?.endReason == "milestone_lost:order_returned")
            #expect(try await balance() == 1500)

            // A third friend brings the count back to two: the bonus is earned once more.
            let dora = order(email: "dora@example.org", ref: anna.code, street: "Weg 30")
            try await put(kit, "F-2", dora)
            _ = try await deliverAndRelease(kit, "F-2", dora)
            let bonuses = try await kit.store.rewards(workspaceID: kit.shop.id).filter { $0.reason == "milestone" }
            #expect(bonuses.map(\.state).sorted { $0.rawValue < $1.rawValue } == [.clawedBack, .issued])
            #expect(try await balance() == 1500 + 1500 + 2000)

            // A bonus a person voided stays voided: the next confirmed referral does not create it again.
            let again = try #require(bonuses.first { $0.state == .issued })
            try await kit.store.db.execute(
                "UPDATE referral_rewards SET state = 'void', end_reason = 'by_hand' WHERE id = ?", again.id)
            let finn = order(email: "finn@example.org", ref: anna.code, street: "Weg 50")
            try await put(kit, "F-3", finn)
            _ = try await deliverAndRelease(kit, "F-3", finn)
            #expect(
                try await kit.store.rewards(workspaceID: kit.shop.id).filter { $0.reason == "milestone" }.count == 2)
        }
    }

    /// Two rewards issued at the same moment confirm two referrals: the milestone at two is reached exactly once.
    /// (On PostgreSQL, without the advocate lock, each issue counted only its own confirmation and neither
    /// reached it.)
    @Test(arguments: Engine.available)
    func twoIssuesAtOnceReachAMilestoneOnce(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: { p in
                Self.creditWithBonusAtTwo(&p)
                p.autoApprove = false
            }
        ) { kit in
            let anna = try await advocate(kit)
            for (i, email) in ["ben@example.org", "cleo@example.org"].enumerated() {
                var p = order(email: email, ref: anna.code, street: "Weg \(i + 60)")
                try await put(kit, "F-\(i)", p)
                p.status = "delivered"
                try await put(kit, "F-\(i)", p)
            }
            kit.clock.advance(by: Double(Self.window) + 1)
            let rewards = try await kit.store.rewards(workspaceID: kit.shop.id)
            #expect(rewards.count == 2)
            for r in rewards {
                #expect(try await kit.store.approveReward(workspaceID: kit.shop.id, id: r.id, actor: "test"))
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for r in rewards { group.addTask { try await kit.referrals.service.release(rewardID: r.id) } }
                try await group.waitForAll()
            }
            let bonuses = try await kit.store.rewards(workspaceID: kit.shop.id).filter { $0.reason == "milestone" }
            #expect(bonuses.map(\.state) == [.issued])
            #expect(
                try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: anna.contactID)
                    == 1500 + 1500 + 2000)
        }
    }

    /// The advocate's vouchers come from the pool while it lasts, then are generated with the prefix. A
    /// double-sided programme books the friend's credit when the referral is confirmed, and never mails the friend.
    @Test(arguments: Engine.available)
    func theVoucherPoolComesFirstAndTheFriendsCreditIsBookedUnmailed(engine: Engine) async throws {
        try await withKit(engine, programme: { $0.friendReward = RewardSpec(type: .credit, valueMinor: 500) }) { kit in
            let anna = try await advocate(kit)
            #expect(
                try await kit.store.addReferralVouchers(workspaceID: kit.shop.id, codes: ["POOL-1", "POOL-2"]) == 2)
            let friends = ["ben@example.org", "cleo@example.org", "dora@example.org"]
            for (i, email) in friends.enumerated() {
                let p = order(email: email, ref: anna.code, street: "Weg \(i + 20)")
                try await put(kit, "F-\(i)", p)
                _ = try await deliverAndRelease(kit, "F-\(i)", p)
            }
            let rewards = try await kit.store.rewards(workspaceID: kit.shop.id).sorted { $0.id < $1.id }
            let advocates = rewards.filter { $0.beneficiary == "advocate" }
            #expect(advocates.map(\.state) == [.issued, .issued, .issued])
            #expect(advocates.prefix(2).map(\.voucherCode) == ["POOL-1", "POOL-2"])
            #expect(advocates.last?.voucherCode?.hasPrefix("DANKE-") == true)
            #expect(try await kit.store.freeReferralVouchers(workspaceID: kit.shop.id) == 0)

            let forFriends = rewards.filter { $0.beneficiary == "friend" }
            #expect(forFriends.count == 3 && forFriends.allSatisfy { $0.state == .issued && $0.type == .credit })
            for reward in forFriends {
                #expect(try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: reward.contactID) == 500)
            }
            for email in friends {
                #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE recipient = '\(email)'") == 0)
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'referral_reward'") == 3)
        }
    }

    /// The shop's checkout spends credit once per order and gives it back once. Orders spending more than the
    /// balance at the same moment are decided one after the other, so the balance never goes below zero.
    @Test(arguments: Engine.available)
    func creditIsSpentOncePerOrderAndGivenBackOnce(engine: Engine) async throws {
        try await withKit(engine, programme: { $0.friendReward = RewardSpec(type: .credit, valueMinor: 500) }) { kit in
            let anna = try await advocate(kit)
            let ben = order(email: "ben@example.org", ref: anna.code, street: "Weg 9")
            try await put(kit, "F-1", ben)
            _ = try await deliverAndRelease(kit, "F-1", ben)
            let service = kit.referrals.service
            let email = try EmailAddress("ben@example.org")
            func redeem(_ orderID: String, _ amount: String, _ customer: EmailAddress? = nil) async throws
                -> (redemption: Store.CreditRedemption, created: Bool)
            {
                try await service.redeemCredit(
                    workspaceID: kit.shop.id, email: customer ?? email, orderID: orderID, amount: amount,
                    currency: nil, actor: "test")
            }
            func refusal(_ body: () async throws -> Void) async -> String? {
                do {
                    try await body()
                    return nil
                } catch let error as DomainError {
                    return error.code
                } catch {
                    return "\(error)"
                }
            }

            let first = try await redeem("N-1", "3.00")
            #expect(first.created && first.redemption.amountMinor == 300 && first.redemption.balanceMinor == 200)
            let again = try await redeem("N-1", "3.00")
            #expect(!again.created && again.redemption.balanceMinor == 200)
            #expect(await refusal { _ = try await redeem("N-1", "2.00") } == "credit_redemption_differs")
            #expect(
                await refusal { _ = try await redeem("N-1", "3.00", try EmailAddress("anna@example.com")) }
                    == "credit_redemption_differs")
            #expect(await refusal { _ = try await redeem("N-2", "2.01") } == "insufficient_credit")
            #expect(await refusal { _ = try await redeem("N-2", "0.00") } == "amount_invalid")
            #expect(
                await refusal {
                    _ = try await service.redeemCredit(
                        workspaceID: kit.shop.id, email: email, orderID: "N-2", amount: "1.00", currency: "CHF",
                        actor: "test")
                } == "currency_mismatch")

            // Five orders of 1.50 at once against a balance of 2.00: one is paid, four are refused.
            let outcomes = await withTaskGroup(of: String.self) { group in
                for i in 1...5 {
                    group.addTask {
                        await refusal { _ = try await redeem("C-\(i)", "1.50") } ?? "redeemed"
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(
                outcomes.sorted() == [
                    "insufficient_credit", "insufficient_credit", "insufficient_credit",
                    "insufficient_credit", "redeemed",
                ])
            let benContact = try #require(try await kit.store.contact(workspaceID: kit.shop.id, email: email))
            #expect(try await kit.store.creditBalance(workspaceID: kit.shop.id, contactID: benContact.id) == 50)

            let released = try await service.releaseCredit(workspaceID: kit.shop.id, orderID: "N-1", actor: "test")
            #expect(released.releasedAt != nil && released.balanceMinor == 350)
            let releasedAgain = try await service.releaseCredit(workspaceID: kit.shop.id, orderID: "N-1", actor: "test")
            #expect(releasedAgain.releasedAt == released.releasedAt && releasedAgain.balanceMinor == 350)
            #expect(await refusal { _ = try await redeem("N-1", "3.00") } == "credit_redemption_released")
            #expect(
                await refusal {
                    _ = try await service.releaseCredit(workspaceID: kit.shop.id, orderID: "N-9", actor: "t")
                }
                    == "not_found")
            #expect(
                try await count(kit, "SELECT COUNT(*) FROM audit_log WHERE action LIKE 'referrals.credit.%'") == 3)

            // Art. 15: each person's export holds their part of the programme, and only theirs.
            let benData = try await kit.store.exportContact(workspaceID: kit.shop.id, contactID: benContact.id)
                .referrals
            #expect(benData.advocate == nil && benData.referralsMade.isEmpty)
            #expect(benData.referredOrders.map(\.orderExternalId) == ["F-1"])
            #expect(benData.rewards.map(\.beneficiary) == ["friend"] && benData.rewards.first?.valueMinor == 500)
            #expect(benData.credit.map(\.kind) == ["booking", "redemption", "redemption", "release"])
            #expect(benData.credit.map(\.deltaMinor).reduce(0, +) == 350)
            #expect(benData.credit.compactMap(\.orderExternalId).first == "N-1")
            let annaData = try await kit.store.exportContact(workspaceID: kit.shop.id, contactID: anna.contactID)
                .referrals
            #expect(annaData.advocate?.code == anna.code && annaData.advocate?.state == "active")
            #expect(annaData.referralsMade.count == 1 && annaData.referredOrders.isEmpty)
            #expect(annaData.rewards.allSatisfy { $0.beneficiary == "advocate" } && annaData.credit.isEmpty)

            // Credit booked in euros is not spent at par after the programme moves to francs.
            var chf = try await kit.store.referralProgramme(workspaceID: kit.shop.id)
            chf.currency = "CHF"
            try await kit.store.saveReferralProgramme(workspaceID: kit.shop.id, chf, actor: "test")
            #expect(try await service.credit(workspaceID: kit.shop.id, email: email).balance.minor == 0)
            #expect(await refusal { _ = try await redeem("N-3", "1.00") } == "insufficient_credit")
        }
    }

    @Test(arguments: Engine.available)
    func clawedBackVoucherIsInvalidatedUnlessUsed(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            try await put(kit, "F-1", friend)
            let reward = try #require(try await deliverAndRelease(kit, "F-1", friend))
            let code = try #require(reward.voucherCode)
            var returned = friend
            returned.status = "returned"
            try await put(kit, "F-1", returned)
            #expect(try await kit.store.voucher(workspaceID: kit.shop.id, code: code)?.invalidated == true)
        }
    }

    @Test(arguments: Engine.available)
    func milestoneCapAndPremiumStock(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: { p in
                p.advocateReward = RewardSpec(type: .premium, valueMinor: 0)
                p.milestones = [Milestone(count: 2, reward: RewardSpec(type: .credit, valueMinor: 2000))]
                p.capCount = 2
            }
        ) { kit in
            let anna = try await advocate(kit)
            let mug = try await kit.store.savePremium(
                Premium(
                    id: 0, workspaceID: kit.shop.id, name: "Tasse", description: "Emaille", imageURL: nil,
                    costMinor: 800, shippingMinor: 490, currency: "EUR", stock: 1, active: true), id: nil, actor: "t")
            for (i, friend) in ["ben@example.org", "cleo@example.org", "dora@example.org"].enumerated() {
                let p = order(email: friend, ref: anna.code, street: "Weg \(i + 10)")
                try await put(kit, "F-\(i)", p)
                _ = try await deliverAndRelease(kit, "F-\(i)", p)
            }
            // The third is over the cap of two.
            #expect(try await referral(kit)?.reasons == [.capReached])
            let rewards = try await kit.store.rewards(workspaceID: kit.shop.id)
            #expect(rewards.filter { $0.reason == "referral" }.count == 2)
            let milestone = try #require(rewards.first { $0.reason == "milestone" })
            #expect(milestone.state == .issued && milestone.milestone == 2 && milestone.type == .credit)
            // No choice yet: both premiums wait; choosing queues one (stock 1), the other keeps waiting.
            #expect(
                try await kit.store.fulfilments(workspaceID: kit.shop.id).map(\.state) == [
                    "awaiting_choice", "awaiting_choice",
                ])
            try await kit.store.setPremiumChoice(workspaceID: kit.shop.id, advocateID: anna.id, premiumID: mug.id)
            #expect(
                try await kit.store.fulfilments(workspaceID: kit.shop.id).map(\.state).sorted() == [
                    "awaiting_choice", "queued",
                ])
            #expect(try await kit.store.premiums(workspaceID: kit.shop.id).first?.stock == 0)
            let queued = try await kit.store.rewards(workspaceID: kit.shop.id).first { $0.premiumID == mug.id }
            #expect(queued?.valueMinor == 1290)
            // Restocking two queues the one that waited, oldest first, and one stays in stock.
            var restocked = mug
            restocked.stock = 2
            let saved = try await kit.store.savePremium(restocked, id: mug.id, actor: "t")
            #expect(saved.stock == 1)
            let fulfilments = try await kit.store.fulfilments(workspaceID: kit.shop.id)
            #expect(fulfilments.map(\.state) == ["queued", "queued"])
            #expect(fulfilments.allSatisfy { $0.premium == "Tasse" && $0.shippedAt == nil })
            // Shipping is recorded once; a second time, or another workspace's reward, is refused.
            let first = try #require(fulfilments.first?.rewardID)
            try await kit.store.markFulfilmentShipped(workspaceID: kit.shop.id, rewardID: first, actor: "t")
            #expect(try await kit.store.fulfilments(workspaceID: kit.shop.id).first?.shippedAt == kit.clock.now())
            let again = await #expect(throws: DomainError.self) {
                try await kit.store.markFulfilmentShipped(workspaceID: kit.shop.id, rewardID: first, actor: "t")
            }
            #expect(again?.kind == .conflict)
            let elsewhere = await #expect(throws: DomainError.self) {
                try await kit.store.markFulfilmentShipped(
                    workspaceID: kit.shop.id + 1000, rewardID: fulfilments[1].rewardID, actor: "t")
            }
            #expect(elsewhere?.kind == .notFound)
            #expect(try await kit.store.fulfilments(workspaceID: kit.shop.id).map(\.state) == ["shipped", "queued"])
            // The admin's view: open ones first, as far as its limit goes; the count tells how many there are.
            #expect(
                try await kit.store.fulfilments(workspaceID: kit.shop.id, openFirst: true, limit: 1).map(\.state)
                    == ["queued"])
            #expect(try await kit.store.fulfilmentCount(workspaceID: kit.shop.id) == 2)
            #expect(try await kit.store.fulfilmentCount(workspaceID: kit.shop.id, state: .shipped) == 1)
            #expect(
                try await kit.store.fulfilments(workspaceID: kit.shop.id, offset: 1).first?.street == "Hauptstraße 1")
        }
    }

    /// A restock serves live advocates only: an erased one keeps no claim on stock.
    @Test(arguments: Engine.available)
    func aRestockPassesOverErasedAdvocates(engine: Engine) async throws {
        try await withKit(engine, programme: { $0.advocateReward = RewardSpec(type: .premium, valueMinor: 0) }) { kit in
            let anna = try await advocate(kit)
            let mug = try await kit.store.savePremium(
                Premium(
                    id: 0, workspaceID: kit.shop.id, name: "Tasse", description: "Emaille", imageURL: nil,
                    costMinor: 800, shippingMinor: 490, currency: "EUR", stock: 0, active: true), id: nil, actor: "t")
            try await kit.store.setPremiumChoice(workspaceID: kit.shop.id, advocateID: anna.id, premiumID: mug.id)
            let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 10")
            try await put(kit, "F-1", friend)
            _ = try await deliverAndRelease(kit, "F-1", friend)
            #expect(try await kit.store.fulfilments(workspaceID: kit.shop.id).map(\.state) == ["awaiting_choice"])
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: anna.contactID, actor: "t")
            var restocked = mug
            restocked.stock = 1
            #expect(try await kit.store.savePremium(restocked, id: mug.id, actor: "t").stock == 1)
            #expect(try await kit.store.fulfilments(workspaceID: kit.shop.id).map(\.state) == ["awaiting_choice"])
        }
    }

    @Test(arguments: Engine.available)
    func cashPayoutsAndTaxThreshold(engine: Engine) async throws {
        try await withKit(engine, programme: { Self.paysCash(&$0, 10_000) }) { kit in
            let anna = try await advocate(kit)
            for (i, friend) in ["ben@example.org", "cleo@example.org", "dora@example.org"].enumerated() {
                let p = order(email: friend, ref: anna.code, street: "Weg \(i + 10)")
                try await put(kit, "F-\(i)", p)
                _ = try await deliverAndRelease(kit, "F-\(i)", p)
            }
            await #expect(throws: DomainError.self) {
                _ = try await kit.referrals.service.exportPayouts(workspace: kit.shop, actor: "t")
            }
            // The payout list: every payout, open and without bank details yet.
            let open = try CSV.parse(try await kit.referrals.service.payoutCSV(workspaceID: kit.shop.id))
            #expect(
                open.header == [
                    "reward_id", "code", "name", "iban", "amount", "currency", "state", "batch_id", "created_at",
                ])
            #expect(open.rows.map { open.value($0.fields, "amount") } == ["100.00", "100.00", "100.00"])
            #expect(
                open.rows.allSatisfy {
                    open.value($0.fields, "state") == "open" && open.value($0.fields, "batch_id").isEmpty
                })
            #expect(open.rows.allSatisfy { open.value($0.fields, "code") == anna.code })
            try await kit.store.setPayoutDetails(
                workspaceID: kit.shop.id, advocateID: anna.id, name: "Anna Muster",
                iban: try #require(IBAN("DE02120300000000202051")))
            let (batch, xml) = try await kit.referrals.service.exportPayouts(workspace: kit.shop, actor: "t")
            #expect(xml.contains("<NbOfTxs>3</NbOfTxs>"))
            #expect(xml.contains("<CtrlSum>300.00</CtrlSum>"))
            #expect(xml.contains("DE02120300000000202051"))
            #expect(try await kit.referrals.service.payoutFile(workspace: kit.shop, batchID: batch) == xml)
            #expect(try await kit.store.payouts(workspaceID: kit.shop.id, state: "open").isEmpty)
            // The same payouts, now with the batch of the SEPA file that carried them and the whole IBAN.
            let exported = try CSV.parse(try await kit.referrals.service.payoutCSV(workspaceID: kit.shop.id))
            #expect(exported.rows.count == 3)
            #expect(
                exported.rows.allSatisfy {
                    exported.value($0.fields, "batch_id") == String(batch)
                        && exported.value($0.fields, "iban") == "DE02120300000000202051"
                        && exported.value($0.fields, "name") == "Anna Muster"
                })
            let year = RewardTax.year(of: kit.clock.now(), timeZone: kit.shop.timeZone)
            let tax = try await kit.store.rewardTax(workspaceID: kit.shop.id, year: year)
            #expect(tax.count == 1 && tax[0].totalMinor == 30_000 && tax[0].reachesThreshold)
            #expect(try await kit.referrals.service.taxCSV(workspaceID: kit.shop.id, year: year).contains("300.00"))
        }
    }

    @Test(arguments: Engine.available)
    func onlyCustomersWithADeliveredOrderJoin(engine: Engine) async throws {
        try await withKit(engine) { kit in
            try await put(kit, "P-1", order(email: "paul@example.com"))
            await #expect(throws: DomainError.self) {
                _ = try await kit.referrals.service.join(
                    workspace: kit.shop,
                    .init(
                        email: try EmailAddress("paul@example.com"), orderNumber: "P-1", consentText: "Ja.",
                        locale: "de", evidence: ConsentEvidence(at: kit.clock.now()), source: "test"))
            }
            // A wrong order number says the same as an unknown address.
            try await put(kit, "Q-1", order(email: "quinn@example.com", status: "delivered"))
            do {
                _ = try await kit.referrals.service.join(
                    workspace: kit.shop,
                    .init(
                        email: try EmailAddress("quinn@example.com"), orderNumber: "P-1", consentText: "Ja.",
                        locale: "de", evidence: ConsentEvidence(at: kit.clock.now()), source: "test"))
                Issue.record("joined with someone else's order number")
            } catch let e as DomainError {
                #expect(e.code == "join_not_found")
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM advocates") == 0)
        }
    }

    /// The figures, the chart and the advocates list count clicks per advocate and UTC day (`referral_click_days`),
    /// kept by the flush; a later batch adds to a day's count, and the migration's backfill gives the same counts.
    @Test(arguments: Engine.available)
    func clickFiguresCountPerWorkspaceAndDay(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let bert = try await advocate(kit, email: "bert@example.com", firstName: "Bert")
            let day: TimeInterval = 86_400
            let today = Date(timeIntervalSince1970: (kit.clock.now().timeIntervalSince1970 / day).rounded(.down) * day)
            func click(_ a: Advocate, _ at: Date) -> ReferralClick {
                ReferralClick(
                    workspaceID: kit.shop.id, advocateID: a.id, at: at, ipHash: "i", uaFamily: "firefox", device: "d")
            }
            try await kit.store.recordClicks([
                click(anna, today.addingTimeInterval(-3 * day)), click(anna, today.addingTimeInterval(-day + 5)),
                click(bert, today.addingTimeInterval(-day + 9)), click(bert, today.addingTimeInterval(1)),
            ])
            let figures = try await kit.store.referralFigures(
                workspaceID: kit.shop.id, since: today.addingTimeInterval(-2 * day))
            #expect(figures.clicks == 3)
            let days = try await kit.store.referralDays(
                workspaceID: kit.shop.id, since: today.addingTimeInterval(-2 * day))
            #expect(days.map(\.day) == [today.addingTimeInterval(-day), today])
            #expect(days.map(\.clicks) == [2, 1])

            // A second batch: two more of Bert's today, added to the day's row.
            try await kit.store.recordClicks([click(bert, today.addingTimeInterval(60)), click(bert, today)])
            func listed() async throws -> [String: Int64] {
                let page = try await kit.store.advocates(workspaceID: kit.shop.id)
                return Dictionary(uniqueKeysWithValues: page.items.map { ($0.advocate.code, $0.clicks) })
            }
            #expect(try await listed() == [anna.code: 2, bert.code: 4])
            let rows = "SELECT advocate_id, day, clicks FROM referral_click_days ORDER BY advocate_id, day"
            let kept = try await kit.store.db.query(rows).map {
                [$0.int("advocate_id"), $0.int("day"), $0.int("clicks")]
            }
            #expect(kept.count == 4)
            // Runs of one advocate and day broken by another's clicks still add up per advocate and day.
            try await kit.store.recordClicks([
                click(anna, today.addingTimeInterval(2)), click(bert, today.addingTimeInterval(3)),
                click(anna, today.addingTimeInterval(4)),
            ])
            #expect(try await listed() == [anna.code: 4, bert.code: 5])
            let keptAfter = try await kit.store.db.query(rows).map {
                [$0.int("advocate_id"), $0.int("day"), $0.int("clicks")]
            }
            #expect(keptAfter.count == 5)
            // The migration's backfill, from the click rows alone.
            let migration = try #require(Migrator.all.first { $0.name == "click_days" })
            let backfill = try #require(migration.statements(kit.store.db.dialect).first { $0.contains("INSERT") })
            try await kit.store.db.execute("DELETE FROM referral_click_days")
            try await kit.store.db.execute(backfill)
            #expect(
                try await kit.store.db.query(rows).map { [$0.int("advocate_id"), $0.int("day"), $0.int("clicks")] }
                    == keptAfter)
        }
    }

    /// The retention purge deletes click rows from before the cutoff, oldest first by id and in chunks, and leaves
    /// the newer rows and the per-day counts.
    @Test(arguments: Engine.available)
    func oldClickRowsArePurgedAndTheDayCountsStay(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let now = kit.clock.now()
            func click(_ daysAgo: Double, _ device: String) -> ReferralClick {
                ReferralClick(
                    workspaceID: kit.shop.id, advocateID: anna.id, at: now.addingTimeInterval(-daysAgo * 86_400),
                    ipHash: "i", uaFamily: "firefox", device: device)
            }
            // Written as the flush writes them: older batches first.
            try await kit.store.recordClicks((0..<7).map { click(500 - Double($0), "old\($0)") })
            try await kit.store.recordClicks([click(401, "edge"), click(399, "kept"), click(1, "new")])
            let days = try await count(kit, "SELECT SUM(clicks) FROM referral_click_days")
            let cutoff = now.addingTimeInterval(-400 * 86_400)
            #expect(try await kit.store.purgeClicks(before: cutoff, chunk: 3, maxChunks: 2) == 6)
            #expect(try await kit.store.purgeClicks(before: cutoff, chunk: 3) == 2)
            #expect(try await kit.store.purgeClicks(before: cutoff, chunk: 3) == 0)
            let left = try await kit.store.db.query("SELECT device FROM referral_clicks ORDER BY id").map {
                $0.text("device")
            }
            #expect(left == ["kept", "new"])
            #expect(try await count(kit, "SELECT SUM(clicks) FROM referral_click_days") == days)
        }
    }

    @Test(arguments: Engine.available)
    func clicksAreBatchedAndAttributeByDevice(engine: Engine) async throws {
        try await withKit(engine, programme: { $0.touch = .first }) { kit in
            let anna = try await advocate(kit)
            let bert = try await advocate(kit, email: "bert@example.com", firstName: "Bert")
            for (a, offset) in [(anna, -3600.0), (bert, -60.0)] {
                kit.referrals.clicks.record(
                    workspaceID: kit.shop.id, advocateID: a.id, at: kit.clock.now().addingTimeInterval(offset),
                    ip: "198.51.100.20", userAgent: "Mozilla/5.0 Friend")
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_clicks") == 0)
            try await kit.referrals.clicks.flush()
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_clicks") == 2)
            var p = order(email: "ben@example.org", street: "Weg 3")
            p.clientIP = "198.51.100.20"
            p.clientUserAgent = "Mozilla/5.0 Friend"
            try await put(kit, "F-1", p)
            // First touch: Anna's click an hour ago wins over Bert's a minute ago.
            let r = try #require(try await referral(kit))
            #expect(r.advocateID == anna.id && r.via == "click")
            let figures = try await kit.store.referralFigures(
                workspaceID: kit.shop.id, since: kit.clock.now().addingTimeInterval(-86_400))
            #expect(figures.clicks == 2 && figures.referredOrders == 1)
        }
    }

    /// Last touch (the default): of two clicks from the friend's device, the later one wins. A click only counts
    /// within the attribution window (30 days by default): one from 31 days ago attributes nothing, one from 29
    /// days ago does.
    @Test(arguments: Engine.available)
    func clicksAttributeByLastTouchWithinTheWindow(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let programme = try await kit.store.referralProgramme(workspaceID: kit.shop.id)
            #expect(programme.touch == .last && programme.attributionDays == 30)
            let anna = try await advocate(kit)
            let bert = try await advocate(kit, email: "bert@example.com", firstName: "Bert")
            let cleo = try await advocate(kit, email: "cleo@example.com", firstName: "Cleo")
            let day = 86_400.0
            let clicks: [(Advocate, Double, String)] = [
                (anna, -3600, "198.51.100.20"), (bert, -60, "198.51.100.20"),
                (cleo, -31 * day, "198.51.100.31"), (cleo, -29 * day, "198.51.100.29"),
            ]
            for (a, offset, ip) in clicks {
                kit.referrals.clicks.record(
                    workspaceID: kit.shop.id, advocateID: a.id, at: kit.clock.now().addingTimeInterval(offset), ip: ip,
                    userAgent: "Mozilla/5.0 Friend")
            }
            try await kit.referrals.clicks.flush()
            for (id, email, ip) in [
                ("F-1", "ben@example.org", "198.51.100.20"), ("F-2", "dora@example.org", "198.51.100.31"),
                ("F-3", "emil@example.org", "198.51.100.29"),
            ] {
                var p = order(email: email, street: "Weg \(id)")
                p.clientIP = ip
                p.clientUserAgent = "Mozilla/5.0 Friend"
                try await put(kit, id, p)
            }
            let byOrder = Dictionary(
                uniqueKeysWithValues: try await kit.store.referrals(workspaceID: kit.shop.id).map {
                    ($0.orderExternalID, $0)
                })
            #expect(byOrder["F-1"]?.advocateID == bert.id && byOrder["F-1"]?.via == "click")
            #expect(byOrder["F-2"] == nil)
            #expect(byOrder["F-3"]?.advocateID == cleo.id)
        }
    }

    /// A full click buffer refuses (the fast path then leaves the request to the router), and the router's redirect
    /// waits for the flush to make room instead of losing the click, however long a working flush takes. Only while
    /// the flush fails, and after the patience, is a click dropped.
    @Test func aFullClickBufferWaitsForTheFlush() async throws {
        try await withKit(.sqlite) { kit in
            let anna = try await advocate(kit)
            let clicks = ClickRecorder(
                store: kit.store, limit: 2, patience: .milliseconds(200), logger: Engine.logger)
            @Sendable func click() -> Bool {
                clicks.record(
                    workspaceID: kit.shop.id, advocateID: anna.id, at: kit.clock.now(), ip: "198.51.100.7",
                    userAgent: "Mozilla/5.0 Firefox/130.0")
            }
            @Sendable func waitingClick() async {
                await clicks.recordWaiting(
                    workspaceID: kit.shop.id, advocateID: anna.id, at: kit.clock.now(), ip: "198.51.100.7",
                    userAgent: "Mozilla/5.0 Firefox/130.0")
            }
            #expect(click() && click())
            #expect(!click())
            #expect(clicks.waiting == 2)
            // Longer than the patience: a working flush is waited for, nothing is dropped.
            async let waited: Void = waitingClick()
            try await Task.sleep(for: .milliseconds(400))
            #expect(clicks.redirectsWaiting == 1 && clicks.dropped == 0)
            try await clicks.flush()
            await waited
            #expect(clicks.waiting == 1 && clicks.redirectsWaiting == 0 && clicks.dropped == 0)
            #expect(click())
            // The database takes nothing: the flush fails and keeps its clicks, and a waiting click is dropped.
            _ = try await kit.store.db.execute("DROP TABLE referral_clicks")
            await #expect(throws: (any Error).self) { try await clicks.flush() }
            #expect(clicks.waiting == 2)
            await waitingClick()
            #expect(clicks.dropped == 1 && clicks.redirectsWaiting == 0 && clicks.waiting == 2)
        }
    }

    /// A flush writes a transaction at a time. When a later one fails, the clicks already committed stay written once,
    /// and only the rest goes back to the buffer: the next flush writes those, with no doubles and none lost.
    @Test func aFlushThatFailsHalfwayKeepsOnlyWhatItDidNotWrite() async throws {
        try await withKit(.sqlite) { kit in
            let anna = try await advocate(kit)
            let clicks = ClickRecorder(store: kit.store, clicksPerTransaction: 2, logger: Engine.logger)
            for agent in ["Firefox/130.0", "Firefox/131.0", "Refused/1.0", "Firefox/132.0", "Firefox/133.0"] {
                #expect(
                    clicks.record(
                        workspaceID: kit.shop.id, advocateID: anna.id, at: kit.clock.now(), ip: "198.51.100.7",
                        userAgent: "Mozilla/5.0 \(agent)"))
            }
            // The second transaction (the third and fourth click) fails on the third.
            let refused = kit.store.deviceHash(ip: "198.51.100.7", userAgent: "Mozilla/5.0 Refused/1.0")
            _ = try await kit.store.db.execute(
                """
                CREATE TRIGGER refuse_click BEFORE INSERT ON referral_clicks WHEN NEW.device = '\(refused)'
                BEGIN SELECT RAISE(ABORT, 'refused'); END
                """)
            await #expect(throws: (any Error).self) { try await clicks.flush() }
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_clicks") == 2)
            #expect(clicks.waiting == 3)
            _ = try await kit.store.db.execute("DROP TRIGGER refuse_click")
            try await clicks.flush()
            #expect(clicks.waiting == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_clicks") == 5)
            #expect(try await count(kit, "SELECT COUNT(DISTINCT device) FROM referral_clicks") == 5)
        }
    }

    /// Two flushes at once (the periodic one, and one at shutdown): the second returns only once the first has written
    /// what it took. (It returned at once, finding the buffer empty, and a click seemed lost.)
    @Test func aFlushWaitsForTheOneRunning() async throws {
        try await withKit(.sqlite) { kit in
            let anna = try await advocate(kit)
            let clicks = ClickRecorder(store: kit.store, logger: Engine.logger)
            #expect(
                clicks.record(
                    workspaceID: kit.shop.id, advocateID: anna.id, at: kit.clock.now(), ip: "198.51.100.7",
                    userAgent: "Mozilla/5.0 Firefox/130.0"))
            // A transaction holds the writer, so the first flush takes the click and then waits to write it.
            let (held, holding) = AsyncStream<Void>.makeStream()
            let (gate, open) = AsyncStream<Void>.makeStream()
            let writer = Task {
                try await kit.store.db.transaction { _ in
                    holding.yield()
                    for await _ in gate {}
                    return 0
                }
            }
            for await _ in held { break }
            let first = Task { try await clicks.flush() }
            try await waitUntil("the first flush took the click") { clicks.buffered == 0 }
            #expect(clicks.waiting == 1)  // taken, not yet written
            let release = Task {
                try await Task.sleep(for: .milliseconds(200))
                open.finish()
            }
            try await clicks.flush()
            #expect(try await kit.store.db.scalar("SELECT COUNT(*) FROM referral_clicks") == 1)
            _ = try await (writer.value, first.value, release.value)
        }
    }

    @Test(arguments: Engine.available)
    func blockingInReviewVoidsAndErasureRevokesThePage(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            try await kit.store.setPayoutDetails(
                workspaceID: kit.shop.id, advocateID: anna.id, name: "Anna Muster",
                iban: try #require(IBAN("DE02120300000000202051")))
            try await put(kit, "F-1", order(email: "cleo@example.net", ref: anna.code, street: "Hauptstraße 1"))
            let flagged = try #require(try await referral(kit))
            #expect(flagged.status == .flagged)
            try await kit.store.decideReferral(workspaceID: kit.shop.id, id: flagged.id, accept: false, actor: "user:1")
            #expect(try await referral(kit)?.status == .blocked)
            #expect(try await kit.store.rewards(workspaceID: kit.shop.id).map(\.state) == [.void])
            // A second decision is refused: only flagged referrals wait for one.
            await #expect(throws: DomainError.self) {
                try await kit.store.decideReferral(
                    workspaceID: kit.shop.id, id: flagged.id, accept: true, actor: "user:1")
            }

            let page = try #require(
                try await kit.store.advocate(workspaceID: kit.shop.id, id: anna.id).map {
                    kit.referrals.links.pageToken($0)
                })
            #expect(try await kit.referrals.links.advocate(pageToken: page)?.id == anna.id)
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: anna.contactID, actor: "test")
            #expect(try await kit.referrals.links.advocate(pageToken: page) == nil)
            let erased = try #require(try await kit.store.advocate(workspaceID: kit.shop.id, id: anna.id))
            #expect(!erased.active && erased.payoutIBAN == nil && erased.payoutName == nil)
            #expect(erased.code == "ERASED-\(anna.id)", "the code's first-name part goes too")
            #expect(try await kit.store.referralTarget(code: anna.code) == nil)
            // The export keeps what was done about her as advocate; the masked IBAN the audit log noted is gone.
            let export = try await kit.store.exportContact(workspaceID: kit.shop.id, contactID: anna.contactID)
            let payout = try #require(export.auditLog.first { $0.action == "referrals.payout_details" })
            #expect(payout.detail.isEmpty)
            #expect(export.auditLog.map(\.action).contains("contact.erase"))
            let json = String(decoding: try JSONEncoder().encode(export), as: UTF8.self)
            #expect(!json.contains("2051") && !json.contains("Muster"), "nothing of the IBAN or name")
        }
    }

    @Test(arguments: Engine.available)
    func withdrawingTheConsentLeavesTheProgramme(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            #expect(try await kit.store.referralTarget(code: anna.code) != nil)
            _ = try await kit.store.db.transaction { tx in
                try await kit.store.applyConsent(
                    tx, workspaceID: kit.shop.id, contactID: anna.contactID,
                    change: ConsentChange(
                        purpose: .referralProgram, action: .withdraw, text: nil, source: "preferences",
                        evidence: ConsentEvidence(at: kit.clock.now())))
            }
            #expect(try await kit.store.referralTarget(code: anna.code) == nil)
            #expect(try await kit.store.advocate(workspaceID: kit.shop.id, id: anna.id)?.active == false)
            // Joining again is a new opt-in: active again, and the welcome mail once more.
            _ = try await kit.referrals.service.join(
                workspace: kit.shop,
                .init(
                    email: try EmailAddress("anna@example.com"), orderNumber: nil, consentText: "Ja.", locale: "de",
                    evidence: ConsentEvidence(at: kit.clock.now()), source: "test"))
            #expect(try await kit.store.referralTarget(code: anna.code) != nil)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'referral_welcome'") == 2)
        }
    }
}
