import Foundation
import Hummingbird
import NIOCore
import ReciprocityCore
import Referrals
import Storage

/// The admin page of the referral programme: figures with a chart, the review queue, the reward queue, advocates,
/// the premium catalogue, payouts (SEPA file), the tax list and the settings. One page, each part a section.
extension AdminRoutes {
    func registerReferrals(on router: Router<AppContext>) {
        router.get(SiteURL.Route.adminReferrals.routerPath) { _, context in try await referralsPage(context) }
        router.post(SiteURL.Route.adminReferralSettings.routerPath) { request, context in
            try await saveReferralSettings(request, context)
        }
        router.post(SiteURL.Route.adminReferralVouchers.routerPath) { request, context -> Response in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            let f = try await form(request, context)
            let codes = (f["codes"] ?? "").split(whereSeparator: \.isNewline).map {
                $0.trimmingCharacters(in: .whitespaces)
            }.filter { !$0.isEmpty }
            let t = Strings.table(context.locale)
            do {
                let added = try await store.addReferralVouchers(
                    workspaceID: admin.workspace.id,
                    codes: try VoucherCodes.batch(given: codes, generate: nil, prefix: nil, random: env.random))
                return try await referralsPage(
                    context,
                    message: (t["ref_vouchers_added"] ?? "{added}").replacingOccurrences(
                        of: "{added}", with: String(added)))
            } catch let e as DomainError {
                return try await referralsPage(context, error: e.message)
            }
        }
        router.post(SiteURL.Route.adminReferralDecision.routerPath) { request, context -> Response in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            let f = try await form(request, context)
            try await store.decideReferral(
                workspaceID: admin.workspace.id, id: try context.int64Parameter("id"),
                accept: f["decision"] == "accept",
                actor: "user:\(admin.user.id)")
            env.wakeWorkers()
            throw Redirect(to: SiteURL.adminReferrals.path)
        }
        router.post(SiteURL.Route.adminReward.routerPath) { request, context -> Response in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            let f = try await form(request, context)
            let id = try context.int64Parameter("id")
            if f["action"] == "approve" {
                try await referralModule.service.approve(
                    workspaceID: admin.workspace.id, rewardID: id, actor: "user:\(admin.user.id)")
            } else {
                try await store.voidReward(
                    workspaceID: admin.workspace.id, id: id, actor: "user:\(admin.user.id)", reason: "by_hand")
            }
            throw Redirect(to: SiteURL.adminReferrals.path)
        }
        router.post(SiteURL.Route.adminPremiums.routerPath) { request, context in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            let f = try await form(request, context)
            let currency = try await programmeCurrency(admin.workspace.id)
            do {
                try await store.savePremium(
                    Premium(
                        id: 0, workspaceID: admin.workspace.id, name: f["name"] ?? "",
                        description: f["description"] ?? "", imageURL: nonEmpty(f["image_url"]),
                        costMinor: try minor(f["cost"], field: "cost", currency),
                        shippingMinor: try minor(f["shipping"], field: "shipping", currency), currency: currency.code,
                        stock: Int64(f["stock"] ?? "") ?? -1, active: true),
                    id: nil, actor: "user:\(admin.user.id)")
            } catch let e as DomainError {
                return try await referralsPage(context, error: e.message)
            }
            throw Redirect(to: SiteURL.adminReferrals.path)
        }
        router.post(SiteURL.Route.adminPremium.routerPath) { request, context in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            let f = try await form(request, context)
            let id = try context.int64Parameter("id")
            // A premium keeps the currency it was created in; its amounts are read in that one.
            let currency: Currency
            if let premium = try await store.premium(workspaceID: admin.workspace.id, id: id) {
                currency = Currency(stored: premium.currency)
            } else {
                currency = try await programmeCurrency(admin.workspace.id)
            }
            do {
                if f["part"] == "catalogue" {
                    // The row's "change name, price and picture" form: those fields only; one it lacks is kept.
                    let change = Premium.Change(
                        name: f["name"]?.trimmingCharacters(in: .whitespaces), description: f["description"],
                        imageURL: f["image_url"].map { nonEmpty($0) },
                        costMinor: try f["cost"].map { try minor($0, field: "cost", currency) },
                        shippingMinor: try f["shipping"].map { try minor($0, field: "shipping", currency) })
                    try await store.updatePremium(
                        workspaceID: admin.workspace.id, id: id, actor: "user:\(admin.user.id)"
                    ) { change.apply(to: &$0) }
                } else {
                    let change = Premium.Change(
                        stock: Int64((f["stock"] ?? "").trimmingCharacters(in: .whitespaces)) ?? -1,
                        active: f["active"] != nil)
                    // The stock shown when the page loaded: a reward that took a unit since makes this a conflict.
                    try await store.updatePremium(
                        workspaceID: admin.workspace.id, id: id, actor: "user:\(admin.user.id)",
                        expectedStock: f["stock_seen"].flatMap { Int64($0) }
                    ) { change.apply(to: &$0) }
                }
            } catch let e as DomainError where e.kind != .notFound {
                return try await referralsPage(context, error: e.message)
            }
            return try await referralsPage(context, message: Strings.table(context.locale)["ref_premium_saved"])
        }
        router.post(SiteURL.Route.adminFulfilmentShipped.routerPath) { request, context in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            _ = try await form(request, context)
            do {
                try await referralModule.service.markShipped(
                    workspaceID: admin.workspace.id, rewardID: try context.int64Parameter("id"),
                    actor: "user:\(admin.user.id)")
            } catch let e as DomainError where e.kind == .conflict {
                return try await referralsPage(context, error: e.message)
            }
            return try await referralsPage(context, message: Strings.table(context.locale)["ref_shipped_saved"])
        }
        router.post(SiteURL.Route.adminPayoutExport.routerPath) { request, context in
            let admin = try admin(context)
            try require(admin.role.canEditMail, context)
            _ = try await form(request, context)
            do {
                let (batch, xml) = try await referralModule.service.exportPayouts(
                    workspace: admin.workspace, actor: "user:\(admin.user.id)")
                return Bodies.download(
                    xml, contentType: "application/xml; charset=utf-8", filename: "payouts-\(batch).xml")
            } catch let e as DomainError {
                return try await referralsPage(context, error: e.message)
            }
        }
        router.get(SiteURL.Route.adminReferralTax.routerPath) { request, context in
            let admin = try admin(context)
            let year =
                request.uri.queryParameters.get("year").flatMap(Int.init)
                ?? RewardTax.year(of: env.clock.now(), timeZone: admin.workspace.timeZone)
            return Bodies.download(
                try await referralModule.service.taxCSV(workspaceID: admin.workspace.id, year: year),
                contentType: "text/csv; charset=utf-8", filename: "referral-rewards-\(year).csv")
        }
        router.get(SiteURL.Route.adminFulfilment.routerPath) { _, context in
            let admin = try admin(context)
            return Bodies.download(
                try await referralModule.service.fulfilmentCSV(workspaceID: admin.workspace.id),
                contentType: "text/csv; charset=utf-8", filename: "premium-fulfilment.csv")
        }
        router.get(SiteURL.Route.adminPayoutList.routerPath) { _, context in
            let admin = try admin(context)
            return Bodies.download(
                try await referralModule.service.payoutCSV(workspaceID: admin.workspace.id),
                contentType: "text/csv; charset=utf-8", filename: "referral-payouts.csv")
        }
    }

    var referralModule: ReferralModule { get throws { try env.requireReferrals() } }

    /// An amount typed into a form, "12,50" or "12.50" in major units of `currency`, in minor units.
    func minor(_ text: String?, field: String, _ currency: Currency) throws -> Int64 {
        let raw = (text ?? "").trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ",", with: ".")
        return try Money(decimal: raw.isEmpty ? "0" : raw, currency: currency, field: field).minor
    }

    func money(_ minor: Int64, _ currency: Currency, _ context: AppContext) -> String {
        Money(minor: minor, currency: currency).formatted(locale: context.locale)
    }

    /// A stored currency code (rewards, premiums and payouts keep the one they were made in).
    func money(_ minor: Int64, _ code: String, _ context: AppContext) -> String {
        money(minor, Currency(stored: code), context)
    }

    func programmeCurrency(_ workspaceID: WorkspaceID) async throws -> Currency {
        try Currency(try await store.referralProgramme(workspaceID: workspaceID).currency)
    }

    func referralsPage(
        _ context: AppContext, error: String? = nil, message: String? = nil, status: HTTPResponse.Status? = nil
    ) async throws -> Response {
        let admin = try admin(context)
        let ws = admin.workspace.id
        let t = Strings.table(context.locale)
        var model = try base(context, title: "referrals_title", nav: "referrals")
        // The version before the values (see `reviewSettingsPage`).
        let version = try await store.settingsVersion(.referrals, workspaceID: ws)
        let p = try await store.referralProgramme(workspaceID: ws)
        let currency = try Currency(p.currency)
        model["currency_symbol"] = currency.symbol
        try await referralModule.clicks.flush()
        let since = env.clock.now().addingTimeInterval(-90 * 86_400)
        let f = try await store.referralFigures(workspaceID: ws, since: since)
        func pct(_ v: Double?) -> String { v.map { String(format: "%.1f %%", $0 * 100) } ?? "–" }
        model["figures"] = [
            "clicks": String(f.clicks), "orders": String(f.referredOrders), "conversion": pct(f.conversion),
            "kfactor": f.kFactor.map { String(format: "%.3f", $0) } ?? "–",
            "revenue": money(f.revenueMinor, currency, context),
            "cost": money(f.rewardCostMinor, currency, context), "roi": pct(f.roi), "advocates": String(f.advocates),
        ]
        let days = try await store.referralDays(
            workspaceID: ws, since: env.clock.now().addingTimeInterval(-30 * 86_400))
        let dayFormat = Date.ISO8601FormatStyle().year().month().day()
        model["chart"] = LeadChart.svg(
            days: days.map {
                LeadDay(
                    day: $0.day.formatted(dayFormat), views: 0, signups: $0.clicks, confirmations: $0.orders,
                    downloads: 0)
            }, label: t["ref_chart"] ?? "", id: "referral-chart")
        model["review"] = try await store.referrals(workspaceID: ws, status: .flagged).map { r in
            [
                "id": String(r.id), "code": r.advocateCode, "order": r.orderExternalID,
                "reasons": r.reasons.map(\.rawValue).joined(separator: ", "),
                "action": SiteURL.adminReferralDecision(id: r.id).path,
            ] as [String: Any]
        }
        model["rewards"] = try await store.rewards(workspaceID: ws, limit: 100).map { r in
            [
                "id": String(r.id), "type": t["ref_type_\(r.type.rawValue)"] ?? r.type.rawValue,
                "value": money(r.valueMinor, r.currency, context),
                "state": t["ref_state_\(r.state.rawValue)"] ?? r.state.rawValue,
                "beneficiary": r.beneficiary, "held_until": when(r.heldUntil, context),
                "can_approve": r.state == .held, "can_void": [.pending, .held, .approved].contains(r.state),
                "action": SiteURL.adminReward(id: r.id).path, "voucher": r.voucherCode ?? "",
            ] as [String: Any]
        }
        model["advocates"] = try await store.advocates(workspaceID: ws, limit: 100).items.map { row in
            [
                "code": row.advocate.code, "email": row.advocate.email, "clicks": String(row.clicks),
                "pending": String(row.pending), "confirmed": String(row.confirmed),
                "rewards": money(row.rewardsMinor, currency, context), "active": row.advocate.active,
            ] as [String: Any]
        }
        model["premiums"] = try await store.premiums(workspaceID: ws).map { pr in
            let own = Currency(stored: pr.currency)
            return [
                "name": pr.name, "cost": money(pr.costMinor, own, context),
                "shipping": money(pr.shippingMinor, own, context),
                "stock": String(pr.stock), "active": pr.active, "action": SiteURL.adminPremium(id: pr.id).path,
                "description": pr.description, "image_url": pr.imageURL ?? "",
                "cost_input": Money(minor: pr.costMinor, currency: own).decimalString,
                "shipping_input": Money(minor: pr.shippingMinor, currency: own).decimalString,
            ] as [String: Any]
        }
        // Open ones first (to ship, then waiting), then the shipped and cancelled ones; the CSV has them all.
        let shown = 200
        let total = try await store.fulfilmentCount(workspaceID: ws)
        model["fulfilments_more"] =
            total > shown
            ? (t["ref_fulfilments_more"] ?? "").replacingOccurrences(of: "{shown}", with: String(shown))
                .replacingOccurrences(of: "{total}", with: String(total)) : nil
        model["fulfilments"] = try await store.fulfilments(workspaceID: ws, openFirst: true, limit: shown).map { fu in
            let place = [fu.postalCode, fu.city].compactMap { $0 }.joined(separator: " ")
            let address = [fu.street, place.isEmpty ? nil : place, fu.country].compactMap { $0 }
            return [
                "reward": String(fu.rewardID), "premium": fu.premium ?? "–", "name": fu.name,
                "address": address.isEmpty ? (t["ref_no_address"] ?? "") : address.joined(separator: ", "),
                "state": t["ref_fulfil_\(fu.state)"] ?? fu.state,
                "when": when(fu.shippedAt ?? fu.createdAt, context),
                "can_ship": fu.state == Store.FulfilmentState.queued.rawValue,
                "action": SiteURL.adminFulfilmentShipped(rewardID: fu.rewardID).path,
            ] as [String: Any]
        }
        model["payouts"] = try await store.payouts(workspaceID: ws).map { po in
            [
                "code": po.code, "name": po.name ?? "–", "iban": po.iban.flatMap(IBAN.init)?.masked ?? "–",
                "amount": money(po.amountMinor, po.currency, context), "state": po.state,
            ] as [String: Any]
        }
        let year = RewardTax.year(of: env.clock.now(), timeZone: admin.workspace.timeZone)
        model["tax_warnings"] = try await store.rewardTax(workspaceID: ws, year: year).filter(\.reachesThreshold).map {
            ["email": $0.email, "total": money($0.totalMinor, currency, context)]
        }
        model["settings"] = settingsModel(p)
        model["version"] = version
        model["vouchers_free"] = String(try await store.freeReferralVouchers(workspaceID: ws))
        model["urls_ref"] = [
            "settings": SiteURL.adminReferralSettings.path, "premiums": SiteURL.adminPremiums.path,
            "payouts": SiteURL.adminPayoutExport.path, "tax": SiteURL.adminReferralTax.path,
            "fulfilment": SiteURL.adminFulfilment.path, "payout_list": SiteURL.adminPayoutList.path,
            "vouchers": SiteURL.adminReferralVouchers.path,
            "join": env.baseURL + SiteURL.referralJoin(workspace: admin.workspace.slug).path,
        ]
        if let error { model["error"] = error }
        if let message { model["message"] = message }
        return env.templates.page("referrals", model, status: status ?? (error == nil ? .ok : .unprocessableContent))
    }

    func settingsModel(_ p: ReferralProgramme) -> [String: Any] {
        let currency = Currency(stored: p.currency)
        func decimal(_ minor: Int64) -> String { Money(minor: minor, currency: currency).decimalString }
        return [
            "active": p.active, "target_url": p.targetURL, "incentive": p.friendIncentive,
            "reward_types": RewardType.allCases.map {
                ["value": $0.rawValue, "selected": $0 == p.advocateReward.type] as [String: Any]
            },
            "friend_types": ["", "voucher", "credit"].map {
                ["value": $0, "selected": $0 == (p.friendReward?.type.rawValue ?? "")] as [String: Any]
            },
            "reward_value": decimal(p.advocateReward.valueMinor),
            "voucher_prefix": p.advocateReward.voucherPrefix ?? "",
            // The milestones there are, and empty rows up to three more, to add one without JavaScript.
            "milestones": (p.milestones.map(Optional.some) + Array(repeating: nil, count: 3)).prefix(
                max(3, p.milestones.count + 1)
            ).enumerated().map { i, m in
                [
                    "n": String(i), "count": m.map { String($0.count) } ?? "",
                    "value": m.map { decimal($0.reward.valueMinor) } ?? "",
                    "types": ([""] + RewardType.allCases.map(\.rawValue)).map {
                        ["value": $0, "selected": $0 == (m?.reward.type.rawValue ?? "")] as [String: Any]
                    },
                ] as [String: Any]
            },
            "friend_value": decimal(p.friendReward?.valueMinor ?? 0), "new_only": p.newCustomersOnly,
            "minimum": decimal(p.minimumOrderMinor),
            "excluded_categories": p.excludedCategories.joined(separator: ", "),
            "excluded_skus": p.excludedSKUs.joined(separator: ", "), "cap": p.capCount.map(String.init) ?? "",
            "cap_days": String(p.capDays), "window": String(p.returnWindowSeconds),
            "attribution_days": String(p.attributionDays), "touch_first": p.touch == .first,
            "auto_approve": p.autoApprove, "cookie": p.cookie, "cookie_domain": p.cookieDomain,
            "landing": p.landingPage,
            "leaderboard": p.leaderboard, "velocity": String(p.velocityPerDay), "payer_name": p.payerName,
            "payer_iban": p.payerIBAN, "payer_bic": p.payerBIC,
        ]
    }

    func saveReferralSettings(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let f = try await form(request, context)
        var p = try await store.referralProgramme(workspaceID: admin.workspace.id)
        let currency = try Currency(p.currency)
        func list(_ key: String) -> [String] {
            (f[key] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                !$0.isEmpty
            }
        }
        do {
            p.active = f["active"] == "on"
            p.targetURL = (f["target_url"] ?? "").trimmingCharacters(in: .whitespaces)
            p.friendIncentive = f["incentive"] ?? ""
            p.advocateReward = RewardSpec(
                type: RewardType(rawValue: f["reward_type"] ?? "") ?? .voucher,
                valueMinor: try minor(f["reward_value"], field: "reward_value", currency),
                voucherPrefix: nonEmpty(f["voucher_prefix"]?.uppercased()))
            p.friendReward = try RewardType(rawValue: f["friend_type"] ?? "").map {
                // The friend's voucher is the advocate's code, used at checkout: it has no prefix of its own.
                RewardSpec(type: $0, valueMinor: try minor(f["friend_value"], field: "friend_value", currency))
            }
            p.milestones = try (0..<max(3, p.milestones.count + 1)).compactMap { i -> Milestone? in
                let count = (f["milestone_count_\(i)"] ?? "").trimmingCharacters(in: .whitespaces)
                guard let type = RewardType(rawValue: f["milestone_type_\(i)"] ?? ""), !count.isEmpty else {
                    return nil
                }
                guard let n = Int(count), n > 0 else {
                    throw DomainError.invalid(
                        "milestone_invalid", "A milestone counts referrals: a whole number above 0.",
                        field: "milestone_count_\(i)")
                }
                let value =
                    type == .premium ? 0 : try minor(f["milestone_value_\(i)"], field: "milestone_value_\(i)", currency)
                // A voucher prefix set through the API has no field here: the saved milestone's is kept.
                let prefix = p.milestones.first { $0.count == n && $0.reward.type == type }?.reward.voucherPrefix
                return Milestone(count: n, reward: RewardSpec(type: type, valueMinor: value, voucherPrefix: prefix))
            }.sorted { $0.count < $1.count }
            p.newCustomersOnly = f["new_only"] == "on"
            p.minimumOrderMinor = try minor(f["minimum"], field: "minimum", currency)
            p.excludedCategories = list("excluded_categories")
            p.excludedSKUs = list("excluded_skus")
            func whole(_ key: String) throws -> Int? { try Self.wholeNumber(f, key).map(Int.init) }
            p.capCount = try whole("cap")
            p.capDays = try whole("cap_days") ?? p.capDays
            p.returnWindowSeconds = try whole("window").map(Int64.init) ?? p.returnWindowSeconds
            p.attributionDays = try whole("attribution_days") ?? p.attributionDays
            p.touch = f["touch"] == "first" ? .first : .last
            p.autoApprove = f["auto_approve"] == "on"
            p.cookie = f["cookie"] == "on"
            p.cookieDomain = ReferralProgramme.cookieDomain(typed: f["cookie_domain"] ?? "")
            p.landingPage = f["landing"] == "on"
            p.leaderboard = f["leaderboard"] == "on"
            p.velocityPerDay = try whole("velocity") ?? p.velocityPerDay
            p.payerName = f["payer_name"] ?? ""
            p.payerIBAN = (f["payer_iban"] ?? "").replacingOccurrences(of: " ", with: "").uppercased()
            p.payerBIC = (f["payer_bic"] ?? "").uppercased()
            try await referralModule.service.saveProgramme(
                workspaceID: admin.workspace.id, p, actor: "user:\(admin.user.id)", seen: Self.seenVersion(f))
        } catch let e as DomainError {
            guard e.code == "settings_changed" else { return try await referralsPage(context, error: e.message) }
            return try await referralsPage(
                context, error: Strings.table(context.locale)["error_\(e.code)"], status: .conflict)
        }
        return try await referralsPage(context, message: Strings.table(context.locale)["ref_saved"] ?? "Gespeichert.")
    }
}
