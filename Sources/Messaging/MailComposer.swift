import Foundation
import Mail
import Mustache
import ReciprocityCore
import Storage

/// Who a mail is for.
public struct MailRecipient: Sendable {
    public var email: EmailAddress
    public var firstName: String?
    public var lastName: String?
    public var locale: String
    public var contactID: ContactID?

    public init(
        email: EmailAddress, firstName: String? = nil, lastName: String? = nil, locale: String = "de",
        contactID: ContactID? = nil
    ) {
        self.email = email
        self.firstName = firstName
        self.lastName = lastName
        self.locale = locale
        self.contactID = contactID
    }

    public init(_ contact: Contact) throws {
        self.init(
            email: try EmailAddress(contact.email), firstName: contact.firstName, lastName: contact.lastName,
            locale: contact.locale, contactID: contact.id)
    }

    var displayName: String? {
        let name = [firstName, lastName].compactMap { $0 }.joined(separator: " ")
        return name.isEmpty ? nil : name
    }
}

/// A composed mail: the message to send and the rendered parts (for the outbox, previews and snapshots).
public struct ComposedMail: Sendable {
    public var message: MailMessage
    public var rendered: RenderedMessage
    public var subject: String
    public var text: String
    public var html: String
}

/// Renders a kind's template for a recipient, wraps it in the branded layout with the legally required footer,
/// and builds the MIME message with RFC 8058 headers for marketing mail.
public struct MailComposer: Sendable {
    public let catalog: MailTemplateCatalog
    public let store: Store
    public let baseURL: String

    public init(catalog: MailTemplateCatalog, store: Store, baseURL: String) {
        self.catalog = catalog
        self.store = store
        self.baseURL = baseURL
    }

    /// The sender's `Mailbox`, parsed once per sender rather than once per mail.
    private let senders = SenderMailboxes()

    /// 128 random bits as 32 lower-case hex digits: a Message-ID's local part. (`UUID().uuidString.lowercased()`
    /// cost two allocations and a system call per mail.)
    static func randomLocalPart() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, 16) }
        return Hex.encode(bytes)
    }

    /// The template in force: the workspace's edited one, else the shipped one.
    public func template(workspaceID: WorkspaceID, kind: MessageKind, variant: String) async throws -> MailTemplate {
        if let t = try await store.mailTemplate(workspaceID: workspaceID, kind: kind.rawValue, variant: variant) {
            return MailTemplate(kind: kind, variant: variant, subject: t.subject, text: t.text, html: t.html)
        }
        return catalog.builtIn(kind, variant: variant)
    }

    public func compose(
        workspace: Workspace, settings: MailSettings, kind: MessageKind, to recipient: MailRecipient,
        values: [String: Any], template override: MailTemplate? = nil, date: Date, messageID: String? = nil
    ) async throws -> ComposedMail {
        let locale = Locale.resolve(recipient.locale)
        let variant = MailTemplate.variant(locale: locale, addressForm: settings.addressForm)
        let template: MailTemplate
        if let override {
            template = override
        } else {
            template = try await self.template(workspaceID: workspace.id, kind: kind, variant: variant)
        }
        let from = try senders.mailbox(workspace.senderEmail, displayName: workspace.senderName)
        // A caller's id without a domain is a stable local part (a mail that must exist once: see `Mailer.draft`).
        let id =
            messageID.map { $0.contains("@") ? $0 : "\($0)@\(from.domain)" }
            ?? "\(Self.randomLocalPart())@\(from.domain)"
        let emailHash = store.suppressionHash(recipient.email.normalized)
        let unsubscribeToken = store.signToken(
            purpose: "unsubscribe",
            fields: [String(workspace.id), emailHash, recipient.contactID.map(String.init) ?? "", kind.rawValue])
        let preferencesToken = store.signToken(
            purpose: "preferences",
            fields: [String(workspace.id), emailHash, recipient.contactID.map(String.init) ?? ""])
        // Empty values are left out: a Mustache section over "" would still render (and show an empty link).
        var links: [String: MailValue] = [
            "unsubscribe": .string(baseURL + "/u/" + unsubscribeToken),
            "preferences": .string(baseURL + "/p/" + preferencesToken),
        ]
        if !workspace.imprintURL.isEmpty { links["imprint"] = .string(workspace.imprintURL) }
        if !workspace.privacyURL.isEmpty { links["privacy"] = .string(workspace.privacyURL) }
        let marketing = kind.mailClass == .marketing
        let footer = Self.footer(variant: variant, workspace: workspace, recipient: recipient)
        var model = MailModel(
            typed: Self.common(
                workspace: workspace, settings: settings, recipient: recipient, variant: variant, links: links),
            values: values)

        let subject = Self.oneLine(try Self.render(template.subject, model, text: true))
        let textContent = try Self.render(template.text, model, text: true)
        let htmlContent = try Self.render(template.html, model, text: false)
        model.set("subject", .string(subject))
        model.set("locale", .string(locale))
        model.set("marketing", .bool(marketing))
        model.set("footer", .dictionary(footer.mapValues(MailValue.string)))
        model.set("content", .string(htmlContent))
        let html = catalog.htmlLayout.render(model)
        model.set("content", .string(textContent))
        let text = catalog.textLayout.render(model)

        var headers: [HeaderField] = []
        if marketing {
            // RFC 8058: an https URI (POST = one click) and a mailto. Both covered by the DKIM signature.
            // To the bounce domain's mailbox (the one `bounces import` reads), never to the shop's inbox.
            let mailto = "mailto:bounce+unsubscribe@\(from.domain)?subject=unsubscribe%20\(unsubscribeToken)"
            headers.append(HeaderField("List-Unsubscribe", "<\(baseURL)/u/\(unsubscribeToken)>, <\(mailto)>"))
            headers.append(HeaderField("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        }
        let message = MailMessage(
            from: from, to: [try Mailbox(recipient.email, displayName: recipient.displayName)],
            subject: subject, text: text, html: html, messageID: id, date: date, extraHeaders: headers)
        return ComposedMail(
            message: message, rendered: try message.render(), subject: subject, text: text, html: html)
    }

    /// A rendered subject on one line: newlines as spaces, no blanks at either end.
    static func oneLine(_ s: String) -> String {
        guard s.utf8.contains(10) || s.utf8.first.map(isBlank) == true || s.utf8.last.map(isBlank) == true else {
            return s
        }
        return s.replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
    }

    private static func isBlank(_ b: UInt8) -> Bool { b == 32 || b == 9 || b >= 0x80 }

    static func render(_ source: String, _ model: MailModel, text: Bool) throws -> String {
        try ParsedTemplates.shared.template(source, text: text).render(model)
    }

    static func common(
        workspace: Workspace, settings: MailSettings, recipient: MailRecipient, variant: String,
        links: [String: MailValue]
    ) -> [String: MailValue] {
        var brand: [String: MailValue] = ["color": .string(settings.brandColor)]
        if !settings.logoURL.isEmpty { brand["logo_url"] = .string(settings.logoURL) }
        return [
            "workspace": .dictionary(["name": .string(workspace.name)]),
            "contact": .dictionary([
                "first_name": .string(recipient.firstName ?? ""), "last_name": .string(recipient.lastName ?? ""),
                "name": .string(recipient.displayName ?? ""), "email": .string(recipient.email.raw),
            ]),
            "salutation": .string(salutation(variant: variant, recipient: recipient)),
            "brand": .dictionary(brand),
            "links": .dictionary(links),
        ]
    }

    /// The model a template of this kind sees, filled with samples: previews and the allowed-variable list.
    public static func sampleModel(_ kind: MessageKind, locale: String = "de") -> [String: Any] {
        var m = common(
            workspace: Workspace(
                id: 0, slug: "sample", name: "Kaffeerösterei Bohnenglück", senderName: "Bohnenglück",
                senderEmail: "hallo@bohnenglueck.example", createdAt: Date(timeIntervalSince1970: 0)),
            settings: {
                var s = MailSettings()
                s.logoURL = "https://bohnenglueck.example/logo.png"
                return s
            }(),
            recipient: sampleRecipient,
            variant: locale == "en" ? "en" : "de",
            links: [
                "unsubscribe": .string("https://shop.example/u/sample"),
                "preferences": .string("https://shop.example/p/sample"),
                "imprint": .string("https://shop.example/impressum"),
                "privacy": .string("https://shop.example/datenschutz"),
            ]
        ).mapValues(\.any)
        for (k, v) in MailSamples.model(kind, locale: locale) { m[k] = v }
        return m
    }

    static let sampleRecipient = MailRecipient(
        email: (try? EmailAddress("juergen.mueller@example.com")) ?? EmailAddress.placeholder, firstName: "Jürgen",
        lastName: "Müller")

    static func salutation(variant: String, recipient: MailRecipient) -> String {
        let first = recipient.firstName ?? ""
        let full = recipient.displayName ?? ""
        switch variant {
        case "en": return first.isEmpty ? "Hello," : "Hello \(first),"
        case "de-du": return first.isEmpty ? "Hallo," : "Hallo \(first),"
        default: return full.isEmpty ? "Guten Tag," : "Guten Tag \(full),"
        }
    }

    static func footer(variant: String, workspace: Workspace, recipient: MailRecipient) -> [String: String] {
        switch variant {
        case "en":
            return [
                "sender": "\(workspace.name) · This email was sent to \(recipient.email.raw).",
                "reason": "You receive this email because you agreed to it or bought from us.",
                "objection":
                    "You can object to the use of your email address for advertising at any time, at no cost other than the basic transmission costs.",
                "unsubscribe_label": "Unsubscribe", "preferences_label": "Email preferences",
                "imprint_label": "Imprint", "privacy_label": "Privacy",
            ]
        case "de-du":
            return [
                "sender": "\(workspace.name) · Diese E-Mail ging an \(recipient.email.raw).",
                "reason": "Du bekommst diese E-Mail, weil du zugestimmt oder bei uns gekauft hast.",
                "objection":
                    "Du kannst der Verwendung deiner E-Mail-Adresse für Werbung jederzeit widersprechen, ohne dass dir andere als die Übermittlungskosten nach den Basistarifen entstehen.",
                "unsubscribe_label": "Abmelden", "preferences_label": "E-Mail-Einstellungen",
                "imprint_label": "Impressum", "privacy_label": "Datenschutz",
            ]
        default:
            return [
                "sender": "\(workspace.name) · Diese E-Mail ging an \(recipient.email.raw).",
                "reason": "Sie erhalten diese E-Mail, weil Sie zugestimmt oder bei uns gekauft haben.",
                "objection":
                    "Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen, ohne dass Ihnen andere als die Übermittlungskosten nach den Basistarifen entstehen.",
                "unsubscribe_label": "Abmelden", "preferences_label": "E-Mail-Einstellungen",
                "imprint_label": "Impressum", "privacy_label": "Datenschutz",
            ]
        }
    }
}

/// A template parsed by swift-mustache and, where it can be, compiled (`MailTemplateProgram`): sending renders the
/// compiled form, swift-mustache renders what it does not cover.
struct MailTemplateRenderer: Sendable {
    let mustache: MustacheTemplate
    let program: MailTemplateProgram?

    init(_ source: String) throws {
        mustache = try MustacheTemplate(string: source)
        program = MailTemplateProgram.compile(source)
    }

    /// Off in tests that compare the compiled rendering with swift-mustache's.
    @TaskLocal static var compiled = true

    func render(_ model: MailModel) -> String {
        if Self.compiled, let program, let typed = model.typed, let out = program.render(.dictionary(typed)) {
            return out
        }
        return mustache.render(model.untyped)
    }
}

/// A mail's model: typed for the compiled templates, and as `[String: Any]` for swift-mustache, built only when it
/// renders. Values the compiled form does not cover (a caller's `Double`, say) leave only the untyped model.
struct MailModel {
    private var common: [String: MailValue]
    private var values: [String: Any]
    /// `common` with the caller's values over it; nil when a value is of a kind the compiled form does not cover.
    private(set) var typed: [String: MailValue]?

    init(typed common: [String: MailValue], values: [String: Any]) {
        self.common = common
        self.values = values
        typed = MailValue.dictionary(values).map { common.merging($0) { _, value in value } }
    }

    /// Layout entries (subject, content…), added after the parts are rendered; they win over a caller's value.
    mutating func set(_ key: String, _ value: MailValue) {
        common[key] = value
        values[key] = nil
        typed?[key] = value
    }

    var untyped: [String: Any] {
        var model = common.mapValues(\.any)
        for (k, v) in values { model[k] = v }
        return model
    }
}

/// The last sender's `Mailbox`: a workspace sends many mails in a row, and parsing the address was 3% of composing.
final class SenderMailboxes: @unchecked Sendable {
    private let lock = NSLock()
    private var last: (email: String, name: String, mailbox: Mailbox)?

    func mailbox(_ email: String, displayName: String) throws -> Mailbox {
        if let hit = lock.withLock({ last }), hit.email == email, hit.name == displayName { return hit.mailbox }
        let mailbox = try Mailbox(email, displayName: displayName)
        lock.withLock { last = (email, displayName, mailbox) }
        return mailbox
    }
}

/// Parsed templates by source text, so a mail sent ten thousand times is parsed once. Bounded: cleared when full
/// (edited templates make new sources). The last few are checked first by equality, which for the same string is
/// a pointer comparison: hashing a template's kilobytes on every mail cost more than rendering its variables.
final class ParsedTemplates: @unchecked Sendable {
    static let shared = ParsedTemplates()
    private struct Key: Hashable {
        var text: Bool
        var source: String
    }
    private let lock = NSLock()
    private var cache: [Key: MailTemplateRenderer] = [:]
    private var recent: [(key: Key, renderer: MailTemplateRenderer)] = []

    func template(_ source: String, text: Bool) throws -> MailTemplateRenderer {
        let key = Key(text: text, source: source)
        if let hit = lock.withLock({ () -> MailTemplateRenderer? in
            if let r = recent.first(where: { $0.key == key }) { return r.renderer }
            guard let r = cache[key] else { return nil }
            remember(key, r)
            return r
        }) {
            return hit
        }
        let parsed = try MailTemplateRenderer((text ? MailTextPragma.pragma : MailHTML.pragma) + source)
        lock.withLock {
            if cache.count >= 512 { cache.removeAll(keepingCapacity: true) }
            cache[key] = parsed
            remember(key, parsed)
        }
        return parsed
    }

    private func remember(_ key: Key, _ renderer: MailTemplateRenderer) {
        if recent.count >= 8 { recent.removeFirst() }
        recent.append((key, renderer))
    }
}

/// Plain text for mail templates: no escaping.
enum MailTextPragma {
    static let pragma = "{{% CONTENT_TYPE: TEXT}}"
}

/// HTML escaping for mail templates: `HTMLText.escape`, on UTF-8 bytes.
struct MailHTML: MustacheContentType {
    static let name = "MAILHTML"
    static let pragma: String = {
        MustacheContentTypes.register(MailHTML(), named: name)
        return "{{% CONTENT_TYPE: \(name)}}"
    }()

    func escapeText(_ text: String) -> String { HTMLText.escape(text) }
}
