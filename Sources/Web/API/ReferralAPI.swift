import Foundation
import Hummingbird
import ReciprocityCore
import Referrals
import Storage

/// The referral API: the programme settings, advocates (the shop enrols a logged-in customer who ticked the
/// opt-in), referrals with their decisions and the review queue, rewards (approve, void), the premium catalogue,
/// the voucher pool, the SEPA payout file, the tax list and the figures.
struct ReferralAPI {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.apiReferralProgramme.routerPath) { _, context in
            try Bodies.jsonResponse(
                try await env.store.referralProgramme(workspaceID: try context.principal().workspaceID))
        }
        router.put(SiteURL.Route.apiReferralProgramme.routerPath) { request, context in
            let principal = try context.principal()
            let p = try await Bodies.json(ReferralProgramme.self, from: request, limit: 64 * 1024)
            try await module.service.saveProgramme(
                workspaceID: principal.workspaceID, p, actor: "apikey:\(principal.keyID)")
            return try Bodies.jsonResponse(try await env.store.referralProgramme(workspaceID: principal.workspaceID))
        }
        router.get(SiteURL.Route.apiAdvocates.routerPath) { request, context in
            let principal = try context.principal()
            // The API's paging rules (docs/api.md): limit 1–500 (50), offset from 0, both echoed.
            let (limit, offset) = try request.uri.queryParameters.paging()
            let page = try await env.store.advocates(workspaceID: principal.workspaceID, limit: limit, offset: offset)
            let links = try module.links
            return try Bodies.jsonResponse(
                PageDTO(
                    items: page.items.map { AdvocateDTO($0.advocate, links: links, row: $0) }, total: page.total,
                    limit: limit, offset: offset))
        }
        router.post(SiteURL.Route.apiAdvocates.routerPath) { request, context in try await join(request, context) }
        router.get(SiteURL.Route.apiReferrals.routerPath) { request, context in
            let principal = try context.principal()
            let status = try request.uri.queryParameters.get("status").map { raw -> ReferralStatus in
                guard let s = ReferralStatus(rawValue: raw) else {
                    throw DomainError.invalid("status_unknown", "Unknown status '\(raw)'.", field: "status")
                }
                return s
            }
            return try Bodies.jsonResponse(
                ["items": try await env.store.referrals(workspaceID: principal.workspaceID, status: status)])
        }
        router.post(SiteURL.Route.apiReferralDecision.routerPath) { request, context in
            let principal = try context.principal()
            struct Decision: Decodable { var accept: Bool }
            let d = try await Bodies.json(Decision.self, from: request, limit: 1024)
            let id = try context.int64Parameter("id")
            try await env.store.decideReferral(
                workspaceID: principal.workspaceID, id: id, accept: d.accept, actor: "apikey:\(principal.keyID)")
            env.wakeWorkers()
            guard let r = try await env.store.referral(workspaceID: principal.workspaceID, id: id) else {
                throw DomainError.notFound("Referral")
            }
            return try Bodies.jsonResponse(r)
        }
        router.get(SiteURL.Route.apiRewards.routerPath) { request, context in
            let principal = try context.principal()
            let q = request.uri.queryParameters
            let state = try q.get("state").map { raw -> RewardState in
                guard let s = RewardState(rawValue: raw) else {
                    throw DomainError.invalid("state_unknown", "Unknown state '\(raw)'.", field: "state")
                }
                return s
            }
            return try Bodies.jsonResponse(
                [
                    "items": try await env.store.rewards(
                        workspaceID: principal.workspaceID, state: state,
                        advocateID: q.get("advocate_id").flatMap(Int64.init))
                ])
        }
        router.post(SiteURL.Route.apiRewardApprove.routerPath) { _, context in
            let principal = try context.principal()
            let id = try context.int64Parameter("id")
            try await module.service.approve(
                workspaceID: principal.workspaceID, rewardID: id, actor: "apikey:\(principal.keyID)")
            return try Bodies.jsonResponse(try await reward(principal.workspaceID, id))
        }
        router.post(SiteURL.Route.apiRewardVoid.routerPath) { _, context in
            let principal = try context.principal()
            let id = try context.int64Parameter("id")
            try await env.store.voidReward(
                workspaceID: principal.workspaceID, id: id, actor: "apikey:\(principal.keyID)", reason: "by_hand")
            return try Bodies.jsonResponse(try await reward(principal.workspaceID, id))
        }
        router.get(SiteURL.Route.apiPremiums.routerPath) { _, context in
            try Bodies.jsonResponse(
                ["items": try await env.store.premiums(workspaceID: try context.principal().workspaceID)])
        }
        router.post(SiteURL.Route.apiPremiums.routerPath) { request, context in
            let principal = try context.principal()
            let input = try await Bodies.json(PremiumInput.self, from: request, limit: 16 * 1024)
            func required<T>(_ value: T?, _ field: String) throws -> T {
                guard let value else {
                    throw DomainError.invalid("field_missing", "'\(field)' is required.", field: field)
                }
                return value
            }
            let saved = try await env.store.savePremium(
                Premium(
                    id: 0, workspaceID: principal.workspaceID, name: try required(input.name, "name"),
                    description: input.description ?? "", imageURL: input.imageURL,
                    costMinor: try required(input.costMinor, "cost_minor"), shippingMinor: input.shippingMinor ?? 0,
                    // In the programme's currency, as in the admin: the premium's cost is a reward in it.
                    currency: try await env.store.referralProgramme(workspaceID: principal.workspaceID).currency,
                    stock: try required(input.stock, "stock"), active: input.active ?? true), id: nil,
                actor: "apikey:\(principal.keyID)")
            return try Bodies.jsonResponse(saved, status: .created)
        }
        router.patch(SiteURL.Route.apiPremium.routerPath) { request, context in
            let principal = try context.principal()
            let id = try context.int64Parameter("id")
            let input = try await Bodies.json(PremiumInput.self, from: request, limit: 16 * 1024)
            // Merged into the row as it is inside the transaction: a stock a reward lowered meanwhile is kept
            // unless the body names the stock.
            let saved = try await env.store.updatePremium(
                workspaceID: principal.workspaceID, id: id, actor: "apikey:\(principal.keyID)"
            ) { premium in
                Premium.Change(
                    name: input.name, description: input.description, imageURL: input.imageURL.map { Optional($0) },
                    costMinor: input.costMinor, shippingMinor: input.shippingMinor, stock: input.stock,
                    active: input.active
                ).apply(to: &premium)
            }
            return try Bodies.jsonResponse(saved)
        }
        router.get(SiteURL.Route.apiFulfilments.routerPath) { request, context in
            let workspaceID = try context.principal().workspaceID
            let q = request.uri.queryParameters
            let (limit, offset) = try q.paging()
            let state = try q.get("state").map { given in
                guard let state = Store.FulfilmentState(rawValue: given) else {
                    let states = Store.FulfilmentState.allCases.map(\.rawValue).joined(separator: ", ")
                    throw DomainError.invalid("parameter_invalid", "state must be one of \(states).", field: "state")
                }
                return state
            }
            return try Bodies.jsonResponse(
                PageDTO(
                    items: try await env.store.fulfilments(
                        workspaceID: workspaceID, state: state, limit: limit, offset: offset),
                    total: try await env.store.fulfilmentCount(workspaceID: workspaceID, state: state), limit: limit,
                    offset: offset))
        }
        router.post(SiteURL.Route.apiFulfilmentShipped.routerPath) { _, context in
            let principal = try context.principal()
            let id = try context.int64Parameter("id")
            try await module.service.markShipped(
                workspaceID: principal.workspaceID, rewardID: id, actor: "apikey:\(principal.keyID)")
            guard let shipped = try await env.store.fulfilments(workspaceID: principal.workspaceID, rewardID: id).first
            else { throw DomainError.notFound("Premium shipment") }
            return try Bodies.jsonResponse(shipped)
        }
        router.post(SiteURL.Route.apiReferralVouchers.routerPath) { request, context in
            let principal = try context.principal()
            struct Input: Decodable {
                var codes: [String]?
                var generate: Int?
                var prefix: String?
            }
            let input = try await Bodies.json(Input.self, from: request, limit: 4 * 1_048_576)
            let codes = try VoucherCodes.batch(
                given: input.codes, generate: input.generate, prefix: input.prefix, random: env.random)
            let added = try await env.store.addReferralVouchers(workspaceID: principal.workspaceID, codes: codes)
            return try Bodies.jsonResponse(
                [
                    "added": Int64(added),
                    "available": try await env.store.freeReferralVouchers(workspaceID: principal.workspaceID),
                ])
        }
        router.post(SiteURL.Route.apiPayoutExport.routerPath) { _, context in
            let principal = try context.principal()
            guard let w = try await env.store.workspace(id: principal.workspaceID) else {
                throw DomainError.notFound("Workspace")
            }
            let (batch, xml) = try await module.service.exportPayouts(workspace: w, actor: "apikey:\(principal.keyID)")
            return Bodies.download(xml, contentType: "application/xml; charset=utf-8", filename: "payouts-\(batch).xml")
        }
        router.get(SiteURL.Route.apiReferralTax.routerPath) { request, context in
            let principal = try context.principal()
            guard let w = try await env.store.workspace(id: principal.workspaceID) else {
                throw DomainError.notFound("Workspace")
            }
            let year =
                request.uri.queryParameters.get("year").flatMap(Int.init)
                ?? RewardTax.year(of: env.clock.now(), timeZone: w.timeZone)
            return Bodies.download(
                try await module.service.taxCSV(workspaceID: w.id, year: year), contentType: "text/csv; charset=utf-8",
                filename: "referral-rewards-\(year).csv")
        }
        router.get(SiteURL.Route.apiReferralCredit.routerPath) { request, context in
            let principal = try context.principal()
            guard let raw = request.uri.queryParameters.get("email") else {
                throw DomainError.invalid("email_missing", "Give the customer's address: ?email=…")
            }
            let credit = try await module.service.credit(
                workspaceID: principal.workspaceID, email: try EmailAddress(String(raw)))
            return try Bodies.jsonResponse(
                CreditDTO(
                    email: credit.contact.email, contactID: credit.contact.id, balanceMinor: credit.balance.minor,
                    balance: credit.balance.decimalString, currency: credit.balance.currency.code))
        }
        router.post(SiteURL.Route.apiCreditRedemptions.routerPath) { request, context in
            let principal = try context.principal()
            struct Input: Decodable {
                var email: String?
                var orderID: String?
                var amount: String?
                var currency: String?
                enum CodingKeys: String, CodingKey {
                    case email, amount, currency
                    case orderID = "order_id"
                }
            }
            let input = try await Bodies.json(Input.self, from: request, limit: 65_536)
            guard let email = input.email else {
                throw DomainError.invalid("email_missing", "Give the customer's address.", field: "email")
            }
            guard let orderID = input.orderID else {
                throw DomainError.invalid(
                    "order_id_missing", "Give the order that spends the credit.", field: "order_id")
            }
            guard let amount = input.amount else {
                throw DomainError.invalid("amount_missing", "Give the amount to spend, like \"5.00\".", field: "amount")
            }
            let (redemption, created) = try await module.service.redeemCredit(
                workspaceID: principal.workspaceID, email: try EmailAddress(email, field: "email"), orderID: orderID,
                amount: amount, currency: input.currency, actor: "apikey:\(principal.keyID)")
            return try Bodies.jsonResponse(CreditRedemptionDTO(redemption), status: created ? .created : .ok)
        }
        router.get(SiteURL.Route.apiCreditRedemption.routerPath) { _, context in
            let principal = try context.principal()
            let redemption = try await module.service.creditRedemption(
                workspaceID: principal.workspaceID, orderID: context.parameters.get("order_id") ?? "")
            return try Bodies.jsonResponse(CreditRedemptionDTO(redemption))
        }
        router.delete(SiteURL.Route.apiCreditRedemption.routerPath) { _, context in
            let principal = try context.principal()
            let released = try await module.service.releaseCredit(
                workspaceID: principal.workspaceID, orderID: context.parameters.get("order_id") ?? "",
                actor: "apikey:\(principal.keyID)")
            return try Bodies.jsonResponse(CreditRedemptionDTO(released))
        }
        router.get(SiteURL.Route.apiReferralVoucher.routerPath) { _, context in
            let principal = try context.principal()
            guard let code = context.parameters.get("code"),
                let voucher = try await env.store.voucher(workspaceID: principal.workspaceID, code: code)
            else { throw DomainError.notFound("Voucher") }
            return try Bodies.jsonResponse(
                VoucherDTO(
                    code: voucher.code, redeemed: voucher.redeemed, invalidated: voucher.invalidated,
                    valid: voucher.valid))
        }
        router.get(SiteURL.Route.apiReferralFigures.routerPath) { request, context in
            let principal = try context.principal()
            try await module.clicks.flush()
            let raw = request.uri.queryParameters.get("days")
            guard let days = raw.map({ Int($0) }) ?? 90, (1...3650).contains(days) else {
                throw DomainError.invalid(
                    "parameter_invalid", "days must be a whole number from 1 to 3650.", field: "days")
            }
            let f = try await env.store.referralFigures(
                workspaceID: principal.workspaceID, since: env.clock.now().addingTimeInterval(-Double(days) * 86_400))
            return try Bodies.jsonResponse(FiguresDTO(f))
        }
    }

    var module: ReferralModule { get throws { try env.requireReferrals() } }

    func reward(_ workspaceID: WorkspaceID, _ id: Int64) async throws -> Reward {
        guard let r = try await env.store.reward(id: id), r.workspaceID == workspaceID else {
            throw DomainError.notFound("Reward")
        }
        return r
    }

    struct AdvocateDTO: Encodable {
        var id: Int64
        var contactID: Int64
        var email: String
        var code: String
        var active: Bool
        var shareURL: String
        var pageURL: String
        var clicks, pending, confirmed, rewardsMinor: Int64?
        var joinedAt: Date

        init(_ a: Advocate, links: ReferralLinks, row: Store.AdvocateRow? = nil) {
            id = a.id
            contactID = a.contactID
            email = a.email
            code = a.code
            active = a.active
            shareURL = links.shareURL(code: a.code)
            pageURL = links.pageURL(a)
            clicks = row?.clicks
            pending = row?.pending
            confirmed = row?.confirmed
            rewardsMinor = row?.rewardsMinor
            joinedAt = a.joinedAt
        }
    }

    struct JoinInput: Decodable {
        var email: String
        var consentText: String
        var locale: String?
        var ip: String?
        var userAgent: String?
        var grantedAt: String?
        enum CodingKeys: String, CodingKey {
            case email, locale, ip
            case consentText = "consent_text"
            case userAgent = "user_agent"
            case grantedAt = "granted_at"
        }
    }

    /// The shop enrols a customer who ticked the programme's opt-in in their account: the text they saw and the
    /// evidence come with it. A customer without a delivered order cannot join (409).
    func join(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let input = try await Bodies.json(JoinInput.self, from: request, limit: 16 * 1024)
        guard let w = try await env.store.workspace(id: principal.workspaceID) else {
            throw DomainError.notFound("Workspace")
        }
        let at = try input.grantedAt.map { raw -> Date in
            guard let d = ISO8601.parse(raw) else {
                throw DomainError.invalid("time_invalid", "'\(raw)' is not an ISO 8601 time.", field: "granted_at")
            }
            return d
        }
        let advocate = try await module.service.join(
            workspace: w,
            .init(
                email: try EmailAddress(input.email), orderNumber: nil, consentText: input.consentText,
                locale: Locale.resolve(input.locale),
                evidence: ConsentEvidence(
                    at: at ?? env.clock.now(), ip: input.ip.map { String($0.prefix(45)) },
                    userAgent: input.userAgent.map { String($0.prefix(500)) }), source: "api",
                device: input.ip.map { env.store.deviceHash(ip: $0, userAgent: input.userAgent ?? "") }))
        return try Bodies.jsonResponse(AdvocateDTO(advocate, links: try module.links), status: .created)
    }

    /// A catalogue item as POST creates it (name, cost_minor and stock required) or PATCH changes it (keys left out
    /// keep their value).
    struct PremiumInput: Decodable {
        var name: String?
        var description: String?
        var imageURL: String?
        var costMinor: Int64?
        var shippingMinor: Int64?
        var stock: Int64?
        var active: Bool?
        enum CodingKeys: String, CodingKey {
            case name, description, stock, active
            case imageURL = "image_url"
            case costMinor = "cost_minor"
            case shippingMinor = "shipping_minor"
        }
    }

    /// An advocate's store credit: the sum of the ledger (bookings less reversals), for the shop's checkout.
    struct CreditDTO: Encodable {
        var email: String
        var contactID: Int64
        var balanceMinor: Int64
        var balance: String
        var currency: String
    }

    /// Credit an order spent at the shop's checkout, and the customer's balance after it (or after its release).
    struct CreditRedemptionDTO: Encodable {
        var orderID: String
        var contactID: Int64
        var amount: String
        var amountMinor: Int64
        var currency: String
        var redeemedAt: Date
        var releasedAt: Date?
        var balance: String
        var balanceMinor: Int64

        init(_ r: Store.CreditRedemption) {
            let currency = Currency(stored: r.currency)
            orderID = r.orderRef
            contactID = r.contactID
            amount = Money(minor: r.amountMinor, currency: currency).decimalString
            amountMinor = r.amountMinor
            self.currency = r.currency
            redeemedAt = r.at
            releasedAt = r.releasedAt
            balance = Money(minor: r.balanceMinor, currency: currency).decimalString
            balanceMinor = r.balanceMinor
        }
    }

    /// A reward voucher's state, for the shop's checkout: valid while neither redeemed nor invalidated (clawed back).
    struct VoucherDTO: Encodable {
        var code: String
        var redeemed, invalidated, valid: Bool
    }

    struct FiguresDTO: Encodable {
        var clicks, advocates, customers, referredOrders, revenueMinor, rewardCostMinor: Int64
        var conversion, sharesPerCustomer, kFactor, roi: Double?
        var currency: String
        init(_ f: ReferralFigures) {
            clicks = f.clicks
            advocates = f.advocates
            customers = f.customers
            referredOrders = f.referredOrders
            revenueMinor = f.revenueMinor
            rewardCostMinor = f.rewardCostMinor
            conversion = f.conversion
            sharesPerCustomer = f.sharesPerCustomer
            kFactor = f.kFactor
            roi = f.roi
            currency = f.currency
        }
    }
}
