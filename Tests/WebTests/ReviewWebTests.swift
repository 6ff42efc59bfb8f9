import App
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ReciprocityCore
import Reviews
import Storage
import TestSupport
import Testing

/// The review capability over HTTP: settings API, the form behind a link (multipart, no JS), widgets with ETags,
/// the feed, escaping of hostile text everywhere it is shown, and the admin's reply and hide.
@Suite struct ReviewWeb {
    static let xss = #"<script>alert(1)</script>"><img src=x onerror=alert(1)>"#

    /// A shop with a delivered order whose review request has been sent; returns the API key and the links.
    func sentRequest(
        _ app: TestApp, disclosure: String = "Nur Käufer mit Bestelllink.", incentive: String = ""
    ) async throws -> (key: String, links: [String]) {
        let key = try await seedShop(app)
        let put = try await app.request(
            .put, "/api/v1/reviews/settings", key: key,
            json:
                #"{"delay_seconds":0,"disclosure_text":\#(jsonString(disclosure)),"incentive":\#(jsonString(incentive))}"#
        )
        #expect(put.status == .ok)
        let order = """
            {"customer":{"email":"clara@example.com","first_name":"Clara","last_name":"Zweig","locale":"de-DE"},
             "currency":"EUR","status":"delivered","totals":{"total":"19.80"},
             "items":[{"sku":"K1","name":"Kaffee","quantity":1,"unit_price":"9.90"},
                      {"sku":"M2","name":"Mühle","quantity":1,"unit_price":"9.90"}],
             "consents":[{"purpose":"review_request","text":"Ja, fragt mich nach einer Bewertung."}]}
            """
        #expect(try await app.request(.put, "/api/v1/orders/R-100", key: key, json: order).status == .created)
        let store = app.store
        let orderID = try #require(try await store.order(workspaceID: 1, externalID: "R-100")).id
        let request = try #require(
            try await store.db.transaction { tx in
                try await store.scheduleReviewRequest(tx, workspaceID: 1, orderID: orderID)
            })
        guard case .sent(let outboxID) = try await app.runtime.reviews.requests.send(requestID: request.id) else {
            throw TestSetupError("review request not sent")
        }
        let message = try #require(try await store.outboxMail(id: outboxID)?.message)
            .replacingOccurrences(of: "=\r\n", with: "")
        let regex = try Regex(#"https://shop\.example(/review/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"#)
        let links = Set(message.matches(of: regex).map { String(message[$0.range].dropFirst(20)) })
        return (key, links.sorted())
    }

    func multipart(_ fields: [(String, String)], file: (String, [UInt8])? = nil) -> (HTTPFields, ByteBuffer) {
        let boundary = "----rcpTestBoundary7MA4YWxk"
        var body: [UInt8] = []
        for (k, v) in fields {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(k)\"\r\n\r\n\(v)\r\n".utf8)
        }
        if let (name, bytes) = file {
            body += Array(
                "--\(boundary)\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"\(name)\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    .utf8)
            body += bytes + Array("\r\n".utf8)
        }
        body += Array("--\(boundary)--\r\n".utf8)
        return ([.contentType: "multipart/form-data; boundary=\(boundary)"], ByteBuffer(bytes: body))
    }

    func submit(
        _ app: TestApp, _ path: String, rating: String, title: String, body: String, name: String,
        file: (String, [UInt8])? = nil
    ) async throws -> TestResponse {
        let (headers, buffer) = multipart(
            [("rating", rating), ("title", title), ("body", body), ("display_name", name), ("website", "")],
            file: file)
        return try await app.client.execute(uri: path, method: .post, headers: headers, body: buffer)
    }

    @Test func settingsAPIRefusesBadValuesAsProblems() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            let bad = try await app.request(
                .put, "/api/v1/reviews/settings", key: key, json: #"{"delay_seconds":-5}"#)
            #expect(bad.status == .unprocessableContent)
            #expect(try bad.json()["code"] as? String == "out_of_range")
            let get = try await app.request(.get, "/api/v1/reviews/settings", key: key)
            #expect(try get.json()["delay_seconds"] as? Double == 604_800, "nothing was written")
            #expect(try get.json()["live"] as? Bool == false)
        }
    }

    @Test(arguments: Engine.available)
    func aCustomerReviewsThroughTheLinkAndTheWidgetShowsItVerifiedAndEscaped(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            let (_, links) = try await sentRequest(app)
            #expect(links.count == 2)
            let form = try await app.request(.get, links[0])
            #expect(form.status == .ok)
            #expect(form.text.contains("id=\"review-form\"") && form.text.contains("value=\"Clara Z.\""))
            let photo = SamplePhotos.jpegWithExif
            let posted = try await submit(
                app, links[0], rating: "4", title: Self.xss, body: "Sehr fein. " + Self.xss, name: "Clara Z.",
                file: ("kaffee.jpg", photo))
            #expect(posted.status == .ok)
            #expect(posted.text.contains("id=\"review-thanks\""))
            #expect(!posted.text.contains("<script>alert"))

            let widget = try await app.request(.get, "/widgets/shop/products/K1")
            #expect(widget.status == .ok)
            #expect(widget.text.contains("Verifizierter Kauf"))
            #expect(widget.text.contains("4,0 von 5 aus 1 Bewertung der letzten 12 Monate"))
            #expect(widget.text.contains("Nur Käufer mit Bestelllink."))
            #expect(!widget.text.contains("<script>alert") && !widget.text.contains("<img src=x"))
            #expect(widget.text.contains(#"\u003cscript\u003e"#), "JSON-LD escapes < inside the script element")
            #expect(widget.text.contains("/widgets/shop/photos/"))
            let photoPath = try #require(extract(widget.text, after: "<img src=\""))
            let served = try await app.request(.get, photoPath)
            #expect(served.status == .ok && served.headers[.contentType] == "image/jpeg")
            #expect(!String(buffer: served.body).contains("GPS52"), "EXIF is gone")
            #expect(Array(buffer: served.body).suffix(2) == [0xFF, 0xD9], "the image data is kept")
            let etag = try #require(widget.headers[.eTag])
            let again = try await app.request(.get, "/widgets/shop/products/K1", headers: [.ifNoneMatch: etag])
            #expect(again.status == .notModified)

            let json = try await app.request(.get, "/widgets/shop/products/K1/json")
            #expect(json.headers[.accessControlAllowOrigin] == "*")
            let reviews = try #require(try json.json()["reviews"] as? [[String: Any]])
            #expect(reviews.first?["title"] as? String == Self.xss)
            #expect(reviews.first?["verified"] as? Bool == true)

            let feed = try await app.request(.get, "/feeds/shop/google-product-reviews.xml")
            #expect(feed.status == .ok)
            #expect(feed.text.contains("<transaction_id>R-100</transaction_id>"))
            #expect(!feed.text.contains("<script>") && feed.text.contains("&lt;script&gt;"))

            // A write invalidates this node's cache at once: the edit shows, with a new ETag.
            let edited = try await submit(app, links[0], rating: "2", title: "", body: "Doch zu bitter.", name: "C.")
            #expect(edited.status == .ok)
            let fresh = try await app.request(.get, "/widgets/shop/products/K1", headers: [.ifNoneMatch: etag])
            #expect(fresh.status == .ok)
            #expect(fresh.text.contains("2,0 von 5"))
        }
    }

    @Test func badInputIsAReadable422AndATamperedOrExpiredLinkIsToldApart() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000))
        try await TestApp.run(clock: clock) { app in
            let (_, links) = try await sentRequest(app)
            let bad = try await submit(app, links[0], rating: "", title: "", body: "kurz", name: "")
            #expect(bad.status == .unprocessableContent)
            #expect(bad.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true, "no script runs")
            // A quote with a combining mark is one Character to Swift; it must still not end the attribute.
            let sneaky = try await submit(
                app, links[0], rating: "", title: "a\"\u{301} autofocus onfocus=alert(1) x=", body: "kurz", name: "C.")
            #expect(!sneaky.text.contains("\"\u{301} autofocus") && !sneaky.text.contains("\" autofocus"))
            #expect(sneaky.text.contains("&quot; autofocus onfocus=alert(1) x="))
            #expect(bad.text.contains("id=\"errors\""))
            #expect(bad.text.contains("Bitte wählen Sie 1 bis 5 Sterne."))
            let gif = try await submit(
                app, links[0], rating: "5", title: "", body: "Lange genug hier.", name: "C.",
                file: ("x.jpg", Array("GIF89a....".utf8)))
            #expect(gif.status == .unprocessableContent)
            #expect(try await app.store.db.scalar("SELECT COUNT(*) FROM reviews") == 0)
            var chars = Array(links[0])
            chars[chars.count - 2] = chars[chars.count - 2] == "A" ? "B" : "A"
            #expect(try await app.request(.get, String(chars)).status == .notFound)
            clock.advance(by: 181 * 86_400)
            let expired = try await app.request(.get, links[0])
            #expect(expired.status == .gone)
            #expect(expired.text.contains("id=\"link-expired\""))
        }
    }

    @Test func widgetsAreNotLiveWithoutTheDisclosure() async throws {
        try await TestApp.run { app in
            _ = try await sentRequest(app, disclosure: "")
            #expect(try await app.request(.get, "/widgets/shop/products/K1").status == .notFound)
            #expect(try await app.request(.get, "/widgets/shop/shop/json").status == .notFound)
            #expect(try await app.request(.get, "/feeds/shop/google-product-reviews.xml").status == .notFound)
        }
    }

    /// The settings PUT is a merge: a field left out stays; an incentive of null or "" goes.
    @Test func anIncentiveStaysWhenLeftOutAndGoesWithNull() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            func put(_ json: String) async throws -> String? {
                let response = try await app.request(.put, "/api/v1/reviews/settings", key: key, json: json)
                #expect(response.status == .ok, "\(json): \(response.text)")
                return try await app.store.reviewSettings(workspaceID: 1).incentive
            }
            #expect(try await put(#"{"incentive":"Ein Dankeschön für jede Bewertung"}"#) != nil)
            #expect(try await put(#"{"delay_seconds":60}"#) == "Ein Dankeschön für jede Bewertung")
            #expect(try await put(#"{"incentive":null}"#) == nil)
            #expect(try await put(#"{"incentive":"Gutschein"}"#) == "Gutschein")
            #expect(try await put(#"{"incentive":"  "}"#) == nil)
            let wrong = try await app.request(.put, "/api/v1/reviews/settings", key: key, json: #"{"incentive":5}"#)
            #expect(wrong.status == .badRequest || wrong.status == .unprocessableContent, "\(wrong.status)")
        }
    }

    @Test func aReviewFromAnIncentivisedCampaignCarriesTheBadgeWhateverItsRating() async throws {
        try await TestApp.run { app in
            let incentive = "5-€-Gutschein für jede Bewertung, egal wie sie ausfällt"
            let (_, links) = try await sentRequest(app, incentive: incentive)
            _ = try await submit(app, links[0], rating: "1", title: "", body: "Kam leider kaputt an.", name: "C.")
            _ = try await submit(app, links[1], rating: "5", title: "", body: "Die Mühle ist prima.", name: "C.")
            for sku in ["K1", "M2"] {
                let widget = try await app.request(.get, "/widgets/shop/products/\(sku)")
                #expect(widget.text.contains("badge-incentive"), "\(sku): the incentive is disclosed")
                #expect(widget.text.contains("mit Dankeschön-Anreiz"))
            }
        }
    }

    @Test func theMerchantRepliesOnceHidesWithAReasonAndCannotEditTheText() async throws {
        try await TestApp.run { app in
            let (_, links) = try await sentRequest(app)
            _ = try await submit(app, links[0], rating: "1", title: Self.xss, body: "Kaputt angekommen.", name: "C.")
            let admin = try await AdminSession.login(app)
            let list = try await admin.get("/admin/reviews")
            #expect(list.status == .ok)
            #expect(!list.text.contains("<script>alert") && list.text.contains("&lt;script&gt;"))
            let id = try #require(try await app.store.reviews(workspaceID: 1, filter: .init()).first?.id)
            let page = try await admin.get("/admin/reviews/\(id)")
            #expect(!page.text.contains("<script>alert"))
            #expect(!page.text.contains("name=\"body\""), "no form edits a customer's text")
            #expect(try await admin.post("/admin/reviews/\(id)/reply", "reply=Das+tut+uns+leid.").status == .seeOther)
            #expect(
                try await admin.post("/admin/reviews/\(id)/reply", "reply=Ersatz+ist+unterwegs.").status == .seeOther)
            let replied = try #require(try await app.store.review(workspaceID: 1, id: id))
            #expect(replied.reply == "Ersatz ist unterwegs.")
            let noReason = try await admin.post("/admin/reviews/\(id)/moderate", "action=hide&reason=")
            #expect(noReason.status == .unprocessableContent)
            #expect(
                try await admin.post("/admin/reviews/\(id)/moderate", "action=hide&reason=Spam").status == .seeOther)
            #expect(try await app.store.review(workspaceID: 1, id: id)?.status == .hidden)
            let audit = try await app.store.db.scalar(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'review.hide' AND detail = 'Spam'")
            #expect(audit == 1)
            let widget = try await app.request(.get, "/widgets/shop/products/K1/json")
            #expect((try widget.json()["reviews"] as? [Any])?.isEmpty == true)

            // Publishing carries the version the merchant read; an older one is refused with the new text shown.
            let hiddenPage = try await admin.get("/admin/reviews/\(id)")
            let match = try #require(hiddenPage.text.firstMatch(of: try Regex(#"name="seen" value="([0-9]+)""#)))
            let seen = try #require(match.output[1].substring)
            let stale = try await admin.post("/admin/reviews/\(id)/moderate", "action=publish&seen=1")
            #expect(stale.status == .conflict)
            #expect(stale.text.contains("wurde geändert") && stale.text.contains("Kaputt angekommen."))
            #expect(try await app.store.review(workspaceID: 1, id: id)?.status == .hidden)
            #expect(
                try await admin.post("/admin/reviews/\(id)/moderate", "action=publish&seen=\(seen)").status
                    == .seeOther)
            #expect(try await app.store.review(workspaceID: 1, id: id)?.status == .published)
        }
    }
}
