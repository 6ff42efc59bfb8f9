import Foundation
import HTTPTypes
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// Numbers chosen to break arithmetic: each gets a clear error or a bounded answer, and the server stays up to
/// answer the next request (a trap would end the whole process).
@Suite struct HostileInput {
    @Test func numbersThatWouldTrapAreRefusedAndTheServerStaysUp() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            // Every list pages by the same rules: limit 1–500 and offset from 0, else 422; both echoed.
            for query in ["limit=0", "limit=501", "limit=abc", "offset=-1", "offset=99999999999"] {
                let r = try await app.request(.get, "/api/v1/referrals/advocates?\(query)", key: key)
                #expect(r.status == .unprocessableContent && r.text.contains("parameter_invalid"), "\(query)")
            }
            let page = try await app.request(.get, "/api/v1/referrals/advocates?limit=2", key: key).json()
            #expect(page["limit"] as? Int == 2 && page["offset"] as? Int == 0 && page["total"] as? Int == 0)
            #expect(try await app.request(.get, "/api/v1/referrals/advocates", key: key).json()["limit"] as? Int == 50)
            for days in ["nan", "inf", "1e15", "0", "-5", "99999"] {
                let r = try await app.request(.get, "/api/v1/referrals/figures?days=\(days)", key: key)
                #expect(r.status == .unprocessableContent, "days=\(days)")
                #expect(r.text.contains("parameter_invalid"))
            }
            #expect(try await app.request(.get, "/api/v1/referrals/figures?days=30", key: key).status == .ok)

            // 13-digit prices times a large quantity overflow Int64 when no subtotal is sent.
            let huge = """
                {"customer":{"email":"gross@example.com"},"currency":"EUR","status":"placed",
                 "items":[{"sku":"X","name":"X","quantity":10000,"unit_price":"9999999999999.00"}],
                 "totals":{"total":"1.00"}}
                """
            let order = try await app.request(.put, "/api/v1/orders/HUGE-1", key: key, json: huge)
            #expect(order.status == .unprocessableContent)
            #expect(order.text.contains("amount_too_large"))

            let premium = try await app.request(
                .post, "/api/v1/referrals/premiums", key: key,
                json: #"{"name":"Tasse","cost_minor":9223372036854775807,"stock":1}"#)
            #expect(premium.status == .unprocessableContent)
            #expect(premium.text.contains("premium_cost_invalid"))

            let magnet = try await app.request(
                .post, "/api/v1/lead-magnets", key: key,
                json: """
                    {"slug":"ratgeber","name":"Ratgeber","headline":"Ratgeber","gift_kind":"link",
                     "gift_title":"Ratgeber","gift_url":"https://shop.example/r","consent_text":"Ja, bitte.",
                     "pending_seconds":1e300}
                    """)
            #expect(magnet.status == .unprocessableContent || magnet.status == .badRequest)

            // Admin lists: a page number that would overflow the offset is clamped.
            let admin = try await AdminSession.login(app)
            #expect(try await admin.get("/admin/contacts?page=9223372036854775807").status == .ok)
            #expect(try await admin.get("/admin/orders?page=9223372036854775807").status == .ok)
            #expect(try await app.request(.get, "/healthz").status == .ok, "still up")
        }
    }

    /// A number field with words in it is refused by name, not read as "no cap".
    @Test func theReferralFormRefusesAWordForTheCap() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            try await app.request(
                .put, "/api/v1/referrals/programme", key: key,
                json: #"{"active":true,"target_url":"https://shop.example/","cap_count":3}"#)
            let admin = try await AdminSession.login(app)
            let page = try await admin.post(
                "/admin/referrals/settings",
                "active=on&target_url=https%3A%2F%2Fshop.example%2F&advocate_type=voucher&advocate_value=10.00&cap=f%C3%BCnf"
            )
            #expect(page.text.contains("is not a whole number"))
            #expect(try await app.store.referralProgramme(workspaceID: 1).capCount == 3)
        }
    }

    /// What the API may set, the admin form shows and keeps: all five follow-up steps; a premium in the programme's
    /// currency.
    @Test func theAdminShowsWhatTheAPISet() async throws {
        try await TestApp.run { app in
            let key = try await seedShop(app)
            let steps = (1...5).map { #"{"after_seconds":\#($0 * 86400),"subject":"Schritt \#($0)","body":"Text"}"# }
            let magnet = try await app.request(
                .post, "/api/v1/lead-magnets", key: key,
                json: """
                    {"slug":"ratgeber","name":"Ratgeber","headline":"Ratgeber","gift_kind":"link",
                     "gift_title":"Ratgeber","gift_url":"https://shop.example/r","consent_text":"Ja, bitte.",
                     "follow_ups":[\(steps.joined(separator: ","))]}
                    """)
            #expect(magnet.status == .created)
            let id = try #require(try magnet.json()["id"] as? Int)
            let admin = try await AdminSession.login(app)
            let page = try await admin.get("/admin/magnets/\(id)").text
            #expect(page.contains("name=\"step4_subject\"") && page.contains("Schritt 5"))

            try await app.request(
                .put, "/api/v1/referrals/programme", key: key,
                json: #"{"active":true,"target_url":"https://shop.example/","currency":"CHF"}"#)
            let premium = try await app.request(
                .post, "/api/v1/referrals/premiums", key: key, json: #"{"name":"Tasse","cost_minor":800,"stock":2}"#)
            #expect(premium.status == .created)
            #expect(try premium.json()["currency"] as? String == "CHF")
        }
    }
}
