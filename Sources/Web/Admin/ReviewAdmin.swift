import Foundation
import Hummingbird
import ReciprocityCore
import Reviews
import Storage

/// Admin pages of the review capability: the list with filters (the held ones are the moderation queue), one
/// review with the public reply and hide/publish, the settings, and the request → review rate with a chart.
/// There is deliberately no way to edit a customer's text or to write a review as the merchant.
extension AdminRoutes {
    func registerReviews(on router: Router<AppContext>) {
        router.get(SiteURL.Route.adminReviews.routerPath) { request, context in try await reviewList(request, context) }
        router.get(SiteURL.Route.adminReview.routerPath) { _, context in try await reviewPage(context, message: nil) }
        router.post(SiteURL.Route.adminReviewReply.routerPath) { request, context in
            try await replyToReview(request, context)
        }
        router.post(SiteURL.Route.adminReviewModerate.routerPath) { request, context in
            try await moderateReview(request, context)
        }
        router.get(SiteURL.Route.adminReviewPhoto.routerPath) { _, context in try await reviewPhoto(context) }
        router.get(SiteURL.Route.adminReviewSettings.routerPath) { _, context in
            try await reviewSettingsPage(context, message: nil)
        }
        router.post(SiteURL.Route.adminReviewSettings.routerPath) { request, context in
            try await saveReviewSettings(request, context)
        }
    }

    func reviewRow(_ r: StoredReview, _ t: [String: String], _ context: AppContext) -> [String: Any] {
        var m: [String: Any] = [
            "id": r.id, "url": SiteURL.adminReview(id: r.id).path, "rating": r.rating,
            "stars": ReviewStars.text(r.rating),
            "title": r.title, "body": r.body, "author": r.displayName, "product": r.productName, "sku": r.sku,
            "source": t["source_\(r.source.rawValue)"] ?? r.source.rawValue, "source_key": r.source.rawValue,
            "status": t[Self.statusKey(r.status)] ?? r.status.rawValue, "status_key": r.status.rawValue,
            "date": when(r.createdAt, context),
        ]
        if !r.holdReasons.isEmpty { m["hold_reasons"] = r.holdReasons.joined(separator: ", ") }
        if let s = r.importSource { m["import_source"] = s }
        if let o = r.orderExternalID, r.source == .verified {
            m["order"] = o
            m["order_url"] = SiteURL.adminOrder(externalID: o).path
        }
        if let i = r.incentive { m["incentive"] = i }
        if let reply = r.reply { m["reply"] = reply }
        if let h = r.hiddenReason { m["hidden_reason"] = h }
        return m
    }

    static func statusKey(_ s: ReviewStatus) -> String {
        switch s {
        case .published: "review_published"
        case .held: "review_held_status"
        case .hidden: "review_hidden"
        case .deleted: "review_deleted_status"
        }
    }

    func reviewList(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        let q = request.uri.queryParameters
        let status = q.get("status").flatMap(ReviewStatus.init(rawValue:))
        let source = q.get("source").flatMap(ReviewSource.init(rawValue:))
        let rating = q.get("rating").flatMap { Int($0) }.flatMap { (1...5).contains($0) ? $0 : nil }
        var filter = ReviewFilter(status: status, source: source, rating: rating)
        filter.limit = 100
        let reviews = try await store.reviews(workspaceID: admin.workspace.id, filter: filter)
        let counts = try await store.reviewCounts(workspaceID: admin.workspace.id)
        var model = try base(context, title: "reviews_title", nav: "reviews")
        model["statuses"] = ReviewStatus.allCases.map {
            [
                "value": $0.rawValue, "label": t[Self.statusKey($0)] ?? $0.rawValue, "selected": $0 == status,
                "count": counts[$0] ?? 0,
            ] as [String: Any]
        }
        model["sources"] = ReviewSource.allCases.map {
            ["value": $0.rawValue, "label": t["source_\($0.rawValue)"] ?? $0.rawValue, "selected": $0 == source]
                as [String: Any]
        }
        model["ratings"] = (1...5).map { ["value": $0, "selected": $0 == rating] as [String: Any] }
        model["reviews"] = reviews.map { reviewRow($0, t, context) }
        model["held_count"] = counts[.held] ?? 0
        model["queue_url"] = "\(SiteURL.adminReviews.path)?status=held"
        model["settings_url"] = SiteURL.adminReviewSettings.path
        let months = try await store.reviewMonths(workspaceID: admin.workspace.id)
        let rate = try await store.reviewRequestRate(workspaceID: admin.workspace.id)
        model["rate"] =
            rate.sent == 0 ? "–" : "\(rate.reviewed) / \(rate.sent) = \(rate.reviewed * 100 / rate.sent) %"
        model["months"] = months.map {
            [
                "month": $0.month, "sent": $0.requestsSent, "reviews": $0.reviews,
                "average": $0.average.map { String(format: "%.2f", $0) } ?? "–",
            ] as [String: Any]
        }
        model["chart"] = ReviewChart.svg(months: months, label: t["review_average_chart"] ?? "")
        let slug = admin.workspace.slug
        model["embed"] = [
            "shop": env.baseURL + SiteURL.widgetShop(slug: slug).path,
            "shop_json": env.baseURL + SiteURL.widgetShopJSON(slug: slug).path,
            "product": env.baseURL + SiteURL.widgetProduct(slug: slug, sku: "SKU").path,
            "feed": env.baseURL + SiteURL.reviewFeed(slug: slug).path,
        ]
        return env.templates.page("reviews", model)
    }

    func reviewPage(_ context: AppContext, message: String?) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        guard let r = try await store.review(workspaceID: admin.workspace.id, id: try context.int64Parameter("id"))
        else { throw DomainError.notFound("Review") }
        var model = try base(context, title: "reviews_title", nav: "reviews")
        model["review"] = reviewRow(r, t, context)
        model["can_moderate"] = admin.role.canEditMail && r.status != .deleted
        model["can_publish"] = r.status == .held || r.status == .hidden
        model["can_hide"] = r.status == .published || r.status == .held
        model["reply_url"] = SiteURL.adminReviewReply(id: r.id).path
        model["moderate_url"] = SiteURL.adminReviewModerate(id: r.id).path
        model["seen"] = r.updatedAt.epochMillis
        model["has_photos"] = !r.photoIDs.isEmpty
        model["photos"] = r.photoIDs.map { ["url": SiteURL.adminReviewPhoto(id: $0).path] }
        if let message { model["message"] = t[message] ?? message }
        return env.templates.page("review", model)
    }

    /// Photos of held and hidden reviews too: the moderation queue must see what it decides on.
    func reviewPhoto(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        guard
            let photo = try await store.reviewPhoto(
                workspaceID: admin.workspace.id, id: try context.int64Parameter("id"), publishedOnly: false)
        else { throw DomainError.notFound("Photo") }
        return Response(
            status: .ok, headers: [.contentType: photo.contentType, .contentSecurityPolicy: "default-src 'none'"],
            body: .init(byteBuffer: ByteBuffer(bytes: photo.bytes)))
    }

    func replyToReview(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let id = try context.int64Parameter("id")
        try await store.replyToReview(
            workspaceID: admin.workspace.id, id: id, reply: fields["reply"] ?? "", actor: admin.user.email)
        env.reviews?.cache.invalidate(workspaceID: admin.workspace.id)
        return Response(status: .seeOther, headers: [.location: SiteURL.adminReview(id: id).path])
    }

    func moderateReview(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let id = try context.int64Parameter("id")
        do {
            try await store.moderateReview(
                workspaceID: admin.workspace.id, id: id, publish: fields["action"] == "publish",
                reason: fields["reason"], actor: admin.user.email, seen: fields["seen"].flatMap { Int64($0) })
        } catch let error as DomainError where error.code == "review_changed" {
            var page = try await reviewPage(context, message: "review_changed")
            page.status = .conflict
            return page
        }
        env.reviews?.cache.invalidate(workspaceID: admin.workspace.id)
        return Response(status: .seeOther, headers: [.location: SiteURL.adminReview(id: id).path])
    }

    // MARK: Settings

    func reviewSettingsPage(
        _ context: AppContext, message: String?, error: String? = nil, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        // The version before the values: a save in between then makes this form stale (a 409 later), never a form
        // that shows older values under a newer version.
        let version = try await store.settingsVersion(.reviews, workspaceID: admin.workspace.id)
        let s = try await store.reviewSettings(workspaceID: admin.workspace.id)
        var model = try base(context, title: "review_settings_title", nav: "reviews")
        model["version"] = version
        model["action"] = SiteURL.adminReviewSettings.path
        model["delay"] = Int64(s.timing.delay)
        model["transit"] = Int64(s.timing.transit)
        model["reminder"] = Int64(s.timing.reminderAfter)
        model["reminders_enabled"] = s.timing.remindersEnabled
        model["categories"] = s.timing.categoryDelays.sorted { $0.key < $1.key }.map { "\($0.key)=\(Int64($0.value))" }
            .joined(separator: "\n")
        // The suggestion is only a placeholder: a widget goes live when the merchant saves a text on purpose.
        model["disclosure"] = s.disclosure
        model["disclosure_suggestion"] = ReviewSettings.suggestedDisclosure(locale: context.locale)
        model["disclosure_missing"] = !s.isLive
        model["open_form"] = s.openForm
        model["token_days"] = Int64(s.tokenLifetime / 86_400)
        model["edit_days"] = Int64(s.editWindow / 86_400)
        model["incentive"] = s.incentive ?? ""
        model["can_edit"] = admin.role.canEditMail
        model["mail_url"] = SiteURL.adminMail.path
        if let message { model["message"] = t[message] ?? message }
        if let error { model["error"] = error }
        return env.templates.page("review_settings", model, status: status)
    }

    func saveReviewSettings(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        var s = try await store.reviewSettings(workspaceID: admin.workspace.id)
        func number(_ key: String) throws -> Double {
            guard let v = fields[key].flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }), v.isFinite else {
                throw DomainError.invalid("number_invalid", "'\(key)' must be a number.", field: key)
            }
            return v
        }
        do {
            s.timing.delay = try number("delay")
            s.timing.transit = try number("transit")
            s.timing.reminderAfter = try number("reminder")
            s.timing.remindersEnabled = fields["reminders_enabled"] != nil
            s.timing.categoryDelays = try ReviewSettingsForm.categories(fields["categories"] ?? "")
            s.disclosure = (fields["disclosure"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            s.openForm = fields["open_form"] != nil
            s.tokenLifetime = try number("token_days") * 86_400
            s.editWindow = try number("edit_days") * 86_400
            let incentive = (fields["incentive"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            s.incentive = incentive.isEmpty ? nil : incentive
            try await store.saveReviewSettings(
                workspaceID: admin.workspace.id, s, actor: admin.user.email, seen: Self.seenVersion(fields))
        } catch let e as DomainError where e.kind == .invalid {
            return try await reviewSettingsPage(context, message: nil, error: e.message)
        } catch let e as DomainError where e.kind == .conflict {
            // The page again, with what the other person saved, and why nothing was saved.
            let message = Strings.table(context.locale)["error_\(e.code)"] ?? e.message
            return try await reviewSettingsPage(context, message: nil, error: message, status: .conflict)
        }
        env.reviews?.cache.invalidate(workspaceID: admin.workspace.id)
        return try await reviewSettingsPage(context, message: "review_settings_saved")
    }
}

enum ReviewSettingsForm {
    /// "name=seconds" per line.
    static func categories(_ text: String) throws -> [String: TimeInterval] {
        var out: [String: TimeInterval] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let kv = trimmed.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty, let seconds = Double(kv[1]) else {
                throw DomainError.invalid(
                    "category_invalid", "Write one category per line as name=seconds (got \"\(trimmed)\").",
                    field: "categories")
            }
            out[kv[0]] = seconds
        }
        return out
    }
}

/// The admin chart: reviews per month as bars and the average rating as a line, as inline SVG (no script).
enum ReviewChart {
    static func svg(months: [ReviewMonth], label: String) -> String {
        let width = 640.0
        let height = 200.0
        let pad = 30.0
        guard !months.isEmpty else { return "" }
        let maxCount = Double(max(1, months.map(\.reviews).max() ?? 1))
        let step = (width - 2 * pad) / Double(months.count)
        var bars = ""
        var points: [String] = []
        var labels = ""
        for (i, m) in months.enumerated() {
            let x = pad + Double(i) * step
            let h = Double(m.reviews) / maxCount * (height - 2 * pad)
            bars +=
                "<rect x=\"\(fmt(x + step * 0.15))\" y=\"\(fmt(height - pad - h))\" width=\"\(fmt(step * 0.7))\" height=\"\(fmt(h))\" fill=\"#c9d3e3\"><title>\(m.month): \(m.reviews)</title></rect>"
            if let avg = m.average {
                let y = height - pad - (avg - 1) / 4 * (height - 2 * pad)
                points.append("\(fmt(x + step / 2)),\(fmt(y))")
            }
            labels +=
                "<text x=\"\(fmt(x + step / 2))\" y=\"\(fmt(height - 8))\" font-size=\"10\" text-anchor=\"middle\">\(m.month)</text>"
        }
        let line =
            points.isEmpty
            ? ""
            : "<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"#b7791f\" stroke-width=\"2\"/>"
        let escaped = label.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        return
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(escaped)\" id=\"review-chart\">\(bars)\(line)\(labels)</svg>"
    }

    static func fmt(_ d: Double) -> String { String(format: "%.1f", d) }
}
