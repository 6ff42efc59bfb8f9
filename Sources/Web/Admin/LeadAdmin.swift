import Foundation
import Hummingbird
import LeadMagnets
import NIOCore
import ReciprocityCore
import Storage

/// Admin pages of the lead magnet capability: the list, create, edit and preview, the gift file, the voucher
/// pool, the fulfilment list, figures with a chart, and the printable proof of consent per contact.
extension AdminRoutes {
    func registerLeads(on router: Router<AppContext>) {
        router.get(SiteURL.Route.adminMagnets.routerPath) { _, context in try await magnetList(context) }
        router.post(SiteURL.Route.adminMagnets.routerPath) { request, context in
            try await createMagnet(request, context)
        }
        router.get(SiteURL.Route.adminMagnet.routerPath) { _, context in try await magnetPage(context, message: nil) }
        router.post(SiteURL.Route.adminMagnet.routerPath) { request, context in try await saveMagnet(request, context) }
        router.get(SiteURL.Route.adminMagnetPreview.routerPath) { _, context in try await previewMagnet(context) }
        router.post(SiteURL.Route.adminMagnetFile.routerPath) { request, context in
            try await uploadFile(request, context)
        }
        router.post(SiteURL.Route.adminMagnetVouchers.routerPath) { request, context in
            try await addVouchers(request, context)
        }
        router.get(SiteURL.Route.adminMagnetShipments.routerPath) { _, context in try await shipmentsCSV(context) }
        router.post(SiteURL.Route.adminMagnetShipped.routerPath) { request, context in
            try await markShipped(request, context)
        }
        router.get(SiteURL.Route.adminContactProof.routerPath) { _, context in try await proofPage(context) }
        router.get(SiteURL.Route.adminContactProofJSON.routerPath) { _, context in
            let admin = try admin(context)
            return try Bodies.jsonResponse(
                try await LeadProof.document(store, workspaceID: admin.workspace.id, contactID: try magnetID(context)))
        }
    }

    var leads: LeadModule { get throws { try env.requireLeads() } }

    func magnetID(_ context: AppContext) throws -> Int64 {
        guard let raw = context.parameters.get("id"), let id = Int64(raw) else { throw DomainError.notFound("Page") }
        return id
    }

    func loadMagnet(_ context: AppContext) async throws -> LeadMagnet {
        let admin = try admin(context)
        guard let m = try await store.leadMagnet(workspaceID: admin.workspace.id, id: try magnetID(context)) else {
            throw DomainError.notFound("Lead magnet")
        }
        return m
    }

    func magnetList(_ context: AppContext, error: String? = nil) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "magnets_title", nav: "magnets")
        var rows: [[String: Any]] = []
        for m in try await store.leadMagnets(workspaceID: admin.workspace.id) {
            let s = try await store.leadStats(m)
            rows.append([
                "name": m.name, "slug": m.slug, "url": SiteURL.adminMagnet(id: m.id).path,
                "kind": t["gift_kind_\(m.giftKind.rawValue)"] ?? m.giftKind.rawValue, "active": m.active,
                "views": s.views, "signups": s.signups, "confirmations": s.confirmations,
                "doi_rate": s.doiRate.map { String(format: "%.0f %%", $0 * 100) } ?? "–",
            ])
        }
        model["magnets"] = rows
        model["has_magnets"] = !rows.isEmpty
        model["action"] = SiteURL.adminMagnets.path
        model["kinds"] = GiftKind.allCases.map { ["value": $0.rawValue, "label": t["gift_kind_\($0.rawValue)"] ?? ""] }
        if let error { model["error"] = error }
        return env.templates.page("magnets", model, status: error == nil ? .ok : .unprocessableContent)
    }

    func createMagnet(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let f = try await form(request, context)
        do {
            let m = try await store.createLeadMagnet(
                LeadMagnet(
                    workspaceID: admin.workspace.id, slug: f["slug"] ?? "", name: f["name"] ?? "",
                    locale: f["locale"] ?? "de", headline: f["headline"] ?? "", body: "",
                    giftKind: GiftKind(rawValue: f["gift_kind"] ?? "") ?? .file, giftTitle: f["gift_title"] ?? "",
                    giftURL: nonEmpty(f["gift_url"]), sampleStock: (f["gift_kind"] == "sample") ? 0 : nil,
                    consentText: f["consent_text"] ?? "", active: false),
                actor: "user:\(admin.user.id)")
            throw Redirect(to: SiteURL.adminMagnet(id: m.id).path)
        } catch let e as DomainError {
            return try await magnetList(context, error: e.message)
        }
    }

    func nonEmpty(_ s: String?) -> String? {
        guard let s = s?.trimmingCharacters(in: .whitespacesAndNewlines), !s.isEmpty else { return nil }
        return s
    }

    /// `stockSeen`: with `edited`, the stock the form was first shown with, kept through an error so that the save
    /// after it changes the stock by what the editor typed (`updateLeadMagnet(stockSeen:)`).
    func magnetPage(
        _ context: AppContext, message: String?, error: String? = nil, edited: LeadMagnet? = nil,
        stockSeen: Int? = nil
    )
        async throws -> Response
    {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        let saved = try await loadMagnet(context)
        let m = edited ?? saved
        let leads = try leads
        try await leads.views.flush()
        let stats = try await store.leadStats(saved)
        var model = try base(context, title: "magnets_title", nav: "magnets")
        let money = { (minor: Int64?) -> String in
            minor.map { Money(minor: $0, currency: saved.unitCost.currency).formatted(locale: context.locale) } ?? "–"
        }
        model["magnet"] =
            [
                "id": m.id, "name": m.name, "slug": m.slug, "headline": m.headline, "body": m.body,
                "image_url": m.imageURL ?? "", "gift_title": m.giftTitle, "gift_url": m.giftURL ?? "",
                "sample_stock": m.sampleStock.map(String.init) ?? "", "consent_text": m.consentText,
                // The stock the form was first shown with: a save changes the stock by the difference to the typed
                // value (`updateLeadMagnet(stockSeen:)`).
                "sample_stock_seen": (edited == nil ? saved.sampleStock : stockSeen).map(String.init) ?? "",
                "ask_name": m.askName,
                "fields": m.fields.map { "\($0.key)|\($0.label)|\($0.required ? "pflicht" : "")" }.joined(
                    separator: "\n"),
                "origins": m.allowedOrigins.joined(separator: "\n"), "unit_cost": String(m.unitCost.minor),
                "fixed_cost": String(m.fixedCost.minor), "download_seconds": String(Int64(m.downloadLinkLifetime)),
                "pending_seconds": String(Int64(m.pendingLifetime)), "resend_seconds": String(Int64(m.resendWindow)),
                "min_fill": String(Int64(m.minimumFillTime)), "low_water": String(m.voucherLowWater),
                "active": m.active,
                "is_file": saved.giftKind == .file, "is_voucher": saved.giftKind == .voucher,
                "is_sample": saved.giftKind == .sample,
            ] as [String: Any]
        model["kinds"] = GiftKind.allCases.map {
            ["value": $0.rawValue, "label": t["gift_kind_\($0.rawValue)"] ?? "", "selected": $0 == m.giftKind]
        }
        model["locales"] = ["de", "en"].map { ["value": $0, "selected": $0 == m.locale] }
        model["steps"] = (0..<LeadMagnet.maxFollowUps).map { i -> [String: Any] in
            let s = i < m.followUps.count ? m.followUps[i] : nil
            return [
                "n": i, "after": s.map { String($0.afterSeconds) } ?? "", "subject": s?.subject ?? "",
                "body": s?.body ?? "",
            ]
        }
        if let file = saved.file {
            model["file"] = ["name": file.name, "size": file.size, "type": file.contentType, "sha256": file.sha256]
        }
        // "Shipped" marks only what the merchant could have exported when the page was shown.
        model["shipped_up_to"] =
            try await store.shipments(workspaceID: admin.workspace.id, magnetID: saved.id)
            .filter { $0.state == "queued" }.map(\.signupID).max() ?? 0
        let available = try await store.availableVouchers(magnetID: saved.id)
        model["vouchers_available"] = available
        model["vouchers_low"] = saved.giftKind == .voucher && available <= Int64(saved.voucherLowWater)
        model["stats"] =
            [
                "views": stats.views, "signups": stats.signups, "confirmations": stats.confirmations,
                "downloads": stats.downloads, "buyers30": stats.buyers30, "buyers90": stats.buyers90,
                "doi_rate": stats.doiRate.map { String(format: "%.1f %%", $0 * 100) } ?? "–",
                "revenue": money(stats.revenueMinor), "cost": money(stats.totalCostMinor),
                "cost_per_lead": money(stats.costPerLeadMinor), "cost_per_buyer": money(stats.costPerBuyerMinor),
            ] as [String: Any]
        let since = Store.utcDay(env.clock.now().addingTimeInterval(-90 * 86_400))
        model["chart"] = LeadChart.svg(
            days: try await store.leadDays(magnetID: saved.id, since: since), label: t["magnet_chart"] ?? "")
        model["urls_magnet"] = [
            "save": SiteURL.adminMagnet(id: saved.id).path, "preview": SiteURL.adminMagnetPreview(id: saved.id).path,
            "file": SiteURL.adminMagnetFile(id: saved.id).path,
            "vouchers": SiteURL.adminMagnetVouchers(id: saved.id).path,
            "shipments": SiteURL.adminMagnetShipments(id: saved.id).path,
            "shipped": SiteURL.adminMagnetShipped(id: saved.id).path,
            "landing": leads.links.landingURL(workspaceSlug: admin.workspace.slug, magnetSlug: saved.slug),
        ]
        model["embed_html"] = EmbedSnippet.html(
            saved, workspace: admin.workspace, links: leads.links,
            textID: try await store.currentConsentText(saved)?.id)
        if let message { model["message"] = message }
        if let error { model["error"] = error }
        return env.templates.page("magnet", model, status: error == nil ? .ok : .unprocessableContent)
    }

    func saveMagnet(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let f = try await form(request, context, limit: Self.longFormLimit)
        var m = try await loadMagnet(context)
        m.name = f["name"] ?? ""
        m.slug = f["slug"] ?? ""
        m.locale = f["locale"] ?? "de"
        m.headline = f["headline"] ?? ""
        m.body = f["body"] ?? ""
        m.imageURL = nonEmpty(f["image_url"])
        m.giftKind = GiftKind(rawValue: f["gift_kind"] ?? "") ?? m.giftKind
        m.giftTitle = f["gift_title"] ?? ""
        m.giftURL = nonEmpty(f["gift_url"])
        // Numbers are whole and not negative (`wholeNumber`); the first one that is not comes back as the form's
        // error, never read as 0 (a stock of 0, which the stock delta would then apply). The rest is still read, so
        // the form shows everything the editor typed.
        var badNumber: String?
        func whole(_ key: String) -> Int64? {
            do { return try Self.wholeNumber(f, key) } catch {
                badNumber = badNumber ?? error.message
                return nil
            }
        }
        m.sampleStock = whole("sample_stock").map(Int.init) ?? (m.giftKind == .sample ? 0 : nil)
        m.consentText = f["consent_text"] ?? ""
        m.askName = f["ask_name"] == "on"
        m.active = f["active"] == "on"
        let seconds = { (key: String, fallback: TimeInterval) in whole(key).map(TimeInterval.init) ?? fallback }
        m.downloadLinkLifetime = seconds("download_seconds", m.downloadLinkLifetime)
        m.pendingLifetime = seconds("pending_seconds", m.pendingLifetime)
        m.resendWindow = seconds("resend_seconds", m.resendWindow)
        m.minimumFillTime = seconds("min_fill", m.minimumFillTime)
        m.voucherLowWater = whole("low_water").map(Int.init) ?? m.voucherLowWater
        m.unitCost = Money(minor: whole("unit_cost") ?? 0, currency: m.unitCost.currency)
        m.fixedCost = Money(minor: whole("fixed_cost") ?? 0, currency: m.unitCost.currency)
        m.allowedOrigins = (f["origins"] ?? "").split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        m.fields = (f["fields"] ?? "").split(whereSeparator: \.isNewline).compactMap { line in
            let p = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard let key = p.first, !key.isEmpty else { return nil }
            return LeadField(key: key, label: p.count > 1 ? p[1] : key, required: p.count > 2 && !p[2].isEmpty)
        }
        m.followUps = (0..<LeadMagnet.maxFollowUps).compactMap { i in
            guard let after = nonEmpty(f["step\(i)_after"]).flatMap({ Int64($0) }) else { return nil }
            return FollowUpStep(
                afterSeconds: after, subject: f["step\(i)_subject"] ?? "", body: f["step\(i)_body"] ?? "")
        }
        let stockSeen = nonEmpty(f["sample_stock_seen"]).flatMap { Int($0) }
        if let badNumber {
            return try await magnetPage(context, message: nil, error: badNumber, edited: m, stockSeen: stockSeen)
        }
        do {
            _ = try await store.updateLeadMagnet(m, actor: "user:\(admin.user.id)", stockSeen: stockSeen)
            try leads.pages.invalidate(magnetID: m.id)
        } catch let e as DomainError {
            return try await magnetPage(context, message: nil, error: e.message, edited: m, stockSeen: stockSeen)
        }
        return try await magnetPage(context, message: Strings.table(context.locale)["magnet_saved"])
    }

    func previewMagnet(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let m = try await loadMagnet(context)
        let pages = LeadPages(env: env)
        var r = env.templates.page(
            "lead_landing",
            pages.landingModel(
                m, workspace: admin.workspace, version: try await store.consentTextVersionNumber(m),
                token: "preview", preview: true))
        r.headers[.cacheControl] = "no-store"
        r.headers[.contentSecurityPolicy] = LeadPages.landingPolicy
        return r
    }

    func checkMultipartCSRF(_ form: MultipartForm, _ context: AppContext) throws {
        let admin = try admin(context)
        guard constantTimeEquals(form["_csrf"] ?? "", admin.csrfToken) else {
            throw DomainError(
                .forbidden, code: "csrf_invalid", "The form expired. Please reload the page and try again.")
        }
        try require(admin.role.canEditMail, context)
    }

    func uploadFile(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let m = try await loadMagnet(context)
        let form = try await MultipartForm.read(request, limit: LeadService.maxFileBytes + 64 * 1024)
        try checkMultipartCSRF(form, context)
        guard let file = form.files("file").first else {
            return try await magnetPage(context, message: nil, error: "No file was chosen.")
        }
        do {
            _ = try await leads.service.upload(
                workspaceID: admin.workspace.id, magnetID: m.id, name: file.filename ?? "download",
                contentType: file.contentType ?? "application/octet-stream", bytes: file.bytes,
                actor: "user:\(admin.user.id)")
        } catch let e as DomainError {
            return try await magnetPage(context, message: nil, error: e.message)
        }
        return try await magnetPage(context, message: Strings.table(context.locale)["magnet_saved"])
    }

    func addVouchers(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let m = try await loadMagnet(context)
        let form = try await MultipartForm.read(request, limit: 4 * 1_048_576)
        try checkMultipartCSRF(form, context)
        do {
            var given: [String]? = nil
            let pasted = (form["codes"] ?? "") + "\n" + (form.files("file").first?.text ?? "")
            if !pasted.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                // CSV: the first column; a header "code" is skipped.
                let table = try CSV.parse(pasted.trimmingCharacters(in: .whitespacesAndNewlines))
                given = [table.header.first ?? ""] + table.rows.compactMap(\.fields.first)
            }
            let codes = try VoucherCodes.batch(
                given: given, generate: given == nil ? nonEmpty(form["generate"]).flatMap { Int($0) } : nil,
                prefix: form["prefix"], random: env.random)
            let (added, duplicates) = try await store.addVouchers(
                workspaceID: admin.workspace.id, magnetID: m.id, codes: codes, actor: "user:\(admin.user.id)")
            let text = (Strings.table(context.locale)["magnet_vouchers_added"] ?? "")
                .replacingOccurrences(of: "{n}", with: String(added))
                .replacingOccurrences(of: "{d}", with: String(duplicates))
            return try await magnetPage(context, message: text)
        } catch let e as DomainError {
            return try await magnetPage(context, message: nil, error: e.message)
        }
    }

    func shipmentsCSV(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let m = try await loadMagnet(context)
        var rows = [
            [
                "signup", "state", "email", "name", "street", "postal_code", "city", "country", "created_at",
                "shipped_at",
            ]
        ]
        let iso = ISO8601DateFormatter()
        for s in try await store.shipments(workspaceID: admin.workspace.id, magnetID: m.id) {
            rows.append([
                String(s.signupID), s.state, s.email, s.address?.name ?? "", s.address?.street ?? "",
                s.address?.postalCode ?? "", s.address?.city ?? "", s.address?.country ?? "",
                iso.string(from: s.createdAt), s.shippedAt.map(iso.string) ?? "",
            ])
        }
        return Bodies.download(
            CSV.write(rows), contentType: "text/csv; charset=utf-8", filename: "\(m.slug)-shipments.csv")
    }

    func markShipped(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let f = try await form(request, context)
        let m = try await loadMagnet(context)
        let upTo = Int64(f["up_to"] ?? "") ?? 0
        let queued = try await store.shipments(workspaceID: admin.workspace.id, magnetID: m.id).filter {
            $0.state == "queued" && $0.signupID <= upTo
        }
        try await store.markShipped(
            workspaceID: admin.workspace.id, magnetID: m.id, signupIDs: queued.map(\.signupID),
            actor: "user:\(admin.user.id)")
        return try await magnetPage(context, message: Strings.table(context.locale)["magnet_saved"])
    }

    // MARK: Proof

    func proofPage(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        let id = try magnetID(context)
        guard let contact = try await store.contact(workspaceID: admin.workspace.id, id: id) else {
            throw DomainError.notFound("Contact")
        }
        let proofs = try await store.signupProofs(workspaceID: admin.workspace.id, contactID: id)
        let record = try await store.consentRecord(workspaceID: admin.workspace.id, contactID: id)
        func evidence(_ e: ConsentEvidence?) -> [String: Any] {
            ["at": when(e?.at, context), "ip": e?.ip ?? "–", "ua": e?.userAgent ?? "–"]
        }
        var model = try base(context, title: "proof_title", nav: "contacts")
        model["contact"] =
            [
                "id": contact.id, "email": contact.email, "name": contact.displayName,
                "url": SiteURL.adminContact(id: contact.id).path,
            ] as [String: Any]
        model["generated"] = when(env.clock.now(), context)
        model["json_url"] = SiteURL.adminContactProofJSON(id: contact.id).path
        model["signups"] = proofs.map { p -> [String: Any] in
            var s: [String: Any] = [
                "magnet": p.magnetName, "slug": p.magnetSlug, "purpose": p.signup.purpose.rawValue,
                "text_label": (t["proof_text"] ?? "").replacingOccurrences(of: "{v}", with: String(p.text.version))
                    .replacingOccurrences(of: "{locale}", with: p.text.locale),
                "text_version": p.text.version, "text": p.text.body, "form": p.signup.formID,
                "page": p.signup.pageURL ?? "–", "signup": evidence(p.signup.signup), "state": p.signup.state.rawValue,
                "confirmed": p.signup.confirmation != nil, "confirmation": evidence(p.signup.confirmation),
            ]
            if let mail = p.confirmationMail {
                s["mail"] =
                    [
                        "subject": mail.subject, "message_id": mail.messageID, "state": mail.state.rawValue,
                        "sent_at": when(mail.sentAt, context), "raw": mail.message ?? "–",
                    ] as [String: Any]
            }
            return s
        }
        model["has_signups"] = !proofs.isEmpty
        model["events"] = record.history.map { e -> [String: Any] in
            [
                "at": when(e.at, context), "purpose": e.purpose, "action": e.action, "state": e.state,
                "source": e.source, "version": e.textVersion.map(String.init) ?? "–", "ip": e.ip ?? "–",
            ]
        }
        return env.templates.page("proof", model)
    }
}

/// A contact's proof of consent as one JSON document (API and admin): each lead magnet signup with the exact
/// text version shown, the form and page, signup and confirmation time, IP and user agent, and the confirmation
/// mail as it went into the outbox; plus the consents and their history.
enum LeadProof {
    struct Document: Encodable {
        var generatedAt: Date
        var workspace: String
        var contact: ContactExport.ContactData
        var signups: [Signup]
        var consents: [ContactExport.ConsentData]
        var events: [ContactExport.ConsentEventData]
    }

    struct Signup: Encodable {
        var magnet: String
        var purpose: String
        var state: String
        var text: Text
        var formId: String
        var pageUrl: String?
        var signup: ConsentEvidence
        var confirmation: ConsentEvidence?
        var confirmationMail: Mail?
    }

    struct Text: Encodable {
        var id: Int64
        var version: Int
        var locale: String
        var body: String
        var createdAt: Date
    }

    struct Mail: Encodable {
        var outboxId: Int64
        var messageId: String
        var subject: String
        var state: String
        var sentAt: Date?
        var message: String?
    }

    static func document(_ store: Store, workspaceID: WorkspaceID, contactID: ContactID) async throws -> Document {
        guard let workspace = try await store.workspace(id: workspaceID),
            let contact = try await store.contact(workspaceID: workspaceID, id: contactID)
        else { throw DomainError.notFound("Contact") }
        let record = try await store.consentRecord(workspaceID: workspaceID, contactID: contactID)
        let proofs = try await store.signupProofs(workspaceID: workspaceID, contactID: contactID)
        return Document(
            generatedAt: store.clock.now(), workspace: workspace.name, contact: .init(contact),
            signups: proofs.map { p in
                Signup(
                    magnet: p.magnetSlug, purpose: p.signup.purpose.rawValue, state: p.signup.state.rawValue,
                    text: Text(
                        id: p.text.id, version: p.text.version, locale: p.text.locale, body: p.text.body,
                        createdAt: p.text.createdAt), formId: p.signup.formID, pageUrl: p.signup.pageURL,
                    signup: p.signup.signup, confirmation: p.signup.confirmation,
                    confirmationMail: p.confirmationMail.map {
                        Mail(
                            outboxId: $0.id, messageId: $0.messageID, subject: $0.subject, state: $0.state.rawValue,
                            sentAt: $0.sentAt, message: $0.message)
                    })
            }, consents: record.consents, events: record.history)
    }
}

/// Sign-ups per day as bars and confirmations as a line, inline SVG without script.
/// Bars for the first series (`signups`), a line for the second (`confirmations`); the referral figures use it for
/// clicks and referred orders.
enum LeadChart {
    static func svg(days: [LeadDay], label: String, id: String = "magnet-chart") -> String {
        guard !days.isEmpty else { return "" }
        let (width, height, pad) = (640.0, 200.0, 30.0)
        let top = Double(max(1, days.map { max($0.signups, $0.confirmations) }.max() ?? 1))
        let step = (width - 2 * pad) / Double(days.count)
        var bars = ""
        var points: [String] = []
        for (i, d) in days.enumerated() {
            let x = pad + Double(i) * step
            let h = Double(d.signups) / top * (height - 2 * pad)
            bars +=
                "<rect x=\"\(ReviewChart.fmt(x + step * 0.15))\" y=\"\(ReviewChart.fmt(height - pad - h))\" width=\"\(ReviewChart.fmt(step * 0.7))\" height=\"\(ReviewChart.fmt(h))\" fill=\"#c9d3e3\"><title>\(d.day): \(d.signups) / \(d.confirmations)</title></rect>"
            let y = height - pad - Double(d.confirmations) / top * (height - 2 * pad)
            points.append("\(ReviewChart.fmt(x + step / 2)),\(ReviewChart.fmt(y))")
        }
        let first = "<text x=\"\(Int(pad))\" y=\"\(Int(height - 8))\" font-size=\"10\">\(days.first!.day)</text>"
        let last =
            "<text x=\"\(Int(width - pad))\" y=\"\(Int(height - 8))\" font-size=\"10\" text-anchor=\"end\">\(days.last!.day)</text>"
        return
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(HTMLText.escape(label))\" id=\"\(id)\">\(bars)<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"#1d6b3a\" stroke-width=\"2\"/>\(first)\(last)</svg>"
    }
}
