import Foundation
import Mustache
import ReciprocityCore
import Storage

/// One mail template: subject, text and HTML, for a kind and a variant (`de` = German, Sie; `de-du`; `en`).
public struct MailTemplate: Sendable, Equatable {
    public var kind: MessageKind
    public var variant: String
    public var subject: String
    public var text: String
    public var html: String

    public static let variants = ["de", "de-du", "en"]

    public init(kind: MessageKind, variant: String, subject: String, text: String, html: String) {
        self.kind = kind
        self.variant = variant
        self.subject = subject
        self.text = text
        self.html = html
    }

    /// The variant for a locale and the workspace's German address form.
    public static func variant(locale: String, addressForm: String) -> String {
        Locale.resolve(locale) == "en" ? "en" : (addressForm == "du" ? "de-du" : "de")
    }

    /// Parses the shipped file format: `Subject: …`, then `--- text`, then `--- html`.
    static func parse(kind: MessageKind, variant: String, file: String) throws -> MailTemplate {
        let lines = file.components(separatedBy: "\n")
        guard let first = lines.first, first.hasPrefix("Subject: "),
            let textMarker = lines.firstIndex(of: "--- text"), let htmlMarker = lines.firstIndex(of: "--- html"),
            textMarker < htmlMarker
        else { throw DomainError.invalid("template_format", "Template \(kind.rawValue).\(variant) is malformed.") }
        return MailTemplate(
            kind: kind, variant: variant, subject: String(first.dropFirst("Subject: ".count)),
            text: lines[(textMarker + 1)..<htmlMarker].joined(separator: "\n").trimmingCharacters(in: .newlines),
            html: lines[(htmlMarker + 1)...].joined(separator: "\n").trimmingCharacters(in: .newlines))
    }
}

/// The shipped templates and layouts, loaded once from the bundle; and the rules an edited template must meet.
public struct MailTemplateCatalog: Sendable {
    public let builtIn: [String: MailTemplate]
    let htmlLayout: MailTemplateRenderer
    let textLayout: MailTemplateRenderer

    public static func load() throws -> MailTemplateCatalog {
        guard let dir = Bundle.module.url(forResource: "MailTemplates", withExtension: nil) else {
            throw DomainError.invalid("templates_missing", "The mail templates are missing from the bundle.")
        }
        func read(_ name: String) throws -> String {
            try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
        }
        var builtIn: [String: MailTemplate] = [:]
        for kind in MessageKind.allCases {
            for variant in MailTemplate.variants {
                builtIn["\(kind.rawValue).\(variant)"] = try MailTemplate.parse(
                    kind: kind, variant: variant, file: try read("\(kind.rawValue).\(variant).mustache"))
            }
        }
        return MailTemplateCatalog(
            builtIn: builtIn,
            htmlLayout: try MailTemplateRenderer(MailHTML.pragma + (try read("layout.html.mustache"))),
            textLayout: try MailTemplateRenderer(MailTextPragma.pragma + (try read("layout.text.mustache"))))
    }

    public func builtIn(_ kind: MessageKind, variant: String) -> MailTemplate {
        builtIn["\(kind.rawValue).\(variant)"] ?? builtIn["\(kind.rawValue).de"]!
    }

    /// The names a template of this kind may use: everything in the kind's sample model, dotted for nesting;
    /// inside list sections, the items' own keys.
    public static func allowedVariables(_ kind: MessageKind) -> Set<String> {
        var names: Set<String> = []
        func walk(_ value: Any, prefix: String) {
            if let dict = value as? [String: Any] {
                for (k, v) in dict {
                    let name = prefix.isEmpty ? k : prefix + "." + k
                    names.insert(name)
                    walk(v, prefix: name)
                }
            } else if let list = value as? [[String: Any]] {
                for item in list { walk(item, prefix: "") }
            }
        }
        walk(MailComposer.sampleModel(kind), prefix: "")
        return names
    }

    /// Refuses a template that does not parse or names a variable the kind does not have: caught when saved,
    /// never at send time. Partials and unescaped HTML output (`{{{…}}}`, `{{&…}}`) are refused too, so every
    /// value is escaped.
    public static func validate(_ t: MailTemplate) throws(DomainError) {
        let allowed = allowedVariables(t.kind)
        for (field, source) in [("subject", t.subject), ("text", t.text), ("html", t.html)] {
            if field == "subject" && source.trimmingCharacters(in: .whitespaces).isEmpty {
                throw .invalid("template_subject_missing", "The subject is empty.", field: "subject")
            }
            if source.count > 100_000 {
                throw .invalid("template_too_long", "A template part has at most 100,000 characters.", field: field)
            }
            do {
                _ = try MustacheTemplate(string: source)
            } catch {
                throw .invalid(
                    "template_syntax", "The \(field) is not a valid Mustache template: \(error).", field: field)
            }
            for tag in tags(in: source) {
                if tag.hasPrefix("{") || tag.hasPrefix("&") {
                    throw .invalid(
                        "template_unescaped", "Unescaped output ({{{…}}}) is not allowed; values are always escaped.",
                        field: field)
                }
                if tag.hasPrefix(">") || tag.hasPrefix("<") || tag.hasPrefix("$") || tag.hasPrefix("=") {
                    throw .invalid("template_tag", "Partials and delimiter changes are not allowed.", field: field)
                }
                if tag.hasPrefix("!") { continue }
                var name = tag
                if let f = name.first, "#^/".contains(f) { name.removeFirst() }
                name = name.trimmingCharacters(in: .whitespaces)
                if name == "." { continue }
                guard allowed.contains(name) else {
                    throw .invalid(
                        "template_unknown_variable",
                        "The \(field) uses {{\(name)}}, which a \(t.kind.rawValue) mail does not have. Known: \(allowed.sorted().joined(separator: ", ")).",
                        field: field)
                }
            }
        }
    }

    /// The inner text of every `{{…}}` tag (`{{{x}}}` yields `{x`).
    static func tags(in source: String) -> [String] {
        var out: [String] = []
        var rest = source[...]
        while let open = rest.range(of: "{{") {
            guard let close = rest[open.upperBound...].range(of: "}}") else { break }
            out.append(String(rest[open.upperBound..<close.lowerBound]).trimmingCharacters(in: .whitespaces))
            rest = rest[close.upperBound...]
            if rest.hasPrefix("}") { rest = rest.dropFirst() }
        }
        return out
    }
}

/// Sample values per kind, for previews, test sends and the list of allowed variables.
public enum MailSamples {
    public static func model(_ kind: MessageKind, locale: String) -> [String: Any] {
        let en = locale == "en"
        var m: [String: Any] = [:]
        switch kind {
        case .doiConfirmation:
            m["gift_title"] = en ? "The coffee brewing guide" : "Der Kaffee-Brühguide: Äthiopien bis Kolumbien"
            m["confirm_url"] = "https://shop.example/c/SAMPLE"
            m["pending_days"] = "30"
        case .giftDelivery:
            m["gift_title"] = en ? "The coffee brewing guide" : "Der Kaffee-Brühguide: Äthiopien bis Kolumbien"
            m["download_url"] = "https://shop.example/d/SAMPLE"
            m["expires_at"] = en ? "29 November 2026" : "29.11.2026"
            m["is_file"] = true
        case .reviewRequest, .reviewReminder:
            m["order"] = ["number": "10042"]
            m["items"] =
                [
                    [
                        "name": "Äthiopien Yirgacheffe – Röstung hell",
                        "review_url": "https://shop.example/review/SAMPLE1",
                    ],
                    ["name": "Handmühle „Grüße aus Köln“", "review_url": "https://shop.example/review/SAMPLE2"],
                ] as [[String: Any]]
        case .thankYou:
            m["message"] =
                en
                ? "Thank you for recommending us to a friend. That means a lot to a small roastery."
                : "Danke, dass Sie uns weiterempfohlen haben. Für eine kleine Rösterei bedeutet das sehr viel."
        case .referralWelcome:
            m["code"] = "ANNA-7K3Q"
            m["page_url"] = "https://shop.example/a/SAMPLE"
            m["share_url"] = "https://shop.example/r/ANNA-7K3Q"
            m["incentive"] = en ? "10 € off the first order" : "10 € Rabatt auf die erste Bestellung"
        case .referralReward:
            m["is_milestone"] = false
            m["is_voucher"] = true
            m["is_credit"] = false
            m["is_cash"] = false
            m["is_premium"] = false
            m["needs_bank"] = false
            m["needs_choice"] = false
            m["premium_name"] = ""
            m["value"] = en ? "€10.00" : "10,00 €"
            m["voucher_code"] = "DANKE-7K3Q-M2PX"
            m["page_url"] = "https://shop.example/a/SAMPLE"
        case .referralPremiumShipped:
            m["premium_name"] = en ? "Enamel mug “Bohnenglück”" : "Emaille-Tasse „Bohnenglück“"
            m["page_url"] = "https://shop.example/a/SAMPLE"
        case .leadFollowUp:
            m["step"] =
                [
                    "subject": en ? "Did the guide help?" : "Hat Ihnen der Brühguide geholfen?",
                    "paragraphs": [
                        [
                            "text": en
                                ? "Three days ago you downloaded our brewing guide. Here is one more tip: grind just before brewing."
                                : "Vor drei Tagen haben Sie unseren Brühguide geladen. Noch ein Tipp: Mahlen Sie erst kurz vor dem Aufbrühen."
                        ],
                        ["text": en ? "Happy brewing!" : "Viel Freude beim Aufbrühen!"],
                    ] as [[String: Any]],
                ] as [String: Any]
        }
        return m
    }
}
