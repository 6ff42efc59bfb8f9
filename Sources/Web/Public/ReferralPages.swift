import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ReciprocityCore
import Referrals
import Storage

/// The public side of the referral programme: the tracked redirect `/r/{code}` (and the optional landing page with
/// the friend's incentive), the join form for customers, and the advocate's personal page with its QR code, share
/// links, printable card, premium choice and payout details. No login: the signed page link is the authorization.
/// Nothing here writes to the friend, and no friend data is stored before the friend orders.
struct ReferralPages: Sendable {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.referralRedirect.routerPath) { request, context in
            try await redirect(request, context)
        }
        router.get(SiteURL.Route.referralJoin.routerPath) { _, context in try await joinForm(context) }
        router.post(SiteURL.Route.referralJoin.routerPath) { request, context in try await join(request, context) }
        router.get(SiteURL.Route.advocatePage.routerPath) { request, context in try await page(request, context) }
        router.get(SiteURL.Route.advocateQR.routerPath) { _, context in try await qr(context) }
        router.get(SiteURL.Route.advocateCard.routerPath) { _, context in try await card(context) }
        router.post(SiteURL.Route.advocatePremium.routerPath) { request, context in
            try await choosePremium(request, context)
        }
        router.post(SiteURL.Route.advocatePayout.routerPath) { request, context in
            try await payoutDetails(request, context)
        }
        router.post(SiteURL.Route.advocateLeave.routerPath) { request, context in try await leave(request, context) }
    }

    var referrals: ReferralModule { get throws { try env.requireReferrals() } }

    // MARK: Redirect

    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!

    /// Records the click (in memory; written by the group commit) and sends the friend to the shop with the code
    /// as a first-party parameter. A cookie only when the merchant enabled it (shops with a cookie consent).
    func redirect(_ request: Request, _ context: AppContext) async throws -> Response {
        let referrals = try referrals
        guard let raw = context.parameters.get("code"), let code = ReferralCode.normalize(raw),
            let resolved = try await referrals.targets.resolve(code: code), resolved.target.programme.active
        else { throw DomainError.notFound("Referral link") }
        let target = resolved.target
        await referrals.clicks.recordWaiting(
            workspaceID: target.workspaceID, advocateID: target.advocateID, at: env.clock.now(),
            ip: env.clientIP(request, context), userAgent: request.headers[.userAgent] ?? "")
        if target.programme.landingPage {
            guard let workspace = try await env.store.workspace(id: target.workspaceID) else {
                throw DomainError.notFound("Referral link")
            }
            var r = env.publicPage(
                "referral_landing", locale: workspace.locale, title: "ref_landing_title",
                [
                    "incentive": target.programme.friendIncentive,
                    "has_incentive": !target.programme.friendIncentive.isEmpty, "code": target.code,
                    "continue_url": resolved.location,
                ], workspace: workspace)
            r.headers[.cacheControl] = "no-store"
            r.headers[Self.referrerPolicy] = "no-referrer"
            // The page is the link's first answer: it carries the cookie the 302 would have.
            if let cookie = referralCookie(target) { r.headers[.setCookie] = cookie }
            return r
        }
        return Response(status: .found, headers: redirectHeaders(resolved))
    }

    /// The 302 to the shop, with the referral cookie when the merchant enabled it.
    func redirectHeaders(_ resolved: RedirectCache.Resolved) -> HTTPFields {
        let target = resolved.target
        var headers: HTTPFields = [
            .location: resolved.location, .cacheControl: "no-store", Self.referrerPolicy: "no-referrer",
        ]
        if let cookie = referralCookie(target) { headers[.setCookie] = cookie }
        return headers
    }

    /// The referral cookie, when the merchant enabled it: the code for the attribution window.
    func referralCookie(_ target: ReferralTarget) -> String? {
        guard target.programme.cookie else { return nil }
        // The shop's domain only where our own host lies in it; a browser would refuse the cookie otherwise.
        let domain = target.programme.cookieDomain
        let ours = URL(string: env.baseURL)?.host?.lowercased() ?? ""
        return "rcp_ref=\(target.code); Max-Age=\(target.programme.attributionDays * 86_400); Path=/; SameSite=Lax"
            + (!domain.isEmpty && ReferralProgramme.covers(domain, host: ours) ? "; Domain=\(domain)" : "")
            + (env.secureCookies ? "; Secure" : "")
    }

    /// The redirect on the event loop (docs/decisions/0011-event-loop-routes.md) when the code's target is cached and
    /// needs no landing page; otherwise `redirect` answers through the router and fills the cache.
    func fastRoutes() -> [FastRoute] {
        guard let referrals = env.referrals else { return [] }
        return [
            FastRoute(path: SiteURL.Route.referralRedirect.rawValue) { request in
                guard let code = ReferralCode.normalize(String(request.parameter)),
                    let prepared = referrals.targets.cached(
                        code: code, prepare: { PreparedRedirect($0, headers: redirectHeaders($0)) })
                        as? PreparedRedirect,
                    let answer = prepared.answer
                else { return nil }
                // A full click buffer: the router's redirect waits for room, so the friend is still sent on and the
                // click is not lost.
                guard
                    referrals.clicks.record(
                        workspaceID: prepared.workspaceID, advocateID: prepared.advocateID, at: env.clock.now(),
                        ip: env.clientIP(peer: request.peerIP, forwardedFor: request.forwardedFor),
                        userAgent: request.userAgent ?? "")
                else { return nil }
                return answer
            }
        ]
    }

    /// What the fast path needs of a cached code, kept in the redirect cache's entry (so it goes when the programme
    /// is saved or the entry expires): who the click is for, and the answer, nil when the router must answer (an
    /// inactive programme, or one with a landing page).
    final class PreparedRedirect: Sendable {
        let workspaceID: WorkspaceID
        let advocateID: AdvocateID
        let answer: FastAnswer?

        init(_ resolved: RedirectCache.Resolved, headers: HTTPFields) {
            let target = resolved.target
            workspaceID = target.workspaceID
            advocateID = target.advocateID
            answer =
                target.programme.active && !target.programme.landingPage
                ? FastAnswer(
                    HTTPResponse(status: .found, headerFields: headers),
                    path: SiteURL.referralRedirect(code: target.code).path)
                : nil
        }
    }

    // MARK: Joining

    static let minimumFillTime: TimeInterval = 2

    func workspace(_ context: AppContext) async throws -> Workspace {
        guard let slug = context.parameters.get("workspace"), let w = try await env.store.workspace(slug: slug) else {
            throw DomainError.notFound("Page")
        }
        return w
    }

    func joinForm(_ context: AppContext) async throws -> Response {
        let w = try await workspace(context)
        let programme = try await env.store.referralProgramme(workspaceID: w.id)
        guard programme.active else { throw DomainError.notFound("Page") }
        return joinPage(w, programme: programme, values: [:], error: nil, status: .ok)
    }

    static func consentText(_ t: [String: String], shop: String) -> String {
        (t["ref_join_consent"] ?? "").replacingOccurrences(of: "{shop}", with: shop)
    }

    func joinPage(
        _ w: Workspace, programme: ReferralProgramme, values: [String: String], error: String?,
        status: HTTPResponse.Status
    ) -> Response {
        let t = Strings.table(w.locale)
        var model: [String: Any] = [
            "form_token": (try? referrals.links.joinToken(workspaceID: w.id, issuedAt: env.clock.now())) ?? "",
            "action": SiteURL.referralJoin(workspace: w.slug).path, "consent_text": Self.consentText(t, shop: w.name),
            "email": values["email"] ?? "", "order_number": values["order_number"] ?? "",
            "incentive": programme.friendIncentive, "has_incentive": !programme.friendIncentive.isEmpty,
        ]
        if let error { model["error"] = error }
        return env.publicPage(
            "referral_join", locale: w.locale, title: "ref_join_title", model, workspace: w, status: status)
    }

    func join(_ request: Request, _ context: AppContext) async throws -> Response {
        let w = try await workspace(context)
        let referrals = try referrals
        let ip = env.clientIP(request, context)
        guard env.publicFormLimiter.allow("referral-join:\(WebEnvironment.limiterKey(ip: ip))") else {
            throw DomainError(.rateLimited, code: "rate_limited", "Too many attempts from this address. Please wait.")
        }
        let programme = try await env.store.referralProgramme(workspaceID: w.id)
        guard programme.active else { throw DomainError.notFound("Page") }
        let form = try await Bodies.form(request, limit: 16 * 1024)
        let t = Strings.table(w.locale)
        let verdict = FormGuard.check(
            honeypot: form["website"] ?? "",
            issuedAt: referrals.links.joinIssuedAt(form["form_token"] ?? "", workspaceID: w.id), embedded: false,
            origin: FormGuard.origin(request.headers[.origin], ownOrigin: env.baseURL),
            minimumFillTime: Self.minimumFillTime, now: env.clock.now())
        switch verdict {
        case .honeypot:
            // Answer like a failed lookup: a bot learns nothing and nothing is stored.
            return joinPage(w, programme: programme, values: [:], error: t["ref_join_not_found"], status: .ok)
        case .badToken, .foreignOrigin:
            throw DomainError(.forbidden, code: "form_expired", t["lead_reload"] ?? "")
        case .tooFast:
            return joinPage(
                w, programme: programme, values: form, error: t["lead_retry"], status: .unprocessableContent)
        case .pass:
            break
        }
        guard form["consent"] == "yes" else {
            return joinPage(
                w, programme: programme, values: form, error: t["ref_join_consent_missing"],
                status: .unprocessableContent)
        }
        let email: EmailAddress
        do { email = try EmailAddress(form["email"] ?? "") } catch {
            return joinPage(
                w, programme: programme, values: form, error: t["lead_error_email_invalid"],
                status: .unprocessableContent)
        }
        let number = (form["order_number"] ?? "").trimmingCharacters(in: .whitespaces)
        guard !number.isEmpty, env.signupEmailLimiter.allow("referral-join:\(email.canonicalIdentity)") else {
            return joinPage(
                w, programme: programme, values: form, error: t["ref_join_not_found"], status: .unprocessableContent)
        }
        let ua = request.headers[.userAgent].map { String($0.prefix(512)) }
        do {
            let advocate = try await referrals.service.join(
                workspace: w,
                .init(
                    email: email, orderNumber: number, consentText: Self.consentText(t, shop: w.name),
                    locale: w.locale, evidence: ConsentEvidence(at: env.clock.now(), ip: ip, userAgent: ua),
                    source: "referral_join", pageURL: env.baseURL + SiteURL.referralJoin(workspace: w.slug).path,
                    device: env.store.deviceHash(ip: ip, userAgent: ua ?? "")))
            return Response(status: .seeOther, headers: [.location: referrals.links.pageURL(advocate)])
        } catch let e as DomainError where e.code == "join_not_found" || e.code == "no_delivered_order" {
            return joinPage(
                w, programme: programme, values: form, error: t["ref_join_not_found"], status: .unprocessableContent)
        }
    }

    // MARK: Personal page

    /// The advocate of the page token. `afterLeaving`: also one who left the programme, for what they still have
    /// (earned rewards, the premium choice, the bank details); their code, QR and card are gone.
    func advocate(_ context: AppContext, afterLeaving: Bool = false) async throws
        -> (Advocate, Workspace, ReferralProgramme)
    {
        guard let token = context.parameters.get("token"),
            let a = try await referrals.links.advocate(pageToken: token), a.active || afterLeaving,
            let w = try await env.store.workspace(id: a.workspaceID)
        else { throw DomainError.notFound("Referral page") }
        return (a, w, try await env.store.referralProgramme(workspaceID: w.id))
    }

    /// The personal page's path, for the forms' way back.
    func pagePath(_ context: AppContext) -> String {
        SiteURL.advocatePage(token: context.parameters.get("token") ?? "").path
    }

    /// The personal page speaks the advocate's language where the product has it, German otherwise.
    static func pageLocale(_ a: Advocate) -> String { Locale.resolve(a.locale) == "en" ? "en" : "de" }

    /// The shop's suggested share text, in the advocate's language, with the friend's incentive.
    static func suggestion(_ t: [String: String], shop: String, incentive: String) -> String {
        let text = (t["ref_share_text"] ?? "").replacingOccurrences(of: "{shop}", with: shop)
        return incentive.isEmpty ? text : text + " " + incentive + "."
    }

    func page(_ request: Request, _ context: AppContext) async throws -> Response {
        let (a, w, programme) = try await advocate(context, afterLeaving: true)
        let locale = Self.pageLocale(a)
        let t = Strings.table(locale)
        let ip = env.clientIP(request, context)
        try await env.store.noteAdvocateDevice(
            advocateID: a.id, device: env.store.deviceHash(ip: ip, userAgent: request.headers[.userAgent] ?? ""))
        let link = try referrals.links.shareURL(code: a.code)
        // Parsed as a form (`+` is a space): the share-text form submits with GET.
        let text = ShareLinks.text(
            custom: Bodies.parseForm(request.uri.query ?? "")["text"] ?? "",
            suggestion: Self.suggestion(t, shop: w.name, incentive: programme.friendIncentive), link: link)
        let subject = (t["ref_share_subject"] ?? "").replacingOccurrences(of: "{shop}", with: w.name)
        let referrals = try await env.store.referrals(workspaceID: w.id, advocateID: a.id)
        let rewards = try await env.store.rewards(workspaceID: w.id, advocateID: a.id).filter {
            $0.beneficiary == "advocate"
        }
        let currency = Currency(stored: programme.currency)
        let premiums = try await env.store.premiums(workspaceID: w.id, activeOnly: true)
        let token = context.parameters.get("token") ?? ""
        var model: [String: Any] = [
            "code": a.code, "link": link, "share_text": text, "copy_script": Self.copyScript,
            "whatsapp_url": ShareLinks.whatsApp(text: text),
            "mailto_url": ShareLinks.mailto(subject: subject, body: text),
            "qr_url": SiteURL.advocateQR(token: token).path, "card_url": SiteURL.advocateCard(token: token).path,
            "page_url": SiteURL.advocatePage(token: token).path,
            "premium_action": SiteURL.advocatePremium(token: token).path,
            "payout_action": SiteURL.advocatePayout(token: token).path,
            "leave_action": SiteURL.advocateLeave(token: token).path, "left": !a.active,
            "pending": referrals.filter { ReferralStatus.open.contains($0.status) }.count,
            "confirmed": referrals.filter { $0.status == .confirmed }.count,
            "incentive": programme.friendIncentive, "has_incentive": !programme.friendIncentive.isEmpty,
            "rewards": rewards.map { r in
                [
                    "value": Money(minor: r.valueMinor, currency: (try? Currency(r.currency)) ?? currency)
                        .formatted(locale: locale),
                    "type": t["ref_type_\(r.type.rawValue)"] ?? r.type.rawValue,
                    "state": t["ref_state_\(r.state.rawValue)"] ?? r.state.rawValue,
                    "voucher_code": r.voucherCode ?? "", "has_voucher": r.voucherCode != nil && r.state == .issued,
                ] as [String: Any]
            },
            "has_rewards": !rewards.isEmpty,
            "offers_premium": programme.offers(.premium) && !premiums.isEmpty,
            "premiums": premiums.map { p in
                [
                    "id": String(p.id), "name": p.name, "description": p.description, "image_url": p.imageURL ?? "",
                    "has_image": p.imageURL != nil, "chosen": p.id == a.premiumID, "in_stock": p.stock > 0,
                ] as [String: Any]
            },
            "pays_cash": programme.offers(.cash), "payout_name": a.payoutName ?? "",
            "payout_iban": a.payoutIBAN.flatMap(IBAN.init)?.masked ?? "", "has_payout": a.payoutIBAN != nil,
        ]
        if request.uri.queryParameters.get("saved") != nil { model["saved"] = true }
        if let e = request.uri.queryParameters.get("error"), let message = t["ref_error_\(e)"] {
            model["error"] = message
        }
        if programme.leaderboard {
            model["leaders"] = try await env.store.referralLeaders(workspaceID: w.id).enumerated().map { i, l in
                [
                    "rank": String(i + 1), "name": Pseudonym.of(firstName: l.firstName, advocateID: l.advocateID),
                    "count": String(l.confirmed), "me": l.advocateID == a.id,
                ] as [String: Any]
            }
            model["has_leaders"] = true
        }
        var response = env.publicPage("referral_page", locale: locale, title: "ref_page_title", model, workspace: w)
        response.headers[.cacheControl] = "no-store"
        response.headers[Self.referrerPolicy] = "no-referrer"
        response.headers[.contentSecurityPolicy] = Self.pagePolicy
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        return response
    }

    /// The copy button's script, allowed by its hash: the page runs no other script.
    static let copyScript =
        "document.querySelectorAll('[data-copy]').forEach(function(b){b.hidden=false;b.addEventListener('click',"
        + "function(){var i=document.getElementById(b.dataset.copy);i.select();navigator.clipboard.writeText(i.value)"
        + ".then(function(){b.textContent=b.dataset.done;});});});"
    static let pagePolicy =
        "default-src 'none'; img-src 'self' data: https:; style-src 'unsafe-inline'; form-action 'self'; "
        + "base-uri 'none'; frame-ancestors 'none'; script-src 'sha256-"
        + Data(SHA256.hash(data: Array(copyScript.utf8))).base64EncodedString() + "'"

    func qr(_ context: AppContext) async throws -> Response {
        let (a, _, _) = try await advocate(context)
        let link = try referrals.links.shareURL(code: a.code)
        let svg = try QRCode(text: link, errorCorrection: .medium).svg(moduleSize: 8, title: link)
        return Response(
            status: .ok,
            headers: [
                .contentType: "image/svg+xml; charset=utf-8", .cacheControl: "private, max-age=3600",
                .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'",
            ],
            body: .init(byteBuffer: ByteBuffer(string: svg)))
    }

    /// A card to print and put in the parcel: the QR code, the code and the link.
    func card(_ context: AppContext) async throws -> Response {
        let (a, w, programme) = try await advocate(context)
        let token = context.parameters.get("token") ?? ""
        return env.publicPage(
            "referral_card", locale: w.locale, title: "ref_card_title",
            [
                "code": a.code, "link": try referrals.links.shareURL(code: a.code),
                "qr_url": SiteURL.advocateQR(token: token).path, "incentive": programme.friendIncentive,
                "has_incentive": !programme.friendIncentive.isEmpty,
            ], workspace: w)
    }

    func choosePremium(_ request: Request, _ context: AppContext) async throws -> Response {
        let (a, w, _) = try await advocate(context, afterLeaving: true)
        let form = try await Bodies.form(request, limit: 4096)
        let back = pagePath(context)
        guard let id = form["premium_id"].flatMap(Int64.init) else {
            return Response(status: .seeOther, headers: [.location: back + "?error=premium"])
        }
        do {
            try await env.store.setPremiumChoice(workspaceID: w.id, advocateID: a.id, premiumID: id)
        } catch let e as DomainError where e.code == "premium_unknown" {
            return Response(status: .seeOther, headers: [.location: back + "?error=premium"])
        }
        return Response(status: .seeOther, headers: [.location: back + "?saved=1"])
    }

    /// Leaving is as easy as joining (Art. 7(3) DSGVO): one button on the personal page, no login, no mail round trip.
    func leave(_ request: Request, _ context: AppContext) async throws -> Response {
        let (a, w, _) = try await advocate(context)
        let form = try await Bodies.form(request, limit: 4096)
        guard form["leave"] == "yes" else {
            return Response(
                status: .seeOther,
                headers: [.location: pagePath(context)])
        }
        try await referrals.service.leave(
            a,
            evidence: ConsentEvidence(
                at: env.clock.now(), ip: env.clientIP(request, context),
                userAgent: request.headers[.userAgent].map { String($0.prefix(500)) }))
        let locale = Self.pageLocale(a)
        var response = env.publicPage(
            "referral_left", locale: locale, title: "ref_left_title",
            [
                "join_url": SiteURL.referralJoin(workspace: w.slug).path,
                "page_url": pagePath(context),
            ], workspace: w)
        response.headers[.cacheControl] = "no-store"
        return response
    }

    func payoutDetails(_ request: Request, _ context: AppContext) async throws -> Response {
        let (a, w, _) = try await advocate(context, afterLeaving: true)
        let form = try await Bodies.form(request, limit: 4096)
        let back = pagePath(context)
        guard let iban = IBAN(form["iban"] ?? ""), let name = AccountHolderName.validate(form["name"] ?? "") else {
            return Response(status: .seeOther, headers: [.location: back + "?error=iban"])
        }
        try await env.store.setPayoutDetails(workspaceID: w.id, advocateID: a.id, name: name, iban: iban)
        return Response(status: .seeOther, headers: [.location: back + "?saved=1"])
    }
}
