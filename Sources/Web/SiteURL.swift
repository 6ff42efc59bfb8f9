import Foundation
import Hummingbird
import ReciprocityCore

/// Every URL the product serves, in one place. The router registers `Route.pattern`; pages, mails and redirects
/// build links with `SiteURL.path`, so links cannot drift from the routes. `parse` is the inverse of `path`.
public enum SiteURL: Equatable, Sendable {
    case healthz, readyz, metrics, bareRedirect
    case openAPI
    case apiOrders
    case apiOrder(externalID: String)
    case apiContacts
    case apiContact(id: Int64)
    case apiContactExport(id: Int64)
    case apiContactErase(id: Int64)
    case apiContactObjection(id: Int64)
    case apiTestJobs
    case adminHome, adminLogin, adminLogout, adminLocale, adminPassword
    case adminWorkspaces, adminWorkspaceSwitch
    case adminUsers
    case adminInvitations
    case adminAPIKeys
    case adminAPIKeyRevoke(id: Int64)
    case adminContacts
    case adminContact(id: Int64)
    case adminContactExport(id: Int64)
    case adminContactErase(id: Int64)
    case adminContactObject(id: Int64)
    case adminOrders
    case adminOrder(externalID: String)
    case adminJobs
    case adminJobRetry(id: Int64)
    case apiMailEvents
    case publicUnsubscribe(token: String)
    case publicPreferences(token: String)
    case adminOutbox
    case adminOutboxMail(id: Int64)
    case adminOutboxRaw(id: Int64)
    case adminOutboxHTML(id: Int64)
    case adminMail
    case adminMailSettings
    case adminMailTemplate(key: String)
    case adminMailTemplateTest(key: String)
    case adminMailTemplateReset(key: String)
    case publicReview(token: String)
    case publicReviewDelete(token: String)
    case widgetProduct(slug: String, sku: String)
    case widgetProductJSON(slug: String, sku: String)
    case widgetProductWrite(slug: String, sku: String)
    case widgetShop(slug: String)
    case widgetShopJSON(slug: String)
    case widgetPhoto(slug: String, id: Int64)
    case reviewFeed(slug: String)
    case apiReviewSettings
    case adminReviews
    case adminReviewSettings
    case adminReview(id: Int64)
    case adminReviewReply(id: Int64)
    case adminReviewModerate(id: Int64)
    case adminReviewPhoto(id: Int64)
    case landing(workspace: String, slug: String)
    case landingToken(workspace: String, slug: String)
    case landingScript(workspace: String, slug: String)
    case publicDOI(token: String)
    case publicGift(token: String)
    case publicGiftFile(token: String)
    case publicGiftRenew(token: String)
    case adminMagnets
    case adminMagnet(id: Int64)
    case adminMagnetPreview(id: Int64)
    case adminMagnetFile(id: Int64)
    case adminMagnetVouchers(id: Int64)
    case adminMagnetShipments(id: Int64)
    case adminMagnetShipped(id: Int64)
    case adminContactProof(id: Int64)
    case adminContactProofJSON(id: Int64)
    case apiLeadMagnets
    case apiLeadMagnet(id: Int64)
    case apiLeadMagnetFile(id: Int64)
    case apiLeadMagnetVouchers(id: Int64)
    case apiLeadMagnetStats(id: Int64)
    case apiContactConsentProof(id: Int64)
    case referralRedirect(code: String)
    case referralJoin(workspace: String)
    case advocatePage(token: String)
    case advocateQR(token: String)
    case advocateCard(token: String)
    case advocatePremium(token: String)
    case advocatePayout(token: String)
    case advocateLeave(token: String)
    case apiReferralProgramme
    case apiAdvocates
    case apiReferrals
    case apiReferralDecision(id: Int64)
    case apiRewards
    case apiRewardApprove(id: Int64)
    case apiRewardVoid(id: Int64)
    case apiPremiums
    case apiPremium(id: Int64)
    case apiFulfilments
    case apiFulfilmentShipped(rewardID: Int64)
    case apiReferralVouchers
    case apiPayoutExport
    case apiReferralTax
    case apiReferralCredit
    case apiCreditRedemptions
    case apiCreditRedemption(orderID: String)
    case apiReferralVoucher(code: String)
    case apiReferralFigures
    case adminReferrals
    case adminReferralSettings
    case adminReferralDecision(id: Int64)
    case adminReward(id: Int64)
    case adminPremiums
    case adminPremium(id: Int64)
    case adminFulfilmentShipped(rewardID: Int64)
    case adminPayoutExport
    case adminReferralTax
    case adminFulfilment
    case adminPayoutList
    case adminReferralVouchers

    /// The route shapes, with `{name}` for a path parameter.
    public enum Route: String, CaseIterable, Sendable {
        case healthz = "/healthz"
        case readyz = "/readyz"
        case metrics = "/metrics"
        case bareRedirect = "/_/redirect"
        case openAPI = "/api/v1/openapi.yaml"
        case apiOrders = "/api/v1/orders"
        case apiOrder = "/api/v1/orders/{external_id}"
        case apiContacts = "/api/v1/contacts"
        case apiContact = "/api/v1/contacts/{id}"
        case apiContactExport = "/api/v1/contacts/{id}/export"
        case apiContactErase = "/api/v1/contacts/{id}/erase"
        case apiContactObjection = "/api/v1/contacts/{id}/objection"
        case apiTestJobs = "/api/v1/_test/jobs"
        case adminHome = "/admin"
        case adminLogin = "/admin/login"
        case adminLogout = "/admin/logout"
        case adminLocale = "/admin/locale"
        case adminPassword = "/admin/password"
        case adminWorkspaces = "/admin/workspaces"
        case adminWorkspaceSwitch = "/admin/workspaces/switch"
        case adminUsers = "/admin/users"
        case adminInvitations = "/admin/invitations"
        case adminAPIKeys = "/admin/api-keys"
        case adminAPIKeyRevoke = "/admin/api-keys/{id}/revoke"
        case adminContacts = "/admin/contacts"
        case adminContact = "/admin/contacts/{id}"
        case adminContactExport = "/admin/contacts/{id}/export"
        case adminContactErase = "/admin/contacts/{id}/erase"
        case adminContactObject = "/admin/contacts/{id}/object"
        case adminOrders = "/admin/orders"
        case adminOrder = "/admin/orders/{external_id}"
        case adminJobs = "/admin/jobs"
        case adminJobRetry = "/admin/jobs/{id}/retry"
        case apiMailEvents = "/api/v1/mail/events"
        case publicUnsubscribe = "/u/{token}"
        case publicPreferences = "/p/{token}"
        case adminOutbox = "/admin/outbox"
        case adminOutboxMail = "/admin/outbox/{id}"
        case adminOutboxRaw = "/admin/outbox/{id}/raw"
        case adminOutboxHTML = "/admin/outbox/{id}/html"
        case adminMail = "/admin/mail"
        case adminMailSettings = "/admin/mail/settings"
        case adminMailTemplate = "/admin/mail/templates/{key}"
        case adminMailTemplateTest = "/admin/mail/templates/{key}/test"
        case adminMailTemplateReset = "/admin/mail/templates/{key}/reset"
        case publicReview = "/review/{token}"
        case publicReviewDelete = "/review/{token}/delete"
        case widgetProduct = "/widgets/{slug}/products/{sku}"
        case widgetProductJSON = "/widgets/{slug}/products/{sku}/json"
        case widgetProductWrite = "/widgets/{slug}/products/{sku}/write"
        case widgetShop = "/widgets/{slug}/shop"
        case widgetShopJSON = "/widgets/{slug}/shop/json"
        case widgetPhoto = "/widgets/{slug}/photos/{id}"
        case reviewFeed = "/feeds/{slug}/google-product-reviews.xml"
        case apiReviewSettings = "/api/v1/reviews/settings"
        case adminReviews = "/admin/reviews"
        case adminReviewSettings = "/admin/review-settings"
        case adminReview = "/admin/reviews/{id}"
        case adminReviewReply = "/admin/reviews/{id}/reply"
        case adminReviewModerate = "/admin/reviews/{id}/moderate"
        case adminReviewPhoto = "/admin/review-photos/{id}"
        case landing = "/lm/{workspace}/{slug}"
        case landingToken = "/lm/{workspace}/{slug}/token"
        case landingScript = "/lm/{workspace}/{slug}/embed.js"
        case publicDOI = "/doi/{token}"
        case publicGift = "/gift/{token}"
        case publicGiftFile = "/gift/{token}/file"
        case publicGiftRenew = "/gift/{token}/renew"
        case adminMagnets = "/admin/magnets"
        case adminMagnet = "/admin/magnets/{id}"
        case adminMagnetPreview = "/admin/magnets/{id}/preview"
        case adminMagnetFile = "/admin/magnets/{id}/file"
        case adminMagnetVouchers = "/admin/magnets/{id}/vouchers"
        case adminMagnetShipments = "/admin/magnets/{id}/shipments.csv"
        case adminMagnetShipped = "/admin/magnets/{id}/shipped"
        case adminContactProof = "/admin/contacts/{id}/proof"
        case adminContactProofJSON = "/admin/contacts/{id}/proof.json"
        case apiLeadMagnets = "/api/v1/lead-magnets"
        case apiLeadMagnet = "/api/v1/lead-magnets/{id}"
        case apiLeadMagnetFile = "/api/v1/lead-magnets/{id}/file"
        case apiLeadMagnetVouchers = "/api/v1/lead-magnets/{id}/vouchers"
        case apiLeadMagnetStats = "/api/v1/lead-magnets/{id}/stats"
        case apiContactConsentProof = "/api/v1/contacts/{id}/consent-proof"
        case referralRedirect = "/r/{code}"
        case referralJoin = "/join/{workspace}"
        case advocatePage = "/a/{token}"
        case advocateQR = "/a/{token}/qr.svg"
        case advocateCard = "/a/{token}/card"
        case advocatePremium = "/a/{token}/premium"
        case advocatePayout = "/a/{token}/payout"
        case advocateLeave = "/a/{token}/leave"
        case apiReferralProgramme = "/api/v1/referrals/programme"
        case apiAdvocates = "/api/v1/referrals/advocates"
        case apiReferrals = "/api/v1/referrals"
        case apiReferralDecision = "/api/v1/referrals/{id}/decision"
        case apiRewards = "/api/v1/referrals/rewards"
        case apiRewardApprove = "/api/v1/referrals/rewards/{id}/approve"
        case apiRewardVoid = "/api/v1/referrals/rewards/{id}/void"
        case apiPremiums = "/api/v1/referrals/premiums"
        case apiPremium = "/api/v1/referrals/premiums/{id}"
        case apiFulfilments = "/api/v1/referrals/fulfilments"
        case apiFulfilmentShipped = "/api/v1/referrals/fulfilments/{id}/shipped"
        case apiReferralVouchers = "/api/v1/referrals/vouchers"
        case apiPayoutExport = "/api/v1/referrals/payouts/export"
        case apiReferralTax = "/api/v1/referrals/tax"
        case apiReferralCredit = "/api/v1/referrals/credit"
        case apiCreditRedemptions = "/api/v1/referrals/credit/redemptions"
        case apiCreditRedemption = "/api/v1/referrals/credit/redemptions/{order_id}"
        case apiReferralVoucher = "/api/v1/referrals/vouchers/{code}"
        case apiReferralFigures = "/api/v1/referrals/figures"
        case adminReferrals = "/admin/referrals"
        case adminReferralSettings = "/admin/referrals/settings"
        case adminReferralDecision = "/admin/referrals/{id}/decision"
        case adminReward = "/admin/referrals/rewards/{id}"
        case adminPremiums = "/admin/referrals/premiums"
        case adminPremium = "/admin/referrals/premiums/{id}"
        case adminFulfilmentShipped = "/admin/referrals/fulfilments/{id}/shipped"
        case adminPayoutExport = "/admin/referrals/payouts.xml"
        case adminReferralTax = "/admin/referrals/tax.csv"
        case adminFulfilment = "/admin/referrals/fulfilment.csv"
        case adminPayoutList = "/admin/referrals/payouts.csv"
        case adminReferralVouchers = "/admin/referrals/vouchers"

        public var pattern: String { rawValue }
        /// Hummingbird's syntax for the same pattern.
        public var routerPathString: String {
            rawValue.replacingOccurrences(of: "{", with: ":").replacingOccurrences(of: "}", with: "")
        }
    }

    public var route: Route {
        switch self {
        case .healthz: .healthz
        case .readyz: .readyz
        case .metrics: .metrics
        case .bareRedirect: .bareRedirect
        case .openAPI: .openAPI
        case .apiOrders: .apiOrders
        case .apiOrder: .apiOrder
        case .apiContacts: .apiContacts
        case .apiContact: .apiContact
        case .apiContactExport: .apiContactExport
        case .apiContactErase: .apiContactErase
        case .apiContactObjection: .apiContactObjection
        case .apiTestJobs: .apiTestJobs
        case .adminHome: .adminHome
        case .adminLogin: .adminLogin
        case .adminLogout: .adminLogout
        case .adminLocale: .adminLocale
        case .adminPassword: .adminPassword
        case .adminWorkspaces: .adminWorkspaces
        case .adminWorkspaceSwitch: .adminWorkspaceSwitch
        case .adminUsers: .adminUsers
        case .adminInvitations: .adminInvitations
        case .adminAPIKeys: .adminAPIKeys
        case .adminAPIKeyRevoke: .adminAPIKeyRevoke
        case .adminContacts: .adminContacts
        case .adminContact: .adminContact
        case .adminContactExport: .adminContactExport
        case .adminContactErase: .adminContactErase
        case .adminContactObject: .adminContactObject
        case .adminOrders: .adminOrders
        case .adminOrder: .adminOrder
        case .adminJobs: .adminJobs
        case .adminJobRetry: .adminJobRetry
        case .apiMailEvents: .apiMailEvents
        case .publicUnsubscribe: .publicUnsubscribe
        case .publicPreferences: .publicPreferences
        case .adminOutbox: .adminOutbox
        case .adminOutboxMail: .adminOutboxMail
        case .adminOutboxRaw: .adminOutboxRaw
        case .adminOutboxHTML: .adminOutboxHTML
        case .adminMail: .adminMail
        case .adminMailSettings: .adminMailSettings
        case .adminMailTemplate: .adminMailTemplate
        case .adminMailTemplateTest: .adminMailTemplateTest
        case .adminMailTemplateReset: .adminMailTemplateReset
        case .publicReview: .publicReview
        case .publicReviewDelete: .publicReviewDelete
        case .widgetProduct: .widgetProduct
        case .widgetProductJSON: .widgetProductJSON
        case .widgetProductWrite: .widgetProductWrite
        case .widgetShop: .widgetShop
        case .widgetShopJSON: .widgetShopJSON
        case .widgetPhoto: .widgetPhoto
        case .reviewFeed: .reviewFeed
        case .apiReviewSettings: .apiReviewSettings
        case .adminReviews: .adminReviews
        case .adminReviewSettings: .adminReviewSettings
        case .adminReview: .adminReview
        case .adminReviewReply: .adminReviewReply
        case .adminReviewModerate: .adminReviewModerate
        case .adminReviewPhoto: .adminReviewPhoto
        case .landing: .landing
        case .landingToken: .landingToken
        case .landingScript: .landingScript
        case .publicDOI: .publicDOI
        case .publicGift: .publicGift
        case .publicGiftFile: .publicGiftFile
        case .publicGiftRenew: .publicGiftRenew
        case .adminMagnets: .adminMagnets
        case .adminMagnet: .adminMagnet
        case .adminMagnetPreview: .adminMagnetPreview
        case .adminMagnetFile: .adminMagnetFile
        case .adminMagnetVouchers: .adminMagnetVouchers
        case .adminMagnetShipments: .adminMagnetShipments
        case .adminMagnetShipped: .adminMagnetShipped
        case .adminContactProof: .adminContactProof
        case .adminContactProofJSON: .adminContactProofJSON
        case .apiLeadMagnets: .apiLeadMagnets
        case .apiLeadMagnet: .apiLeadMagnet
        case .apiLeadMagnetFile: .apiLeadMagnetFile
        case .apiLeadMagnetVouchers: .apiLeadMagnetVouchers
        case .apiLeadMagnetStats: .apiLeadMagnetStats
        case .apiContactConsentProof: .apiContactConsentProof
        case .referralRedirect: .referralRedirect
        case .referralJoin: .referralJoin
        case .advocatePage: .advocatePage
        case .advocateQR: .advocateQR
        case .advocateCard: .advocateCard
        case .advocatePremium: .advocatePremium
        case .advocatePayout: .advocatePayout
        case .advocateLeave: .advocateLeave
        case .apiReferralProgramme: .apiReferralProgramme
        case .apiAdvocates: .apiAdvocates
        case .apiReferrals: .apiReferrals
        case .apiReferralDecision: .apiReferralDecision
        case .apiRewards: .apiRewards
        case .apiRewardApprove: .apiRewardApprove
        case .apiRewardVoid: .apiRewardVoid
        case .apiPremiums: .apiPremiums
        case .apiPremium: .apiPremium
        case .apiFulfilments: .apiFulfilments
        case .apiFulfilmentShipped: .apiFulfilmentShipped
        case .apiReferralVouchers: .apiReferralVouchers
        case .apiPayoutExport: .apiPayoutExport
        case .apiReferralTax: .apiReferralTax
        case .apiReferralCredit: .apiReferralCredit
        case .apiCreditRedemptions: .apiCreditRedemptions
        case .apiCreditRedemption: .apiCreditRedemption
        case .apiReferralVoucher: .apiReferralVoucher
        case .apiReferralFigures: .apiReferralFigures
        case .adminReferrals: .adminReferrals
        case .adminReferralSettings: .adminReferralSettings
        case .adminReferralDecision: .adminReferralDecision
        case .adminReward: .adminReward
        case .adminPremiums: .adminPremiums
        case .adminPremium: .adminPremium
        case .adminFulfilmentShipped: .adminFulfilmentShipped
        case .adminPayoutExport: .adminPayoutExport
        case .adminReferralTax: .adminReferralTax
        case .adminFulfilment: .adminFulfilment
        case .adminPayoutList: .adminPayoutList
        case .adminReferralVouchers: .adminReferralVouchers
        }
    }

    /// The path parameters, in the order they appear in the pattern.
    var parameters: [String] {
        switch self {
        case .widgetProduct(let slug, let sku), .widgetProductJSON(let slug, let sku),
            .widgetProductWrite(let slug, let sku):
            [slug, sku]
        case .widgetPhoto(let slug, let id): [slug, String(id)]
        case .landing(let w, let m), .landingToken(let w, let m), .landingScript(let w, let m): [w, m]
        default: parameter.map { [$0] } ?? []
        }
    }

    var parameter: String? {
        switch self {
        case .apiOrder(let e), .adminOrder(let e), .publicUnsubscribe(let e), .publicPreferences(let e),
            .adminMailTemplate(let e), .adminMailTemplateTest(let e), .adminMailTemplateReset(let e),
            .publicReview(let e), .publicReviewDelete(let e), .widgetShop(let e), .widgetShopJSON(let e),
            .reviewFeed(let e), .publicDOI(let e), .publicGift(let e), .publicGiftFile(let e), .publicGiftRenew(let e):
            e
        case .adminReview(let id), .adminReviewReply(let id), .adminReviewModerate(let id), .adminReviewPhoto(let id):
            String(id)
        case .adminMagnet(let id), .adminMagnetPreview(let id), .adminMagnetFile(let id), .adminMagnetVouchers(let id),
            .adminMagnetShipments(let id), .adminMagnetShipped(let id), .adminContactProof(let id),
            .adminContactProofJSON(let id), .apiLeadMagnet(let id), .apiLeadMagnetFile(let id),
            .apiLeadMagnetVouchers(let id), .apiLeadMagnetStats(let id), .apiContactConsentProof(let id):
            String(id)
        case .apiContact(let id), .apiContactExport(let id), .apiContactErase(let id), .apiContactObjection(let id),
            .adminAPIKeyRevoke(let id), .adminContact(let id), .adminContactExport(let id),
            .adminContactErase(let id), .adminContactObject(let id), .adminJobRetry(let id), .adminOutboxMail(let id),
            .adminOutboxRaw(let id), .adminOutboxHTML(let id):
            String(id)
        case .referralRedirect(let e), .referralJoin(let e), .advocatePage(let e), .advocateQR(let e),
            .advocateCard(let e), .advocatePremium(let e), .advocatePayout(let e), .advocateLeave(let e),
            .apiReferralVoucher(let e), .apiCreditRedemption(let e):
            e
        case .apiReferralDecision(let id), .apiRewardApprove(let id), .apiRewardVoid(let id),
            .adminReferralDecision(let id), .adminReward(let id), .apiPremium(let id), .adminPremium(let id),
            .apiFulfilmentShipped(let id), .adminFulfilmentShipped(let id):
            String(id)
        default: nil
        }
    }

    /// The path, with the parameter percent-encoded as one path segment.
    public var path: String {
        var out = route.pattern
        for value in parameters {
            guard let open = out.firstIndex(of: "{"), let close = out[open...].firstIndex(of: "}") else { break }
            let encoded =
                value.utf8.allSatisfy(Self.isSegmentByte)
                ? value : value.addingPercentEncoding(withAllowedCharacters: Self.segmentAllowed) ?? value
            out.replaceSubrange(open...close, with: encoded)
        }
        return out
    }

    /// `segmentAllowed` for one byte, without Foundation: most values (ids, codes, tokens) need no encoding, and
    /// asking `addingPercentEncoding` cost more than building the rest of the path.
    static func isSegmentByte(_ b: UInt8) -> Bool { segmentASCII.contains(b) }

    static let segmentASCII = ASCIIMembership(segmentAllowed)

    static let segmentAllowed: CharacterSet = {
        var set = CharacterSet.urlPathAllowed
        set.remove(charactersIn: "/?#%")
        return set
    }()

    /// The URL a path stands for, or nil.
    public static func parse(_ path: String) -> SiteURL? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        for route in Route.allCases {
            let shape = route.pattern.split(separator: "/", omittingEmptySubsequences: false)
            guard shape.count == parts.count else { continue }
            var values: [String] = []
            var matches = true
            for (s, p) in zip(shape, parts) {
                if s.hasPrefix("{") {
                    guard !p.isEmpty, let decoded = p.removingPercentEncoding else { matches = false; break }
                    values.append(decoded)
                } else if s != p {
                    matches = false
                    break
                }
            }
            guard matches, let url = make(route, values) else { continue }
            return url
        }
        return nil
    }

    static func make(_ route: Route, _ values: [String]) -> SiteURL? {
        let value = values.first
        let id = value.flatMap { Int64($0) }
        let second = values.count > 1 ? values[1] : nil
        switch route {
        case .healthz: return .healthz
        case .readyz: return .readyz
        case .metrics: return .metrics
        case .bareRedirect: return .bareRedirect
        case .openAPI: return .openAPI
        case .apiOrders: return .apiOrders
        case .apiOrder: return value.map { .apiOrder(externalID: $0) }
        case .apiContacts: return .apiContacts
        case .apiContact: return id.map { .apiContact(id: $0) }
        case .apiContactExport: return id.map { .apiContactExport(id: $0) }
        case .apiContactErase: return id.map { .apiContactErase(id: $0) }
        case .apiContactObjection: return id.map { .apiContactObjection(id: $0) }
        case .apiTestJobs: return .apiTestJobs
        case .adminHome: return .adminHome
        case .adminLogin: return .adminLogin
        case .adminLogout: return .adminLogout
        case .adminLocale: return .adminLocale
        case .adminPassword: return .adminPassword
        case .adminWorkspaces: return .adminWorkspaces
        case .adminWorkspaceSwitch: return .adminWorkspaceSwitch
        case .adminUsers: return .adminUsers
        case .adminInvitations: return .adminInvitations
        case .adminAPIKeys: return .adminAPIKeys
        case .adminAPIKeyRevoke: return id.map { .adminAPIKeyRevoke(id: $0) }
        case .adminContacts: return .adminContacts
        case .adminContact: return id.map { .adminContact(id: $0) }
        case .adminContactExport: return id.map { .adminContactExport(id: $0) }
        case .adminContactErase: return id.map { .adminContactErase(id: $0) }
        case .adminContactObject: return id.map { .adminContactObject(id: $0) }
        case .adminOrders: return .adminOrders
        case .adminOrder: return value.map { .adminOrder(externalID: $0) }
        case .adminJobs: return .adminJobs
        case .adminJobRetry: return id.map { .adminJobRetry(id: $0) }
        case .apiMailEvents: return .apiMailEvents
        case .publicUnsubscribe: return value.map { .publicUnsubscribe(token: $0) }
        case .publicPreferences: return value.map { .publicPreferences(token: $0) }
        case .adminOutbox: return .adminOutbox
        case .adminOutboxMail: return id.map { .adminOutboxMail(id: $0) }
        case .adminOutboxRaw: return id.map { .adminOutboxRaw(id: $0) }
        case .adminOutboxHTML: return id.map { .adminOutboxHTML(id: $0) }
        case .adminMail: return .adminMail
        case .adminMailSettings: return .adminMailSettings
        case .adminMailTemplate: return value.map { .adminMailTemplate(key: $0) }
        case .adminMailTemplateTest: return value.map { .adminMailTemplateTest(key: $0) }
        case .adminMailTemplateReset: return value.map { .adminMailTemplateReset(key: $0) }
        case .publicReview: return value.map { .publicReview(token: $0) }
        case .publicReviewDelete: return value.map { .publicReviewDelete(token: $0) }
        case .widgetProduct:
            guard let value, let second else { return nil }
            return .widgetProduct(slug: value, sku: second)
        case .widgetProductJSON:
            guard let value, let second else { return nil }
            return .widgetProductJSON(slug: value, sku: second)
        case .widgetProductWrite:
            guard let value, let second else { return nil }
            return .widgetProductWrite(slug: value, sku: second)
        case .widgetShop: return value.map { .widgetShop(slug: $0) }
        case .widgetShopJSON: return value.map { .widgetShopJSON(slug: $0) }
        case .widgetPhoto:
            guard let value, let photo = second.flatMap({ Int64($0) }) else { return nil }
            return .widgetPhoto(slug: value, id: photo)
        case .reviewFeed: return value.map { .reviewFeed(slug: $0) }
        case .apiReviewSettings: return .apiReviewSettings
        case .adminReviews: return .adminReviews
        case .adminReviewSettings: return .adminReviewSettings
        case .adminReview: return id.map { .adminReview(id: $0) }
        case .adminReviewReply: return id.map { .adminReviewReply(id: $0) }
        case .adminReviewModerate: return id.map { .adminReviewModerate(id: $0) }
        case .adminReviewPhoto: return id.map { .adminReviewPhoto(id: $0) }
        case .landing:
            guard let value, let second else { return nil }
            return .landing(workspace: value, slug: second)
        case .landingToken:
            guard let value, let second else { return nil }
            return .landingToken(workspace: value, slug: second)
        case .landingScript:
            guard let value, let second else { return nil }
            return .landingScript(workspace: value, slug: second)
        case .publicDOI: return value.map { .publicDOI(token: $0) }
        case .publicGift: return value.map { .publicGift(token: $0) }
        case .publicGiftFile: return value.map { .publicGiftFile(token: $0) }
        case .publicGiftRenew: return value.map { .publicGiftRenew(token: $0) }
        case .adminMagnets: return .adminMagnets
        case .adminMagnet: return id.map { .adminMagnet(id: $0) }
        case .adminMagnetPreview: return id.map { .adminMagnetPreview(id: $0) }
        case .adminMagnetFile: return id.map { .adminMagnetFile(id: $0) }
        case .adminMagnetVouchers: return id.map { .adminMagnetVouchers(id: $0) }
        case .adminMagnetShipments: return id.map { .adminMagnetShipments(id: $0) }
        case .adminMagnetShipped: return id.map { .adminMagnetShipped(id: $0) }
        case .adminContactProof: return id.map { .adminContactProof(id: $0) }
        case .adminContactProofJSON: return id.map { .adminContactProofJSON(id: $0) }
        case .apiLeadMagnets: return .apiLeadMagnets
        case .apiLeadMagnet: return id.map { .apiLeadMagnet(id: $0) }
        case .apiLeadMagnetFile: return id.map { .apiLeadMagnetFile(id: $0) }
        case .apiLeadMagnetVouchers: return id.map { .apiLeadMagnetVouchers(id: $0) }
        case .apiLeadMagnetStats: return id.map { .apiLeadMagnetStats(id: $0) }
        case .apiContactConsentProof: return id.map { .apiContactConsentProof(id: $0) }
        case .referralRedirect: return value.map { .referralRedirect(code: $0) }
        case .referralJoin: return value.map { .referralJoin(workspace: $0) }
        case .advocatePage: return value.map { .advocatePage(token: $0) }
        case .advocateQR: return value.map { .advocateQR(token: $0) }
        case .advocateCard: return value.map { .advocateCard(token: $0) }
        case .advocatePremium: return value.map { .advocatePremium(token: $0) }
        case .advocatePayout: return value.map { .advocatePayout(token: $0) }
        case .advocateLeave: return value.map { .advocateLeave(token: $0) }
        case .apiReferralProgramme: return .apiReferralProgramme
        case .apiAdvocates: return .apiAdvocates
        case .apiReferrals: return .apiReferrals
        case .apiReferralDecision: return id.map { .apiReferralDecision(id: $0) }
        case .apiRewards: return .apiRewards
        case .apiRewardApprove: return id.map { .apiRewardApprove(id: $0) }
        case .apiRewardVoid: return id.map { .apiRewardVoid(id: $0) }
        case .apiPremiums: return .apiPremiums
        case .apiReferralVouchers: return .apiReferralVouchers
        case .apiPayoutExport: return .apiPayoutExport
        case .apiReferralTax: return .apiReferralTax
        case .apiReferralCredit: return .apiReferralCredit
        case .apiCreditRedemptions: return .apiCreditRedemptions
        case .apiCreditRedemption: return value.map { .apiCreditRedemption(orderID: $0) }
        case .apiReferralVoucher: return value.map { .apiReferralVoucher(code: $0) }
        case .apiReferralFigures: return .apiReferralFigures
        case .adminReferrals: return .adminReferrals
        case .adminReferralSettings: return .adminReferralSettings
        case .adminReferralDecision: return id.map { .adminReferralDecision(id: $0) }
        case .adminReward: return id.map { .adminReward(id: $0) }
        case .adminPremiums: return .adminPremiums
        case .adminPayoutExport: return .adminPayoutExport
        case .adminReferralTax: return .adminReferralTax
        case .adminFulfilment: return .adminFulfilment
        case .adminPayoutList: return .adminPayoutList
        case .adminReferralVouchers: return .adminReferralVouchers
        case .apiPremium: return id.map { .apiPremium(id: $0) }
        case .apiFulfilments: return .apiFulfilments
        case .apiFulfilmentShipped: return id.map { .apiFulfilmentShipped(rewardID: $0) }
        case .adminPremium: return id.map { .adminPremium(id: $0) }
        case .adminFulfilmentShipped: return id.map { .adminFulfilmentShipped(rewardID: $0) }
        }
    }
}

extension SiteURL.Route {
    /// The route in Hummingbird's form, for registration.
    var routerPath: RouterPath { RouterPath(routerPathString) }
}
