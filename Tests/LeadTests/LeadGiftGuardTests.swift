import Foundation
import LeadMagnets
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// What an unverified form post can and cannot do to a known contact, and what a save in the admin does to the
/// stock that confirmations take.
extension LeadFlowTests {
    /// A stranger posts a subscriber's address with their own postal address: nothing ships before the subscriber
    /// confirms, and burst posts leave one pending signup, one confirmation mail and no shipment.
    @Test(arguments: Engine.available)
    func aKnownSubscribersAddressShipsNothingUnconfirmed(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let guide = try await magnet(kit)
            try await signup(kit, guide, "cara@example.org")
            _ = try await confirm(kit, "cara@example.org")
            let sample = try await magnet(kit, kind: .sample, slug: "probe")
            let stranger = PostalAddress(
                name: "Mallory", street: "Fremdweg 1", postalCode: "99999", city: "Anderswo", country: "DE")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<5 {
                    group.addTask { try await signup(kit, sample, "cara@example.org", address: stranger) }
                }
                try await group.waitForAll()
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_shipments") == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_signups WHERE magnet_id = \(sample.id)") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 2)
            // The confirmation page names the address the sample would go to.
            let token = try await doiToken(kit, "cara@example.org")
            guard case .pending(let pending, _, _) = try await kit.leads.service.open(token: token) else {
                Issue.record("a pending signup expected")
                return
            }
            #expect(pending.shippingAddress == stranger)
            #expect(pending.confirmation == nil, "not confirmed by the post")
        }
    }

    /// Confirmations take stock while the admin's form is open; saving the form changes the stock by what the
    /// editor changed, not back to what the form showed.
    @Test(arguments: Engine.available)
    func savingTheFormKeepsTheStockConfirmationsTook(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var m = try await magnet(kit, kind: .sample, slug: "probe")
            m.sampleStock = 100
            m = try await kit.store.updateLeadMagnet(m, actor: "test")
            try await kit.store.db.execute("UPDATE lead_magnets SET sample_stock = 70 WHERE id = ?", m.id)
            m.headline = "Neue Überschrift"
            let left = try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 100)
            #expect(left.sampleStock == 70 && left.headline == "Neue Überschrift")
            m.sampleStock = 150
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 100).sampleStock == 120)
            m.sampleStock = 0
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test", stockSeen: 150).sampleStock == 0)
            // The API's PUT sets it.
            m.sampleStock = 40
            #expect(try await kit.store.updateLeadMagnet(m, actor: "test").sampleStock == 40)
        }
    }
}
