import App
import Foundation
import HTTPTypes
import ReciprocityCore
import Storage
import TestSupport
import Testing
import Web

@Suite struct OrdersAPI {
    @Test(arguments: Engine.available)
    func putCreatesThenTheSameBodyIsUnchangedAndANewStatusUpdates(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            let (_, key) = try await app.workspaceWithKey("shop")
            let created = try await app.request(.put, "/api/v1/orders/A-1", key: key, json: orderJSON())
            #expect(created.status == .created)
            #expect(created.headers[.location] == "/api/v1/orders/A-1")
            #expect(try created.json()["outcome"] as? String == "created")
            let again = try await app.request(.put, "/api/v1/orders/A-1", key: key, json: orderJSON())
            #expect(again.status == .ok)
            #expect(try again.json()["outcome"] as? String == "unchanged")
            let delivered = try await app.request(
                .put, "/api/v1/orders/A-1", key: key, json: orderJSON(status: "delivered"))
            #expect(try delivered.json()["outcome"] as? String == "updated")
            let got = try await app.request(.get, "/api/v1/orders/A-1", key: key)
            let order = try got.json()
            #expect(order["status"] as? String == "delivered")
            #expect((order["status_times"] as? [String: String])?.keys.sorted() == ["delivered", "placed"])
            #expect((order["totals"] as? [String: String])?["total"] == "9.90")
            #expect(((order["items"] as? [[String: Any]])?.first?["unit_price"]) as? String == "9.90")
            #expect(((order["items"] as? [[String: Any]])?.first?["returned_quantity"]) as? Int == 0)
            let list = try await app.request(.get, "/api/v1/orders?status=delivered&limit=10", key: key).json()
            #expect(list["total"] as? Int == 1)
        }
    }

    @Test(arguments: Engine.available)
    func anImpossibleTransitionIs409(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            let (_, key) = try await app.workspaceWithKey("shop")
            try await app.request(.put, "/api/v1/orders/A-2", key: key, json: orderJSON(status: "returned"))
            let r = try await app.request(.put, "/api/v1/orders/A-2", key: key, json: orderJSON(status: "delivered"))
            #expect(r.status == .conflict)
            #expect(r.headers[.contentType] == "application/problem+json")
            let problem = try r.json()
            #expect(problem["code"] as? String == "transition_impossible")
            #expect(problem["field"] as? String == "status")
        }
    }

    struct BadInput: Sendable, CustomTestStringConvertible {
        var name: String
        var body: String
        var status: Int
        var code: String
        var field: String?
        var testDescription: String { name }
    }

    static let badInputs: [BadInput] = [
        .init(name: "malformed JSON", body: "{\"customer\": ", status: 400, code: "malformed_json", field: nil),
        .init(name: "not an object", body: "[1,2]", status: 422, code: "type_mismatch", field: nil),
        .init(
            name: "missing customer", body: #"{"currency":"EUR","items":[],"totals":{"total":"1"},"status":"placed"}"#,
            status: 422, code: "field_missing", field: "customer"),
        .init(
            name: "wrong type", body: orderJSON(quantity: "\"two\""), status: 422, code: "type_mismatch",
            field: "items[0].quantity"),
        .init(
            name: "number as price", body: orderJSON(price: "9.9"), status: 422, code: "type_mismatch",
            field: "items[0].unit_price"),
        .init(
            name: "invalid email", body: orderJSON(email: "anna(at)example.com"), status: 422, code: "email_invalid",
            field: "customer.email"),
        .init(
            name: "header injection", body: orderJSON(email: "a@example.com\\r\\nBcc: x@example.com"), status: 422,
            code: "email_invalid", field: "customer.email"),
        .init(
            name: "unknown currency", body: orderJSON(currency: "EUX"), status: 422, code: "currency_unknown",
            field: "currency"),
        .init(
            name: "negative quantity", body: orderJSON(quantity: "-2"), status: 422, code: "quantity_invalid",
            field: "items[0].quantity"),
        .init(
            name: "more returned than bought",
            body: orderJSON(status: "delivered", quantity: #"1,"returned_quantity":2"#),
            status: 422, code: "returned_quantity_invalid", field: "items[0].returned_quantity"),
        .init(
            name: "negative price", body: orderJSON(price: "\"-1.00\""), status: 422, code: "amount_negative",
            field: "items[0].unit_price"),
        .init(
            name: "oversized body", body: orderJSON(itemName: String(repeating: "x", count: 70_000)), status: 413,
            code: "body_too_large", field: nil),
    ]

    @Test(arguments: badInputs)
    func badInputGetsAProblemNamingTheFieldAndWritesNothing(bad: BadInput) async throws {
        try await TestApp.run { app in
            let (shop, key) = try await app.workspaceWithKey("shop")
            let r = try await app.request(.put, "/api/v1/orders/BAD-1", key: key, json: bad.body)
            #expect(r.status.code == bad.status, "\(r.text)")
            #expect(r.headers[.contentType] == "application/problem+json")
            let problem = try r.json()
            #expect(problem["code"] as? String == bad.code)
            #expect(problem["field"] as? String == bad.field)
            #expect(problem["request_id"] as? String != nil)
            #expect(try await app.store.orders(workspaceID: shop.id).total == 0)
            #expect(try await app.store.contacts(workspaceID: shop.id).total == 0)
        }
    }

    @Test func aNonJSONContentTypeIsRefused() async throws {
        try await TestApp.run { app in
            let (_, key) = try await app.workspaceWithKey("shop")
            let r = try await app.request(
                .put, "/api/v1/orders/X", key: key, json: orderJSON(), headers: [.contentType: "text/plain"])
            #expect(r.status == .unprocessableContent)
            #expect(try r.json()["code"] as? String == "unsupported_media_type")
        }
    }
}

@Suite struct APIAccess {
    @Test func unknownMissingAndRevokedKeysGet401AndReadKeysCannotWrite() async throws {
        try await TestApp.run { app in
            let (_, writeKey) = try await app.workspaceWithKey("shop")
            let readKey = try await Commands.createAPIKey(app.runtime, workspace: "shop", name: "ro", scope: .read)
                .plaintext
            #expect(try await app.request(.get, "/api/v1/orders").status == .unauthorized)
            #expect(
                try await app.request(.get, "/api/v1/orders", key: "rcp_abcdefgh_" + String(repeating: "x", count: 38))
                    .status == .unauthorized)
            #expect(try await app.request(.get, "/api/v1/orders", key: readKey).status == .ok)
            let forbidden = try await app.request(.put, "/api/v1/orders/A", key: readKey, json: orderJSON())
            #expect(forbidden.status == .forbidden)
            #expect(try forbidden.json()["code"] as? String == "scope_insufficient")
            try await Commands.revokeAPIKey(app.runtime, prefix: writeKey)
            let revoked = try await app.request(.get, "/api/v1/orders", key: writeKey)
            #expect(revoked.status == .unauthorized)
            #expect(try revoked.json()["code"] as? String == "api_key_revoked")
        }
    }

    /// `reciprocity contact object`: the objection the API and the admin record, from the command line; an unknown
    /// address is a clear error, and another workspace's contact is not touched.
    @Test func theCommandLineRecordsAnObjection() async throws {
        try await TestApp.run { app in
            let (shop, key) = try await app.workspaceWithKey("shop")
            _ = try await app.workspaceWithKey("other")
            try await app.request(.put, "/api/v1/orders/A-1", key: key, json: orderJSON(email: "anna@example.com"))
            await #expect(throws: DomainError.self) {
                try await Commands.objectContact(app.runtime, workspace: "other", email: "anna@example.com")
            }
            try await Commands.objectContact(app.runtime, workspace: "shop", email: "anna@example.com")
            let anna = try EmailAddress("anna@example.com")
            #expect(try await app.store.isSuppressed(workspaceID: shop.id, email: anna))
            let contact = try #require(try await app.store.contact(workspaceID: shop.id, email: anna))
            #expect(
                try await app.store.auditEntries(workspaceID: shop.id, subject: "contact:\(contact.id)").map(\.action)
                    == ["contact.object"])
        }
    }

    @Test(arguments: Engine.available)
    func anotherWorkspacesIdsAre404AndNothingChanges(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            let (shopA, keyA) = try await app.workspaceWithKey("shop-a")
            let (_, keyB) = try await app.workspaceWithKey("shop-b")
            let created = try await app.request(.put, "/api/v1/orders/A-1", key: keyA, json: orderJSON()).json()
            let contactID = try #require((created["order"] as? [String: Any])?["contact_id"] as? Int)
            #expect(try await app.request(.get, "/api/v1/orders/A-1", key: keyB).status == .notFound)
            #expect(try await app.request(.get, "/api/v1/contacts/\(contactID)", key: keyB).status == .notFound)
            #expect(try await app.request(.get, "/api/v1/contacts/\(contactID)/export", key: keyB).status == .notFound)
            #expect(try await app.request(.post, "/api/v1/contacts/\(contactID)/erase", key: keyB).status == .notFound)
            #expect(
                try await app.request(.post, "/api/v1/contacts/\(contactID)/objection", key: keyB).status == .notFound)
            let contact = try #require(try await app.store.contact(workspaceID: shopA.id, id: Int64(contactID)))
            #expect(contact.erasedAt == nil)
            #expect(try await app.store.consents(workspaceID: shopA.id, contactID: contact.id).isEmpty)
            #expect(try await app.request(.get, "/api/v1/contacts/\(contactID)", key: keyA).status == .ok)
        }
    }

    @Test(arguments: Engine.available)
    func exportAndErasureThroughTheAPI(engine: Engine) async throws {
        try await TestApp.run(engine) { app in
            let (shop, key) = try await app.workspaceWithKey("shop")
            let created = try await app.request(
                .put, "/api/v1/orders/E-1", key: key, json: orderJSON(email: "erika@example.com")
            ).json()
            let id = try #require((created["order"] as? [String: Any])?["contact_id"] as? Int)
            let export = try await app.request(.get, "/api/v1/contacts/\(id)/export", key: key).json()
            #expect((export["contact"] as? [String: Any])?["email"] as? String == "erika@example.com")
            #expect((export["orders"] as? [Any])?.count == 1)
            #expect(try await app.request(.post, "/api/v1/contacts/\(id)/erase", key: key).status == .noContent)
            let after = try await app.request(.get, "/api/v1/contacts/\(id)", key: key).json()
            #expect(after["erased"] as? Bool == true)
            #expect(after["email"] as? String != "erika@example.com")
            #expect(try await app.store.isSuppressed(workspaceID: shop.id, email: EmailAddress("erika@example.com")))
            #expect(try await app.store.orders(workspaceID: shop.id).total == 1)
        }
    }
}

@Suite struct SystemEndpoints {
    @Test func healthReadinessMetricsAndTheOpenAPIDocumentAreServed() async throws {
        try await TestApp.run { app in
            #expect(try await app.request(.get, "/healthz").status == .ok)
            let ready = try await app.request(.get, "/readyz")
            #expect(ready.status == .ok)
            #expect(try ready.json()["schema_version"] as? Int == Migrator.latest)
            _ = try await app.request(.get, "/api/v1/orders")
            let metrics = try await app.request(.get, "/metrics").text
            #expect(metrics.contains("reciprocity_jobs"))
            #expect(metrics.contains("http_server_request_duration"))
            // Labelled by route and status (the error edge has already turned the missing key into a 401).
            #expect(
                metrics.contains(
                    #"hb_requests{http_route="/api/v1/orders",http_request_method="GET",http_response_status_code="401"}"#
                ))
            let spec = try await app.request(.get, "/api/v1/openapi.yaml")
            #expect(spec.status == .ok)
            #expect(spec.text.hasPrefix("openapi: 3.1.0"))
            let redirect = try await app.request(.get, "/_/redirect")
            #expect(redirect.status == .found)
        }
    }

    @Test func everyResponseCarriesARequestIDAndUnknownRoutesAre404Problems() async throws {
        try await TestApp.run { app in
            let r = try await app.request(
                .get, "/api/v1/nothing-here", headers: [HTTPField.Name("X-Request-Id")!: "trace-12345678"])
            #expect(r.headers[HTTPField.Name("X-Request-Id")!] == "trace-12345678")
            #expect(r.status == .unauthorized || r.status == .notFound)
        }
    }
}
