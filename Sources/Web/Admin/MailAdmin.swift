import Foundation
import HTTPTypes
import Hummingbird
import Mail
import Messaging
import ReciprocityCore
import Storage

/// Admin pages of the mail engine: the outbox (with the development outbox's rendered mails), mail settings,
/// and the template editor with preview and test send.
extension AdminRoutes {
    func registerMail(on router: Router<AppContext>) {
        router.get(SiteURL.Route.adminOutbox.routerPath) { request, context in try await outbox(request, context) }
        router.get(SiteURL.Route.adminOutboxMail.routerPath) { _, context in try await outboxMail(context) }
        router.get(SiteURL.Route.adminOutboxRaw.routerPath) { _, context in try await outboxRaw(context) }
        router.get(SiteURL.Route.adminOutboxHTML.routerPath) { _, context in try await outboxHTML(context) }
        router.get(SiteURL.Route.adminMail.routerPath) { request, context in try await mailHome(request, context) }
        router.post(SiteURL.Route.adminMailSettings.routerPath) { request, context in
            try await saveMailSettings(request, context)
        }
        router.get(SiteURL.Route.adminMailTemplate.routerPath) { _, context in
            try await templatePage(context, edited: nil, error: nil, message: nil)
        }
        router.post(SiteURL.Route.adminMailTemplate.routerPath) { request, context in
            try await saveTemplate(request, context)
        }
        router.post(SiteURL.Route.adminMailTemplateTest.routerPath) { request, context in
            try await testSend(request, context)
        }
        router.post(SiteURL.Route.adminMailTemplateReset.routerPath) { request, context in
            try await resetTemplate(request, context)
        }
    }

    var mailer: Mailer {
        get throws {
            guard let m = env.mailer else {
                throw DomainError(.unavailable, code: "mail_unavailable", "The mail engine is not configured.")
            }
            return m
        }
    }

    // MARK: Outbox

    func outbox(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        let state = request.uri.queryParameters.get("state").flatMap(OutboxState.init(rawValue:))
        let counts = try await store.outboxCounts(workspaceID: admin.workspace.id)
        var model = try base(context, title: "outbox_title", nav: "outbox")
        model["tabs"] =
            [
                [
                    "label": t["all"] ?? "all", "count": counts.values.reduce(0, +), "url": SiteURL.adminOutbox.path,
                    "selected": state == nil,
                ] as [String: Any]
            ]
            + OutboxState.allCases.map {
                [
                    "label": t["outbox_\($0.rawValue)"] ?? $0.rawValue, "count": counts[$0] ?? 0,
                    "url": "\(SiteURL.adminOutbox.path)?state=\($0.rawValue)", "selected": $0 == state,
                ] as [String: Any]
            }
        model["mails"] = try await store.outboxMails(workspaceID: admin.workspace.id, state: state, limit: 100).map {
            [
                "id": $0.id, "url": SiteURL.adminOutboxMail(id: $0.id).path, "kind": t["kind_\($0.kind)"] ?? $0.kind,
                "recipient": $0.recipient ?? (t["erased"] ?? "erased"), "subject": $0.subject,
                "state": t["outbox_\($0.state.rawValue)"] ?? $0.state.rawValue,
                "created": when($0.createdAt, context), "test": $0.isTest,
            ].merging($0.reason.isEmpty ? [:] : ["reason": $0.reason]) { a, _ in a } as [String: Any]
        }
        return env.templates.page("outbox", model)
    }

    func outboxRow(_ context: AppContext) async throws -> OutboxMail {
        let admin = try admin(context)
        guard
            let mail = try await store.outboxMail(workspaceID: admin.workspace.id, id: try context.int64Parameter("id"))
        else { throw DomainError.notFound("Mail") }
        return mail
    }

    func outboxMail(_ context: AppContext) async throws -> Response {
        let mail = try await outboxRow(context)
        let t = Strings.table(context.locale)
        var model = try base(context, title: "outbox_mail_title", nav: "outbox")
        let parsed = mail.message.flatMap { try? RenderedMessage(parsing: Array($0.utf8)) }
        let decoded = mail.message.map { MailView.decode(Array($0.utf8)) }
        model["mail"] =
            [
                "id": mail.id, "kind": t["kind_\(mail.kind)"] ?? mail.kind, "class": t[mail.mailClass.rawValue] ?? "",
                "recipient": mail.recipient ?? (t["erased"] ?? "erased"), "subject": mail.subject,
                "message_id": mail.messageID, "state": t["outbox_\(mail.state.rawValue)"] ?? mail.state.rawValue,
                "basis": mail.legalBasis.map { t[$0] ?? $0 } ?? "–",
                "attempts": mail.attempts, "transport": mail.transport, "reply": mail.smtpReply,
                "created": when(mail.createdAt, context), "sent": when(mail.sentAt, context), "test": mail.isTest,
                "raw_url": SiteURL.adminOutboxRaw(id: mail.id).path,
                "html_url": SiteURL.adminOutboxHTML(id: mail.id).path,
                "text": decoded?.text ?? "", "has_html": decoded?.html != nil,
                "headers": (parsed?.headers ?? []).map { ["name": $0.name, "value": HeaderEncoding.decode($0.value)] },
            ] as [String: Any]
        if !mail.reason.isEmpty, var m = model["mail"] as? [String: Any] {
            m["reason"] = mail.reason
            model["mail"] = m
        }
        model["events"] = try await store.mailEvents(workspaceID: mail.workspaceID, outboxID: mail.id).map {
            ["type": $0.type, "detail": $0.detail, "source": $0.source, "at": when($0.at, context)]
        }
        return env.templates.page("outbox_mail", model)
    }

    /// The raw source with headers, as plain text.
    func outboxRaw(_ context: AppContext) async throws -> Response {
        let mail = try await outboxRow(context)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: mail.message ?? "")))
    }

    /// The HTML part, served under a CSP sandbox: it is shown in a sandboxed iframe and can run nothing.
    func outboxHTML(_ context: AppContext) async throws -> Response {
        let mail = try await outboxRow(context)
        let html = mail.message.flatMap { MailView.decode(Array($0.utf8)).html } ?? ""
        var headers: HTTPFields = [.contentType: "text/html; charset=utf-8"]
        headers[.contentSecurityPolicy] =
            "sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
        headers[HTTPField.Name("X-Frame-Options")!] = "SAMEORIGIN"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    // MARK: Settings and templates

    func mailHome(_ request: Request, _ context: AppContext) async throws -> Response {
        let admin = try admin(context)
        let t = Strings.table(context.locale)
        // The version before the values (see `reviewSettingsPage`).
        let version = try await store.settingsVersion(.mail, workspaceID: admin.workspace.id)
        let s = try await store.mailSettings(workspaceID: admin.workspace.id)
        var model = try base(context, title: "mail_title", nav: "mail")
        model["settings"] =
            [
                "existing_customer_mode": s.existingCustomerMode, "cap_count": s.cap.count, "cap_days": s.cap.days,
                "quiet_start": s.quietStart, "quiet_end": s.quietEnd, "rate": s.ratePerSecond,
                "du": s.addressForm == "du", "brand_color": s.brandColor, "logo_url": s.logoURL,
            ] as [String: Any]
        model["settings_url"] = SiteURL.adminMailSettings.path
        model["version"] = version
        model["can_edit"] = admin.role.canEditMail
        let key = try await store.activeDKIMKey(workspaceID: admin.workspace.id)
        model["dkim"] = key.map { ["domain": $0.domain, "selector": $0.selector, "algorithm": $0.algorithm] } ?? [:]
        model["has_dkim"] = key != nil
        let edited = Set(
            try await store.mailTemplates(workspaceID: admin.workspace.id).map { "\($0.kind).\($0.variant)" })
        model["templates"] = MessageKind.allCases.map { kind in
            [
                "kind": t["kind_\(kind.rawValue)"] ?? kind.rawValue, "class": t[kind.mailClass.rawValue] ?? "",
                "variants": MailTemplate.variants.map { v in
                    [
                        "label": t["variant_\(v)"] ?? v,
                        "url": SiteURL.adminMailTemplate(key: "\(kind.rawValue).\(v)").path,
                        "edited": edited.contains("\(kind.rawValue).\(v)"),
                    ] as [String: Any]
                },
            ] as [String: Any]
        }
        if let done = request.uri.queryParameters.get("done") { model["message"] = t["\(done)_done"] ?? "" }
        return env.templates.page("mail", model)
    }

    func saveMailSettings(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        var s = try await store.mailSettings(workspaceID: admin.workspace.id)
        func int(_ key: String) throws -> Int {
            guard let v = fields[key].flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw DomainError.invalid("number_invalid", "'\(key)' must be a whole number.", field: key)
            }
            return v
        }
        s.cap = FrequencyCap(count: try int("cap_count"), days: try int("cap_days"))
        s.quietStart = try int("quiet_start")
        s.quietEnd = try int("quiet_end")
        s.ratePerSecond = try int("rate")
        s.addressForm = fields["address_form"] == "du" ? "du" : "sie"
        s.brandColor = fields["brand_color"] ?? s.brandColor
        s.logoURL = fields["logo_url"]?.trimmingCharacters(in: .whitespaces) ?? ""
        // Switching the §7(3) mode is the owner's decision, and it is logged.
        let wantsMode = fields["existing_customer_mode"] == "on"
        if wantsMode != s.existingCustomerMode {
            try require(admin.role.canSwitchExistingCustomerMode, context)
            s.existingCustomerMode = wantsMode
        }
        // A conflict (`settings_changed`) is the error page, 409, with the way back to the form.
        try await store.saveMailSettings(
            workspaceID: admin.workspace.id, s, actor: "user:\(admin.user.id)", seen: Self.seenVersion(fields))
        throw Redirect(to: "\(SiteURL.adminMail.path)?done=mail_settings")
    }

    func templateKey(_ context: AppContext) throws -> (MessageKind, String) {
        let key = context.parameters.get("key") ?? ""
        let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, let kind = MessageKind(rawValue: parts[0]), MailTemplate.variants.contains(parts[1])
        else { throw DomainError.notFound("Template") }
        return (kind, parts[1])
    }

    /// `version`: the one the form carries; the stored one (read before the template) when nil. An edited form shown
    /// again (a preview, a refusal) keeps the version it was opened at, so that a later save cannot pass over a
    /// change made meanwhile.
    func templatePage(
        _ context: AppContext, edited: MailTemplate?, error: String?, message: String?, version: Int64? = nil
    ) async throws -> Response {
        let admin = try admin(context)
        let (kind, variant) = try templateKey(context)
        let t = Strings.table(context.locale)
        let stored = try await store.mailTemplateVersion(
            workspaceID: admin.workspace.id, kind: kind.rawValue, variant: variant)
        let mailer = try mailer
        let current = try await mailer.composer.template(workspaceID: admin.workspace.id, kind: kind, variant: variant)
        let shown = edited ?? current
        var model = try base(context, title: "template_title", nav: "mail")
        let key = "\(kind.rawValue).\(variant)"
        model["template"] =
            [
                "kind": t["kind_\(kind.rawValue)"] ?? kind.rawValue, "variant": t["variant_\(variant)"] ?? variant,
                "subject": shown.subject, "text": shown.text, "html": shown.html,
                "save_url": SiteURL.adminMailTemplate(key: key).path,
                "test_url": SiteURL.adminMailTemplateTest(key: key).path,
                "reset_url": SiteURL.adminMailTemplateReset(key: key).path,
                "variables": MailTemplateCatalog.allowedVariables(kind).sorted().joined(separator: ", "),
                "marketing": kind.mailClass == .marketing, "version": version ?? stored,
            ] as [String: Any]
        model["can_edit"] = admin.role.canEditMail
        model["test_to"] = admin.user.email
        if let error { model["error"] = error }
        if let message { model["message"] = message }
        // The preview shows what is in the form (saved or not), with sample values.
        if error == nil,
            let preview = try? await mailer.preview(
                workspace: admin.workspace, kind: kind, variant: variant, template: shown)
        {
            model["preview_subject"] = preview.subject
            model["preview_text"] = preview.text
            model["preview_html"] = preview.html
        }
        return env.templates.page("mail_template", model)
    }

    func editedTemplate(_ fields: [String: String], _ context: AppContext) throws -> MailTemplate {
        let (kind, variant) = try templateKey(context)
        func clean(_ s: String?) -> String { (s ?? "").replacingOccurrences(of: "\r\n", with: "\n") }
        return MailTemplate(
            kind: kind, variant: variant, subject: clean(fields["subject"]), text: clean(fields["text"]),
            html: clean(fields["html"]))
    }

    func saveTemplate(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context, limit: Self.longFormLimit)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let edited = try editedTemplate(fields, context)
        let seen = Self.seenVersion(fields)
        if let refused = try await refusal(edited, context, version: seen) { return refused }
        if fields["action"] == "preview" {
            return try await templatePage(context, edited: edited, error: nil, message: nil, version: seen)
        }
        do {
            try await store.saveMailTemplate(
                workspaceID: admin.workspace.id,
                StoredMailTemplate(
                    kind: edited.kind.rawValue, variant: edited.variant, subject: edited.subject, text: edited.text,
                    html: edited.html, updatedAt: env.clock.now(), updatedBy: "user:\(admin.user.id)"),
                actor: "user:\(admin.user.id)", seen: seen)
        } catch let e as DomainError where e.code == "settings_changed" {
            // The editor again with this person's text, so nothing typed is lost, under the stored version: saving
            // it again now replaces the other change knowingly.
            var page = try await templatePage(
                context, edited: edited, error: Strings.table(context.locale)["error_\(e.code)"] ?? e.message,
                message: nil)
            page.status = .conflict
            return page
        }
        return try await templatePage(
            context, edited: nil, error: nil, message: Strings.table(context.locale)["template_saved"])
    }

    /// The editor page with the error, when the template is refused (unknown variable, bad syntax); else nil.
    func refusal(_ edited: MailTemplate, _ context: AppContext, version: Int64? = nil) async throws -> Response? {
        do {
            try MailTemplateCatalog.validate(edited)
            return nil
        } catch {
            var page = try await templatePage(
                context, edited: edited, error: error.message, message: nil, version: version)
            page.status = .unprocessableContent
            return page
        }
    }

    func resetTemplate(_ request: Request, _ context: AppContext) async throws -> Response {
        _ = try await form(request, context)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let (kind, variant) = try templateKey(context)
        try await store.resetMailTemplate(
            workspaceID: admin.workspace.id, kind: kind.rawValue, variant: variant, actor: "user:\(admin.user.id)")
        throw Redirect(to: SiteURL.adminMailTemplate(key: "\(kind.rawValue).\(variant)").path)
    }

    /// Sends the template as it is in the form, with sample values, to an address (default: the admin's own).
    func testSend(_ request: Request, _ context: AppContext) async throws -> Response {
        let fields = try await form(request, context, limit: Self.longFormLimit)
        let admin = try admin(context)
        try require(admin.role.canEditMail, context)
        let edited = try editedTemplate(fields, context)
        let t = Strings.table(context.locale)
        let seen = Self.seenVersion(fields)
        if let refused = try await refusal(edited, context, version: seen) { return refused }
        // A test goes to the team, never to customers: that would be advertising without consent.
        let to = try EmailAddress(fields["to"] ?? admin.user.email, field: "to")
        let team = try await store.members(workspaceID: admin.workspace.id).map { $0.user.email.lowercased() }
        guard team.contains(to.normalized) else {
            throw DomainError.invalid(
                "test_recipient", "A test mail goes only to a user of this workspace.", field: "to")
        }
        let (id, outcome) = try await mailer.sendTest(
            workspace: admin.workspace, kind: edited.kind, to: to, locale: edited.variant == "en" ? "en" : "de",
            name: admin.user.name, template: edited)
        let message: String
        switch outcome {
        case .sent: message = (t["test_sent"] ?? "") + " #\(id)"
        default: message = (t["test_not_sent"] ?? "") + " #\(id): \(outcome)"
        }
        return try await templatePage(context, edited: edited, error: nil, message: message, version: seen)
    }
}

/// Decodes a stored MIME message's text and HTML parts for display (quoted-printable or base64, UTF-8).
enum MailView {
    static func decode(_ bytes: [UInt8]) -> (text: String, html: String?) {
        guard let message = try? RenderedMessage(parsing: bytes) else { return ("", nil) }
        let body = String(decoding: message.body, as: UTF8.self)
        let contentType = message.headers.first { $0.name.lowercased() == "content-type" }?.value ?? ""
        var parts: [(type: String, encoding: String, body: String)] = []
        // Leaf parts, looking inside nested multiparts (multipart/mixed around multipart/alternative).
        func collect(contentType: String, body: String) {
            guard let b = contentType.range(of: "boundary=\"") else { return }
            let boundary = String(contentType[b.upperBound...].prefix(while: { $0 != "\"" }))
            for chunk in body.components(separatedBy: "--" + boundary).dropFirst() where !chunk.hasPrefix("--") {
                let trimmed = chunk.hasPrefix("\r\n") ? String(chunk.dropFirst(2)) : chunk
                guard let split = trimmed.range(of: "\r\n\r\n") else { continue }
                let head = String(trimmed[..<split.lowerBound])
                let lower = head.lowercased()
                let inner = String(trimmed[split.upperBound...])
                if lower.contains("multipart/") {
                    collect(contentType: head.replacingOccurrences(of: "\r\n ", with: " "), body: inner)
                    continue
                }
                let type = lower.contains("text/html") ? "html" : lower.contains("text/plain") ? "text" : "other"
                let encoding = lower.contains("base64") ? "base64" : "quoted-printable"
                parts.append((type, encoding, inner))
            }
        }
        if contentType.contains("boundary=") {
            collect(contentType: contentType, body: body)
        } else {
            let encoding = message.headers.first { $0.name.lowercased() == "content-transfer-encoding" }?.value ?? ""
            parts.append(("text", encoding.lowercased(), body))
        }
        func decodePart(_ p: (type: String, encoding: String, body: String)) -> String {
            if p.encoding == "base64" {
                let joined = p.body.components(separatedBy: .whitespacesAndNewlines).joined()
                return Data(base64Encoded: joined).map { String(decoding: $0, as: UTF8.self) } ?? ""
            }
            return QuotedPrintable.decode(p.body)
        }
        let text = parts.first { $0.type == "text" }.map(decodePart) ?? ""
        let html = parts.first { $0.type == "html" }.map(decodePart)
        return (text, html)
    }
}
