import Foundation
import HTTPTypes
import HummingbirdTesting
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// Leaving the referral programme is as easy as joining it (Art. 7(3) DSGVO): a button on the personal page.
@Suite struct AdvocateLeaveTests {
    /// A shop with an active programme and Anna, a customer, joined through the API.
    func annaJoins(_ app: TestApp) async throws -> (shop: Workspace, key: String, joined: TestResponse) {
        let (shop, key) = try await app.workspaceWithKey("shop")
        try await app.request(
            .put, "/api/v1/referrals/programme", key: key,
            json: #"{"active":true,"target_url":"https://shop.example/kaffee"}"#)
        try await app.request(
            .put, "/api/v1/orders/A-1", key: key, json: orderJSON(email: "anna@example.com", status: "delivered"))
        let joined = try await app.request(
            .post, "/api/v1/referrals/advocates", key: key,
            json: #"{"email":"anna@example.com","consent_text":"Ja, ich möchte teilnehmen."}"#)
        return (shop, key, joined)
    }

    @Test func theButtonWithdrawsTheConsentAndTheCodeStopsAtOnce() async throws {
        try await TestApp.run { app in
            let (shop, key, joined) = try await annaJoins(app)
            #expect(joined.status == .created)
            let code = try #require(try joined.json()["code"] as? String)
            let pageURL = try #require(try joined.json()["page_url"] as? String)
            let page = String(pageURL.dropFirst("https://shop.example".count))
            let shown = try await app.request(.get, page)
            #expect(shown.status == .ok)
            #expect(shown.text.contains(#"<form method="post" action="\#(page)/leave" id="leave-form">"#))
            #expect(shown.text.contains("Empfehlungsprogramm verlassen"))
            // The redirect is cached before leaving, so a stale cache would still send clicks to Anna. (Through the
            // cache, not a request: the request metrics are process-wide, and FastPathTests counts the 302s.)
            let targets = app.runtime.referrals.targets
            #expect(try await targets.resolve(code: code) != nil)

            // A POST without the button's value (a bot, a prefetch) changes nothing.
            let stray = try await app.request(.post, page + "/leave", form: "")
            #expect(stray.status == .seeOther && stray.headers[.location] == page)
            #expect(try await targets.resolve(code: code) != nil)

            let left = try await app.request(
                .post, page + "/leave", headers: [.userAgent: "Mozilla/5.0 Firefox/130.0"], form: "leave=yes")
            #expect(left.status == .ok)
            #expect(left.text.contains("Sie haben das Empfehlungsprogramm verlassen"))
            #expect(left.text.contains(#"href="/join/shop""#))
            #expect(left.text.contains(#"href="\#(page)""#), "the way back to the earned rewards")
            #expect(try await app.request(.get, "/r/\(code)").status == .notFound)
            #expect(try await app.request(.post, page + "/leave", form: "leave=yes").status == .notFound)
            #expect(try await app.request(.get, page + "/qr.svg").status == .notFound)
            // The page stays for what was earned (rewards, premium choice, bank details), without the code or link.
            let after = try await app.request(.get, page)
            #expect(after.status == .ok)
            #expect(after.text.contains("Sie haben das Empfehlungsprogramm verlassen"))
            #expect(!after.text.contains(code) && !after.text.contains("leave-form"))
            let contact = try #require(
                try await app.store.contact(workspaceID: shop.id, email: EmailAddress("anna@example.com")))
            let consent = try #require(
                try await app.store.consents(workspaceID: shop.id, contactID: contact.id).first {
                    $0.purpose == .referralProgram
                })
            #expect(consent.state == .withdrawn)
            let event = try #require(
                try await app.store.db.first(
                    "SELECT source, user_agent FROM consent_events WHERE contact_id = ? AND action = 'withdraw'",
                    contact.id))
            #expect(event.text("source") == "referral_page")
            #expect(event.optionalText("user_agent") == "Mozilla/5.0 Firefox/130.0")
        }
    }

    /// An erasure (Art. 17) stops the advocate's code on this node at once, not when the cached redirect expires.
    @Test func anErasedAdvocatesCodeStopsAtOnce() async throws {
        try await TestApp.run { app in
            let (shop, key, joined) = try await annaJoins(app)
            let code = try #require(try joined.json()["code"] as? String)
            let targets = app.runtime.referrals.targets
            #expect(try await targets.resolve(code: code) != nil)
            #expect(targets.cached(code: code, prepare: { _ in Marker() }) != nil, "the redirect is cached")
            let contact = try #require(
                try await app.store.contact(workspaceID: shop.id, email: EmailAddress("anna@example.com")))
            let erased = try await app.request(.post, "/api/v1/contacts/\(contact.id)/erase", key: key)
            #expect(erased.status == .noContent)
            #expect(targets.cached(code: code, prepare: { _ in Marker() }) == nil, "the cached redirect went")
            #expect(try await app.request(.get, "/r/\(code)").status == .notFound)
        }
    }

    final class Marker: Sendable {}
}
