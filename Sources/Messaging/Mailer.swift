import Foundation
import Logging
import Mail
import ReciprocityCore
import SMTP
import Storage

/// The mail engine's front door for capabilities, admin and CLI: compose into the outbox, deliver, preview.
public struct Mailer: Sendable {
    public let store: Store
    public let composer: MailComposer
    public let delivery: MailDelivery

    public init(store: Store, composer: MailComposer, delivery: MailDelivery) {
        self.store = store
        self.composer = composer
        self.delivery = delivery
    }

    /// Builds the transport from configuration: SMTP when a URL is set, else the development outbox.
    public static func transport(smtpURL: String?, caFile: String?, heloName: String, logger: Logger) throws
        -> any MailTransport
    {
        guard let smtpURL else { return DevOutboxTransport() }
        let config = try SMTPConfiguration.parse(smtpURL, heloName: heloName, caFile: caFile)
        return SMTPTransport(pool: try SMTPPool(config: config, logger: logger))
    }

    /// Composes a mail and puts it in the outbox (its own transaction). Returns the outbox id.
    @discardableResult
    public func enqueue(
        workspace: Workspace, kind: MessageKind, to recipient: MailRecipient, values: [String: Any],
        template: MailTemplate? = nil, notBefore: Date? = nil, isTest: Bool = false
    ) async throws -> Int64 {
        let draft = try await draft(
            workspace: workspace, kind: kind, to: recipient, values: values, template: template, notBefore: notBefore,
            isTest: isTest)
        return try await store.db.transaction { tx in try await self.store.enqueueMail(tx, draft) }
    }

    /// The outbox draft for a mail, composed now; a capability enqueues it inside its own transaction.
    ///
    /// `messageID`: a stable local part for a mail that must exist once however often its job runs (the outbox's
    /// unique Message-ID then refuses the second, `Store.enqueueMailOnce`); random by default.
    public func draft(
        workspace: Workspace, kind: MessageKind, to recipient: MailRecipient, values: [String: Any],
        template: MailTemplate? = nil, notBefore: Date? = nil, isTest: Bool = false, messageID: String? = nil
    ) async throws -> OutboxDraft {
        let settings = try await store.mailSettings(workspaceID: workspace.id)
        let composed = try await composer.compose(
            workspace: workspace, settings: settings, kind: kind, to: recipient, values: values, template: template,
            date: store.clock.now(), messageID: messageID)
        return OutboxDraft(
            workspaceID: workspace.id, contactID: recipient.contactID, kind: kind, recipient: recipient.email,
            messageID: composed.message.messageID, subject: composed.subject,
            message: String(decoding: composed.rendered.bytes, as: UTF8.self), notBefore: notBefore, isTest: isTest)
    }

    /// A test send of a kind with sample values to an address the merchant names: through the outbox and the
    /// real transport, at once. Only the suppression list applies.
    public func sendTest(
        workspace: Workspace, kind: MessageKind, to address: EmailAddress, locale: String, name: String?,
        template: MailTemplate? = nil
    ) async throws -> (Int64, MailDelivery.Outcome) {
        let parts = (name ?? "").split(separator: " ", maxSplits: 1).map(String.init)
        let recipient = MailRecipient(
            email: address, firstName: parts.first, lastName: parts.count > 1 ? parts[1] : nil, locale: locale)
        let id = try await enqueue(
            workspace: workspace, kind: kind, to: recipient,
            values: MailSamples.model(kind, locale: Locale.resolve(locale)), template: template, isTest: true)
        return (id, try await delivery.deliver(outboxID: id))
    }

    /// Renders a template (saved or being edited) with sample values, for the admin preview.
    public func preview(workspace: Workspace, kind: MessageKind, variant: String, template: MailTemplate? = nil)
        async throws -> ComposedMail
    {
        var settings = try await store.mailSettings(workspaceID: workspace.id)
        let locale = variant == "en" ? "en" : "de"
        settings.addressForm = variant == "de-du" ? "du" : "sie"
        return try await composer.compose(
            workspace: workspace, settings: settings, kind: kind,
            to: MailRecipient(
                email: try EmailAddress("juergen.mueller@example.com"), firstName: "Jürgen", lastName: "Müller",
                locale: locale),
            values: MailSamples.model(kind, locale: locale), template: template, date: store.clock.now(),
            messageID: "preview@localhost")
    }
}
