import App
import Foundation
import HTTPTypes
import HummingbirdTesting
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// The mail engine's web side: RFC 8058 one-click, the preference centre, the bounce webhook, and the admin's
/// outbox and template editor. Mail goes to the development outbox (no SMTP configured).
@Suite struct MailWeb {
    /// Sends a test review request to `to` and returns the unsubscribe path from its List-Unsubscribe header.
    func sendTest(_ app: TestApp, to: String) async throws -> (id: Int64, unsubscribe: String) {
        let line = try await Commands.sendTestMail(
            app.runtime, workspace: "shop", kind: "review_request", to: to, locale: "de", name: "Anna Muster")
        #expect(line.hasPrefix("sent <"))
        let mails = try await app.store.outboxMails(workspaceID: 1)
        let mail = try #require(mails.first)
        let message = try #require(mail.message)
        let url = try #require(extract(message, after: "List-Unsubscribe: <").map { $0.prefix { $0 != ">" } })
        return (mail.id, String(url.dropFirst("https://shop.example".count)))
    }

    @Test(arguments: Engine.available)
    func oneClickUnsubscribeGETConfirmsPOSTActs(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            _ = try await seedShop(app)
            let (_, path) = try await sendTest(app, to: "anna@example.com")
            let anna = try EmailAddress("anna@example.com")
            let page = try await app.request(.get, path)
            #expect(page.status == .ok)
            #expect(page.text.contains("Abmelden bestätigen"))
            #expect(try await !app.store.isSuppressed(workspaceID: 1, email: anna), "a GET never unsubscribes")
            let post = try await app.request(.post, path, form: "List-Unsubscribe=One-Click")
            #expect(post.status == .ok)
            #expect(try await app.store.isSuppressed(workspaceID: 1, email: anna))
            let contact = try #require(try await app.store.contact(workspaceID: 1, email: anna))
            #expect(
                try await app.store.consents(workspaceID: 1, contactID: contact.id).allSatisfy { $0.state != .granted })
            // The next marketing mail to her is not sent.
            await #expect(throws: DomainError.self) {
                try await Commands.sendTestMail(
                    app.runtime, workspace: "shop", kind: "review_request", to: "anna@example.com", locale: "de",
                    name: nil)
            }
            // An empty body works too (RFC 8058 allows it), and a second click is fine.
            let (_, other) = try await sendTest(app, to: "bernd@example.com")
            #expect(try await app.request(.post, other).status == .ok)
            #expect(try await app.store.isSuppressed(workspaceID: 1, email: try EmailAddress("bernd@example.com")))
            #expect(try await app.request(.post, other).status == .ok)
            // A tampered token is a readable 404, and nothing happens.
            let tampered = String(path.dropLast(3)) + "AAA"
            let bad = try await app.request(.post, tampered)
            #expect(bad.status == .notFound)
            #expect(bad.text.contains("Link"))
        }
    }

    func preferencesToken(_ app: TestApp, _ email: EmailAddress, contactID: Int64) -> String {
        app.store.signToken(
            purpose: "preferences", fields: ["1", app.store.suppressionHash(email.normalized), String(contactID)])
    }

    func consentStates(_ app: TestApp, contactID: Int64) async throws -> [ConsentPurpose: ConsentState] {
        Dictionary(
            uniqueKeysWithValues: try await app.store.consents(workspaceID: 1, contactID: contactID).map {
                ($0.purpose, $0.state)
            })
    }

    @Test func preferenceCentreWithdrawsPerPurpose() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let anna = try EmailAddress("anna@example.com")
            let contact = try #require(try await app.store.contact(workspaceID: 1, email: anna))
            try await app.store.db.transaction { tx in
                for purpose in [ConsentPurpose.newsletter, .reviewRequest] {
                    _ = try await app.store.applyConsent(
                        tx, workspaceID: 1, contactID: contact.id,
                        change: ConsentChange(
                            purpose: purpose, action: .grant, text: "Ja, bitte.", source: "test",
                            evidence: ConsentEvidence(at: app.runtime.clock.now())))
                }
            }
            let token = preferencesToken(app, anna, contactID: contact.id)
            let page = try await app.request(.get, "/p/\(token)")
            #expect(page.status == .ok)
            #expect(page.text.contains("name=\"keep_newsletter\" checked"))
            let saved = try await app.request(.post, "/p/\(token)", form: "keep_newsletter=on&action=save")
            #expect(saved.text.contains("gespeichert"))
            let states = try await consentStates(app, contactID: contact.id)
            #expect(states[.newsletter] == .granted)
            #expect(states[.reviewRequest] == .withdrawn)
            #expect(try await !app.store.isSuppressed(workspaceID: 1, email: anna))
            _ = try await app.request(.post, "/p/\(token)", form: "action=object")
            #expect(try await app.store.isSuppressed(workspaceID: 1, email: anna))
        }
    }

    /// A purpose the contact never consented to may still bring mail under §7(3) UWG (review requests to customers):
    /// the page offers an objection to it alone, which leaves the other purposes and the address as they were.
    @Test func preferenceCentreTakesAnObjectionToOnePurposeWithoutConsent() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let anna = try EmailAddress("anna@example.com")
            let contact = try #require(try await app.store.contact(workspaceID: 1, email: anna))
            try await app.store.db.transaction { tx in
                _ = try await app.store.applyConsent(
                    tx, workspaceID: 1, contactID: contact.id,
                    change: ConsentChange(
                        purpose: .newsletter, action: .grant, text: "Ja, bitte.", source: "test",
                        evidence: ConsentEvidence(at: app.runtime.clock.now())))
            }
            let token = preferencesToken(app, anna, contactID: contact.id)
            let page = try await app.request(.get, "/p/\(token)")
            #expect(page.text.contains("name=\"object_review_request\""))
            #expect(!page.text.contains("name=\"object_newsletter\""), "a consent is withdrawn by unticking it")
            _ = try await app.request(
                .post, "/p/\(token)", form: "keep_newsletter=on&object_review_request=on&action=save")
            let states = try await consentStates(app, contactID: contact.id)
            #expect(states[.newsletter] == .granted)
            #expect(states[.reviewRequest] == .withdrawn)
            #expect(try await !app.store.isSuppressed(workspaceID: 1, email: anna))
            let again = try await app.request(.get, "/p/\(token)")
            #expect(!again.text.contains("name=\"object_review_request\""), "objected once")
        }
    }

    @Test func bounceWebhook() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            let (id, _) = try await sendTest(app, to: "anna@example.com")
            let mid = try #require(try await app.store.outboxMail(id: id)).messageID
            let bad = try await app.request(
                .post, "/api/v1/mail/events", key: key, json: #"{"type":"spam","message_id":"x"}"#)
            #expect(bad.status == .unprocessableContent)
            #expect(try bad.json()["code"] as? String == "mail_event_type")
            let unknown = try await app.request(
                .post, "/api/v1/mail/events", key: key, json: #"{"type":"bounce","message_id":"<nope@x>"}"#)
            #expect(unknown.status == .notFound)
            let ok = try await app.request(
                .post, "/api/v1/mail/events", key: key,
                json: #"{"type":"complaint","message_id":"<\#(mid)>","detail":"abuse report"}"#)
            #expect(ok.status == .noContent)
            #expect(try await app.store.isSuppressed(workspaceID: 1, email: try EmailAddress("anna@example.com")))
            // Another workspace's key cannot touch this mail.
            let (_, otherKey) = try await app.workspaceWithKey("other")
            let foreign = try await app.request(
                .post, "/api/v1/mail/events", key: otherKey, json: #"{"type":"bounce","message_id":"\#(mid)"}"#)
            #expect(foreign.status == .notFound)
        }
    }

    @Test func adminOutboxAndTemplateEditor() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let (id, _) = try await sendTest(app, to: "anna@example.com")
            let admin = try await AdminSession.login(app)
            let list = try await admin.get("/admin/outbox")
            #expect(list.text.contains("Wie gefällt Ihnen Ihre Bestellung 10042?"))
            let detail = try await admin.get("/admin/outbox/\(id)")
            #expect(detail.text.contains("List-Unsubscribe-Post"))
            #expect(detail.text.contains("sandbox"), "the HTML is shown in a sandboxed frame")
            let html = try await admin.get("/admin/outbox/\(id)/html")
            #expect(html.headers[.contentSecurityPolicy]?.hasPrefix("sandbox") == true)
            #expect(html.text.contains("Äthiopien Yirgacheffe"))
            let raw = try await admin.get("/admin/outbox/\(id)/raw")
            #expect(raw.text.contains("Content-Transfer-Encoding: quoted-printable"))
            // Templates: an unknown variable is refused when saved.
            let editor = try await admin.get("/admin/mail/templates/thank_you.de")
            #expect(editor.status == .ok)
            let refused = try await admin.post(
                "/admin/mail/templates/thank_you.de", "action=save&subject=Danke&text=%7B%7Bvoucher%7D%7D&html=x")
            #expect(refused.status == .unprocessableContent)
            #expect(refused.text.contains("voucher"))
            #expect(try await app.store.mailTemplate(workspaceID: 1, kind: "thank_you", variant: "de") == nil)
            let saved = try await admin.post(
                "/admin/mail/templates/thank_you.de",
                "action=save&subject=Danke%2C+%7B%7Bcontact.first_name%7D%7D&text=%7B%7Bmessage%7D%7D&html=%3Cp%3E%7B%7Bmessage%7D%7D%3C%2Fp%3E"
            )
            #expect(saved.status == .ok)
            #expect(
                try await app.store.mailTemplate(workspaceID: 1, kind: "thank_you", variant: "de")?.text
                    == "{{message}}")
            let test = try await admin.post(
                "/admin/mail/templates/thank_you.de/test",
                "to=owner%40shop.example&subject=Danke&text=%7B%7Bmessage%7D%7D&html=%3Cp%3Ehi%3C%2Fp%3E")
            #expect(test.text.contains("Test-E-Mail gesendet"))
            let settings = try await admin.post(
                "/admin/mail/settings",
                "cap_count=3&cap_days=7&quiet_start=21&quiet_end=7&rate=10&address_form=du&brand_color=%23112233&logo_url=&existing_customer_mode=on"
            )
            #expect(settings.status == .seeOther)
            let s = try await app.store.mailSettings(workspaceID: 1)
            #expect(s.cap.count == 3 && s.addressForm == "du" && s.existingCustomerMode)
            let audit = try await app.store.auditEntries(workspaceID: 1)
            #expect(audit.contains { $0.action == "mail.existing_customer_mode.on" }, "switching §7(3) is logged")
        }
    }
}
