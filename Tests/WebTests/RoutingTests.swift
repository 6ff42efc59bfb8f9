import Foundation
import Logging
import ReciprocityCore
import Storage
import TestSupport
import Testing

@testable import Web

@Suite struct TypedRoutes {
    static let examples: [SiteURL] = [
        .healthz, .readyz, .metrics, .bareRedirect, .openAPI, .apiOrders, .apiOrder(externalID: "A 1/ä?#%"),
        .apiContacts, .apiContact(id: 42), .apiContactExport(id: 42), .apiContactErase(id: 42),
        .apiContactObjection(id: 42), .apiTestJobs, .adminHome, .adminLogin, .adminLogout, .adminLocale,
        .adminPassword, .adminWorkspaces, .adminWorkspaceSwitch, .adminUsers, .adminInvitations, .adminAPIKeys,
        .adminAPIKeyRevoke(id: 7),
        .adminContacts, .adminContact(id: 9), .adminContactExport(id: 9), .adminContactErase(id: 9),
        .adminContactObject(id: 9), .adminOrders, .adminOrder(externalID: "BG-10001"), .adminJobs,
        .adminJobRetry(id: 3), .apiMailEvents, .publicUnsubscribe(token: "MXwy.abc_-"),
        .publicPreferences(token: "MXwy.abc_-"), .adminOutbox, .adminOutboxMail(id: 5), .adminOutboxRaw(id: 5),
        .adminOutboxHTML(id: 5), .adminMail, .adminMailSettings, .adminMailTemplate(key: "review_request.de-du"),
        .adminMailTemplateTest(key: "thank_you.en"), .adminMailTemplateReset(key: "doi_confirmation.de"),
        .publicReview(token: "MXwy.abc_-"), .publicReviewDelete(token: "MXwy.abc_-"),
        .widgetProduct(slug: "shop", sku: "K 1/ä"), .widgetProductJSON(slug: "shop", sku: "K1"),
        .widgetProductWrite(slug: "shop", sku: "K1"), .widgetShop(slug: "shop"), .widgetShopJSON(slug: "shop"),
        .widgetPhoto(slug: "shop", id: 4), .reviewFeed(slug: "shop"), .apiReviewSettings, .adminReviews,
        .adminReviewSettings, .adminReview(id: 8), .adminReviewReply(id: 8), .adminReviewModerate(id: 8),
        .adminReviewPhoto(id: 3), .landing(workspace: "shop", slug: "kaffee-ratgeber"),
        .landingToken(workspace: "shop", slug: "r"), .landingScript(workspace: "shop", slug: "r"),
        .publicDOI(token: "a.b"), .publicGift(token: "c.d"), .publicGiftFile(token: "c.d"),
        .publicGiftRenew(token: "c.d"), .adminMagnets, .adminMagnet(id: 2), .adminMagnetPreview(id: 2),
        .adminMagnetFile(id: 2), .adminMagnetVouchers(id: 2), .adminMagnetShipments(id: 2),
        .adminMagnetShipped(id: 2), .adminContactProof(id: 9), .adminContactProofJSON(id: 9), .apiLeadMagnets,
        .apiLeadMagnet(id: 2), .apiLeadMagnetFile(id: 2), .apiLeadMagnetVouchers(id: 2), .apiLeadMagnetStats(id: 2),
        .apiContactConsentProof(id: 9), .referralRedirect(code: "ANNA-7K3Q"), .referralJoin(workspace: "shop"),
        .advocatePage(token: "a.b"), .advocateQR(token: "a.b"), .advocateCard(token: "a.b"),
        .advocatePremium(token: "a.b"), .advocatePayout(token: "a.b"), .apiReferralProgramme, .apiAdvocates,
        .apiReferrals, .apiReferralDecision(id: 4), .apiRewards, .apiRewardApprove(id: 4), .apiRewardVoid(id: 4),
        .apiPremiums, .apiReferralVouchers, .apiPayoutExport, .apiReferralTax, .apiReferralFigures, .adminReferrals,
        .adminReferralSettings, .adminReferralDecision(id: 4), .adminReward(id: 4), .adminPremiums,
        .adminPayoutExport, .adminReferralTax, .adminFulfilment, .adminPayoutList, .apiPremium(id: 5), .apiFulfilments,
        .apiFulfilmentShipped(rewardID: 6), .adminPremium(id: 5), .adminFulfilmentShipped(rewardID: 6),
        .advocateLeave(token: "a.b"), .apiReferralCredit, .apiReferralVoucher(code: "DANKE-7K3Q-M2XP"),
        .apiCreditRedemptions, .apiCreditRedemption(orderID: "A-1001"), .adminReferralVouchers,
    ]

    @Test func theFastSegmentCheckAgreesWithFoundationOnEveryByte() {
        for b in UInt8.min...UInt8.max {
            let foundation = b < 128 && SiteURL.segmentAllowed.contains(Unicode.Scalar(b))
            #expect(SiteURL.isSegmentByte(b) == foundation, "byte \(b)")
        }
    }

    @Test func everyRouteHasAnExample() {
        #expect(Set(Self.examples.map(\.route)) == Set(SiteURL.Route.allCases))
    }

    @Test(arguments: examples)
    func aLinkParsesBackToTheSameURL(url: SiteURL) {
        #expect(SiteURL.parse(url.path) == url)
        #expect(!url.path.contains(" "))
    }

    /// The OpenAPI document is kept by hand (docs/decisions/0003); this keeps it true: the operations it lists are
    /// exactly the ones the router serves.
    @Test func theOpenAPIDocumentListsExactlyTheServedOperations() async throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Sources/Web/OpenAPI/openapi.yaml")
        let yaml = try String(contentsOf: url, encoding: .utf8)
        var documented: Set<String> = []
        var path: String?
        var inPaths = false
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" { inPaths = true; continue }
            if inPaths, let first = line.first, first != " " { inPaths = false }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "),
                let method = ["get", "put", "post", "delete", "patch"].first(where: { line == "    \($0):" })
            {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        let router = WebApp.buildRouter(
            WebEnvironment(
                store: Store(db: NoDatabase(), clock: SystemClock(), secret: [1]), clock: SystemClock(),
                random: SeededRandom(seed: 1), baseURL: "http://localhost", templates: try await Templates.load(),
                metricsText: { "" }, logger: Logger(label: "test")))
        let served = WebApp.documentedOperations(of: router)
        #expect(served.contains("PUT /api/v1/orders/{external_id}"), "the router is read correctly")
        #expect(documented == served)
    }
}
