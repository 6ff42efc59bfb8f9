import Foundation
import Hummingbird
import Messaging
import ReciprocityCore
import Storage

/// The pages behind the links in every marketing mail: the RFC 8058 unsubscribe (GET confirms, POST acts) and the
/// preference centre. No login: the signed token in the URL is the authorization.
struct MailPages: Sendable {
    let env: WebEnvironment
    var unsubscribe: Unsubscribe { Unsubscribe(store: env.store) }

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.publicUnsubscribe.routerPath) { _, context in try await unsubscribePage(context) }
        router.post(SiteURL.Route.publicUnsubscribe.routerPath) { request, context in
            try await unsubscribeNow(request, context)
        }
        router.get(SiteURL.Route.publicPreferences.routerPath) { _, context in
            try await preferencesPage(context, message: nil)
        }
        router.post(SiteURL.Route.publicPreferences.routerPath) { request, context in
            try await savePreferences(request, context)
        }
    }

    func page(_ context: AppContext, _ name: String, title: String, _ extra: [String: Any]) -> Response {
        let t = Strings.table(context.locale)
        var model: [String: Any] = ["t": t, "lang": context.locale, "title": t[title] ?? title]
        for (k, v) in extra { model[k] = v }
        return env.templates.page(name, model)
    }

    func token(_ context: AppContext) throws -> String {
        guard let token = context.parameters.get("token") else { throw DomainError.notFound("Link") }
        return token
    }

    func invalidLink() -> DomainError {
        DomainError(.notFound, code: "link_invalid", "This link is not valid. Please use the link from your email.")
    }

    /// GET never unsubscribes (mail scanners follow links): it shows what the button will do.
    func unsubscribePage(_ context: AppContext) async throws -> Response {
        let token = try token(context)
        guard let target = unsubscribe.target(unsubscribeToken: token) else { throw invalidLink() }
        let workspace = try await env.store.workspace(id: target.workspaceID)
        let status = try await unsubscribe.status(target)
        return page(
            context, "unsubscribe", title: "unsubscribe_title",
            [
                "shop": workspace?.name ?? "", "done": status.suppressed,
                "action": SiteURL.publicUnsubscribe(token: token).path,
                "preferences": target.contactID == nil
                    ? ""
                    : SiteURL.publicPreferences(
                        token: env.store.signToken(
                            purpose: "preferences",
                            fields: [
                                String(target.workspaceID), target.emailHash, target.contactID.map(String.init) ?? "",
                            ])
                    ).path,
            ])
    }

    /// RFC 8058 one-click: the body is `List-Unsubscribe=One-Click`, or empty, or our own confirmation form.
    func unsubscribeNow(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        _ = try await Bodies.form(request, limit: 4096)
        guard let target = unsubscribe.target(unsubscribeToken: token) else { throw invalidLink() }
        try await unsubscribe.objectAll(target, source: "one_click")
        let workspace = try await env.store.workspace(id: target.workspaceID)
        return page(context, "unsubscribe", title: "unsubscribe_title", ["shop": workspace?.name ?? "", "done": true])
    }

    func preferencesPage(_ context: AppContext, message: String?) async throws -> Response {
        let token = try token(context)
        guard let target = unsubscribe.target(preferencesToken: token) else { throw invalidLink() }
        let t = Strings.table(context.locale)
        let workspace = try await env.store.workspace(id: target.workspaceID)
        let status = try await unsubscribe.status(target)
        var model: [String: Any] = [
            "shop": workspace?.name ?? "", "action": SiteURL.publicPreferences(token: token).path,
            "suppressed": status.suppressed,
            "purposes": ConsentPurpose.allCases.map { p -> [String: Any] in
                let state = status.consents[p]
                return [
                    "purpose": p.rawValue, "label": t[p.rawValue] ?? p.rawValue,
                    "granted": state == .granted && !status.suppressed,
                    "objectable": ConsentRules.objectable(state),
                    "state": state.map { t[$0.rawValue] ?? $0.rawValue } ?? "–",
                ]
            },
        ]
        if let message { model["message"] = t[message] ?? message }
        return page(context, "preferences", title: "preferences_title", model)
    }

    func savePreferences(_ request: Request, _ context: AppContext) async throws -> Response {
        let token = try token(context)
        let fields = try await Bodies.form(request, limit: 4096)
        guard let target = unsubscribe.target(preferencesToken: token) else { throw invalidLink() }
        if fields["action"] == "object" {
            try await unsubscribe.objectAll(target, source: "preference_centre")
            return try await preferencesPage(context, message: "preferences_objected")
        }
        let status = try await unsubscribe.status(target)
        let withdrawn = ConsentRules.preferenceWithdrawals(
            consents: status.consents,
            keep: Set(ConsentPurpose.allCases.filter { fields["keep_\($0.rawValue)"] != nil }),
            object: Set(ConsentPurpose.allCases.filter { fields["object_\($0.rawValue)"] != nil }))
        try await unsubscribe.withdraw(target, purposes: withdrawn)
        return try await preferencesPage(context, message: "preferences_saved")
    }
}
