import Foundation
import Hummingbird
import LeadMagnets
import NIOCore
import ReciprocityCore
import Storage

/// The lead magnet API: magnets (create, replace, read), the gift file, the voucher pool, the figures, and a
/// contact's consent proof.
struct LeadAPI {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.apiLeadMagnets.routerPath) { _, context in try await list(context) }
        router.post(SiteURL.Route.apiLeadMagnets.routerPath) { request, context in
            try await save(request, context, id: nil)
        }
        router.get(SiteURL.Route.apiLeadMagnet.routerPath) { _, context in
            try Bodies.jsonResponse(try await dto(try await magnet(context), context))
        }
        router.put(SiteURL.Route.apiLeadMagnet.routerPath) { request, context in
            try await save(request, context, id: try id(context))
        }
        router.put(SiteURL.Route.apiLeadMagnetFile.routerPath) { request, context in try await upload(request, context)
        }
        router.post(SiteURL.Route.apiLeadMagnetVouchers.routerPath) { request, context in
            try await vouchers(request, context)
        }
        router.get(SiteURL.Route.apiLeadMagnetStats.routerPath) { _, context in try await stats(context) }
        router.get(SiteURL.Route.apiContactConsentProof.routerPath) { _, context in
            let principal = try context.principal()
            return try Bodies.jsonResponse(
                try await LeadProof.document(env.store, workspaceID: principal.workspaceID, contactID: try id(context)))
        }
    }

    /// The writable fields; every one is required on create and on replace (PUT replaces the whole magnet).
    struct MagnetInput: Decodable {
        var slug: String
        var name: String
        var locale: String?
        var headline: String
        var body: String?
        var imageURL: String?
        var giftKind: GiftKind
        var giftTitle: String
        var giftURL: String?
        var sampleStock: Int?
        var consentText: String
        var purpose: ConsentPurpose?
        var askName: Bool?
        var fields: [LeadField]?
        var allowedOrigins: [String]?
        var unitCostMinor: Int64?
        var fixedCostMinor: Int64?
        var currency: String?
        var downloadLinkSeconds: Double?
        var pendingSeconds: Double?
        var resendWindowSeconds: Double?
        var minFillSeconds: Double?
        var voucherLowWater: Int?
        var followUps: [FollowUpStep]?
        var active: Bool?

        enum CodingKeys: String, CodingKey {
            case slug, name, locale, headline, body, fields, purpose, currency, active
            case imageURL = "image_url"
            case giftKind = "gift_kind"
            case giftTitle = "gift_title"
            case giftURL = "gift_url"
            case sampleStock = "sample_stock"
            case consentText = "consent_text"
            case askName = "ask_name"
            case allowedOrigins = "allowed_origins"
            case unitCostMinor = "unit_cost_minor"
            case fixedCostMinor = "fixed_cost_minor"
            case downloadLinkSeconds = "download_link_seconds"
            case pendingSeconds = "pending_seconds"
            case resendWindowSeconds = "resend_window_seconds"
            case minFillSeconds = "min_fill_seconds"
            case voucherLowWater = "voucher_low_water"
            case followUps = "follow_ups"
        }

        func magnet(workspaceID: WorkspaceID, id: LeadMagnetID) throws(DomainError) -> LeadMagnet {
            let currency = try Currency(currency ?? "EUR")
            return LeadMagnet(
                id: id, workspaceID: workspaceID, slug: slug, name: name, locale: locale ?? "de", headline: headline,
                body: body ?? "", imageURL: imageURL.flatMap { $0.isEmpty ? nil : $0 }, giftKind: giftKind,
                giftTitle: giftTitle, giftURL: giftURL, sampleStock: sampleStock, consentText: consentText,
                purpose: purpose ?? .newsletter, askName: askName ?? true, fields: fields ?? [],
                allowedOrigins: allowedOrigins ?? [], unitCost: Money(minor: unitCostMinor ?? 0, currency: currency),
                fixedCost: Money(minor: fixedCostMinor ?? 0, currency: currency),
                downloadLinkLifetime: downloadLinkSeconds ?? LeadMagnet.defaultDownloadLinkLifetime,
                pendingLifetime: pendingSeconds ?? LeadMagnet.defaultPendingLifetime,
                resendWindow: resendWindowSeconds ?? LeadMagnet.defaultResendWindow,
                minimumFillTime: minFillSeconds ?? LeadMagnet.defaultMinimumFillTime,
                voucherLowWater: voucherLowWater ?? 20, followUps: followUps ?? [], active: active ?? true)
        }
    }

    struct MagnetDTO: Encodable {
        var id: Int64
        var slug, name, locale, headline, body: String
        var imageURL: String?
        var giftKind: String
        var giftTitle: String
        var giftURL: String?
        var sampleStock: Int?
        var consentText: String
        var consentVersion: Int?
        var purpose: String
        var askName: Bool
        var fields: [LeadField]
        var allowedOrigins: [String]
        var unitCostMinor, fixedCostMinor: Int64
        var currency: String
        var downloadLinkSeconds, pendingSeconds, resendWindowSeconds, minFillSeconds: Int64
        var voucherLowWater: Int
        var followUps: [FollowUpStep]
        var active: Bool
        var fileName: String?
        var fileSize: Int64?
        var fileSha256: String?
        var vouchersAvailable: Int64
        var landingURL: String
        var embedHTML: String
        var createdAt, updatedAt: Date

        enum CodingKeys: String, CodingKey {
            case id, slug, name, locale, headline, body, purpose, fields, currency, active
            case imageURL = "image_url", giftKind = "gift_kind", giftTitle = "gift_title", giftURL = "gift_url"
            case sampleStock = "sample_stock", consentText = "consent_text", consentVersion = "consent_version"
            case askName = "ask_name", allowedOrigins = "allowed_origins", unitCostMinor = "unit_cost_minor"
            case fixedCostMinor = "fixed_cost_minor", downloadLinkSeconds = "download_link_seconds"
            case pendingSeconds = "pending_seconds", resendWindowSeconds = "resend_window_seconds"
            case minFillSeconds = "min_fill_seconds", voucherLowWater = "voucher_low_water", followUps = "follow_ups"
            case fileName = "file_name", fileSize = "file_size", fileSha256 = "file_sha256"
            case vouchersAvailable = "vouchers_available", landingURL = "landing_url", embedHTML = "embed_html"
            case createdAt = "created_at", updatedAt = "updated_at"
        }
    }

    func dto(_ m: LeadMagnet, _ context: AppContext) async throws -> MagnetDTO {
        guard let workspace = try await env.store.workspace(id: m.workspaceID), let leads = env.leads else {
            throw DomainError.notFound("Workspace")
        }
        let text = try await env.store.currentConsentText(m)
        return MagnetDTO(
            id: m.id, slug: m.slug, name: m.name, locale: m.locale, headline: m.headline, body: m.body,
            imageURL: m.imageURL, giftKind: m.giftKind.rawValue, giftTitle: m.giftTitle, giftURL: m.giftURL,
            sampleStock: m.sampleStock, consentText: m.consentText,
            consentVersion: text?.version, purpose: m.purpose.rawValue,
            askName: m.askName, fields: m.fields, allowedOrigins: m.allowedOrigins, unitCostMinor: m.unitCost.minor,
            fixedCostMinor: m.fixedCost.minor, currency: m.unitCost.currency.code,
            downloadLinkSeconds: Int64(m.downloadLinkLifetime), pendingSeconds: Int64(m.pendingLifetime),
            resendWindowSeconds: Int64(m.resendWindow), minFillSeconds: Int64(m.minimumFillTime),
            voucherLowWater: m.voucherLowWater, followUps: m.followUps, active: m.active, fileName: m.file?.name,
            fileSize: m.file?.size, fileSha256: m.file?.sha256,
            vouchersAvailable: try await env.store.availableVouchers(magnetID: m.id),
            landingURL: leads.links.landingURL(workspaceSlug: workspace.slug, magnetSlug: m.slug),
            embedHTML: EmbedSnippet.html(m, workspace: workspace, links: leads.links, textID: text?.id),
            createdAt: m.createdAt, updatedAt: m.updatedAt)
    }

    func id(_ context: AppContext) throws -> Int64 {
        guard let raw = context.parameters.get("id"), let id = Int64(raw) else {
            throw DomainError.notFound("Lead magnet")
        }
        return id
    }

    func magnet(_ context: AppContext) async throws -> LeadMagnet {
        let principal = try context.principal()
        guard let m = try await env.store.leadMagnet(workspaceID: principal.workspaceID, id: try id(context)) else {
            throw DomainError.notFound("Lead magnet")
        }
        return m
    }

    func list(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        var items: [MagnetDTO] = []
        for m in try await env.store.leadMagnets(workspaceID: principal.workspaceID) {
            items.append(try await dto(m, context))
        }
        return try Bodies.jsonResponse(["items": items])
    }

    func save(_ request: Request, _ context: AppContext, id: LeadMagnetID?) async throws -> Response {
        let principal = try context.principal()
        let input = try await Bodies.json(MagnetInput.self, from: request, limit: 256 * 1024)
        let actor = "apikey:\(principal.keyID)"
        var magnet = try input.magnet(workspaceID: principal.workspaceID, id: id ?? 0)
        if let id {
            guard try await env.store.leadMagnet(workspaceID: principal.workspaceID, id: id) != nil else {
                throw DomainError.notFound("Lead magnet")
            }
            magnet = try await env.store.updateLeadMagnet(magnet, actor: actor)
            env.leads?.pages.invalidate(magnetID: id)
        } else {
            magnet = try await env.store.createLeadMagnet(magnet, actor: actor)
        }
        return try Bodies.jsonResponse(try await dto(magnet, context), status: id == nil ? .created : .ok)
    }

    func upload(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let m = try await magnet(context)
        guard let leads = env.leads else { throw DomainError.notFound("Lead magnet") }
        let body = try await Bodies.collect(request, limit: LeadService.maxFileBytes)
        let name = request.uri.queryParameters.get("filename") ?? "download"
        let updated = try await leads.service.upload(
            workspaceID: principal.workspaceID, magnetID: m.id, name: name,
            contentType: request.headers[.contentType] ?? "application/octet-stream",
            bytes: Array(buffer: body), actor: "apikey:\(principal.keyID)")
        return try Bodies.jsonResponse(try await dto(updated, context))
    }

    struct VoucherInput: Decodable {
        var codes: [String]?
        var generate: Int?
        var prefix: String?
    }

    func vouchers(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let m = try await magnet(context)
        let input = try await Bodies.json(VoucherInput.self, from: request, limit: 4 * 1_048_576)
        let codes = try VoucherCodes.batch(
            given: input.codes, generate: input.generate, prefix: input.prefix, random: env.random)
        let (added, duplicates) = try await env.store.addVouchers(
            workspaceID: principal.workspaceID, magnetID: m.id, codes: codes, actor: "apikey:\(principal.keyID)")
        return try Bodies.jsonResponse(
            [
                "added": Int64(added), "duplicates": Int64(duplicates),
                "available": try await env.store.availableVouchers(magnetID: m.id),
            ])
    }

    func stats(_ context: AppContext) async throws -> Response {
        let m = try await magnet(context)
        try await env.leads?.views.flush()
        let s = try await env.store.leadStats(m)
        return try Bodies.jsonResponse(StatsDTO(s))
    }

    struct StatsDTO: Encodable {
        var views, signups, confirmations, downloads, buyers30d, buyers90d, revenueMinor, totalCostMinor: Int64
        var doiRate: Double?
        var costPerLeadMinor, costPerBuyerMinor: Int64?
        var currency: String
        init(_ s: LeadStats) {
            views = s.views
            signups = s.signups
            confirmations = s.confirmations
            downloads = s.downloads
            buyers30d = s.buyers30
            buyers90d = s.buyers90
            revenueMinor = s.revenueMinor
            totalCostMinor = s.totalCostMinor
            doiRate = s.doiRate
            costPerLeadMinor = s.costPerLeadMinor
            costPerBuyerMinor = s.costPerBuyerMinor
            currency = s.currency
        }
        enum CodingKeys: String, CodingKey {
            case views, signups, confirmations, downloads, currency
            case buyers30d = "buyers_30d", buyers90d = "buyers_90d", revenueMinor = "revenue_minor"
            case totalCostMinor = "total_cost_minor", doiRate = "doi_rate", costPerLeadMinor = "cost_per_lead_minor"
            case costPerBuyerMinor = "cost_per_buyer_minor"
        }
    }
}

/// The embeddable plain-HTML form: posts to the landing URL with a static embed token; the origin is checked.
enum EmbedSnippet {
    static func html(_ m: LeadMagnet, workspace: Workspace, links: LeadLinks, textID: Int64?) -> String {
        let t = Strings.table(m.locale)
        let action = links.landingURL(workspaceSlug: workspace.slug, magnetSlug: m.slug)
        func e(_ s: String) -> String { HTMLText.escape(s) }
        var lines = [
            "<form method=\"post\" action=\"\(e(action))\" accept-charset=\"utf-8\" data-reciprocity-lead>",
            "  <input type=\"hidden\" name=\"form_token\" value=\"\(e(links.embedToken(magnetID: m.id, textID: textID)))\">",
            "  <label>\(e(t["lead_email"] ?? "")) <input type=\"email\" name=\"email\" required autocomplete=\"email\"></label>",
        ]
        if m.askName {
            lines.append(
                "  <label>\(e(t["lead_first_name"] ?? "")) <input name=\"first_name\" autocomplete=\"given-name\"></label>"
            )
        }
        for f in m.fields {
            lines.append(
                "  <label>\(e(f.label)) <input name=\"custom_\(e(f.key))\"\(f.required ? " required" : "")></label>")
        }
        if m.giftKind == .sample {
            for field in ["name", "street", "postal_code", "city", "country"] {
                lines.append("  <label>\(e(t["lead_\(field)"] ?? field)) <input name=\"\(field)\" required></label>")
            }
        }
        lines += [
            "  <p style=\"position:absolute;left:-10000px\" aria-hidden=\"true\"><label>\(e(t["lead_honeypot"] ?? "")) <input name=\"website\" tabindex=\"-1\" autocomplete=\"off\"></label></p>",
            "  <p><small>\(e(t["lead_consent_intro"] ?? "")) \(e(m.consentText))</small></p>",
            "  <button type=\"submit\">\(e(t["lead_submit"] ?? ""))</button>",
            "</form>",
            "<script src=\"\(e(action))/embed.js\" async></script>",
        ]
        return lines.joined(separator: "\n")
    }
}
