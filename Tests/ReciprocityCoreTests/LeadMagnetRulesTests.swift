import Foundation
import ReciprocityCore
import Testing

/// The pure rules of lead magnets: bot checks, the disposable list, input validation, voucher codes, figures.
@Suite struct LeadMagnetRulesTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func formGuardVerdicts() {
        func check(_ hp: String = "", age: Double? = 5, embedded: Bool = false, origin: Bool = false)
            -> FormGuard.Verdict
        {
            FormGuard.check(
                honeypot: hp, issuedAt: age.map { now.addingTimeInterval(-$0) }, embedded: embedded,
                origin: origin ? .allowed : .unknown, minimumFillTime: 2, now: now)
        }
        #expect(check() == .pass)
        #expect(check("http://spam") == .honeypot)
        #expect(check(age: 0.5) == .tooFast)
        #expect(check(age: 1.99) == .tooFast)
        #expect(check(age: nil) == .badToken)
        #expect(check(age: 2 * 86_400) == .badToken)
        #expect(check(age: nil, embedded: true, origin: false) == .foreignOrigin)
        #expect(check(age: nil, embedded: true, origin: true) == .pass)
        #expect(check("x", embedded: true, origin: true) == .honeypot)
    }

    @Test func disposableDomainsMatchSubdomainsButNotLookalikes() throws {
        let list = DisposableDomains(["mailinator.com", "Trash-Mail.DE"])
        #expect(list.contains(domain: "mailinator.com"))
        #expect(list.contains(domain: "eu.mailinator.com"))
        #expect(list.contains(domain: "trash-mail.de"))
        #expect(!list.contains(domain: "notmailinator.com"))
        #expect(!list.contains(domain: "com"))
        #expect(list.contains(email: try EmailAddress("X@Mailinator.com")))
        #expect(DisposableDomains.shipped.domains.count > 1000, "the shipped list is bundled")
        #expect(DisposableDomains.shipped.contains(domain: "yopmail.com"))
        #expect(DisposableDomains.normalize("bad domain") == nil)
    }

    @Test func signupValidationReportsEveryErrorAtOnce() {
        let magnet = LeadMagnet(
            workspaceID: 1, slug: "probe", name: "Probe", headline: "Probe", body: "", giftKind: .sample,
            giftTitle: "Probe", sampleStock: 3, consentText: "Ja.",
            fields: [LeadField(key: "company", label: "Firma", required: true)])
        #expect(
            throws: SignupErrors(byField: [
                "email": "email_invalid", "custom_company": "required", "street": "required", "postal_code": "required",
                "city": "required", "name": "required", "country": "country_invalid",
            ])
        ) {
            try SignupRules.validate(
                SignupInput(
                    email: "nope",
                    address: PostalAddress(name: "", street: "", postalCode: "", city: "", country: "Deutschland")),
                magnet: magnet, disposable: DisposableDomains([]))
        }
        let ok = try? SignupRules.validate(
            SignupInput(
                email: " Anna@Example.org ", firstName: " Anna\u{7} ", custom: ["company": "Rösterei"],
                address: PostalAddress(name: "Anna", street: "Weg 1", postalCode: "50667", city: "Köln", country: "de")),
            magnet: magnet, disposable: DisposableDomains([]))
        #expect(ok?.email.normalized == "anna@example.org")
        #expect(ok?.firstName == "Anna")
        #expect(ok?.address?.country == "DE")
    }

    @Test func magnetValidation() {
        var m = LeadMagnet(
            workspaceID: 1, slug: "ok-slug", name: "N", headline: "H", body: "", giftKind: .link, giftTitle: "T",
            giftURL: "https://example.org/webinar", consentText: "Ja.")
        #expect(throws: Never.self) { try m.validate() }
        m.slug = "Bad Slug"
        #expect(throws: DomainError.self) { try m.validate() }
        m.slug = "ok"
        m.giftURL = "javascript:alert(1)"
        #expect(throws: DomainError.invalid("gift_url_invalid", "gift_url must be an http(s) URL.", field: "gift_url"))
        {
            try m.validate()
        }
        m.giftURL = "https://example.org"
        m.consentText = "  "
        #expect(throws: DomainError.self) { try m.validate() }
        m.consentText = "Ja."
        m.allowedOrigins = ["https://shop.example/path"]
        #expect(throws: DomainError.self) { try m.validate() }
        m.allowedOrigins = ["https://Shop.Example"]
        #expect(m.allowsOrigin("https://shop.example"))
        #expect(!m.allowsOrigin("https://evil.example"))
        #expect(!m.allowsOrigin("null"))
    }

    @Test func voucherCodesAreReadableAndCleaned() throws {
        let code = VoucherCodes.generate(prefix: "GIFT", random: Array(repeating: 7, count: 16))
        #expect(code.count == "GIFT-XXXX-XXXX".count && code.hasPrefix("GIFT-"))
        let body = code.dropFirst("GIFT-".count)
        #expect(!body.contains("0") && !body.contains("O") && !body.contains("1") && !body.contains("I"))
        #expect(try VoucherCodes.clean(["code", " A1 ", "", "B2"]) == ["A1", "B2"])
        #expect(throws: DomainError.self) { try VoucherCodes.clean(["has space"]) }
    }

    @Test func figures() {
        let s = LeadStats(
            views: 1000, signups: 200, confirmations: 150, downloads: 140, buyers30: 10, buyers90: 15,
            revenueMinor: 90_000,
            totalCostMinor: LeadStats.cost(
                unit: Money(minor: 100, currency: .eur), fixed: Money(minor: 15_000, currency: .eur), confirmations: 150
            ))
        #expect(s.totalCostMinor == 30_000)
        #expect(s.doiRate == 0.75)
        #expect(s.costPerLeadMinor == 200)
        #expect(s.costPerBuyerMinor == 2_000)
        #expect(LeadStats().costPerLeadMinor == nil)
    }

    /// A CRLF is one `Character` in Swift; a field holding one is quoted like one with a bare CR or LF, so it stays
    /// one field of one row and cannot start a row (or a formula) of its own.
    @Test func csvOutputQuotesEveryKindOfLineBreak() throws {
        #expect(CSV.write([["Anna\r\n=cmd|' /C calc'!A0", "x"]]) == "\"Anna\r\n=cmd|' /C calc'!A0\",x\r\n")
        #expect(CSV.write([["a\nb", "c\rd"]]) == "\"a\nb\",\"c\rd\"\r\n")
        let table = try CSV.parse(CSV.write([["name", "iban"], ["Anna\r\n=1+1", "DE02"]]))
        #expect(table.rows.count == 1)
        #expect(table.rows.first?.fields == ["Anna\n=1+1", "DE02"])
    }

    @Test func csvOutputQuotesAndDefusesFormulas() {
        #expect(CSV.write([["a", "b,c", "say \"hi\"", "=SUM(A1)"]]) == "a,\"b,c\",\"say \"\"hi\"\"\",'=SUM(A1)\r\n")
    }
}
