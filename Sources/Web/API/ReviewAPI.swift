import Foundation
import Hummingbird
import ReciprocityCore
import Storage

/// `GET`/`PUT /api/v1/reviews/settings`: the review settings for headless set-ups and scripts. A PUT changes the
/// fields it names and leaves the rest.
struct ReviewAPI {
    let env: WebEnvironment

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.apiReviewSettings.routerPath) { _, context in try await get(context) }
        router.put(SiteURL.Route.apiReviewSettings.routerPath) { request, context in try await put(request, context) }
    }

    struct SettingsDTO: Codable, Equatable {
        var delaySeconds: Double?
        var transitSeconds: Double?
        var reminderSeconds: Double?
        var remindersEnabled: Bool?
        var categoryDelays: [String: Double]?
        var disclosureText: String?
        var openForm: Bool?
        var tokenDays: Double?
        var editDays: Double?
        var incentive: String?
        var live: Bool?
        /// `"incentive": null` in a request: the incentive goes, as an empty string makes it go (JSON merge patch,
        /// RFC 7396); left out, it stays.
        var clearsIncentive = false

        enum CodingKeys: String, CodingKey {
            case delaySeconds = "delay_seconds"
            case transitSeconds = "transit_seconds"
            case reminderSeconds = "reminder_seconds"
            case remindersEnabled = "reminders_enabled"
            case categoryDelays = "category_delays"
            case disclosureText = "disclosure_text"
            case openForm = "open_form"
            case tokenDays = "token_days"
            case editDays = "edit_days"
            case incentive, live
        }

        init(_ s: ReviewSettings) {
            delaySeconds = s.timing.delay
            transitSeconds = s.timing.transit
            reminderSeconds = s.timing.reminderAfter
            remindersEnabled = s.timing.remindersEnabled
            categoryDelays = s.timing.categoryDelays
            disclosureText = s.disclosure
            openForm = s.openForm
            tokenDays = s.tokenLifetime / 86_400
            editDays = s.editWindow / 86_400
            incentive = s.incentive
            live = s.isLive
        }

        func apply(to s: inout ReviewSettings) {
            if let v = delaySeconds { s.timing.delay = v }
            if let v = transitSeconds { s.timing.transit = v }
            if let v = reminderSeconds { s.timing.reminderAfter = v }
            if let v = remindersEnabled { s.timing.remindersEnabled = v }
            if let v = categoryDelays { s.timing.categoryDelays = v }
            if let v = disclosureText { s.disclosure = v.trimmingCharacters(in: .whitespacesAndNewlines) }
            if let v = openForm { s.openForm = v }
            if let v = tokenDays { s.tokenLifetime = v * 86_400 }
            if let v = editDays { s.editWindow = v * 86_400 }
            if let v = incentive {
                let trimmed = v.trimmingCharacters(in: .whitespacesAndNewlines)
                s.incentive = trimmed.isEmpty ? nil : trimmed
            } else if clearsIncentive {
                s.incentive = nil
            }
        }
    }

    func get(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let s = try await env.store.reviewSettings(workspaceID: principal.workspaceID)
        return try Self.json(SettingsDTO(s))
    }

    func put(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        var (dto, bytes) = try await Bodies.jsonWithBytes(SettingsDTO.self, from: request, limit: 65_536)
        dto.clearsIncentive = try JSONDecoder().decode(IncentiveNull.self, from: Data(bytes)).present
        var s = try await env.store.reviewSettings(workspaceID: principal.workspaceID)
        dto.apply(to: &s)
        try await env.store.saveReviewSettings(
            workspaceID: principal.workspaceID, s, actor: "api-key:\(principal.keyID)")
        env.reviews?.cache.invalidate(workspaceID: principal.workspaceID)
        return try Self.json(SettingsDTO(try await env.store.reviewSettings(workspaceID: principal.workspaceID)))
    }

    /// Whether a body says `"incentive": null`: the synthesized decoder reads null and a missing key alike.
    struct IncentiveNull: Decodable {
        let present: Bool
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: SettingsDTO.CodingKeys.self)
            present = try c.contains(.incentive) && c.decodeNil(forKey: .incentive)
        }
    }

    /// Encoded with the explicit snake_case keys above (the shared encoder would convert them again).
    static func json(_ dto: SettingsDTO) throws -> Response {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(
            status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: try e.encode(dto))))
    }
}
