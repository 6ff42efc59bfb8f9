import Foundation
import ReciprocityCore
import Reviews
import Storage
import TestSupport
import Testing

/// What changes under a review or a request while it waits: the author's edits under moderation, a deletion, a
/// corrected address, products sent back.
extension ReviewFlowTests {
    /// A publish names the version the person read: an edit by the author since then is not published unread.
    @Test(arguments: Engine.available)
    func aPublishIsRefusedWhenTheAuthorChangedTheReviewSince(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (_, links) = try await sentLinks(kit)
            let t = token(links[0])
            let held = try await kit.reviews.service.submit(
                token: t,
                input: ReviewInput(rating: 4, title: "", body: "Ruft mich an: 0171 2345678", displayName: "Anna M."),
                photos: [])
            #expect(held.status == .held)
            let seen = held.updatedAt.epochMillis
            kit.clock.advance(by: 5)
            let edited = try await kit.reviews.service.submit(
                token: t,
                input: ReviewInput(
                    rating: 1, title: "", body: "Neu: 0171 2345678, Musterweg 5, 10115 Berlin", displayName: "Anna M."),
                photos: [])
            #expect(edited.status == .held)
            await #expect {
                try await kit.store.moderateReview(
                    workspaceID: kit.shop.id, id: held.id, publish: true, reason: nil, actor: "user:1", seen: seen)
            } throws: { ($0 as? DomainError)?.code == "review_changed" }
            #expect(try await kit.store.review(workspaceID: kit.shop.id, id: held.id)?.status == .held)
            try await kit.store.moderateReview(
                workspaceID: kit.shop.id, id: held.id, publish: true, reason: nil, actor: "user:1",
                seen: edited.updatedAt.epochMillis)
            #expect(try await kit.store.review(workspaceID: kit.shop.id, id: held.id)?.status == .published)
        }
    }

    /// A save that arrives after the author deleted the review (the form was open in another tab) does not bring
    /// the tombstone back.
    @Test(arguments: Engine.available)
    func aSaveAfterTheDeletionDoesNotReviveTheReview(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (request, links) = try await sentLinks(kit)
            let t = token(links[0])
            let saved = try await kit.reviews.service.submit(
                token: t,
                input: ReviewInput(rating: 5, title: "", body: "Sehr gut, gerne wieder.", displayName: "Anna M."),
                photos: [])
            try await kit.reviews.service.delete(token: t)
            var late = Store.NewReview(
                workspaceID: kit.shop.id, sku: saved.sku, productName: saved.productName, source: .verified,
                input: ReviewInput(rating: 5, title: "", body: "Doch wieder da.", displayName: "Anna M."), locale: "de")
            late.requestID = request.id
            late.orderID = request.orderID
            late.contactID = request.contactID
            await #expect {
                try await kit.store.saveReview(late, moderation: .publish)
            } throws: { ($0 as? DomainError)?.code == "review_deleted" }
            let stored = try #require(try await kit.store.review(workspaceID: kit.shop.id, id: saved.id))
            #expect(stored.status == .deleted && stored.body.isEmpty)
        }
    }

    /// The shop corrects the customer's address after the request was scheduled: the request goes to the corrected
    /// address, also when the correction came without a status change.
    @Test(arguments: Engine.available)
    func theRequestGoesToTheOrdersCorrectedAddress(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let typo = try #require(try await put(kit, "C-1", status: "shipped", email: "anna@gmial.com"))
            try await put(kit, "C-1", status: "delivered", email: "anna@gmail.com")
            let later = try #require(try await put(kit, "C-2", email: "ben@exmaple.com"))
            try await kit.store.put(
                kit.shop, "C-2", samplePayload(email: "ben@example.com", status: "delivered", consents: Self.consent))
            kit.clock.advance(by: 61)
            for (request, email) in [(typo, "anna@gmail.com"), (later, "ben@example.com")] {
                guard case .sent(let outboxID) = try await kit.reviews.requests.send(requestID: request.id) else {
                    Issue.record("not sent: \(email)")
                    continue
                }
                #expect(try await kit.store.outboxMail(id: outboxID)?.recipient == email)
                let contact = try #require(
                    try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress(email)))
                #expect(try await kit.store.reviewRequest(id: request.id)?.contactID == contact.id)
            }
        }
    }

    /// A product sent back in full is not asked about, neither in the request nor in the reminder.
    @Test(arguments: Engine.available)
    func aProductSentBackIsNotAskedAbout(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var payload = samplePayload(
                email: "anna@example.com", status: "delivered", items: 3, consents: Self.consent)
            let result = try await kit.store.put(kit.shop, "B-1", payload)
            _ = try await kit.store.db.transaction { tx in
                try await kit.store.scheduleReviewRequest(tx, workspaceID: kit.shop.id, orderID: result.order.id)
            }
            let request = try #require(
                try await kit.store.reviewRequest(workspaceID: kit.shop.id, orderID: result.order.id))
            func giveBack(_ i: Int) {
                let units = payload.items?[i].quantity
                payload.items?[i].returnedQuantity = units
            }
            payload.status = "partially_returned"
            giveBack(2)
            try await kit.store.put(kit.shop, "B-1", payload)
            kit.clock.advance(by: 61)
            guard case .sent(let outboxID) = try await kit.reviews.requests.send(requestID: request.id) else {
                Issue.record("not sent")
                return
            }
            #expect(try await links(kit, outboxID: outboxID).count == 2)
            #expect(try await kit.store.askedItems(requestID: request.id).map(\.sku) == ["SKU-0", "SKU-1"])
            // One of the asked products comes back before the reminder: the reminder asks about the other only.
            giveBack(0)
            try await kit.store.put(kit.shop, "B-1", payload)
            kit.clock.advance(by: 7 * 86_400)
            guard case .sent(let reminderID) = try await kit.reviews.requests.remind(requestID: request.id) else {
                Issue.record("no reminder")
                return
            }
            let reminded = try await links(kit, outboxID: reminderID)
            #expect(reminded.count == 1)
            guard case .form(let ctx) = try await kit.reviews.service.open(token: token(reminded[0])) else {
                Issue.record("the reminder's link should open a form")
                return
            }
            #expect(ctx.target.sku == "SKU-1")
        }
    }

    @Test func thePlannerLeavesOutProductsSentBackInFull() throws {
        let items = [
            ReviewRequestPlanner.Item(sku: "A", name: "A"), ReviewRequestPlanner.Item(sku: "B", name: "B", kept: false),
        ]
        let plan = ReviewRequestPlanner.plan(
            status: .partiallyReturned, consentGranted: true, existingCustomerModeApplies: false, objected: false,
            items: items, askedRecently: [])
        #expect(try plan.get() == [items[0]])
        let none = ReviewRequestPlanner.plan(
            status: .partiallyReturned, consentGranted: true, existingCustomerModeApplies: false, objected: false,
            items: [items[1]], askedRecently: [])
        #expect(throws: ReviewRequestSkipReason(.nothingToAsk)) { try none.get() }
    }
}
