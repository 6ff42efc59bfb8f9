import Foundation
import Hummingbird
import ReciprocityCore
import Storage

/// Builds the router: middleware in order (request id, errors, security headers, locale, auth), then the routes.
public enum WebApp {
    public static func buildRouter(_ env: WebEnvironment) -> Router<AppContext> {
        let router = Router(context: AppContext.self)
        router.add(middleware: RequestIDMiddleware(random: env.random))
        router.add(middleware: MetricsMiddleware())
        // Outside the error edge, so error pages get the headers too.
        router.add(middleware: SecurityHeadersMiddleware())
        router.add(middleware: ErrorMiddleware(templates: env.templates))
        router.add(middleware: LocaleMiddleware())
        router.add(middleware: APIAuthMiddleware(store: env.store, open: [SiteURL.openAPI.path]))
        router.add(middleware: AdminSessionMiddleware(store: env.store))
        SystemRoutes(env: env).register(on: router)
        APIRoutes(env: env).register(on: router)
        AdminRoutes(env: env).register(on: router)
        if env.testHooks { TestHooks.register(on: router, env: env) }
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: SiteURL.adminHome.path]) }
        return router
    }

    /// Every API operation the router serves (method and route), for keeping the OpenAPI document true.
    public static let apiOperations: [(method: String, route: SiteURL.Route)] = [
        ("get", .openAPI), ("get", .apiOrders), ("put", .apiOrder), ("get", .apiOrder), ("get", .apiContacts),
        ("get", .apiContact), ("get", .apiContactExport), ("post", .apiContactErase), ("post", .apiContactObjection),
        ("get", .healthz), ("get", .readyz), ("get", .metrics),
    ]
}
