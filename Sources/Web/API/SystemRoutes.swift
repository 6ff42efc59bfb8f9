import Foundation
import Hummingbird
import Metrics
import ReciprocityCore
import Storage

/// Health, readiness, metrics, the OpenAPI document, and the bare redirect that benchmarks compare against.
struct SystemRoutes {
    let env: WebEnvironment
    let openAPIDocument: ByteBuffer

    init(env: WebEnvironment) {
        self.env = env
        let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: "OpenAPI")
        openAPIDocument = ByteBuffer(bytes: url.flatMap { try? Data(contentsOf: $0) } ?? Data())
    }

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.healthz.routerPath) { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        router.get(SiteURL.Route.readyz.routerPath) { _, _ in try await readiness() }
        router.get(SiteURL.Route.metrics.routerPath) { _, _ in
            await sampleGauges()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: await env.metricsText())))
        }
        router.get(SiteURL.Route.openAPI.routerPath) { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/yaml; charset=utf-8"],
                body: .init(byteBuffer: openAPIDocument))
        }
        let target = env.baseURL + "/"
        router.get(SiteURL.Route.bareRedirect.routerPath) { _, _ in
            Response(status: .found, headers: [.location: target])
        }
    }

    /// The bare redirect on the fast path too: it is the reference the referral redirect is measured against, so
    /// both take the same way through the server.
    func fastRoutes() -> [FastRoute] {
        let answer = FastAnswer(
            HTTPResponse(status: .found, headerFields: [.location: env.baseURL + "/"]),
            path: SiteURL.Route.bareRedirect.rawValue)
        return [FastRoute(path: SiteURL.Route.bareRedirect.rawValue) { _ in answer }]
    }

    /// Ready when the database answers and every migration this binary knows has been applied.
    func readiness() async throws -> Response {
        struct Status: Encodable {
            var status: String
            var database: String
            var schemaVersion: Int
            var expectedSchemaVersion: Int
        }
        var status = Status(status: "ready", database: "ok", schemaVersion: 0, expectedSchemaVersion: Migrator.latest)
        do {
            try await env.store.db.ping()
            // A database that answers but was never migrated has no migrations table: version 0.
            status.schemaVersion = (try? await Migrator.currentVersion(env.store.db)) ?? 0
        } catch {
            status.database = "unreachable"
        }
        if status.database != "ok" || status.schemaVersion != status.expectedSchemaVersion {
            status.status = "not_ready"
            return try Bodies.jsonResponse(status, status: .serviceUnavailable)
        }
        return try Bodies.jsonResponse(status)
    }

    /// Queue depth per state, sampled when Prometheus scrapes.
    func sampleGauges() async {
        if let clicks = env.referrals?.clicks {
            Gauge(label: "reciprocity_referral_clicks_waiting").record(clicks.waiting)
        }
        guard let counts = try? await env.store.jobCounts(workspaceID: nil) else { return }
        for (state, n) in counts {
            Gauge(label: "reciprocity_jobs", dimensions: [("state", state.rawValue)]).record(n)
        }
    }
}
