import Foundation
import HTTPTypes
import Hummingbird
import ReciprocityCore
import Reviews
import Storage

/// The public side of reviews: the form behind a review link (no login: the signed token is the authorization),
/// the optional open form, the widgets (HTML and JSON, cached with ETags), review photos and the Google feed.
struct ReviewPages: Sendable {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.publicReview.routerPath) { _, context in try await formPage(context) }
        router.post(SiteURL.Route.publicReview.routerPath) { request, context in try await submit(request, context) }
        router.post(SiteURL.Route.publicReviewDelete.routerPath) { request, context in
            try await delete(request, context)
        }
        router.get(SiteURL.Route.widgetProduct.routerPath) { request, context in
            try await widget(request, context, product: true, json: false)
        }
        router.get(SiteURL.Route.widgetProductJSON.routerPath) { request, context in
            try await widget(request, context, product: true, json: true)
        }
        router.get(SiteURL.Route.widgetShop.routerPath) { request, context in
            try await widget(request, context, product: false, json: false)
        }
        router.get(SiteURL.Route.widgetShopJSON.routerPath) { request, context in
            try await widget(request, context, product: false, json: true)
        }
        router.get(SiteURL.Route.widgetPhoto.routerPath) { _, context in try await photo(context) }
        router.get(SiteURL.Route.reviewFeed.routerPath) { request, context in try await feed(request, context) }
        router.get(SiteURL.Route.widgetProductWrite.routerPath) { _, context in
            try await openFormPage(context, input: nil, errors: [:], status: .ok)
        }
        router.post(SiteURL.Route.widgetProductWrite.routerPath) { request, context in
            try await openFormSubmit(request, context)
        }
    }

    var reviews: ReviewModule {
        get throws {
            guard let r = env.reviews else {
                throw DomainError(.unavailable, code: "reviews_unavailable", "Reviews are not configured.")
            }
            return r
        }
    }

    func token(_ context: AppContext) throws -> String {
        guard let token = context.parameters.get("token") else { throw DomainError.notFound("Link") }
        return token
    }

    func page(_ name: String, locale: String, title: String, _ extra: [String: Any], status: HTTPResponse.Status = .ok)
        -> Response
    {
        let t = Strings.table(locale)
        var model: [String: Any] = ["t": t, "lang": locale, "title": t[title] ?? title]
        for (k, v) in extra { model[k] = v }
        return env.templates.page(name, model, status: status)
    }

    // MARK: The form behind a review link

    func formPage(
        _ context: AppContext, input: ReviewInput? = nil, errors: [String: String] = [:], message: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let token = try token(context)
        switch try await reviews.service.open(token: token) {
        case .expired(let shop):
            return page(
                "review_expired", locale: context.locale, title: "review_expired_title", ["shop": shop ?? ""],
                status: .gone)
        case .form(let ctx):
            let t = Strings.table(ctx.locale)
            let existing = ctx.existing
            let shown =
                input
                ?? existing.map {
                    ReviewInput(rating: $0.rating, title: $0.title, body: $0.body, displayName: $0.displayName)
                }
                ?? ReviewInput(rating: nil, title: "", body: "", displayName: ctx.defaultDisplayName)
            var model = formModel(shown, errors: errors, t: t)
            model["shop"] = ctx.workspace.name
            model["product"] = ctx.productName
            model["order"] = ctx.orderNumber
            model["action"] = SiteURL.publicReview(token: token).path
            model["editable"] = ctx.editable
            model["deleted"] = existing?.status == .deleted
            if let existing, existing.status != .deleted {
                model["existing"] = true
                model["delete_action"] = SiteURL.publicReviewDelete(token: token).path
                if existing.status == .held { model["held"] = true }
            }
            if let incentive = ctx.request.incentive { model["incentive"] = incentive }
            if let message { model["message"] = t[message] ?? message }
            model["photos"] = true
            return page("review_form", locale: ctx.locale, title: "review_title", model, status: status)
        }
    }

    func formModel(_ input: ReviewInput, errors: [String: String], t: [String: String]) -> [String: Any] {
        var model: [String: Any] = [
            "ratings": (1...5).reversed().map { n -> [String: Any] in
                ["value": n, "checked": input.rating == n, "label": t["stars_\(n)"] ?? String(n)]
            },
            "title_value": input.title, "body_value": input.body, "display_name": input.displayName,
            "body_max": ReviewModeration.Limits().textMax, "title_max": ReviewModeration.Limits().titleMax,
            "name_max": ReviewInput.displayNameMax,
        ]
        if !errors.isEmpty {
            model["has_errors"] = true
            model["errors"] = errors.sorted { $0.key < $1.key }.map { field, code -> [String: Any] in
                ["field": field, "message": t["review_error_\(code)"] ?? code]
            }
            for field in errors.keys { model["invalid_\(field)"] = true }
        }
        return model
    }

    func input(_ form: MultipartForm) -> ReviewInput {
        ReviewInput(
            rating: form["rating"].flatMap { Int($0) }, title: form["title"] ?? "", body: form["body"] ?? "",
            displayName: form["display_name"] ?? "")
    }

    /// Per client (behind trusted proxies the forwarded address; IPv6 by its /64), so one client behind the shop's
    /// proxy cannot lock every customer out.
    func limited(_ request: Request, _ context: AppContext) throws {
        guard env.publicFormLimiter.allow("review:\(env.limiterKey(request, context))") else {
            throw DomainError(.rateLimited, code: "rate_limited", "Too many attempts. Please wait a minute.")
        }
    }

    func submit(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        try limited(request, context)
        if case .expired = try reviews.links.resolve(token) { return try await formPage(context) }
        let form = try await MultipartForm.read(
            request, limit: ReviewPhoto.maxBytes * ReviewPhoto.maxCount + 64 * 1024)
        let given = input(form)
        // A filled honeypot is a bot: it gets the page a person would, and nothing is saved.
        if !(form["website"] ?? "").isEmpty {
            return try await formPage(context, input: given, message: "review_thanks")
        }
        do {
            try await reviews.service.submit(
                token: token, input: given, photos: form.files("photos").map(\.bytes))
            return try await formPage(context, message: "review_thanks")
        } catch let e as ReviewInputErrors {
            return try await formPage(context, input: given, errors: e.byField, status: .unprocessableContent)
        }
    }

    func delete(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        try limited(request, context)
        _ = try await Bodies.form(request, limit: 4096)
        if case .expired = try reviews.links.resolve(token) { return try await formPage(context) }
        try await reviews.service.delete(token: token)
        return try await formPage(context, message: "review_deleted")
    }

    // MARK: The open form (unverified reviews), if the merchant enables it

    func openFormPage(
        _ context: AppContext, input: ReviewInput?, errors: [String: String], status: HTTPResponse.Status,
        done: Bool = false
    ) async throws -> Response {
        let (slug, sku) = try productParameters(context)
        guard let w = try await reviews.display.widget(slug: slug, sku: sku), w.openForm else {
            throw DomainError.notFound("Review form")
        }
        let t = Strings.table(context.locale)
        var model = formModel(
            input ?? ReviewInput(rating: nil, title: "", body: "", displayName: ""), errors: errors, t: t)
        model["shop"] = w.workspace.name
        model["product"] = w.productName ?? sku
        model["action"] = SiteURL.widgetProductWrite(slug: slug, sku: sku).path
        model["editable"] = !done
        model["open_form"] = true
        model["form_token"] = env.store.signToken(
            purpose: "review-open-form", fields: [slug, sku, String(Int64(env.clock.now().timeIntervalSince1970))])
        if done { model["message"] = t["review_thanks_open"] ?? "" }
        return page("review_form", locale: context.locale, title: "review_title", model, status: status)
    }

    /// Seconds a person needs at least to write a review; faster posts are bots.
    static let minimumFillTime: TimeInterval = 3

    func openFormSubmit(_ request: Request, _ context: AppContext) async throws -> Response {
        let (slug, sku) = try productParameters(context)
        try limited(request, context)
        let form = try await MultipartForm.read(request, limit: 64 * 1024)
        let given = input(form)
        guard let fields = env.store.verifyToken(form["form_token"] ?? "", purpose: "review-open-form"),
            fields.count == 3, fields[0] == slug, fields[1] == sku, let issued = Double(fields[2])
        else {
            throw DomainError(.forbidden, code: "form_expired", "The form expired. Please reload the page.")
        }
        let age = env.clock.now().timeIntervalSince1970 - issued
        if !(form["website"] ?? "").isEmpty || age < Self.minimumFillTime {
            return try await openFormPage(context, input: nil, errors: [:], status: .ok, done: true)
        }
        guard age < 86_400 else {
            throw DomainError(.forbidden, code: "form_expired", "The form expired. Please reload the page.")
        }
        guard let workspace = try await env.store.workspace(slug: slug) else { throw DomainError.notFound("Shop") }
        do {
            try await reviews.service.submitOpen(workspace: workspace, sku: sku, input: given, locale: context.locale)
        } catch let e as ReviewInputErrors {
            return try await openFormPage(context, input: given, errors: e.byField, status: .unprocessableContent)
        }
        return try await openFormPage(context, input: nil, errors: [:], status: .ok, done: true)
    }

    func productParameters(_ context: AppContext) throws -> (String, String) {
        guard let slug = context.parameters.get("slug"), let sku = context.parameters.get("sku") else {
            throw DomainError.notFound("Product")
        }
        return (slug, sku.removingPercentEncoding ?? sku)
    }

    // MARK: Widgets, cached

    func widgetLocale(_ request: Request) -> String {
        request.uri.queryParameters.get("lang") == "en" ? "en" : "de"
    }

    func widget(_ request: Request, _ context: AppContext, product: Bool, json: Bool) async throws -> Response {
        guard let slug = context.parameters.get("slug") else { throw DomainError.notFound("Widget") }
        let sku = product ? try productParameters(context).1 : nil
        let locale = widgetLocale(request)
        let key = "\(json ? "j" : "h")|\(locale)|\(slug)|\(sku ?? "")"
        let reviews = try reviews
        let entry: ReviewWidgetCache.Entry
        if let hit = reviews.cache.get(key) {
            entry = hit
        } else if let workspace = try await env.store.workspace(slug: slug),
            // The generation before the read: a write that lands meanwhile makes this entry stale at once.
            case let generation = reviews.cache.generation(workspace.id),
            let w = try await reviews.display.widget(slug: slug, sku: sku)
        {
            let body: [UInt8]
            if json {
                body = Array(try Bodies.encoder.encode(reviews.display.json(w, locale: locale)))
            } else {
                body = Array(env.templates.render("review_widget", widgetModel(w, locale: locale)).utf8)
            }
            entry = reviews.cache.put(
                key, body: body,
                contentType: json ? "application/json; charset=utf-8" : "text/html; charset=utf-8",
                workspaceID: w.workspace.id, generation: generation)
        } else {
            throw DomainError(
                .notFound, code: "widget_not_live",
                "No such widget, or it is not live yet (the review disclosure text is missing).")
        }
        return cached(entry, request: request, cors: json)
    }

    func cached(_ entry: ReviewWidgetCache.Entry, request: Request, cors: Bool) -> Response {
        var headers: HTTPFields = [
            .eTag: entry.etag, .cacheControl: "public, max-age=60",
            // Widgets are framed by shop pages: any ancestor, but nothing else loads.
            .contentSecurityPolicy:
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors *",
        ]
        if cors { headers[.accessControlAllowOrigin] = "*" }
        if let given = request.headers[.ifNoneMatch],
            given.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == entry.etag })
        {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = entry.contentType
        return Response(
            status: .init(code: entry.status), headers: headers, body: .init(byteBuffer: entry.body))
    }

    func widgetModel(_ w: ReviewDisplay.Widget, locale: String) -> [String: Any] {
        let t = Strings.table(locale)
        let total = max(1, w.summary.count)
        var model: [String: Any] = [
            "t": t, "lang": locale, "shop": w.workspace.name,
            "title": w.productName ?? w.workspace.name,
            "summary": w.summary.sentence(locale: locale, months: ReviewDisplay.months),
            "stars": ReviewStars.text(average: w.summary.average),
            "has_reviews": w.summary.count > 0,
            "disclosure": w.disclosure,
            "distribution": (1...5).reversed().map { n -> [String: Any] in
                let c = w.summary.distribution[n - 1]
                return ["stars": n, "count": c, "percent": c * 100 / total]
            },
            "reviews": w.reviews.map { r -> [String: Any] in
                var m: [String: Any] = [
                    "id": r.id, "rating": r.rating,
                    "stars": ReviewStars.text(r.rating),
                    "title": r.title, "body": r.body, "author": r.displayName,
                    "date": Self.date(r.createdAt, locale: locale), "product": r.productName,
                    "photos": r.photoIDs.map { ["url": reviewsPhotoPath(w.workspace.slug, $0)] },
                    "has_photos": !r.photoIDs.isEmpty,
                ]
                switch r.source {
                case .verified: m["verified"] = true
                case .unverified: m["unverified"] = true
                case .imported: m["imported"] = r.importSource ?? "?"
                }
                if let incentive = r.incentive { m["incentive"] = incentive }
                if let reply = r.reply { m["reply"] = reply }
                return m
            },
        ]
        if !w.reviews.isEmpty, w.sku == nil { model["shop_widget"] = true }
        if let jsonLD = try? reviews.display.jsonLD(w) { model["jsonld"] = jsonLD }
        if w.openForm, let sku = w.sku {
            model["write_url"] = SiteURL.widgetProductWrite(slug: w.workspace.slug, sku: sku).path
        }
        return model
    }

    func reviewsPhotoPath(_ slug: String, _ id: Int64) -> String { SiteURL.widgetPhoto(slug: slug, id: id).path }

    static func date(_ d: Date, locale: String) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "Europe/Berlin") ?? .gmt
        let c = cal.dateComponents([.year, .month, .day], from: d)
        func two(_ n: Int?) -> String { String(format: "%02d", n ?? 0) }
        return locale == "en"
            ? "\(c.year ?? 0)-\(two(c.month))-\(two(c.day))" : "\(two(c.day)).\(two(c.month)).\(c.year ?? 0)"
    }

    func photo(_ context: AppContext) async throws -> Response {
        guard let slug = context.parameters.get("slug"), let id = context.parameters.get("id").flatMap(Int64.init),
            let workspace = try await env.store.workspace(slug: slug),
            let photo = try await env.store.reviewPhoto(workspaceID: workspace.id, id: id)
        else { throw DomainError.notFound("Photo") }
        return Response(
            status: .ok,
            headers: [
                // Short: a hidden, deleted or erased review's photos must not linger in caches.
                .contentType: photo.contentType, .cacheControl: "public, max-age=300",
                .contentSecurityPolicy: "default-src 'none'; frame-ancestors *",
            ], body: .init(byteBuffer: ByteBuffer(bytes: photo.bytes)))
    }

    func feed(_ request: Request, _ context: AppContext) async throws -> Response {
        guard let slug = context.parameters.get("slug") else { throw DomainError.notFound("Feed") }
        let reviews = try reviews
        let key = "feed|\(slug)"
        if let hit = reviews.cache.get(key) { return cached(hit, request: request, cors: false) }
        guard let workspace = try await env.store.workspace(slug: slug),
            case let generation = reviews.cache.generation(workspace.id),
            let xml = try await reviews.display.feed(slug: slug)
        else {
            throw DomainError(
                .notFound, code: "widget_not_live",
                "No such feed, or it is not live yet (the review disclosure text is missing).")
        }
        let entry = reviews.cache.put(
            key, body: Array(xml.utf8), contentType: "application/xml; charset=utf-8", workspaceID: workspace.id,
            generation: generation)
        return cached(entry, request: request, cors: false)
    }
}
