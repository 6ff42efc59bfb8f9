import Foundation
import HTTPTypes
import Hummingbird
import ReciprocityCore
import Storage

/// The admin UI: server-rendered pages; every handler decodes, calls the store, and hands a page model to a template.
struct AdminRoutes {
    let env: WebEnvironment
    var store: Store { env.store }

    func register(on router: Router<AppContext>) {
        router.get(SiteURL.Route.adminLogin.routerPath) { request, context in loginPage(request, context) }
        router.post(SiteURL.Route.adminLogin.routerPath) { request, context in try await login(request, context) }
        router.get(SiteURL.Route.adminLocale.routerPath) { request, context in switchLocale(request, context) }
        router.post(SiteURL.Route.adminLogout.routerPath) { request, context in try await logout(request, context) }
        router.get(SiteURL.Route.adminHome.routerPath) { _, context in try await home(context) }
        router.get(SiteURL.Route.adminPassword.routerPath) { _, context in try passwordPage(context, message: nil) }
        router.post(SiteURL.Route.adminPassword.routerPath) { request, context in
            try await changePassword(request, context)
        }
        router.get(SiteURL.Route.adminWorkspaces.routerPath) { _, context in try workspaces(context) }
        router.post(SiteURL.Route.adminInvitations.routerPath) { request, context in
            try await answerInvitation(request, context)
        }
        router.post(SiteURL.Route.adminWorkspaceSwitch.routerPath) { request, context in
            try await switchWorkspace(request, context)
        }
        router.get(SiteURL.Route.adminUsers.routerPath) { _, context in try await users(context, created: nil) }
        router.post(SiteURL.Route.adminUsers.routerPath) { request, context in try await createUser(request, context) }
        router.get(SiteURL.Route.adminAPIKeys.routerPath) { _, context in try await apiKeys(context, newKey: nil) }
        router.post(SiteURL.Route.adminAPIKeys.routerPath) { request, context in
            try await createAPIKey(request, context)
        }
        router.post(SiteURL.Route.adminAPIKeyRevoke.routerPath) { request, context in
            try await revokeAPIKey(request, context)
        }
        router.get(SiteURL.Route.adminContacts.routerPath) { request, context in try await contacts(request, context) }
        router.get(SiteURL.Route.adminContact.routerPath) { request, context in try await contact(request, context) }
        router.get(SiteURL.Route.adminContactExport.routerPath) { _, context in try await exportContact(context) }
        router.post(SiteURL.Route.adminContactErase.routerPath) { request, context in
            try await eraseContact(request, context)
        }
        router.post(SiteURL.Route.adminContactObject.routerPath) { request, context in
            try await objectContact(request, context)
        }
        router.get(SiteURL.Route.adminOrders.routerPath) { request, context in try await orders(request, context) }
        router.get(SiteURL.Route.adminOrder.routerPath) { _, context in try await order(context) }
        router.get(SiteURL.Route.adminJobs.routerPath) { request, context in try await jobs(request, context) }
        router.post(SiteURL.Route.adminJobRetry.routerPath) { request, context in try await retryJob(request, context) }
        registerMail(on: router)
        registerReviews(on: router)
        registerLeads(on: router)
        registerReferrals(on: router)
    }

    // MARK: Shared page model

    func admin(_ context: AppContext) throws -> AdminPrincipal {
        guard let admin = context.admin else { throw Redirect(to: SiteURL.adminLogin.path) }
        return admin
    }

    /// The body limit of the forms with long texts: a mail template (two parts of up to 100,000 characters) and a
    /// lead magnet (its text and follow-ups).
    static let longFormLimit = 1_048_576

    /// Reads a form and checks its CSRF token against the session's. `limit`: the body's bytes; the default fits
    /// every settings form, the mail template and lead magnet forms pass more (their texts may be long, and
    /// percent-encoding roughly doubles HTML).
    func form(_ request: Request, _ context: AppContext, limit: Int = 65_536) async throws -> [String: String] {
        let admin = try admin(context)
        let fields = try await Bodies.form(request, limit: limit)
        guard constantTimeEquals(fields["_csrf"] ?? "", admin.csrfToken) else {
            throw DomainError(
                .forbidden, code: "csrf_invalid", "The form expired. Please reload the page and try again.")
        }
        return fields
    }

    func require(_ allowed: Bool, _ context: AppContext) throws {
        guard allowed else {
            throw DomainError(.forbidden, code: "role_insufficient", Strings.table(context.locale)["forbidden"] ?? "")
        }
    }

    func base(_ context: AppContext, title: String, nav: String) throws -> [String: Any] {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        return [
            "t": t, "lang": context.locale, "title": t[title] ?? title, "nav_\(nav)": true, "csrf": admin.csrfToken,
            "user": ["name": admin.user.name, "email": admin.user.email],
            "workspace": ["name": admin.workspace.name, "slug": admin.workspace.slug],
            "is_owner": admin.role == .owner, "many_workspaces": admin.memberships.count > 1,
            "urls": Self.urls, "lang_url": "\(SiteURL.adminLocale.path)?lang=\(t["lang_other"] ?? "en")",
        ]
    }

    static let urls: [String: String] = [
        "home": SiteURL.adminHome.path, "contacts": SiteURL.adminContacts.path, "orders": SiteURL.adminOrders.path,
        "jobs": SiteURL.adminJobs.path, "outbox": SiteURL.adminOutbox.path, "mail": SiteURL.adminMail.path,
        "reviews": SiteURL.adminReviews.path, "magnets": SiteURL.adminMagnets.path,
        "referrals": SiteURL.adminReferrals.path,
        "users": SiteURL.adminUsers.path, "apikeys": SiteURL.adminAPIKeys.path,
        "workspaces": SiteURL.adminWorkspaces.path, "switch": SiteURL.adminWorkspaceSwitch.path,
        "invitations": SiteURL.adminInvitations.path,
        "password": SiteURL.adminPassword.path, "logout": SiteURL.adminLogout.path, "login": SiteURL.adminLogin.path,
    ]

    func when(_ date: Date?, _ context: AppContext) -> String {
        guard let date else { return "–" }
        let tz = TimeZone(identifier: context.admin?.workspace.timeZone ?? "Europe/Berlin") ?? .gmt
        var style = Date.VerbatimFormatStyle(
            format: context.locale == "de"
                ? "\(day: .twoDigits).\(month: .twoDigits).\(year: .defaultDigits) \(hour: .twoDigits(clock: .twentyFourHour, hourCycle: .zeroBased)):\(minute: .twoDigits)"
                : "\(year: .defaultDigits)-\(month: .twoDigits)-\(day: .twoDigits) \(hour: .twoDigits(clock: .twentyFourHour, hourCycle: .zeroBased)):\(minute: .twoDigits)",
            timeZone: tz, calendar: Calendar(identifier: .gregorian))
        style.locale = Foundation.Locale(identifier: "en_US_POSIX")
        return date.formatted(style)
    }

    // MARK: Login

    func loginPage(_ request: Request, _ context: AppContext, error: String? = nil, status: HTTPResponse.Status = .ok)
        -> Response
    {
        let t = Strings.table(context.locale)
        let token = env.random.token()
        let next = request.uri.queryParameters.get("next") ?? ""
        var model: [String: Any] = [
            "t": t, "lang": context.locale, "title": t["login_title"] ?? "", "csrf": token, "next": next,
            "urls": Self.urls, "lang_url": "\(SiteURL.adminLocale.path)?lang=\(t["lang_other"] ?? "en")",
        ]
        model["error"] = error.map { t[$0] ?? $0 }
        if request.uri.queryParameters.get("changed") == "1" { model["message"] = t["password_changed"] }
        var response = env.templates.page("login", model, status: status)
        response.setCookie(
            Cookie(
                name: AdminCookies.loginCSRF, value: token, maxAge: 3600, path: "/admin", secure: env.secureCookies,
                httpOnly: true, sameSite: .strict))
        return response
    }

    func login(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await Bodies.form(request)
        guard let cookie = request.cookies[AdminCookies.loginCSRF]?.value,
            constantTimeEquals(fields["_csrf"] ?? "", cookie)
        else {
            throw DomainError(
                .forbidden, code: "csrf_invalid", "The form expired. Please reload the page and try again.")
        }
        let email = (fields["email"] ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        // Failed attempts are limited per client (its address, or its network for IPv6, behind trusted proxies the
        // forwarded one) and per account. The tokens are taken before the password is checked, so a burst of
        // parallel attempts cannot all pass while none has failed yet; a successful login gives them back.
        // A browser that logged in to this account with its current password (its device cookie, OWASP's "device
        // cookies") is limited on its own instead: failures from elsewhere, which use up the account's limit, do
        // not lock out the account's own people. A new password ends every device cookie issued before it.
        // The account is read before the limit only when a device cookie needs it: refused attempts without one
        // (the bulk of an attack) cost no database read.
        let deviceCookie = request.cookies[AdminCookies.device]?.value
        var user = deviceCookie == nil ? nil : try await store.user(email: email)
        let device = deviceCookie.flatMap { knownDevice($0, email: email, user: user) }
        let keys = device.map { ["device:\($0)"] } ?? ["ip:\(env.limiterKey(request, context))", "account:\(email)"]
        guard env.loginLimiter.take(keys) else {
            return loginPage(request, context, error: "login_limited", status: .tooManyRequests)
        }
        if deviceCookie == nil { user = try await store.user(email: email) }
        let ok = try await Passwords.verify(
            fields["password"] ?? "", hash: user?.passwordHash ?? Passwords.decoy(cost: env.bcryptCost))
        guard ok, let user, let first = try await store.memberships(userID: user.id).first else {
            return loginPage(request, context, error: "login_failed", status: .unauthorized)
        }
        env.loginLimiter.giveBack(keys)
        // Every successful login (re)issues the browser's device cookie: the same device id when it had a valid one,
        // a fresh expiry, bound to the current password.
        let value = store.signToken(
            purpose: Self.devicePurpose,
            fields: [store.suppressionHash(email), device ?? env.random.token(bytes: 16), credentialTag(user)],
            expiresAt: env.clock.now().addingTimeInterval(Double(Self.deviceCookieSeconds)))
        let cookies = [
            Cookie(
                name: AdminCookies.device, value: value, maxAge: Self.deviceCookieSeconds, path: "/admin",
                secure: env.secureCookies, httpOnly: true, sameSite: .strict)
        ]
        let token = env.random.token(bytes: 32)
        try await store.createSession(
            tokenHash: Hex.sha256(token), userID: user.id, workspaceID: first.workspace.id,
            csrfToken: env.random.token(bytes: 20), expiresAt: env.clock.now().addingTimeInterval(12 * 3600))
        let next = fields["next"].flatMap { $0.hasPrefix("/admin") && !$0.hasPrefix("//") ? $0 : nil }
        throw Redirect(
            to: user.mustChangePassword ? SiteURL.adminPassword.path : (next ?? SiteURL.adminHome.path),
            cookies: cookies + [
                Cookie(
                    name: AdminCookies.session, value: token, maxAge: 12 * 3600, path: "/", secure: env.secureCookies,
                    httpOnly: true, sameSite: .lax),
                Cookie(
                    name: AdminCookies.loginCSRF, value: "", maxAge: 0, path: "/admin", secure: env.secureCookies,
                    httpOnly: true),
            ])
    }

    /// The settings version a form was read at (its hidden `version`); nil when the form has none.
    static func seenVersion(_ fields: [String: String]) -> Int64? {
        fields["version"].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
    }

    static let devicePurpose = "admin-device"
    /// How long a browser stays known after its last login (180 days).
    static let deviceCookieSeconds = 180 * 86_400

    /// The device cookie's own id when it was issued by this server to a browser that logged in as `email`.
    /// Valid means: signed here, not expired, for this address, and issued while the account had its current
    /// password.
    func knownDevice(_ cookie: String, email: String, user: AdminUser?) -> String? {
        guard let user, case .valid(let fields) = store.checkToken(cookie, purpose: Self.devicePurpose),
            fields.count == 3, fields[0] == store.suppressionHash(email), !fields[1].isEmpty,
            fields[2] == credentialTag(user)
        else { return nil }
        return fields[1]
    }

    /// A keyed tag of the account's password hash: it changes with every new password (bcrypt salts each hash).
    func credentialTag(_ user: AdminUser) -> String {
        String(store.suppressionHash("admin-credential|\(user.id)|\(user.passwordHash)").prefix(24))
    }

    func logout(_ request: Request, _ context: AppContext) async throws -> Response {
        _ = try await form(request, context)
        try await store.deleteSession(tokenHash: try admin(context).sessionHash)
        throw Redirect(
            to: SiteURL.adminLogin.path,
            cookies: [
                Cookie(
                    name: AdminCookies.session, value: "", maxAge: 0, path: "/", secure: env.secureCookies,
                    httpOnly: true)
            ])
    }

    func switchLocale(_ request: Request, _ context: AppContext) -> Response {
        let lang =
            request.uri.queryParameters.get("lang").flatMap {
                ReciprocityCore.Locale.supported.contains($0) ? $0 : nil
            } ?? ReciprocityCore.Locale.fallback
        let back =
            request.headers[.referer].flatMap { URLComponents(string: $0) }.flatMap { c -> String? in
                guard c.path.hasPrefix("/admin"), c.path != SiteURL.adminLocale.path else { return nil }
                return c.path + (c.percentEncodedQuery.map { "?\($0)" } ?? "")
            } ?? SiteURL.adminHome.path
        return Redirect(
            to: back,
            cookies: [
                Cookie(
                    name: AdminCookies.lang, value: lang, maxAge: 365 * 86400, path: "/", secure: env.secureCookies,
                    httpOnly: true, sameSite: .lax)
            ]
        ).response
    }

    // MARK: Start page

    func home(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        let w = admin.workspace.id
        let contactCount = try await store.activeContactCount(workspaceID: w)
        let orderCounts = try await store.orderCounts(workspaceID: w)
        let consentCounts = try await store.grantedConsentCounts(workspaceID: w)
        let jobCounts = try await store.jobCounts(workspaceID: w)
        var model = try base(context, title: "home_title", nav: "home")
        model["contact_count"] = contactCount
        model["order_count"] = orderCounts.values.reduce(0, +)
        model["order_statuses"] = OrderStatus.allCases.map {
            [
                "label": t[$0.rawValue] ?? $0.rawValue, "count": orderCounts[$0] ?? 0,
                "url": "\(SiteURL.adminOrders.path)?status=\($0.rawValue)",
            ] as [String: Any]
        }
        model["consents"] = ConsentPurpose.allCases.compactMap { purpose in
            consentCounts[purpose].map {
                ["label": t[purpose.rawValue] ?? purpose.rawValue, "count": $0] as [String: Any]
            }
        }
        model["jobs"] = JobState.allCases.map {
            [
                "label": t[$0.rawValue] ?? $0.rawValue, "count": jobCounts[$0] ?? 0,
                "url": "\(SiteURL.adminJobs.path)?state=\($0.rawValue)",
            ] as [String: Any]
        }
        let invitations = try await store.invitations(userID: admin.user.id)
        model["has_invitations"] = !invitations.isEmpty
        model["invitations"] = invitations.map {
            ["id": $0.id, "workspace": $0.workspace.name, "role": t[$0.role.rawValue] ?? $0.role.rawValue]
                as [String: Any]
        }
        return env.templates.page("home", model)
    }

    // MARK: Password

    func passwordPage(_ context: AppContext, message: String?, error: String? = nil) throws -> Response {
        var model = try base(context, title: "password_title", nav: "password")
        let t = Strings.table(context.locale)
        model["must_change"] = try admin(context).user.mustChangePassword
        model["message"] = message.map { t[$0] ?? $0 }
        model["error"] = error
        return env.templates.page("password", model, status: error == nil ? .ok : .unprocessableContent)
    }

    func changePassword(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let user = try admin(context).user
        let t = Strings.table(context.locale)
        guard try await Passwords.verify(fields["current"] ?? "", hash: user.passwordHash) else {
            return try passwordPage(context, message: nil, error: t["password_wrong"])
        }
        let new = fields["new"] ?? ""
        guard new == fields["confirm"] else {
            return try passwordPage(context, message: nil, error: t["passwords_differ"])
        }
        do { try PasswordPolicy.validate(new) } catch {
            return try passwordPage(context, message: nil, error: error.message)
        }
        try await store.setPassword(
            userID: user.id, hash: try await Passwords.hash(new, cost: env.bcryptCost), mustChange: false)
        // Setting the password ended every session, this one included: log in again with the new password.
        throw Redirect(to: SiteURL.adminLogin.path + "?changed=1")
    }

    // MARK: Workspaces

    func workspaces(_ context: AppContext) throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "workspaces_title", nav: "workspaces")
        model["workspaces"] = admin.memberships.map {
            [
                "id": $0.workspace.id, "name": $0.workspace.name, "slug": $0.workspace.slug,
                "role": t[$0.role.rawValue] ?? $0.role.rawValue, "current": $0.workspace.id == admin.workspace.id,
            ]
                as [String: Any]
        }
        return env.templates.page("workspaces", model)
    }

    func switchWorkspace(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        guard let id = fields["workspace_id"].flatMap(Int64.init),
            admin.memberships.contains(where: { $0.workspace.id == id })
        else { throw DomainError.notFound("Workspace") }
        try await store.switchSession(tokenHash: admin.sessionHash, to: id)
        throw Redirect(to: SiteURL.adminHome.path)
    }

    // MARK: Users

    func users(
        _ context: AppContext, created: (email: String, password: String)?, invited: String? = nil,
        error: String? = nil
    ) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canManageUsers, context)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "users_title", nav: "users")
        model["members"] = try await store.members(workspaceID: admin.workspace.id).map {
            [
                "name": $0.user.name, "email": $0.user.email, "role": t[$0.role.rawValue] ?? $0.role.rawValue,
                "created": when($0.user.createdAt, context),
            ] as [String: Any]
        }
        model["roles"] = Role.allCases.reversed().map {
            ["value": $0.rawValue, "label": t[$0.rawValue] ?? $0.rawValue]
        }
        let pending = try await store.pendingInvitations(workspaceID: admin.workspace.id)
        model["has_pending"] = !pending.isEmpty
        model["pending"] = pending.map {
            ["email": $0.email, "role": t[$0.role.rawValue] ?? $0.role.rawValue, "since": when($0.since, context)]
        }
        if let created { model["created"] = ["email": created.email, "password": created.password] }
        model["invited"] = invited
        model["error"] = error
        return env.templates.page("users", model, status: error == nil ? .ok : .unprocessableContent)
    }

    func createUser(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canManageUsers, context)
        do {
            let email = try EmailAddress(fields["email"] ?? "")
            guard let role = Role(rawValue: fields["role"] ?? "") else {
                throw DomainError.invalid("role_unknown", "Unknown role.", field: "role")
            }
            let name = (fields["name"] ?? "").trimmingCharacters(in: .whitespaces)
            let password = env.random.token(bytes: 12)
            let user: AdminUser
            var isNew = false
            if let existing = try await store.user(email: email.normalized) {
                // An account of the installation that is not a member here joins only when it accepts: no owner
                // can put someone else's account into their workspace (or read its name) by typing its address.
                guard try await store.role(userID: existing.id, workspaceID: admin.workspace.id) != nil else {
                    try await store.invite(
                        workspaceID: admin.workspace.id, userID: existing.id, role: role, by: admin.user.id)
                    return try await users(context, created: nil, invited: email.normalized)
                }
                user = existing
            } else {
                isNew = true
                user = try await store.createUser(
                    email: email, name: name.isEmpty ? email.raw : String(name.prefix(120)),
                    passwordHash: try await Passwords.hash(password, cost: env.bcryptCost),
                    locale: context.locale, mustChangePassword: true)
            }
            try await store.db.transaction { tx in
                try await store.addMembership(workspaceID: admin.workspace.id, userID: user.id, role: role, in: tx)
                try await store.audit(
                    tx, workspaceID: admin.workspace.id, actor: "user:\(admin.user.id)", action: "user.add",
                    subject: "user:\(user.id)", detail: role.rawValue)
            }
            return try await users(context, created: isNew ? (user.email, password) : nil)
        } catch let error as DomainError {
            return try await users(context, created: nil, error: error.message)
        }
    }

    /// The logged-in user's answer to one of their invitations (`decision` accept or decline).
    func answerInvitation(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        guard let id = fields["id"].flatMap({ Int64($0) }), ["accept", "decline"].contains(fields["decision"] ?? ""),
            try await store.answerInvitation(id: id, userID: admin.user.id, accept: fields["decision"] == "accept")
                != nil
        else { throw DomainError.notFound("Invitation") }
        throw Redirect(to: SiteURL.adminHome.path)
    }

    // MARK: API keys

    func apiKeys(_ context: AppContext, newKey: String?, error: String? = nil) async throws -> Response {
        let admin = try admin(context)
        try require(admin.role.canManageAPIKeys, context)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "apikeys_title", nav: "apikeys")
        model["keys"] = try await store.apiKeys(workspaceID: admin.workspace.id).map {
            var key: [String: Any] = [
                "id": $0.id, "name": $0.name, "prefix": "\(APIKeyFormat.marker)\($0.prefix)_…",
                "scope": t[$0.scope.rawValue] ?? $0.scope.rawValue, "created": when($0.createdAt, context),
                "last_used": $0.lastUsedAt.map { when($0, context) } ?? (t["never"] ?? ""),
                "revoke_url": SiteURL.adminAPIKeyRevoke(id: $0.id).path,
            ]
            key["revoked"] = $0.revokedAt.map { when($0, context) }
            return key
        }
        model["new_key"] = newKey
        model["error"] = error
        return env.templates.page("apikeys", model)
    }

    func createAPIKey(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canManageAPIKeys, context)
        let name = (fields["name"] ?? "").trimmingCharacters(in: .whitespaces)
        guard (1...80).contains(name.count), let scope = APIScope(rawValue: fields["scope"] ?? "") else {
            return try await apiKeys(context, newKey: nil, error: "Name (1–80) and scope are required.")
        }
        let issued = try await APIKeys.issue(
            store: store, random: env.random, workspaceID: admin.workspace.id, name: name, scope: scope,
            actor: "user:\(admin.user.id)")
        return try await apiKeys(context, newKey: issued.plaintext)
    }

    func revokeAPIKey(_ request: Request, _ context: AppContext) async throws -> Response {
        _ = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canManageAPIKeys, context)
        guard
            try await store.revokeAPIKey(
                workspaceID: admin.workspace.id, id: try context.int64Parameter("id"), actor: "user:\(admin.user.id)")
        else { throw DomainError.notFound("API key") }
        throw Redirect(to: SiteURL.adminAPIKeys.path)
    }

    // MARK: Contacts

    /// A form's whole number of 0 or more: nil when the field is empty (it keeps its meaning: no limit, the saved
    /// value); anything else, a word or a negative, is refused with the field's name, never read as 0 or nil.
    static func wholeNumber(_ fields: [String: String], _ key: String) throws(DomainError) -> Int64? {
        let text = (fields[key] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return nil }
        guard let n = Int64(text), n >= 0 else {
            throw .invalid("number_invalid", "\(key): \"\(text)\" is not a whole number of 0 or more.", field: key)
        }
        return n
    }

    /// A list page number from the query: 1 to 1,000,000 (a larger one would overflow the offset); 1 if unusable.
    static func page(_ raw: String?) -> Int { min(1_000_000, max(1, raw.flatMap { Int($0) } ?? 1)) }

    func contacts(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let q = request.uri.queryParameters
        let search = q.get("q") ?? ""
        let page = Self.page(q.get("page"))
        let result = try await store.contacts(
            workspaceID: admin.workspace.id, search: search, limit: 50, offset: (page - 1) * 50)
        var model = try base(context, title: "contacts_title", nav: "contacts")
        model["q"] = search
        model["contacts"] = result.items.map {
            [
                "id": $0.id, "email": $0.email, "name": $0.displayName, "source": $0.source,
                "created": when($0.createdAt, context), "url": SiteURL.adminContact(id: $0.id).path,
                "erased": $0.erasedAt != nil,
            ] as [String: Any]
        }
        model["total"] = result.total
        model.merge(
            pager(
                page: page, total: result.total, base: SiteURL.adminContacts.path,
                query: search.isEmpty
                    ? "" : "q=\(search.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")")
        ) { $1 }
        return env.templates.page("contacts", model)
    }

    func pager(page: Int, total: Int, base: String, query: String) -> [String: Any] {
        let pages = max(1, (total + 49) / 50)
        let sep = query.isEmpty ? "?" : "?\(query)&"
        var model: [String: Any] = ["page": page, "pages": pages]
        if page > 1 { model["prev_url"] = "\(base)\(sep)page=\(page - 1)" }
        if page < pages { model["next_url"] = "\(base)\(sep)page=\(page + 1)" }
        return model
    }

    func contact(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let id = try context.int64Parameter("id")
        guard let c = try await store.contact(workspaceID: admin.workspace.id, id: id) else {
            throw DomainError.notFound("Contact")
        }
        let t = Strings.table(context.locale)
        var model = try base(context, title: "contact_title", nav: "contacts")
        model["contact"] =
            [
                "id": c.id, "email": c.email, "name": c.displayName, "locale": c.locale, "source": c.source,
                "source_ref": c.sourceRef ?? "", "created": when(c.createdAt, context), "erased": c.erasedAt != nil,
            ] as [String: Any]
        model["suppressed"] = try await store.isSuppressed(c)
        model["consents"] = try await store.consents(workspaceID: admin.workspace.id, contactID: id).map {
            [
                "purpose": t[$0.purpose.rawValue] ?? $0.purpose.rawValue,
                "state": t[$0.state.rawValue] ?? $0.state.rawValue,
                "basis": t[$0.legalBasis.rawValue] ?? $0.legalBasis.rawValue, "source": $0.source,
                "granted": when($0.granted?.at, context), "withdrawn": when($0.withdrawnAt, context),
            ] as [String: Any]
        }
        model["orders"] = try await store.orders(workspaceID: admin.workspace.id, contactID: id, limit: 100).items.map {
            orderRow($0, context)
        }
        model["export_url"] = SiteURL.adminContactExport(id: id).path
        model["proof_url"] = SiteURL.adminContactProof(id: id).path
        model["erase_url"] = SiteURL.adminContactErase(id: id).path
        model["object_url"] = SiteURL.adminContactObject(id: id).path
        if let done = request.uri.queryParameters.get("done") { model["message"] = t["\(done)_done"] ?? "" }
        return env.templates.page("contact", model)
    }

    func exportContact(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let id = try context.int64Parameter("id")
        let export = try await store.exportContact(workspaceID: admin.workspace.id, contactID: id)
        var response = try Bodies.jsonResponse(export)
        response.headers[.contentDisposition] = "attachment; filename=\"contact-\(id).json\""
        return response
    }

    func eraseContact(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEraseContacts, context)
        let id = try context.int64Parameter("id")
        guard fields["confirm"] == "yes" else {
            throw DomainError.invalid("confirmation_missing", "Please confirm the erasure.", field: "confirm")
        }
        try await store.erase(workspaceID: admin.workspace.id, contactID: id, actor: "user:\(admin.user.id)")
        env.forgetCached(workspaceID: admin.workspace.id)
        throw Redirect(to: SiteURL.adminContact(id: id).path + "?done=erased")
    }

    func objectContact(_ request: Request, _ context: AppContext) async throws -> Response {
        _ = try await form(request, context)
        let admin = try admin(context)
        let id = try context.int64Parameter("id")
        try await store.object(workspaceID: admin.workspace.id, contactID: id, actor: "user:\(admin.user.id)")
        throw Redirect(to: SiteURL.adminContact(id: id).path + "?done=objected")
    }

    // MARK: Orders

    func orderRow(_ o: Order, _ context: AppContext) -> [String: Any] {
        let t = Strings.table(context.locale)
        return [
            "external_id": o.externalID, "status": t[o.status.rawValue] ?? o.status.rawValue,
            "status_key": o.status.rawValue, "total": o.totals.total.formatted(locale: context.locale),
            "date": when(o.statusTimes[.placed] ?? o.createdAt, context),
            "url": SiteURL.adminOrder(externalID: o.externalID).path, "item_count": o.items.count,
        ]
    }

    func orders(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let q = request.uri.queryParameters
        let status = q.get("status").flatMap(OrderStatus.init(rawValue:))
        let page = Self.page(q.get("page"))
        let result = try await store.orders(
            workspaceID: admin.workspace.id, status: status, limit: 50, offset: (page - 1) * 50)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "orders_title", nav: "orders")
        model["statuses"] = OrderStatus.allCases.map {
            ["value": $0.rawValue, "label": t[$0.rawValue] ?? $0.rawValue, "selected": $0 == status] as [String: Any]
        }
        model["orders"] = result.items.map { orderRow($0, context) }
        model["total"] = result.total
        model.merge(
            pager(
                page: page, total: result.total, base: SiteURL.adminOrders.path,
                query: status.map { "status=\($0.rawValue)" } ?? "")
        ) { $1 }
        return env.templates.page("orders", model)
    }

    func order(_ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        guard
            let o = try await store.order(
                workspaceID: admin.workspace.id, externalID: context.parameters.get("external_id") ?? "")
        else { throw DomainError.notFound("Order") }
        let t = Strings.table(context.locale)
        let customer = try await store.contact(workspaceID: admin.workspace.id, id: o.contactID)
        var model = try base(context, title: "order", nav: "orders")
        model["order"] = orderRow(o, context)
        model["customer"] = [
            "email": customer?.email ?? "", "name": customer?.displayName ?? "",
            "url": SiteURL.adminContact(id: o.contactID).path,
        ]
        model["items"] = o.items.map {
            [
                "sku": $0.sku, "name": $0.name, "quantity": $0.quantity, "returned_quantity": $0.returnedQuantity,
                "unit_price": $0.unitPrice.formatted(locale: context.locale),
            ]
        }
        model["address"] = o.shippingAddress.map {
            [
                "name": $0.name ?? "", "street": $0.street, "postal_code": $0.postalCode, "city": $0.city,
                "country": $0.country,
            ]
        }
        model["coupon"] = o.couponCode
        model["referral"] = o.referralCode
        model["history"] = try await store.statusChanges(workspaceID: admin.workspace.id, orderID: o.id).map {
            ["status": t[$0.to] ?? $0.to, "at": when($0.at, context)]
        }
        return env.templates.page("order", model)
    }

    // MARK: Jobs

    func jobs(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let state = request.uri.queryParameters.get("state").flatMap(JobState.init(rawValue:)) ?? .queued
        let t = Strings.table(context.locale)
        let counts = try await store.jobCounts(workspaceID: admin.workspace.id)
        var model = try base(context, title: "jobs_title", nav: "jobs")
        model["tabs"] = JobState.allCases.map {
            [
                "label": t[$0.rawValue] ?? $0.rawValue, "count": counts[$0] ?? 0,
                "url": "\(SiteURL.adminJobs.path)?state=\($0.rawValue)",
                "selected": $0 == state,
            ] as [String: Any]
        }
        model["can_retry"] = admin.role.canRetryJobs && state == .dead
        model["jobs"] = try await store.jobs(workspaceID: admin.workspace.id, state: state).map {
            [
                "id": $0.id, "kind": $0.kind, "attempts": "\($0.attempts)/\($0.maxAttempts)",
                "run_at": when($0.runAt, context),
                "last_error": $0.lastError ?? "", "retry_url": SiteURL.adminJobRetry(id: $0.id).path,
            ] as [String: Any]
        }
        if request.uri.queryParameters.get("done") == "retried" { model["message"] = t["retried"] ?? "" }
        return env.templates.page("jobs", model)
    }

    func retryJob(_ request: Request, _ context: AppContext) async throws -> Response {
        _ = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canRetryJobs, context)
        guard
            try await store.retryJob(
                workspaceID: admin.workspace.id, id: try context.int64Parameter("id"), actor: "user:\(admin.user.id)")
        else { throw DomainError.notFound("Job") }
        env.wakeWorkers()
        throw Redirect(to: "\(SiteURL.adminJobs.path)?state=dead&done=retried")
    }
}
