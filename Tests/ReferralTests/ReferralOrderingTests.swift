import Foundation
import ReciprocityCore
import Referrals
import Storage
import TestSupport
import Testing

/// The referral jobs in the orders they can really run in (two lanes, several nodes, retries), decisions taken at
/// the same moment, and what the sweep, the payout export and the tax list do with the rewards that result.
extension ReferralFlowTests {
    /// Runs `first` in a transaction and keeps it open for a moment after it, while `second` starts. Whatever
    /// `second` does must wait for, and then see, what `first` did.
    func whileOpen(
        _ kit: Kit, first: @escaping @Sendable (any SQLExecutor) async throws -> Void,
        then second: @escaping @Sendable () async throws -> Void
    ) async throws {
        let (started, signal) = AsyncStream<Void>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await kit.store.db.transaction { tx in
                    try await first(tx)
                    signal.yield()
                    signal.finish()
                    // A fixed pause on purpose: `second` is meant to block on a lock this transaction holds, and no
                    // condition visible from here says so on both engines. Without the lock it finishes meanwhile.
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            group.addTask {
                for await _ in started { break }
                try await second()
            }
            try await group.waitForAll()
        }
    }

    /// Anna, with one issued cash reward on the payout list and her bank details given (`paysCash` programmes).
    func advocateWithOpenPayout(_ kit: Kit) async throws -> Advocate {
        let anna = try await advocate(kit)
        let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
        try await put(kit, "F-1", friend)
        _ = try await deliverAndRelease(kit, "F-1", friend)
        try await kit.store.setPayoutDetails(
            workspaceID: kit.shop.id, advocateID: anna.id, name: "Anna Muster",
            iban: try #require(IBAN("DE02120300000000202051")))
        return anna
    }

    func placedEvent(_ result: OrderUpsertResult) throws -> Int64 {
        try #require(result.events.first { $0.type == "OrderPlaced" }).id
    }

    /// The void job of a return can run before the attribute job of the same order (the other lane, a retry): the
    /// order that came back earns nothing when it is attributed afterwards.
    @Test(arguments: Engine.available)
    func anOrderReturnedBeforeItsAttributionEarnsNothing(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            var friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            let placed = try await kit.store.put(kit.shop, "F-1", friend)
            friend.status = "delivered"
            let delivered = try await kit.store.put(kit.shop, "F-1", friend)
            friend.status = "returned"
            try await put(kit, "F-1", friend)  // the void job: nothing to void yet
            try await process(kit, placed)
            try await process(kit, delivered)
            #expect(try await count(kit, "SELECT COUNT(*) FROM referrals") == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_rewards") == 0)
        }
    }

    /// An order delivered while its attribution is still open: the hold job waits for the attribution and holds
    /// the rewards it made, instead of finding none and leaving them pending for ever. (Once the referral row is
    /// written, its foreign key's lock on the order already makes the delivery wait; the order lock that
    /// `attributeOrder` now takes first also closes the window between its read of the order and that insert,
    /// which this test cannot time.)
    @Test(arguments: Engine.available)
    func deliveryDuringTheAttributionHoldsItsRewards(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            let eventID = try placedEvent(try await kit.store.put(kit.shop, "F-1", friend))
            let list = await kit.referrals.service.currentDisposable()
            try await whileOpen(
                kit,
                first: { tx in try await kit.referrals.service.attribute(eventID: eventID, tx: tx, disposable: list) },
                then: {
                    var delivered = friend
                    delivered.status = "delivered"
                    try await put(kit, "F-1", delivered)
                })
            #expect(try await kit.store.rewards(workspaceID: kit.shop.id).map(\.state) == [.held])
        }
    }

    /// Two friends' orders decided at the same moment for an advocate with a cap of one: the second decision
    /// counts the first one's reward.
    @Test(arguments: Engine.available)
    func twoDecisionsAtOnceKeepTheCap(engine: Engine) async throws {
        try await withKit(engine, programme: { $0.capCount = 1 }) { kit in
            let anna = try await advocate(kit)
            let first = try placedEvent(
                try await kit.store.put(
                    kit.shop, "F-1", order(email: "ben@example.org", ref: anna.code, street: "Weg 3")))
            let second = try placedEvent(
                try await kit.store.put(
                    kit.shop, "F-2", order(email: "cleo@example.org", ref: anna.code, street: "Weg 4")))
            let list = await kit.referrals.service.currentDisposable()
            try await whileOpen(
                kit,
                first: { tx in try await kit.referrals.service.attribute(eventID: first, tx: tx, disposable: list) },
                then: {
                    try await kit.store.db.transaction { tx in
                        try await kit.referrals.service.attribute(eventID: second, tx: tx, disposable: list)
                    }
                })
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_rewards") == 1)
            let capped = try await kit.store.referrals(workspaceID: kit.shop.id).filter {
                $0.reasons.contains(.capReached)
            }
            #expect(capped.count == 1)
        }
    }

    /// The §22 Nr. 3 EStG list is about the advocates' income: a friend's welcome credit is a discount on their
    /// own purchase and is not listed.
    @Test(arguments: Engine.available)
    func theTaxListLeavesOutTheFriendsRewards(engine: Engine) async throws {
        try await withKit(
            engine,
            programme: {
                $0.advocateReward = RewardSpec(type: .credit, valueMinor: 2_500)
                $0.friendReward = RewardSpec(type: .credit, valueMinor: 1_000)
            }
        ) { kit in
            let anna = try await advocate(kit)
            let friend = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            try await put(kit, "F-1", friend)
            _ = try await deliverAndRelease(kit, "F-1", friend)
            let issued = try await kit.store.rewards(workspaceID: kit.shop.id).filter { $0.state == .issued }
            #expect(Set(issued.map(\.beneficiary)) == ["advocate", "friend"])
            let year = RewardTax.year(of: kit.clock.now(), timeZone: kit.shop.timeZone)
            let tax = try await kit.store.rewardTax(workspaceID: kit.shop.id, year: year)
            #expect(tax.map(\.contactID) == [anna.contactID])
            #expect(tax.first?.totalMinor == 2_500)
        }
    }

    /// Two payout exports at the same moment (a double click): one file carries the transfers, the other is
    /// refused, and no empty batch is left behind.
    @Test(arguments: Engine.available)
    func twoPayoutExportsAtOnceMakeOneBatch(engine: Engine) async throws {
        try await withKit(engine, programme: { Self.paysCash(&$0, 5_000) }) { kit in
            _ = try await advocateWithOpenPayout(kit)
            let outcomes = await withTaskGroup(of: String.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        do {
                            _ = try await kit.referrals.service.exportPayouts(workspace: kit.shop, actor: "t")
                            return "file"
                        } catch let error as DomainError {
                            return error.code
                        } catch {
                            return "\(error)"
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes.sorted() == ["file", "no_open_payouts"])
            #expect(try await count(kit, "SELECT COUNT(*) FROM referral_payout_batches") == 1)
        }
    }

    /// Rewards waiting for a person (a flagged referral, a programme that approves by hand) do not fill the
    /// sweep's pages: the sweep still reaches the ones it can move on.
    @Test(arguments: Engine.available)
    func theSweepPassesOverRewardsWaitingForAPerson(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let anna = try await advocate(kit)
            // Shipping to the advocate's own address: flagged, and its reward waits for a decision.
            var flagged = order(email: "cleo@example.net", ref: anna.code, street: "Hauptstraße 1")
            try await put(kit, "F-1", flagged)
            var clean = order(email: "ben@example.org", ref: anna.code, street: "Weg 3")
            try await put(kit, "F-2", clean)
            flagged.status = "delivered"
            clean.status = "delivered"
            try await put(kit, "F-1", flagged)
            try await put(kit, "F-2", clean)
            kit.clock.advance(by: Double(Self.window) + 1)
            let rewards = try await kit.store.rewards(workspaceID: kit.shop.id).sorted { $0.id < $1.id }
            #expect(rewards.map(\.state) == [.held, .held])
            #expect(try await kit.store.dueRewards(limit: 1).map(\.id) == [rewards[1].id])

            var byHand = try await kit.store.referralProgramme(workspaceID: kit.shop.id)
            byHand.autoApprove = false
            try await kit.referrals.service.saveProgramme(workspaceID: kit.shop.id, byHand, actor: "test")
            #expect(try await kit.store.dueRewards().isEmpty)
            byHand.autoApprove = true
            try await kit.referrals.service.saveProgramme(workspaceID: kit.shop.id, byHand, actor: "test")
            #expect(try await kit.referrals.service.sweep() == 1)
            #expect(try await kit.store.reward(id: rewards[1].id)?.state == .issued)
            #expect(try await kit.store.reward(id: rewards[0].id)?.state == .held)
        }
    }
}

extension ReferralFlowTests {
    /// An exported batch is a booking record: downloaded again after the advocate changed their bank details, or
    /// after their erasure, it is the same file with the same transfers.
    @Test(arguments: Engine.available)
    func anExportedBatchStaysAsItWentToTheBank(engine: Engine) async throws {
        try await withKit(engine, programme: { Self.paysCash(&$0, 5_000) }) { kit in
            let anna = try await advocateWithOpenPayout(kit)
            let (batch, xml) = try await kit.referrals.service.exportPayouts(workspace: kit.shop, actor: "t")
            try await kit.store.setPayoutDetails(
                workspaceID: kit.shop.id, advocateID: anna.id, name: "Anna Neu",
                iban: try #require(IBAN("DE89370400440532013000")))
            #expect(try await kit.referrals.service.payoutFile(workspace: kit.shop, batchID: batch) == xml)
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: anna.contactID, actor: "test")
            let again = try await kit.referrals.service.payoutFile(workspace: kit.shop, batchID: batch)
            #expect(again == xml)
            #expect(again.contains("<NbOfTxs>1</NbOfTxs>") && again.contains("DE02120300000000202051"))
        }
    }
}
