import Foundation
import HTTPTypes
import Hummingbird
import LeadMagnets
import NIOCore
import ReciprocityCore
import Storage

/// The public side of lead magnets: the landing page (cached, with a fresh form token per response), the signup
/// (landing and embedded forms), the confirmation page, the gift page and its file, and a fresh link for an
/// expired one. No login anywhere: the signed tokens are the authorization.
struct LeadPages: Sendable {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.landing.routerPath) { request, context in try await landing(request, context) }
        router.post(SiteURL.Route.landing.routerPath) { request, context in try await submit(request, context) }
        router.get(SiteURL.Route.landingToken.routerPath) { request, context in
            try await formToken(request, context)
        }
        router.get(SiteURL.Route.landingScript.routerPath) { _, context in try await script(context) }
        router.get(SiteURL.Route.publicDOI.routerPath) { _, context in try await doiPage(context) }
        router.post(SiteURL.Route.publicDOI.routerPath) { request, context in try await confirm(request, context) }
        router.get(SiteURL.Route.publicGift.routerPath) { _, context in try await giftPage(context) }
        router.get(SiteURL.Route.publicGiftFile.routerPath) { _, context in try await file(context) }
        router.post(SiteURL.Route.publicGiftRenew.routerPath) { request, context in try await renew(request, context) }
    }

    var leads: LeadModule { get throws { try env.requireLeads() } }

    func page(
        _ name: String, locale: String, title: String, _ extra: [String: Any], workspace: Workspace? = nil,
        status: HTTPResponse.Status = .ok
    ) -> Response {
        env.publicPage(name, locale: locale, title: title, extra, workspace: workspace, status: status)
    }

    // MARK: Landing page

    func parameters(_ context: AppContext) throws -> (String, String) {
        guard let ws = context.parameters.get("workspace"), let slug = context.parameters.get("slug") else {
            throw DomainError.notFound("Page")
        }
        return (ws, slug)
    }

    /// The magnet behind a landing URL, from the page cache or the database.
    /// The cache key of a landing URL: workspace and magnet slug.
    func key(_ context: AppContext) throws -> String {
        let (ws, slug) = try parameters(context)
        return ws + "/" + slug
    }

    func entry(_ context: AppContext) async throws -> LandingCache.Entry {
        let (ws, slug) = try parameters(context)
        let leads = try leads
        let key = ws + "/" + slug
        if let hit = leads.pages.get(key) { return hit }
        guard let workspace = try await env.store.workspace(slug: ws),
            let magnet = try await env.store.leadMagnet(workspaceID: workspace.id, slug: slug), magnet.active
        else { throw DomainError.notFound("Page") }
        let text = try await env.store.currentConsentText(magnet)
        let html = env.templates.render(
            "lead_landing",
            landingModel(magnet, workspace: workspace, version: text?.version, token: LandingCache.tokenMark))
        return leads.pages.put(key, page: html, magnet: magnet, workspace: workspace, textID: text?.id)
    }

    func landing(_ request: Request, _ context: AppContext) async throws -> Response {
        let entry = try await entry(context)
        let leads = try leads
        leads.views.count(entry.magnet.id)
        let body = leads.pages.body(entry, key: try key(context)) { issued in
            leads.links.formToken(magnetID: entry.magnet.id, issuedAt: issued, textID: entry.textID)
        }
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                .contentSecurityPolicy: Self.landingPolicy, HTTPField.Name("X-Frame-Options")!: "DENY",
            ], body: .init(byteBuffer: body))
    }

    /// The public pages' policy, plus images from any https origin: the merchant's image URL.
    static let landingPolicy =
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

    func landingModel(
        _ m: LeadMagnet, workspace: Workspace, version: Int?, token: String, values: [String: String] = [:],
        errors: [String: String] = [:], retry: Bool = false, preview: Bool = false
    ) -> [String: Any] {
        let t = Strings.table(m.locale)
        var model: [String: Any] = [
            "headline": m.headline, "paragraphs": paragraphs(m.body), "gift_title": m.giftTitle,
            "action": SiteURL.landing(workspace: workspace.slug, slug: m.slug).path, "form_token": token,
            "consent_text": m.consentText, "consent_version": version.map(String.init) ?? "",
            "ask_name": m.askName, "email_value": values["email"] ?? "", "first_name_value": values["first_name"] ?? "",
            "is_sample": m.giftKind == .sample, "sold_out": m.giftKind == .sample && (m.sampleStock ?? 0) <= 0,
            "custom": m.fields.map { f -> [String: Any] in
                [
                    "name": "custom_\(f.key)", "label": f.label, "required": f.required,
                    "value": values["custom_\(f.key)"] ?? "", "invalid": errors["custom_\(f.key)"] != nil,
                ]
            },
            "address": ["name", "street", "postal_code", "city", "country"].map { field -> [String: Any] in
                [
                    "name": field, "label": t["lead_\(field)"] ?? field,
                    "value": values[field] ?? (field == "country" ? "DE" : ""), "invalid": errors[field] != nil,
                ]
            },
            "preview": preview, "retry": retry,
        ]
        if let image = m.imageURL { model["image_url"] = image }
        if errors["email"] != nil { model["email_invalid"] = true }
        if !errors.isEmpty {
            model["has_errors"] = true
            model["errors"] = errors.sorted { $0.key < $1.key }.map { field, code -> [String: Any] in
                ["field": field, "message": t["lead_error_\(code)"] ?? code]
            }
        }
        return env.publicModel(locale: m.locale, title: m.headline, model, workspace: workspace)
    }

    func paragraphs(_ text: String) -> [[String: Any]] {
        LeadMagnet.paragraphs(text).map { ["text": $0] }
    }

    // MARK: Signup

    func wantsJSON(_ request: Request) -> Bool {
        request.headers[.accept]?.contains("application/json") == true
    }

    /// The answer to every accepted signup, whatever happened to the address: it never says whether it is known.
    func pending(_ request: Request, _ entry: LandingCache.Entry, cors: String?) throws -> Response {
        if wantsJSON(request) {
            var r = try Bodies.jsonResponse(["status": "pending"])
            if let cors { r.headers[.accessControlAllowOrigin] = cors; r.headers[.vary] = "Origin" }
            return r
        }
        return page(
            "lead_pending", locale: entry.magnet.locale, title: "lead_pending_title",
            ["gift_title": entry.magnet.giftTitle], workspace: entry.workspace)
    }

    func submit(_ request: Request, _ context: AppContext) async throws -> Response {
        let entry = try await entry(context)
        let leads = try leads
        let magnet = entry.magnet
        let ip = env.clientIP(request, context)
        guard env.publicFormLimiter.allow("lead:\(WebEnvironment.limiterKey(ip: ip))") else {
            throw DomainError(
                .rateLimited, code: "rate_limited", "Too many sign-ups from this address. Please wait a minute.")
        }
        let form = try await Bodies.form(request, limit: 16 * 1024)
        let origin = request.headers[.origin]
        let token = leads.links.readFormToken(form["form_token"] ?? "", magnetID: magnet.id)
        let cors = origin.flatMap { magnet.allowsOrigin($0) ? $0 : nil }
        let verdict = FormGuard.check(
            honeypot: form["website"] ?? "", issuedAt: token.issuedAt, embedded: token.isEmbedded,
            origin: magnet.origin(origin, ownOrigin: env.baseURL), minimumFillTime: magnet.minimumFillTime,
            now: env.clock.now())
        switch verdict {
        case .honeypot:
            env.logger.info("lead signup: honeypot filled", metadata: ["magnet": "\(magnet.slug)"])
            return try pending(request, entry, cors: cors)
        case .foreignOrigin:
            throw DomainError(
                .forbidden, code: "origin_not_allowed", Strings.table(magnet.locale)["lead_foreign_origin"] ?? "")
        case .badToken:
            throw DomainError(.forbidden, code: "form_expired", Strings.table(magnet.locale)["lead_reload"] ?? "")
        case .tooFast:
            return try formAgain(request, context, entry, values: form, errors: [:], retry: true, cors: cors)
        case .pass:
            break
        }
        let input = SignupInput(
            email: form["email"] ?? "", firstName: magnet.askName ? form["first_name"] ?? "" : "",
            custom: Dictionary(
                uniqueKeysWithValues: magnet.fields.map { ($0.key, form["custom_\($0.key)"] ?? "") }),
            address: magnet.giftKind == .sample
                ? PostalAddress(
                    name: form["name"], street: form["street"] ?? "", postalCode: form["postal_code"] ?? "",
                    city: form["city"] ?? "", country: form["country"] ?? "") : nil)
        // Per mailbox (by its identity: case, dots and +tags at Gmail, +tags elsewhere all reach one inbox): beyond
        // a few attempts an hour, the answer stays the same and no mail goes out.
        if let email = try? EmailAddress(input.email),
            !env.signupEmailLimiter.allow("lead:\(email.canonicalIdentity)")
        {
            env.logger.info("lead signup: address limit", metadata: ["magnet": "\(magnet.slug)"])
            return try pending(request, entry, cors: cors)
        }
        let embedded = token.isEmbedded
        let pageURL =
            request.headers[.referer].map { String($0.prefix(2048)) }
            ?? (embedded
                ? origin : env.baseURL + SiteURL.landing(workspace: entry.workspace.slug, slug: magnet.slug).path)
        let signupContext = SignupContext(
            formID: "lead_magnet:\(magnet.slug)" + (embedded ? ":embed" : ""), pageURL: pageURL,
            evidence: ConsentEvidence(
                at: env.clock.now(), ip: ip,
                userAgent: request.headers[.userAgent].map { String($0.prefix(512)) }), shownTextID: token.textID)
        do {
            try await leads.service.signup(
                workspace: entry.workspace, magnet: magnet, input: input, locale: magnet.locale,
                context: signupContext)
        } catch let e as SignupErrors {
            return try formAgain(request, context, entry, values: form, errors: e.byField, retry: false, cors: cors)
        }
        return try pending(request, entry, cors: cors)
    }

    /// The form again, with what the person typed and what to fix (or "send again" after a too-fast submit).
    func formAgain(
        _ request: Request, _ context: AppContext, _ entry: LandingCache.Entry, values: [String: String],
        errors: [String: String], retry: Bool, cors: String?
    ) throws -> Response {
        if wantsJSON(request) {
            let field = errors.keys.sorted().first
            let t = Strings.table(entry.magnet.locale)
            let message = retry ? t["lead_retry"] : field.flatMap { errors[$0] }.flatMap { t["lead_error_\($0)"] }
            var r = Problem.from(
                DomainError(
                    .invalid, code: retry ? "too_fast" : field.flatMap { errors[$0] } ?? "invalid", message ?? "",
                    field: field)
            ).0.response(requestID: context.requestID, path: request.uri.path)
            if let cors { r.headers[.accessControlAllowOrigin] = cors; r.headers[.vary] = "Origin" }
            return r
        }
        let token = try leads.links.formToken(
            magnetID: entry.magnet.id, issuedAt: env.clock.now(), textID: entry.textID)
        var response = env.templates.page(
            "lead_landing",
            landingModel(
                entry.magnet, workspace: entry.workspace, version: nil, token: token, values: values, errors: errors,
                retry: retry),
            status: .unprocessableContent)
        response.headers[.contentSecurityPolicy] = Self.landingPolicy
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        return response
    }

    /// A fresh time-stamped token for the optional script of an embedded form (CORS for the allowed origins).
    func formToken(_ request: Request, _ context: AppContext) async throws -> Response {
        let entry = try await entry(context)
        var r = try Bodies.jsonResponse(
            [
                "form_token": try leads.links.formToken(
                    magnetID: entry.magnet.id, issuedAt: env.clock.now(), textID: entry.textID)
            ])
        r.headers[.cacheControl] = "no-store"
        if let origin = request.headers[.origin], entry.magnet.allowsOrigin(origin) {
            r.headers[.accessControlAllowOrigin] = origin
            r.headers[.vary] = "Origin"
        }
        return r
    }

    func script(_ context: AppContext) async throws -> Response {
        let entry = try await entry(context)
        let t = Strings.table(entry.magnet.locale)
        let url = env.baseURL + SiteURL.landing(workspace: entry.workspace.slug, slug: entry.magnet.slug).path
        let js = Self.embedScript(
            action: url, tokenURL: url + "/token", pending: t["lead_pending_text"] ?? "",
            failed: t["lead_errors"] ?? "")
        return Response(
            status: .ok,
            headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "public, max-age=300"],
            body: .init(byteBuffer: ByteBuffer(string: js)))
    }

    /// Progressive enhancement for an embedded form: a time-stamped token (so the minimum fill time applies),
    /// then a `fetch` submit and an inline message. Without it the form still posts and shows our page.
    static func embedScript(action: String, tokenURL: String, pending: String, failed: String) -> String {
        func js(_ s: String) -> String {
            let data = (try? JSONSerialization.data(withJSONObject: [s])) ?? Data("[\"\"]".utf8)
            let array = String(decoding: data, as: UTF8.self)
            return String(array.dropFirst().dropLast()).replacingOccurrences(of: "</", with: "<\\/")
        }
        return """
            (function () {
              var action = \(js(action)), tokenURL = \(js(tokenURL));
              var forms = document.querySelectorAll('form[data-reciprocity-lead]');
              Array.prototype.forEach.call(forms, function (form) {
                if (form.getAttribute('action') !== action) return;
                fetch(tokenURL, { credentials: 'omit' }).then(function (r) { return r.json(); }).then(function (j) {
                  form.elements['form_token'].value = j.form_token;
                }).catch(function () {});
                form.addEventListener('submit', function (event) {
                  event.preventDefault();
                  var body = new URLSearchParams(new FormData(form));
                  fetch(action, { method: 'POST', body: body, credentials: 'omit', headers: { 'Accept': 'application/json' } })
                    .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, body: j }; }); })
                    .then(function (res) {
                      var p = document.createElement('p');
                      p.setAttribute('role', 'status');
                      p.textContent = res.ok ? \(js(pending)) : (res.body.detail || \(js(failed)));
                      if (res.ok) { form.replaceWith(p); } else { form.appendChild(p); }
                    });
                });
              });
            })();

            """
    }

    // MARK: Confirmation

    func token(_ context: AppContext) throws -> String {
        guard let token = context.parameters.get("token") else { throw DomainError.notFound("Link") }
        return token
    }

    func doiPage(_ context: AppContext) async throws -> Response {
        let token = try token(context)
        switch try await leads.service.open(token: token) {
        case .invalid:
            throw DomainError.notFound("Link")
        case .expired(let e):
            return expiredPage(e, context)
        case .confirmed(let gift):
            return Response(status: .seeOther, headers: [.location: SiteURL.publicGift(token: gift).path])
        case .pending(let signup, let magnet, let workspace):
            let t = Strings.table(magnet.locale)
            let text = (t["doi_text"] ?? "").replacingOccurrences(of: "{gift}", with: magnet.giftTitle)
                .replacingOccurrences(of: "{shop}", with: workspace.name)
            let consent = try await env.store.consentText(id: signup.textID)
            return page(
                "lead_doi", locale: magnet.locale, title: "doi_title",
                [
                    "text": text, "consent_text": consent?.body ?? magnet.consentText,
                    "action": SiteURL.publicDOI(token: token).path,
                    "ship_to": signup.shippingAddress?.oneLine as Any,
                ], workspace: workspace)
        }
    }

    /// 410 with a way back to the landing page while the signup is still known.
    func expiredPage(_ e: LeadService.Expired, _ context: AppContext) -> Response {
        page(
            "lead_doi_expired", locale: e.workspace?.locale ?? context.locale, title: "doi_expired_title",
            e.landingURL.map { ["landing_url": $0] } ?? [:], workspace: e.workspace, status: .gone)
    }

    func confirm(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        _ = try await Bodies.form(request, limit: 4096)
        let evidence = ConsentEvidence(
            at: env.clock.now(), ip: env.clientIP(request, context),
            userAgent: request.headers[.userAgent].map { String($0.prefix(512)) })
        switch try await leads.service.confirm(token: token, evidence: evidence) {
        case .confirmed(let gift):
            return Response(status: .seeOther, headers: [.location: SiteURL.publicGift(token: gift).path])
        case .expired(let e):
            return expiredPage(e, context)
        case .invalid:
            throw DomainError.notFound("Link")
        }
    }

    // MARK: Gift

    func giftPage(_ context: AppContext) async throws -> Response {
        let token = try token(context)
        switch try await leads.service.gift(token: token) {
        case .invalid:
            throw DomainError.notFound("Link")
        case .expired(let gift):
            return page(
                "lead_gift_expired", locale: gift.magnet.locale, title: "gift_expired_title",
                ["action": SiteURL.publicGiftRenew(token: token).path], workspace: gift.workspace, status: .gone)
        case .valid(let gift):
            let m = gift.magnet
            var model: [String: Any] = ["gift_title": m.giftTitle]
            switch m.giftKind {
            case .file: model["download_url"] = SiteURL.publicGiftFile(token: token).path
            case .link: model["link_url"] = m.giftURL ?? ""
            case .voucher:
                if let code = gift.voucherCode { model["code"] = code } else { model["no_code"] = true }
            case .sample:
                let state = gift.shipment?.state ?? "queued"
                model["sample_\(state)"] = true
            }
            var r = page("lead_gift", locale: m.locale, title: "gift_title", model, workspace: gift.workspace)
            r.headers[.cacheControl] = "no-store"
            return r
        }
    }

    func file(_ context: AppContext) async throws -> Response {
        let token = try token(context)
        switch try await leads.service.gift(token: token) {
        case .invalid: throw DomainError.notFound("Link")
        case .expired: return Response(status: .seeOther, headers: [.location: SiteURL.publicGift(token: token).path])
        case .valid(let gift):
            guard let (file, bytes) = try await leads.service.download(gift) else { throw DomainError.notFound("File") }
            return Response(
                status: .ok,
                headers: [
                    .contentType: file.contentType, .contentDisposition: Self.attachment(file.name),
                    .cacheControl: "private, no-store",
                ], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    /// RFC 6266: an ASCII fallback name plus the exact UTF-8 name (RFC 8187).
    static func attachment(_ name: String) -> String {
        let ascii = String(
            name.unicodeScalars.map { $0.isASCII && $0 != "\"" && $0 != "\\" && $0.value >= 0x20 ? Character($0) : "_" }
        )
        var allowed = CharacterSet.alphanumerics.intersection(
            CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "!#$&+-.^_`|~")
        let encoded = name.addingPercentEncoding(withAllowedCharacters: allowed) ?? ascii
        return "attachment; filename=\"\(ascii)\"; filename*=UTF-8''\(encoded)"
    }

    func renew(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        guard env.publicFormLimiter.allow("lead-renew:\(env.limiterKey(request, context))") else {
            throw DomainError(.rateLimited, code: "rate_limited", "Too many requests. Please wait a minute.")
        }
        _ = try await Bodies.form(request, limit: 4096)
        let leads = try leads
        switch try await leads.service.gift(token: token) {
        case .invalid:
            throw DomainError.notFound("Link")
        case .valid:
            // A valid link needs no renewal: show the gift.
            return Response(status: .seeOther, headers: [.location: SiteURL.publicGift(token: token).path])
        case .expired(let gift):
            try await leads.service.renew(gift)
            return page(
                "lead_gift_renewed", locale: gift.magnet.locale, title: "gift_title", [:], workspace: gift.workspace)
        }
    }
}
