import App
import Foundation
import HTTPTypes
import HummingbirdTesting
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// A logged-in admin browser, driven through the real router.
struct AdminSession {
    let app: TestApp
    var cookies: String
    var csrf: String

    static func login(_ app: TestApp, email: String = "owner@shop.example", password: String = "correct horse battery")
        async throws -> AdminSession
    {
        let page = try await app.request(.get, "/admin/login")
        let loginCookie = try #require(
            page.headers[values: .setCookie].first?.split(separator: ";").first.map(String.init))
        let token = try #require(extract(page.text, after: "name=\"_csrf\" value=\""))
        let form =
            "_csrf=\(token)&email=\(email.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)&password=\(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)&next="
        let r = try await app.request(.post, "/admin/login", cookies: loginCookie, form: form)
        #expect(r.status == .seeOther, "login failed: \(r.status)")
        let session = try #require(r.headers[values: .setCookie].first { $0.hasPrefix("rcp_session=") })
        #expect(session.contains("HttpOnly"))
        #expect(session.contains("SameSite=Lax"))
        #expect(session.contains("Secure"), "the base URL is https")
        let cookie = String(session.split(separator: ";")[0])
        let home = try await app.request(.get, "/admin", cookies: cookie)
        let csrf = try #require(extract(home.text, after: "name=\"_csrf\" value=\""))
        return AdminSession(app: app, cookies: cookie, csrf: csrf)
    }

    func get(_ path: String) async throws -> TestResponse { try await app.request(.get, path, cookies: cookies) }
    func post(_ path: String, _ form: String, csrf: String? = nil) async throws -> TestResponse {
        try await app.request(.post, path, cookies: cookies, form: "_csrf=\(csrf ?? self.csrf)&\(form)")
    }
}

func extract(_ text: String, after marker: String) -> String? {
    guard let start = text.range(of: marker) else { return nil }
    return String(text[start.upperBound...].prefix { $0 != "\"" })
}

/// Seeds one owner, one workspace with an API key, and a few orders; returns the key.
func seedShop(_ app: TestApp) async throws -> String {
    let (_, key) = try await app.workspaceWithKey("shop")
    _ = try await Commands.createUser(
        app.runtime, workspace: "shop", email: "owner@shop.example", name: "Olga Owner", role: .owner,
        password: "correct horse battery")
    try await app.request(
        .put, "/api/v1/orders/BG-1", key: key, json: orderJSON(email: "anna@example.com", status: "delivered"))
    try await app.request(
        .put, "/api/v1/orders/BG-2", key: key, json: orderJSON(email: "bernd@example.com", firstName: "Bernd"))
    return key
}

@Suite struct AdminPages {
    @Test func pagesRequireALoginAndAWrongPasswordIsRefused() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let anonymous = try await app.request(.get, "/admin/contacts")
            #expect(anonymous.status == .seeOther)
            #expect(anonymous.headers[.location]?.hasPrefix("/admin/login?next=") == true)
            let page = try await app.request(.get, "/admin/login")
            let cookie = try #require(
                page.headers[values: .setCookie].first?.split(separator: ";").first.map(String.init))
            let token = try #require(extract(page.text, after: "name=\"_csrf\" value=\""))
            let wrong = try await app.request(
                .post, "/admin/login", cookies: cookie, form: "_csrf=\(token)&email=owner%40shop.example&password=wrong"
            )
            #expect(wrong.status == .unauthorized)
            #expect(wrong.text.contains("E-Mail oder Passwort ist falsch."))
            let noToken = try await app.request(
                .post, "/admin/login", cookies: cookie,
                form: "email=owner%40shop.example&password=correct+horse+battery")
            #expect(noToken.status == .forbidden)
        }
    }

    @Test func aFormWithoutTheSessionsCSRFTokenIsRefusedAndChangesNothing() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let admin = try await AdminSession.login(app)
            let contact = try #require(try await app.store.contacts(workspaceID: 1, search: "anna").items.first)
            let forged = try await admin.post("/admin/contacts/\(contact.id)/erase", "confirm=yes", csrf: "forged")
            #expect(forged.status == .forbidden)
            #expect(try await app.store.contact(workspaceID: 1, id: contact.id)?.erasedAt == nil)
            let real = try await admin.post("/admin/contacts/\(contact.id)/erase", "confirm=yes")
            #expect(real.status == .seeOther)
            #expect(try await app.store.contact(workspaceID: 1, id: contact.id)?.erasedAt != nil)
        }
    }

    @Test func htmlInCustomerDataIsShownAsTextNeverRun() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            try await app.request(
                .put, "/api/v1/orders/XSS-1", key: key,
                json: orderJSON(
                    email: "x@example.com", firstName: "<script>alert(1)</script>",
                    itemName: "\"><img src=x onerror=alert(2)>"))
            let admin = try await AdminSession.login(app)
            let contact = try #require(
                try await app.store.contacts(workspaceID: 1, search: "x@example.com").items.first)
            for path in ["/admin/contacts", "/admin/contacts/\(contact.id)", "/admin/orders/XSS-1"] {
                let html = try await admin.get(path).text
                #expect(!html.contains("<script>alert(1)"), "\(path)")
                #expect(!html.contains("<img src=x"), "\(path)")
            }
            #expect(
                try await admin.get("/admin/contacts/\(contact.id)").text.contains(
                    "&lt;script&gt;alert(1)&lt;/script&gt;"))
        }
    }

    @Test func aSupportUserCannotManageKeysOrUsers() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            _ = try await Commands.createUser(
                app.runtime, workspace: "shop", email: "sam@shop.example", name: "Sam", role: .support,
                password: "support password 1")
            let sam = try await AdminSession.login(app, email: "sam@shop.example", password: "support password 1")
            #expect(try await sam.get("/admin/api-keys").status == .forbidden)
            #expect(try await sam.post("/admin/api-keys", "name=x&scope=write").status == .forbidden)
            #expect(try await sam.get("/admin/users").status == .forbidden)
            #expect(try await app.store.apiKeys(workspaceID: 1).count == 1)
        }
    }

    @Test func errorPagesCarryTheSecurityHeadersAndNoPageShowsPlaceholderText() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let admin = try await AdminSession.login(app)
            let missing = try await admin.get("/admin/contacts/999999")
            #expect(missing.status == .notFound)
            #expect(missing.headers[HTTPField.Name("X-Frame-Options")!] == "DENY")
            #expect(missing.headers[HTTPField.Name("Content-Security-Policy")!] != nil)
            for path in [
                "/admin", "/admin/api-keys", "/admin/users", "/admin/password", "/admin/orders/BG-2", "/admin/jobs",
            ] {
                let html = try await admin.get(path).text
                #expect(
                    !html.contains(">nil<") && !html.contains(" nil<") && !html.contains(">nil "), "\(path) renders nil"
                )
            }
            #expect(!(try await app.request(.get, "/admin/login").text.contains("nil")))
            #expect(
                try await admin.get("/admin/api-keys").text.contains("Widerrufen: test"),
                "active keys offer a revoke button")
        }
    }

    @Test func onlyFailedLoginsCountTowardsTheLimit() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            for _ in 0..<6 { _ = try await AdminSession.login(app) }
        }
    }

    /// Snapshots of what people read: each admin page, rendered for real with pinned data, clock and randomness.
    @Test func adminPagesMatchTheirSnapshots() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            let admin = try await AdminSession.login(app)
            let contact = try #require(try await app.store.contacts(workspaceID: 1, search: "anna").items.first)
            let pages: [(String, String)] = [
                ("home", "/admin"), ("contacts", "/admin/contacts"), ("contact", "/admin/contacts/\(contact.id)"),
                ("orders", "/admin/orders"), ("order", "/admin/orders/BG-1"), ("jobs", "/admin/jobs?state=queued"),
                ("apikeys", "/admin/api-keys"), ("users", "/admin/users"), ("workspaces", "/admin/workspaces"),
                ("not-found", "/admin/orders/NOPE"), ("referrals", "/admin/referrals"),
            ]
            for (name, path) in pages {
                try assertSnapshot(try await admin.get(path).text, named: "admin-\(name).de.html")
            }
            let english = AdminSession(app: app, cookies: admin.cookies + "; rcp_lang=en", csrf: admin.csrf)
            try assertSnapshot(try await english.get("/admin").text, named: "admin-home.en.html")
            try assertSnapshot(
                try await english.get("/admin/contacts/\(contact.id)").text, named: "admin-contact.en.html")
            try assertSnapshot(try await app.request(.get, "/admin/login").text, named: "admin-login.de.html")
        }
    }
}

extension AdminPages {
    /// Two people with the same settings form open: the second save, made from the older version, is refused with
    /// a readable 409 and changes nothing; after a reload it goes through. For the review, mail and referral settings.
    /// A shop, its owner logged in twice (two people at two desks), and the clock to tell their saves apart.
    func twoDesks(
        _ body: @escaping @Sendable (TestApp, ManualClock, AdminSession, AdminSession) async throws -> Void
    ) async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000))
        try await TestApp.run(clock: clock) { app in
            _ = try await seedShop(app)
            try await body(app, clock, try await AdminSession.login(app), try await AdminSession.login(app))
        }
    }

    /// The version a form on `page` carries.
    func version(_ session: AdminSession, _ page: String) async throws -> String {
        try #require(extract(try await session.get(page).text, after: "name=\"version\" value=\""))
    }

    @Test func aSettingsFormFromAnOlderVersionIsRefused() async throws {
        try await twoDesks { app, clock, first, second in
            let forms: [(page: String, post: String, form: (String) -> String)] = [
                (
                    "/admin/review-settings", "/admin/review-settings",
                    {
                        "delay=\($0)&transit=0&reminder=86400&categories=&disclosure=Nur+K%C3%A4ufer.&token_days=180&edit_days=30&incentive="
                    }
                ),
                (
                    "/admin/mail", "/admin/mail/settings",
                    {
                        "cap_count=\($0)&cap_days=7&quiet_start=21&quiet_end=7&rate=10&address_form=sie&brand_color=%23112233&logo_url="
                    }
                ),
                (
                    "/admin/referrals", "/admin/referrals/settings",
                    {
                        "active=on&target_url=https%3A%2F%2Fshop.example%2F&incentive=Kaffee&reward_type=voucher"
                            + "&reward_value=10&voucher_prefix=DANKE&minimum=0&window=1209600&attribution_days=\($0)"
                    }
                ),
            ]
            for (index, (page, post, form)) in forms.enumerated() {
                // The setting each form's test value goes into.
                func values() async throws -> Int {
                    switch index {
                    case 0: Int(try await app.store.reviewSettings(workspaceID: 1).timing.delay)
                    case 1: try await app.store.mailSettings(workspaceID: 1).cap.count
                    default: try await app.store.referralProgramme(workspaceID: 1).attributionDays
                    }
                }
                let seen = try await version(first, page)
                #expect(try await version(second, page) == seen)
                clock.advance(by: 1)
                let saved = try await second.post(post, "version=\(seen)&" + form("3"))
                #expect([.ok, .seeOther].contains(saved.status), "\(post): \(saved.status)")
                clock.advance(by: 1)
                let stale = try await first.post(post, "version=\(seen)&" + form("5"))
                #expect(stale.status == .conflict, "\(post): \(stale.status)")
                #expect(stale.text.contains("Es wurde nichts gespeichert"), "\(post)")
                #expect(try await values() == 3, "\(post): the refused save changed nothing")
                let fresh = try await version(first, page)
                #expect(fresh != seen)
                let again = try await first.post(post, "version=\(fresh)&" + form("5"))
                #expect(
                    [.ok, .seeOther].contains(again.status) && !again.text.contains("Es wurde nichts gespeichert"),
                    "\(post)")
            }
            #expect(try await app.store.reviewSettings(workspaceID: 1).timing.delay == 5)
            #expect(try await app.store.mailSettings(workspaceID: 1).cap.count == 5)
            #expect(try await app.store.referralProgramme(workspaceID: 1).attributionDays == 5)
        }
    }
}

extension AdminPages {
    /// An owner who adds the address of an account that is not a member invites it: it joins only when it accepts
    /// after its own login. Nobody else can answer the invitation; a member's role changes at once.
    @Test func anExistingAccountIsInvitedAndJoinsOnlyWhenItAccepts() async throws {
        try await TestApp.run { app in
            _ = try await seedShop(app)
            _ = try await app.workspaceWithKey("other")
            let (bea, _) = try await Commands.createUser(
                app.runtime, workspace: "other", email: "bea@other.example", name: "Bea Other", role: .owner,
                password: "another long password")
            let owner = try await AdminSession.login(app)
            let added = try await owner.post("/admin/users", "email=bea%40other.example&name=&role=marketer")
            #expect(added.status == .ok)
            #expect(added.text.contains(#"id="invited""#) && added.text.contains("bea@other.example"))
            #expect(!added.text.contains("Bea Other"), "the account's name is not shown to the inviting owner")
            #expect(try await app.store.role(userID: bea.id, workspaceID: 1) == nil, "not a member yet")
            #expect(try await owner.get("/admin/users").text.contains(#"id="pending-invitations""#))

            // Someone else cannot answer it.
            let invitation = try #require(try await app.store.invitations(userID: bea.id).first)
            let stranger = try await owner.post("/admin/invitations", "id=\(invitation.id)&decision=accept")
            #expect(stranger.status == .notFound)
            #expect(try await app.store.role(userID: bea.id, workspaceID: 1) == nil)

            // Bea sees it after her login, and accepts.
            let session = try await AdminSession.login(
                app, email: "bea@other.example", password: "another long password")
            let home = try await session.get("/admin")
            #expect(home.text.contains(#"id="invitations""#))
            let accepted = try await session.post("/admin/invitations", "id=\(invitation.id)&decision=accept")
            #expect(accepted.status == .seeOther)
            #expect(try await app.store.role(userID: bea.id, workspaceID: 1) == .marketer)
            #expect(try await app.store.invitations(userID: bea.id).isEmpty)
            #expect(
                try await session.post("/admin/invitations", "id=\(invitation.id)&decision=accept").status == .notFound)

            // Now a member: adding her again changes her role at once.
            _ = try await owner.post("/admin/users", "email=bea%40other.example&name=&role=support")
            #expect(try await app.store.role(userID: bea.id, workspaceID: 1) == .support)
            let actions = try await app.store.auditEntries(workspaceID: 1).map(\.action)
            #expect(actions.contains("user.invite") && actions.contains("user.invitation.accept"))
        }
    }
}

extension AdminPages {
    /// The template editor carries its version too: a save from an editor opened before another save (or a reset)
    /// is refused with 409 and shows the person's own text again, so nothing typed is lost; a preview keeps the
    /// version the editor was opened at.
    @Test func aTemplateEditorFromAnOlderVersionIsRefused() async throws {
        try await twoDesks { app, clock, first, second in
            let path = "/admin/mail/templates/thank_you.de"
            func form(_ version: String, _ text: String, action: String = "save") -> String {
                "version=\(version)&action=\(action)&subject=Danke&text=\(text)+%7B%7Bmessage%7D%7D&html=%3Cp%3Ex%3C%2Fp%3E"
            }
            let seen = try await version(first, path)
            #expect(try await version(second, path) == seen)
            clock.advance(by: 1)
            #expect(try await second.post(path, form(seen, "Zweite")).status == .ok)
            // The first editor previews (its version stays), then saves: refused, its own text shown again.
            let preview = try await first.post(path, form(seen, "Erste", action: "preview"))
            #expect(extract(preview.text, after: "name=\"version\" value=\"") == seen)
            let stale = try await first.post(path, form(seen, "Erste"))
            #expect(stale.status == .conflict)
            #expect(stale.text.contains("Es wurde nichts gespeichert") && stale.text.contains("Erste {{message}}"))
            #expect(
                try await app.store.mailTemplate(workspaceID: 1, kind: "thank_you", variant: "de")?.text
                    == "Zweite {{message}}")
            // Saved again from that page (it carries the stored version now): the change is made knowingly.
            let current = try #require(extract(stale.text, after: "name=\"version\" value=\""))
            #expect(current != seen)
            #expect(try await first.post(path, form(current, "Erste")).status == .ok)
            #expect(
                try await app.store.mailTemplate(workspaceID: 1, kind: "thank_you", variant: "de")?.text
                    == "Erste {{message}}")
        }
    }
}
