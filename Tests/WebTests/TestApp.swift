import App
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ReciprocityCore
import Storage
import TestSupport
import Testing

extension Engine: CustomTestStringConvertible {
    public var testDescription: String { rawValue }
}

/// The real application (same wiring as `serve`, workers off) on a fresh database, with a pinned clock and
/// seeded randomness so that pages render the same every run.
struct TestApp {
    let runtime: Runtime
    let client: any TestClientProtocol
    var store: Store { runtime.store }

    /// `live`: through a real server on a free port (the fast path, the connection handling) rather than straight
    /// into the router. `environment` adds to or overrides the configuration.
    static func run(
        _ engine: Engine = .sqlite, clock: ManualClock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000)),
        live: Bool = false, environment: [String: String] = [:],
        _ body: @Sendable (TestApp) async throws -> Void
    ) async throws {
        try await engine.withDatabaseURL { url in
            let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("rcp-data-\(UUID().uuidString)")
                .path
            defer { try? FileManager.default.removeItem(atPath: dataDir) }
            let config = try await AppConfig.load(
                environment: [
                    "RECIPROCITY_DATABASE_URL": url, "RECIPROCITY_DATA_DIR": dataDir, "RECIPROCITY_BCRYPT_COST": "4",
                    "RECIPROCITY_BASE_URL": "https://shop.example", "RECIPROCITY_LOG_LEVEL": "error",
                    "RECIPROCITY_MAX_BODY_BYTES": "65536",
                ].merging(environment) { _, given in given })
            let runtime = try await Runtime.open(config, clock: clock, random: SeededRandom(seed: 77))
            let app = try await buildApplication(runtime: runtime, workers: false)
            do {
                try await app.test(live ? .live : .router) { client in
                    try await body(TestApp(runtime: runtime, client: client))
                }
                await runtime.close()
            } catch {
                await runtime.close()
                throw error
            }
        }
    }

    /// A workspace and an API key for it.
    func workspaceWithKey(_ slug: String, scope: APIScope = .write) async throws -> (Workspace, String) {
        let w = try await Commands.createWorkspace(
            runtime, slug: slug, name: "Shop \(slug)", senderEmail: "\(slug)@shop.example", senderName: nil,
            locale: "de",
            timeZone: "Europe/Berlin", imprintURL: "", privacyURL: "")
        let key = try await Commands.createAPIKey(runtime, workspace: slug, name: "test", scope: scope)
        return (w, key.plaintext)
    }

    @discardableResult
    func request(
        _ method: HTTPRequest.Method, _ path: String, key: String? = nil, json: String? = nil,
        headers extra: HTTPFields = [:], cookies: String? = nil, form: String? = nil
    ) async throws -> TestResponse {
        var headers = extra
        if let key { headers[.authorization] = "Bearer \(key)" }
        if json != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        if form != nil { headers[.contentType] = "application/x-www-form-urlencoded" }
        if let cookies { headers[.cookie] = cookies }
        let body = (json ?? form).map { ByteBuffer(string: $0) }
        return try await client.execute(uri: path, method: method, headers: headers, body: body)
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    func json() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] ?? [:]
    }
}

func orderJSON(
    email: String = "anna@example.com", status: String = "placed", firstName: String = "Anna", itemName: String = "Tee",
    quantity: String = "1", price: String = "\"9.90\"", currency: String = "EUR"
) -> String {
    """
    {"customer":{"email":"\(email)","first_name":\(jsonString(firstName)),"last_name":"Muster","locale":"de-DE"},
     "currency":"\(currency)","items":[{"sku":"TEE-1","name":\(jsonString(itemName)),"quantity":\(quantity),"unit_price":\(price)}],
     "totals":{"total":"9.90"},"status":"\(status)",
     "shipping_address":{"name":"Anna Muster","street":"Hauptstraße 1","postal_code":"10115","city":"Berlin","country":"DE"}}
    """
}

func jsonString(_ s: String) -> String {
    (try? JSONEncoder().encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
}
