import Foundation
import Mail
import Messaging
import ReciprocityCore
import Storage
import TestSupport
import Testing

@Suite struct MailTemplateTests {
    let catalog: MailTemplateCatalog

    init() throws { catalog = try MailTemplateCatalog.load() }

    @Test func everyShippedTemplateIsValid() throws {
        for kind in MessageKind.allCases {
            for variant in MailTemplate.variants {
                try MailTemplateCatalog.validate(catalog.builtIn(kind, variant: variant))
            }
        }
    }

    @Test func anUnknownVariableIsRefusedWhenSavedNotAtSendTime() {
        var t = catalog.builtIn(.reviewRequest, variant: "de")
        t.text += "\n{{coupon_code}}"
        let error = #expect(throws: DomainError.self) { try MailTemplateCatalog.validate(t) }
        #expect(error?.code == "template_unknown_variable")
        #expect(error?.field == "text")
        var unescaped = catalog.builtIn(.thankYou, variant: "en")
        unescaped.html = "<p>{{{message}}}</p>"
        #expect(
            (#expect(throws: DomainError.self) { try MailTemplateCatalog.validate(unescaped) })?.code
                == "template_unescaped")
        var broken = catalog.builtIn(.thankYou, variant: "en")
        broken.subject = "Thanks {{#items}}"
        #expect(
            (#expect(throws: DomainError.self) { try MailTemplateCatalog.validate(broken) })?.code == "template_syntax")
        var partial = catalog.builtIn(.thankYou, variant: "en")
        partial.html = "{{> secrets}}"
        #expect(throws: DomainError.self) { try MailTemplateCatalog.validate(partial) }
    }

    func composer() -> MailComposer {
        let store = Store(db: NoDatabase(), clock: ManualClock(Date(timeIntervalSince1970: 1_790_000_000)), secret: [7])
        return MailComposer(catalog: catalog, store: store, baseURL: "https://shop.example")
    }

    static let workspace = Workspace(
        id: 1, slug: "bohnenglueck", name: "Kaffeerösterei Bohnenglück", senderName: "Bohnenglück",
        senderEmail: "hallo@bohnenglueck.example", imprintURL: "https://bohnenglueck.example/impressum",
        privacyURL: "https://bohnenglueck.example/datenschutz", createdAt: Date(timeIntervalSince1970: 0))

    /// Snapshots of what people read: every kind in every variant, text and HTML, with sample values.
    @Test(arguments: MessageKind.allCases)
    func snapshots(kind: MessageKind) async throws {
        for variant in MailTemplate.variants {
            var settings = MailSettings()
            settings.addressForm = variant == "de-du" ? "du" : "sie"
            let locale = variant == "en" ? "en" : "de"
            let mail = try await composer().compose(
                workspace: Self.workspace, settings: settings, kind: kind,
                to: MailRecipient(
                    email: try EmailAddress("juergen.mueller@example.com"), firstName: "Jürgen", lastName: "Müller",
                    locale: locale, contactID: 12),
                values: MailSamples.model(kind, locale: locale), template: catalog.builtIn(kind, variant: variant),
                date: Date(timeIntervalSince1970: 1_790_000_000), messageID: "snapshot@bohnenglueck.example")
            try assertSnapshot("Subject: \(mail.subject)\n\n" + mail.text, named: "\(kind.rawValue).\(variant).txt")
            try assertSnapshot(mail.html, named: "\(kind.rawValue).\(variant).html")
            let raw = String(decoding: mail.rendered.bytes, as: UTF8.self)
            if kind.mailClass == .marketing {
                #expect(raw.contains("List-Unsubscribe: <https://shop.example/u/"))
                #expect(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"))
                #expect(mail.text.contains("https://shop.example/u/"), "a visible unsubscribe link")
                #expect(mail.html.contains("https://shop.example/u/"))
                #expect(mail.text.contains(variant == "en" ? "object to the use" : "widersprechen"), "the §7(3) notice")
            } else {
                #expect(!raw.contains("List-Unsubscribe"))
            }
            #expect(!mail.html.contains("<script"), "values are escaped")
        }
    }

    @Test func valuesAreEscapedInHTML() async throws {
        let mail = try await composer().compose(
            workspace: Self.workspace, settings: MailSettings(), kind: .thankYou,
            to: MailRecipient(email: try EmailAddress("a@example.com"), firstName: "<script>alert(1)</script>"),
            values: ["message": "<b>bold</b> & \"quoted\""], template: catalog.builtIn(.thankYou, variant: "de"),
            date: Date(timeIntervalSince1970: 0), messageID: "x@y.z")
        #expect(!mail.html.contains("<script>alert"))
        #expect(mail.html.contains("&lt;b&gt;bold&lt;/b&gt; &amp;"))
        #expect(mail.text.contains("<b>bold</b> & \"quoted\""), "the text part is not HTML-escaped")
    }
}
