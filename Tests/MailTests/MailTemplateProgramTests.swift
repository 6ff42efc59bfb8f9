import Foundation
import Mail
import ReciprocityCore
import Storage
import TestSupport
import Testing

@testable import Messaging

/// The compiled mail templates against swift-mustache, the reference: the same bytes for every shipped template
/// and for generated ones, and a fall-back to swift-mustache for what the compiled form does not cover.
@Suite struct MailTemplateProgramTests {
    let catalog: MailTemplateCatalog

    init() throws { catalog = try MailTemplateCatalog.load() }

    @Test func everyShippedTemplateAndLayoutCompiles() throws {
        #expect(catalog.htmlLayout.program != nil)
        #expect(catalog.textLayout.program != nil)
        for kind in MessageKind.allCases {
            for variant in MailTemplate.variants {
                let t = catalog.builtIn(kind, variant: variant)
                for (pragma, source) in [
                    (MailTextPragma.pragma, t.subject), (MailTextPragma.pragma, t.text), (MailHTML.pragma, t.html),
                ] {
                    #expect(
                        try MailTemplateRenderer(pragma + source).program != nil, "\(kind.rawValue).\(variant)")
                }
            }
        }
    }

    /// Every kind, variant and address form composed twice, compiled and by swift-mustache: byte for byte equal.
    @Test(arguments: MessageKind.allCases)
    func composedMailsAreTheSameAsSwiftMustaches(kind: MessageKind) async throws {
        let store = Store(db: NoDatabase(), clock: ManualClock(Date(timeIntervalSince1970: 1_790_000_000)), secret: [7])
        let composer = MailComposer(catalog: catalog, store: store, baseURL: "https://shop.example")
        for variant in MailTemplate.variants {
            for logo in ["", "https://shop.example/logo.png"] {
                var settings = MailSettings()
                settings.addressForm = variant == "de-du" ? "du" : "sie"
                settings.logoURL = logo
                let locale = variant == "en" ? "en" : "de"
                var values = MailSamples.model(kind, locale: locale)
                values["message"] = "<b>\"Quotes\" & 'apostrophes'</b>\nzweite Zeile"
                func compose() async throws -> ComposedMail {
                    try await composer.compose(
                        workspace: MailTemplateTests.workspace, settings: settings, kind: kind,
                        to: MailRecipient(
                            email: try EmailAddress("juergen.mueller@example.com"), firstName: "Jürgen <x>",
                            lastName: "Müller", locale: locale, contactID: 12),
                        values: values, template: catalog.builtIn(kind, variant: variant),
                        date: Date(timeIntervalSince1970: 1_790_000_000), messageID: "same@bohnenglueck.example")
                }
                let compiled = try await compose()
                let reference = try await MailTemplateRenderer.$compiled.withValue(false) { try await compose() }
                #expect(compiled.subject == reference.subject, "\(kind.rawValue).\(variant)")
                #expect(compiled.text == reference.text, "\(kind.rawValue).\(variant)")
                #expect(compiled.html == reference.html, "\(kind.rawValue).\(variant)")
                #expect(compiled.rendered == reference.rendered, "\(kind.rawValue).\(variant)")
            }
        }
    }

    /// Whitespace, standalone lines, sections, inverted sections, lists, dotted names and the context stack: the
    /// places where a Mustache implementation differs from another.
    @Test(arguments: [
        "a{{x}}b", "{{#flag}}\nyes\n{{/flag}}\nend", "  {{#flag}}  \n  in\n  {{/flag}}  \nout",
        "{{^none}}empty{{/none}}", "{{#list}}[{{name}}|{{outer}}]{{/list}}", "{{#list}}\n- {{name}}\n{{/list}}\n",
        "{{^list_empty}}none{{/list_empty}}", "{{#nested}}{{inner.deep}}{{.inner.deep}}{{/nested}}",
        "{{#s}}<{{.}}>{{/s}}", "x {{! a comment }} y\n  {{! standalone }}\nz", "{{{raw}}} {{&raw}} {{raw}}",
        "line\r\n  {{#flag}}\r\n  crlf\r\n  {{/flag}}\r\nafter", "{{n}} {{t}} {{f}}", "{{ x }}{{#flag}}{{x}}{{/flag}}",
        "{{#f}}no{{/f}}{{^f}}not f{{/f}}{{^t}}no{{/t}}", "{ {x} }{x}} {{missing.path}}|", "\t{{x}}\n\t{{#flag}}\n",
        "{{#nested}}{{#inner}}{{deep}}-{{outer}}{{/inner}}{{/nested}}", "{{#x}}{{.}}{{/x}}\n{{/flag}}",
        "{{#list}}{{#last_name}}{{.}}{{/last_name}}{{/list}}", "tail {",
    ])
    func templatesRenderAsSwiftMustacheDoes(body: String) throws {
        for pragma in [MailTextPragma.pragma, MailHTML.pragma] {
            let source = pragma + body
            // What swift-mustache refuses is never compiled: the renderer parses with it first.
            guard let renderer = try? MailTemplateRenderer(source) else { continue }
            let compiled = renderer.render(MailModel(typed: [:], values: Self.model))
            let reference = MailTemplateRenderer.$compiled.withValue(false) {
                renderer.render(MailModel(typed: [:], values: Self.model))
            }
            #expect(compiled == reference, "\(body.debugDescription)")
        }
    }

    /// `{{.}}` and `{{..}}` at the top print the whole model, which swift-mustache writes as a Swift dictionary's
    /// description: in an order that differs between two dictionaries of the same entries (each has its own hash
    /// seed), so two renderings are not comparable byte for byte. The compiled form leaves them to swift-mustache.
    @Test(arguments: ["{{.}}", "{{..}}", "a{{#nested}}{{.}}{{/nested}}"])
    func printingADictionaryIsLeftToSwiftMustache(body: String) throws {
        for pragma in [MailTextPragma.pragma, MailHTML.pragma] {
            let renderer = try MailTemplateRenderer(pragma + body)
            let typed = try #require(MailModel(typed: [:], values: Self.model).typed)
            #expect(renderer.program?.render(.dictionary(typed)) == nil, "\(body)")
            #expect(renderer.render(MailModel(typed: [:], values: Self.model)).contains("inner"), "\(body)")
        }
    }

    nonisolated(unsafe) static let model: [String: Any] = [
        "x": "<x & 'y'>", "raw": "<i>", "flag": true, "t": true, "f": false, "n": 42, "outer": "O",
        "list": [["name": "A\"", "last_name": "L"], ["name": "B"]] as [[String: Any]],
        "list_empty": [] as [[String: Any]], "s": "str",
        "nested": ["inner": ["deep": "D"] as [String: Any]] as [String: Any],
    ]

    /// Random templates from the tags mails use, and random models: the compiled rendering (where it compiles)
    /// is swift-mustache's.
    @Test func generatedTemplatesRenderAsSwiftMustacheDoes() throws {
        var rng = SplitMix(seed: 20_261_124)
        let pieces = [
            "a", " ", "  ", "\t", "\n", "\r\n", "{{x}}", "{{{raw}}}", "{{&raw}}", "{{n}}", "{{missing}}", "{{.}}",
            "{{nested.inner.deep}}", "{{! c }}", "<&>", "ü", "{", "}",
        ]
        let sections = ["flag", "f", "list", "list_empty", "s", "nested", "missing", "n"]
        var compiledCount = 0
        for _ in 0..<600 {
            var body = ""
            var open: [String] = []
            for _ in 0..<(8 + rng.next(24)) {
                switch rng.next(10) {
                case 0, 1:
                    let name = sections[rng.next(sections.count)]
                    body += (rng.next(3) == 0 ? "{{^" : "{{#") + name + "}}"
                    open.append(name)
                case 2:
                    if let name = open.popLast() { body += "{{/" + name + "}}" }
                default:
                    body += pieces[rng.next(pieces.count)]
                }
            }
            while let name = open.popLast() { body += "{{/" + name + "}}" }
            for pragma in [MailTextPragma.pragma, MailHTML.pragma] {
                guard let renderer = try? MailTemplateRenderer(pragma + body) else { continue }
                if renderer.program != nil { compiledCount += 1 }
                let compiled = renderer.render(MailModel(typed: [:], values: Self.model))
                let reference = MailTemplateRenderer.$compiled.withValue(false) {
                    renderer.render(MailModel(typed: [:], values: Self.model))
                }
                // `{{.}}` on a dictionary prints the dictionary's description, and two dictionaries with the same
                // contents may list their keys in different orders (the test failed about once in seven runs so).
                // No template does that; such outputs must still hold the same characters.
                if compiled != reference, compiled.contains("[\""), compiled.sorted() == reference.sorted() { continue }
                #expect(compiled == reference, "\(body.debugDescription)")
            }
        }
        #expect(compiledCount > 600, "most generated templates take the compiled path (\(compiledCount))")
    }

    /// The compiled form takes what swift-mustache sees the same way, and leaves it everything a cast could bridge
    /// into something else (an `NSNumber` is a `Bool` to `as?`, and prints as a number in swift-mustache).
    @Test func valuesAreTypedOnlyWhereSwiftMustacheAgrees() throws {
        #expect(MailValue("x") != nil)
        #expect(MailValue(true) != nil)
        #expect(MailValue(3) != nil)
        #expect(MailValue(["a": ["b": "c"]] as [String: Any]) != nil)
        #expect(MailValue(["k": "v"] as [String: String]) != nil)
        #expect(MailValue([["a": 1]] as [[String: Any]]) != nil)
        #expect(MailValue(["a", "b"]) != nil)
        #expect(MailValue(NSNumber(value: 1)) == nil)
        #expect(MailValue(NSString(string: "x")) == nil)
        #expect(MailValue(["k": "v"] as [AnyHashable: Any]) == nil)
        #expect(MailValue(NSDictionary(dictionary: ["k": "v"])) == nil)
        #expect(MailValue(Optional("x") as Any) == nil)
        #expect(MailValue(Optional(Optional("x")) as Any) == nil)
        #expect(MailValue(1.5) == nil)
        #expect(MailValue(["ok": "x", "bad": NSNumber(value: 0)] as [String: Any]) == nil)
        // The sample models of every kind take the compiled path.
        for kind in MessageKind.allCases {
            #expect(MailValue.dictionary(MailSamples.model(kind, locale: "de")) != nil, "\(kind.rawValue)")
        }
        let source = MailTextPragma.pragma + "{{n}}"
        let renderer = try MailTemplateRenderer(source)
        #expect(renderer.render(MailModel(typed: [:], values: ["n": NSNumber(value: 1)])) == "1")
    }

    @Test func whatItDoesNotCoverIsLeftToSwiftMustache() throws {
        // Default HTML escaping (no pragma), partials and transforms are not compiled.
        for source in ["{{x}}", MailHTML.pragma + "{{> part}}", MailHTML.pragma + "{{uppercased(x)}}"] {
            #expect(MailTemplateProgram.compile(source) == nil, "\(source)")
        }
        // A value of another type: the compiled rendering declines, swift-mustache renders.
        let source = MailTextPragma.pragma + "{{d}}"
        let program = try #require(MailTemplateProgram.compile(source))
        #expect(MailValue.dictionary(["d": 1.5]) == nil)
        #expect(program.render(.dictionary(["d": .list([])])) == nil)
        #expect(try MailTemplateRenderer(source).render(MailModel(typed: [:], values: ["d": 1.5])) == "1.5")
    }
}

/// A small deterministic generator (SplitMix64), so a failure names a reproducible input.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Int(z % UInt64(bound))
    }
}
