import Foundation
import Hummingbird
import ReciprocityCore
import Storage

/// Builds the router: middleware in order (request id, errors, security headers, locale, auth), then the routes.
public enum WebApp {
    public static func buildRouter(_ env: WebEnvironment) -> Router<AppContext> {
        let router = Router(context: AppContext.self)
        router.add(middleware: RequestIDMiddleware(ids: env.requestIDs))
        router.add(middleware: RequestMetricsMiddleware(cache: env.requestMetrics))
        // Outside the error edge, so error pages get the headers and the chosen language too.
        router.add(middleware: SecurityHeadersMiddleware())
        router.add(middleware: LocaleMiddleware())
        router.add(middleware: ErrorMiddleware(templates: env.templates))
        router.add(middleware: APIAuthMiddleware(store: env.store, open: [SiteURL.openAPI.path]))
        router.add(middleware: AdminSessionMiddleware(store: env.store))
        SystemRoutes(env: env).register(on: router)
        APIRoutes(env: env).register(on: router)
        ReviewAPI(env: env).register(on: router)
        LeadAPI(env: env).register(on: router)
        ReferralAPI(env: env).register(on: router)
        AdminRoutes(env: env).register(on: router)
        MailPages(env: env).register(on: router)
        ReviewPages(env: env).register(on: router)
        LeadPages(env: env).register(on: router)
        ReferralPages(env: env).register(on: router)
        if env.testHooks { TestHooks.register(on: router, env: env) }
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: SiteURL.adminHome.path]) }
        return router
    }

    /// The `Server` header of every response.
    public static let serverName = "reciprocity"

    /// The GET routes answered on the event loop when memory has the answer, before the router (which has them too):
    /// the bare redirect and the referral redirect (docs/decisions/0011-event-loop-routes.md).
    public static func buildFastPath(_ env: WebEnvironment) -> FastPath {
        FastPath(
            routes: SystemRoutes(env: env).fastRoutes() + ReferralPages(env: env).fastRoutes(),
            requestIDs: env.requestIDs, metrics: env.requestMetrics)
    }

    /// The operations the router serves that the OpenAPI document must describe: the API and the system endpoints,
    /// not the admin pages, the benchmark route or test hooks. Read from the router itself.
    public static func documentedOperations(of router: Router<AppContext>) -> Set<String> {
        Set(
            router.routes.compactMap { route -> String? in
                let path = "\(route.path)".split(separator: "/").map {
                    $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0)
                }
                .joined(separator: "/")
                let full = path.hasPrefix("/") ? path : "/" + path
                let documented = full.hasPrefix("/api/") || ["/healthz", "/readyz", "/metrics"].contains(full)
                guard documented, !full.hasPrefix("/api/v1/_test") else { return nil }
                return "\(route.method.rawValue) \(full)"
            })
    }
}
