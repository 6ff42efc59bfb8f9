import Foundation
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// The shop sends the whole order on every change: an update must not undo what the person decided since the
/// order was placed.
@Suite struct OrderUpdateContract {
    static let consent = [
        OrderPayload.CheckoutConsent(purpose: "review_request", text: "Ja, fragt mich nach Bewertungen.")
    ]

    func consentState(_ store: Store, _ contactID: ContactID) async throws -> String? {
        try await store.db.first(
            "SELECT state FROM consents WHERE contact_id = ? AND purpose = 'review_request'", contactID
        )?.text("state")
    }

    @Test(arguments: Engine.available)
    func anUpdateDoesNotGrantAgainWhatWasWithdrawn(engine: Engine) async throws {
        try await engine.withStore { store, shop, clock in
            let placed = try await store.put(
                shop, "C-1", samplePayload(email: "eva@example.org", status: "paid", consents: Self.consent))
            let contactID = placed.order.contactID
            #expect(try await consentState(store, contactID) == "granted")
            clock.advance(by: 60)
            try await store.db.transaction { tx in
                _ = try await store.applyConsent(
                    tx, workspaceID: shop.id, contactID: contactID,
                    change: ConsentChange(
                        purpose: .reviewRequest, action: .withdraw, text: nil, source: "preference_centre",
                        evidence: ConsentEvidence(at: clock.now())))
            }
            clock.advance(by: 60)
            let shipped = try await store.put(
                shop, "C-1", samplePayload(email: "eva@example.org", status: "shipped", consents: Self.consent))
            #expect(shipped.outcome == .updated)
            #expect(try await consentState(store, contactID) == "withdrawn")
            #expect(
                try await store.db.scalar(
                    "SELECT COUNT(*) FROM consent_events WHERE contact_id = ? AND action = 'grant'", contactID) == 1)
        }
    }

    @Test(arguments: Engine.available)
    func anUpdateAfterErasureIdentifiesNobody(engine: Engine) async throws {
        try await engine.withStore { store, shop, clock in
            let placed = try await store.put(
                shop, "E-1", samplePayload(email: "eva@example.org", status: "paid", consents: Self.consent))
            let contactID = placed.order.contactID
            try await store.erase(workspaceID: shop.id, contactID: contactID, actor: "test")
            clock.advance(by: 60)
            let shipped = try await store.put(
                shop, "E-1", samplePayload(email: "eva@example.org", status: "shipped", consents: Self.consent))
            #expect(shipped.order.status == .shipped)
            #expect(shipped.order.contactID == contactID, "the order stays the erased person's")
            #expect(shipped.order.shippingAddress == nil)
            #expect(try await store.contact(workspaceID: shop.id, email: try EmailAddress("eva@example.org")) == nil)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM contacts") == 1)
            #expect(
                try await store.db.scalar(
                    "SELECT COUNT(*) FROM orders WHERE shipping_name IS NOT NULL OR payment_fingerprint IS NOT NULL")
                    == 0)
            #expect(
                try await store.db.scalar("SELECT COUNT(*) FROM consent_events WHERE action = 'grant'") == 1,
                "no grant again, and none with the update's evidence")
        }
    }
}
