import App
import Foundation
import HTTPTypes
import ReciprocityCore
import Referrals
import Storage
import TestSupport
import Testing

/// Premiums in kind after they are earned: restocking an item queues the rewards that waited for it, and a queued
/// premium is marked as shipped, in the admin and through the API.
@Suite struct PremiumFulfilmentTests {
    static let window: Int64 = 3600

    @Test func restockingQueuesTheWaitingPremiumsAndShippingIsRecordedOnce() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000))
        try await TestApp.run(clock: clock) { app in
            let (shop, key) = try await app.workspaceWithKey("shop")
            let (_, readKey) = try await app.workspaceWithKey("other", scope: .read)
            let (other, otherKey) = try await app.workspaceWithKey("third")
            _ = try await Commands.createUser(
                app.runtime, workspace: "shop", email: "owner@shop.example", name: "Olga Owner", role: .owner,
                password: "correct horse battery")
            let referrals = app.runtime.referrals
            var programme = ReferralProgramme(
                active: true, targetURL: "https://shop.example/", returnWindowSeconds: Self.window)
            programme.advocateReward = RewardSpec(type: .premium, valueMinor: 0)
            try await referrals.service.saveProgramme(workspaceID: shop.id, programme, actor: "test")
            // An item out of stock: the premiums earned wait for it.
            let created = try await app.request(
                .post, "/api/v1/referrals/premiums", key: key,
                json: #"{"name":"Emaille-Tasse","cost_minor":800,"shipping_minor":490,"stock":0}"#)
            #expect(created.status == .created)
            let incomplete = try await app.request(
                .post, "/api/v1/referrals/premiums", key: key, json: #"{"name":"Tasse","cost_minor":800}"#)
            #expect(incomplete.status == .unprocessableContent)
            #expect(try incomplete.json()["code"] as? String == "field_missing")
            #expect(try incomplete.json()["field"] as? String == "stock")
            let mug = try #require(try created.json()["id"] as? Int64)

            func put(_ id: String, _ payload: OrderPayload) async throws {
                let result = try await app.store.put(shop, id, payload)
                let list = await referrals.service.currentDisposable()
                for event in result.events {
                    try await app.store.db.transaction { tx in
                        switch event.type {
                        case "OrderPlaced":
                            try await referrals.service.attribute(eventID: event.id, tx: tx, disposable: list)
                        case "OrderDelivered": try await referrals.service.hold(eventID: event.id, tx: tx)
                        default: break
                        }
                    }
                }
            }
            try await put("A-1", samplePayload(email: "anna@example.com", status: "delivered"))
            let anna = try await referrals.service.join(
                workspace: shop,
                .init(
                    email: try EmailAddress("anna@example.com"), orderNumber: "A-1",
                    consentText: "Ja, ich möchte am Empfehlungsprogramm teilnehmen und Mails dazu erhalten.",
                    locale: "de", evidence: ConsentEvidence(at: clock.now(), ip: "203.0.113.5"), source: "test"))
            try await app.store.setPremiumChoice(workspaceID: shop.id, advocateID: anna.id, premiumID: mug)
            for (n, friend) in ["ben@example.org", "cleo@example.org"].enumerated() {
                var order = samplePayload(email: friend, referralCode: anna.code)
                order.shippingAddress?.street = "Weg \(n + 1)"
                try await put("F-\(n)", order)
                order.status = "delivered"
                try await put("F-\(n)", order)
            }
            clock.advance(by: Double(Self.window) + 1)
            for reward in try await app.store.rewards(workspaceID: shop.id) {
                try await referrals.service.release(rewardID: reward.id)
            }
            let admin = try await AdminSession.login(app)
            let waiting = try await admin.get("/admin/referrals").text
            #expect(waiting.components(separatedBy: "wartet auf Wahl oder Bestand").count == 3)
            #expect(!waiting.contains("Als versendet markieren"))

            // A negative stock is refused and changes nothing.
            let refused = try await admin.post("/admin/referrals/premiums/\(mug)", "stock=-1&active=on")
            #expect(refused.status == .unprocessableContent)
            #expect(refused.text.contains("Stock cannot be negative."))
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.stock == 0)
            // Restocking three queues both, and one stays in stock.
            let restocked = try await admin.post("/admin/referrals/premiums/\(mug)", "stock=3&active=on&stock_seen=0")
            #expect(restocked.status == .ok && restocked.text.contains("Prämie gespeichert."))
            #expect(restocked.text.components(separatedBy: "Als versendet markieren").count == 3)
            #expect(restocked.text.contains("Hauptstraße 1, 10115 Berlin, DE"))
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.stock == 1)
            #expect(restocked.text.contains(#"name="stock_seen" value="1""#))
            // A form from before the queueing (it showed 3) must not write the old count back over the 1 left.
            let stale = try await admin.post("/admin/referrals/premiums/\(mug)", "stock=3&stock_seen=3")
            #expect(stale.status == .unprocessableContent && stale.text.contains("The stock changed meanwhile (now 1)"))
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.active == true)
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.stock == 1)

            let listed = try #require(
                try await app.request(.get, "/api/v1/referrals/fulfilments", key: key).json()["items"]
                    as? [[String: Any]])
            #expect(listed.map { $0["state"] as? String } == ["queued", "queued"])
            // Paged and filtered like every list; an unknown state is named.
            let paged = try await app.request(
                .get, "/api/v1/referrals/fulfilments?state=queued&limit=1&offset=1", key: key
            ).json()
            #expect(paged["total"] as? Int == 2 && paged["limit"] as? Int == 1 && paged["offset"] as? Int == 1)
            let pagedIDs = (paged["items"] as? [[String: Any]])?.map { $0["reward_id"] as? Int64 }
            #expect(pagedIDs == [listed[1]["reward_id"] as? Int64])
            #expect(
                try await app.request(.get, "/api/v1/referrals/fulfilments?state=shipped", key: key).json()["total"]
                    as? Int == 0)
            let unknown = try await app.request(.get, "/api/v1/referrals/fulfilments?state=lost", key: key)
            #expect(unknown.status == .unprocessableContent)
            #expect(try unknown.json()["field"] as? String == "state")
            #expect(listed.allSatisfy { $0["premium"] as? String == "Emaille-Tasse" && $0["shipped_at"] == nil })
            let (first, second) = (
                try #require(listed[0]["reward_id"] as? Int64), try #require(listed[1]["reward_id"] as? Int64)
            )

            // Shipped in the admin, then through the API; a second time is a conflict, another shop's a 404.
            let shipped = try await admin.post("/admin/referrals/fulfilments/\(first)/shipped", "")
            #expect(shipped.status == .ok && shipped.text.contains("Als versendet vermerkt."))
            let again = try await admin.post("/admin/referrals/fulfilments/\(first)/shipped", "")
            #expect(
                again.status == .unprocessableContent && again.text.contains("Only a queued premium can be shipped."))
            #expect(
                try await app.request(.post, "/api/v1/referrals/fulfilments/\(second)/shipped", key: readKey).status
                    == .forbidden)
            #expect(
                try await app.request(.post, "/api/v1/referrals/fulfilments/\(second)/shipped", key: otherKey).status
                    == .notFound)
            let viaAPI = try await app.request(.post, "/api/v1/referrals/fulfilments/\(second)/shipped", key: key)
            #expect(viaAPI.status == .ok)
            #expect(try viaAPI.json()["state"] as? String == "shipped" && (try viaAPI.json()["shipped_at"]) != nil)
            let conflict = try await app.request(.post, "/api/v1/referrals/fulfilments/\(second)/shipped", key: key)
            #expect(conflict.status == .conflict)
            #expect(try conflict.json()["code"] as? String == "fulfilment_not_queued")
            #expect(
                try await app.store.fulfilments(workspaceID: shop.id).map(\.state) == ["shipped", "shipped"])
            // Each shipment told Anna once, whichever way it was marked; the refused second tries sent nothing.
            let notices = try await app.store.db.query(
                "SELECT recipient, subject FROM outbox WHERE kind = 'referral_premium_shipped' ORDER BY id")
            #expect(notices.map { $0.optionalText("recipient") } == ["anna@example.com", "anna@example.com"])
            #expect(notices.allSatisfy { $0.text("subject") == "Ihre Prämie von Shop shop ist unterwegs" })

            // PATCH changes only what it names; bad values and other shops' items change nothing.
            let patched = try await app.request(
                .patch, "/api/v1/referrals/premiums/\(mug)", key: key, json: #"{"stock":5,"active":false}"#)
            #expect(patched.status == .ok)
            #expect(try patched.json()["stock"] as? Int64 == 5 && patched.json()["active"] as? Bool == false)
            #expect(
                try patched.json()["name"] as? String == "Emaille-Tasse"
                    && patched.json()["cost_minor"] as? Int64 == 800)
            let negative = try await app.request(
                .patch, "/api/v1/referrals/premiums/\(mug)", key: key, json: #"{"stock":-2}"#)
            #expect(negative.status == .unprocessableContent)
            #expect(try negative.json()["code"] as? String == "premium_stock_invalid")
            #expect(
                try await app.request(
                    .patch, "/api/v1/referrals/premiums/\(mug)", key: otherKey, json: #"{"stock":9}"#
                ).status == .notFound)
            #expect(
                try await app.request(.patch, "/api/v1/referrals/premiums/\(mug)", key: key, json: #"{"stock":"#)
                    .status == .badRequest)
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.stock == 5)
            #expect(try await app.store.premiums(workspaceID: other.id).isEmpty)

            // The admin row edits name, description, picture, cost and shipping in a form of their own; a bad
            // price changes nothing.
            let page = try await admin.get("/admin/referrals").text
            #expect(page.contains(#"name="cost" required inputmode="decimal" value="8.00""#))
            // The stock form carries no catalogue field, so saving the stock cannot write back an old price.
            let stockForm = page.components(separatedBy: #"class="inline premium-edit""#).dropFirst().first?
                .components(separatedBy: "</form>").first
            #expect(stockForm?.contains(#"name="stock""#) == true && stockForm?.contains(#"name="cost""#) == false)
            let badPrice = try await admin.post(
                "/admin/referrals/premiums/\(mug)",
                "part=catalogue&name=Becher&description=&image_url=&cost=acht&shipping=0")
            #expect(badPrice.status == .unprocessableContent)
            #expect(try await app.store.premium(workspaceID: shop.id, id: mug)?.name == "Emaille-Tasse")
            let edited = try await admin.post(
                "/admin/referrals/premiums/\(mug)",
                "part=catalogue&name=Becher+%C2%BBGro%C3%9F%C2%AB&description=Steingut"
                    + "&image_url=https%3A%2F%2Fshop.example%2Fbecher.jpg&cost=9%2C50&shipping=3.90")
            #expect(edited.status == .ok && edited.text.contains("Becher »Groß«"))
            let saved = try #require(try await app.store.premium(workspaceID: shop.id, id: mug))
            #expect(saved.name == "Becher »Groß«" && saved.description == "Steingut")
            #expect(saved.imageURL == "https://shop.example/becher.jpg")
            #expect(saved.costMinor == 950 && saved.shippingMinor == 390)
            #expect(saved.stock == 5 && !saved.active, "the catalogue form leaves stock and offer alone")
            // The stock form leaves the catalogue alone (a price changed meanwhile through the API stays), and a
            // catalogue form that lacks a field keeps it.
            _ = try await app.request(
                .patch, "/api/v1/referrals/premiums/\(mug)", key: key, json: #"{"cost_minor":1100}"#)
            _ = try await admin.post("/admin/referrals/premiums/\(mug)", "stock=6&stock_seen=5&active=on")
            _ = try await admin.post("/admin/referrals/premiums/\(mug)", "part=catalogue&description=Porzellan")
            let kept = try #require(try await app.store.premium(workspaceID: shop.id, id: mug))
            #expect(kept.name == "Becher »Groß«" && kept.description == "Porzellan")
            #expect(kept.costMinor == 1100 && kept.shippingMinor == 390 && kept.stock == 6 && kept.active)
        }
    }
}
