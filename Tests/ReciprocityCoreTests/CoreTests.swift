import Foundation
import ReciprocityCore
import Testing

@Suite struct EmailRules {
    @Test(arguments: ["anna@example.com", "Anna.Muster+shop@Example.COM", "o'neil@example.co.uk", "jürgen@müller.de"])
    func validAddressesAreAccepted(_ raw: String) throws {
        let email = try EmailAddress(raw)
        #expect(email.normalized == raw.lowercased())
    }

    @Test(arguments: [
        "", "anna", "anna@", "@example.com", "anna@example", "a..b@example.com", "anna@exa mple.com",
        "anna@example.com\r\nBcc: x@y.z", "anna@-example.com", "anna@example.123",
        String(repeating: "a", count: 65) + "@example.com",
    ])
    func invalidAddressesAreRefusedWithTheirField(_ raw: String) {
        #expect(throws: DomainError.self) { try EmailAddress(raw, field: "customer.email") }
        do { _ = try EmailAddress(raw, field: "customer.email") } catch { #expect(error.field == "customer.email") }
    }

    @Test func gmailDotsAndTagsAndGooglemailAreOneIdentity() throws {
        #expect(
            try EmailAddress("a.b+x@gmail.com").canonicalIdentity == EmailAddress("ab@googlemail.com").canonicalIdentity
        )
        #expect(try EmailAddress("anna+shop@posteo.de").canonicalIdentity == "anna@posteo.de")
        #expect(
            try EmailAddress("a.b+x@example.com").canonicalIdentity == "a.b+x@example.com",
            "unknown providers keep tags")
    }
}

@Suite struct MoneyRules {
    @Test func decimalStringsParseExactly() throws {
        #expect(try Money(decimal: "19.99", currency: .eur, field: "p").minor == 1999)
        #expect(try Money(decimal: "0.1", currency: .eur, field: "p").minor == 10)
        #expect(try Money(decimal: "7", currency: Currency("JPY"), field: "p").minor == 7)
        #expect(Money(minor: 1905, currency: .eur).decimalString == "19.05")
        #expect(Money(minor: 1905, currency: .eur).formatted(locale: "de") == "19,05 €")
    }

    @Test(arguments: ["-1.00", "1.999", "1,99", "abc", "", ".5", "1.", "1e3", "١٢"])
    func malformedOrNegativeAmountsAreRefused(_ raw: String) {
        #expect(throws: DomainError.self) { try Money(decimal: raw, currency: .eur, field: "items[0].unit_price") }
    }

    @Test func unknownCurrenciesAreRefused() {
        #expect(
            throws: DomainError.invalid(
                "currency_unknown", "'XYZ' is not a supported ISO 4217 currency code.", field: "currency")
        ) {
            try Currency("XYZ")
        }
    }
}

@Suite struct OrderStatusRules {
    @Test func shopsMaySkipStepsButNeverGoBack() {
        #expect(OrderStatus.placed.canTransition(to: .delivered))
        #expect(OrderStatus.shipped.canTransition(to: .returned))
        #expect(OrderStatus.delivered.canTransition(to: .partiallyReturned))
        #expect(OrderStatus.partiallyReturned.canTransition(to: .returned))
        #expect(!OrderStatus.delivered.canTransition(to: .placed))
        #expect(!OrderStatus.delivered.canTransition(to: .cancelled), "after delivery, goods come back as a return")
        #expect(!OrderStatus.cancelled.canTransition(to: .paid))
        #expect(!OrderStatus.returned.canTransition(to: .delivered))
        #expect(!OrderStatus.placed.canTransition(to: .returned))
        #expect(OrderStatus.allCases.allSatisfy { $0.canTransition(to: $0) })
    }

    @Test func onlyAnOrderThatStandsEarnsAReferral() {
        #expect(!OrderStatus.cancelled.earnsReferral)
        #expect(!OrderStatus.returned.earnsReferral)
        #expect(OrderStatus.partiallyReturned.earnsReferral)
        #expect(OrderStatus.delivered.earnsReferral)
    }
}

@Suite struct OrderSubmissionRules {
    func payload() -> OrderPayload {
        OrderPayload(
            customer: .init(email: "anna@example.com", firstName: "Anna"), currency: "EUR",
            items: [.init(sku: "S", name: "Tee", quantity: 2, unitPrice: "4.50")], totals: .init(total: "9.00"),
            status: "placed")
    }

    func field(_ p: OrderPayload, id: String = "A-1") -> String? {
        do {
            _ = try OrderSubmission.validate(externalID: id, payload: p, receivedAt: Date(timeIntervalSince1970: 0))
            return nil
        } catch { return error.field ?? "?" }
    }

    @Test func aValidBodyBecomesATypedSubmission() throws {
        let s = try OrderSubmission.validate(
            externalID: " A-1 ", payload: payload(), receivedAt: Date(timeIntervalSince1970: 5))
        #expect(s.externalID == "A-1")
        #expect(s.totals.subtotal.minor == 900, "subtotal defaults to the sum of the items")
        #expect(s.statusTimes[.placed] == Date(timeIntervalSince1970: 5))
        #expect(s.locale == "de")
    }

    @Test func eachBadFieldIsNamed() {
        var p = payload()
        p.customer?.email = "nope"
        #expect(field(p) == "customer.email")
        p = payload(); p.items?[0].quantity = -1
        #expect(field(p) == "items[0].quantity")
        p = payload(); p.items?[0].unitPrice = "-3"
        #expect(field(p) == "items[0].unit_price")
        p = payload(); p.currency = "ABC"
        #expect(field(p) == "currency")
        p = payload(); p.status = "lost"
        #expect(field(p) == "status")
        p = payload(); p.items = []
        #expect(field(p) == "items")
        p = payload(); p.totals = nil
        #expect(field(p) == "totals")
        p = payload(); p.statusTimes = ["delivered": "yesterday"]
        #expect(field(p) == "status_times.delivered")
        p = payload(); p.consents = [.init(purpose: "review_request", text: nil)]
        #expect(field(p) == "consents[0].text")
        p = payload(); p.customer?.firstName = "Anna\u{0}"
        #expect(field(p) == "customer.first_name")
        p = payload(); p.status = "delivered"; p.items?[0].returnedQuantity = 3
        #expect(field(p) == "items[0].returned_quantity", "more back than bought")
        p = payload(); p.status = "delivered"; p.items?[0].returnedQuantity = -1
        #expect(field(p) == "items[0].returned_quantity")
        p = payload(); p.status = "paid"; p.items?[0].returnedQuantity = 1
        #expect(field(p) == "items[0].returned_quantity", "nothing comes back before it has shipped")
        p = payload(); p.status = "partially_returned"; p.items?[0].returnedQuantity = 1
        #expect(field(p) == nil)
        #expect(field(payload(), id: "a/b") == "external_id")
        #expect(field(payload(), id: String(repeating: "x", count: 129)) == "external_id")
    }
}

@Suite struct ConsentAndPrivacyRules {
    @Test func aWithdrawalIsFinalUntilANewExplicitGrant() {
        #expect(ConsentRules.next(from: .withdrawn, action: .request) == .pending)
        #expect(ConsentRules.next(from: .granted, action: .request) == .granted, "a new request never downgrades")
        #expect(ConsentRules.next(from: .granted, action: .withdraw) == .withdrawn)
        #expect(ConsentRules.next(from: nil, action: .grant) == .granted)
    }

    @Test func ipsAreTruncatedWhereTheyAreNotProof() {
        #expect(IPAddressPolicy.truncate("203.0.113.77") == "203.0.113.0")
        #expect(IPAddressPolicy.truncate("2001:db8:85a3:8d3:1319:8a2e:370:7348") == "2001:db8:85a3::")
    }

    @Test func theUILanguageFallsBackToGerman() {
        #expect(ReciprocityCore.Locale.resolve("en-GB") == "en")
        #expect(ReciprocityCore.Locale.resolve("fr") == "de")
        #expect(ReciprocityCore.Locale.resolve(nil) == "de")
    }
}

@Suite struct RetryRules {
    @Test func backoffGrowsWithJitterAndStaysUnderTheCap() {
        let policy = RetryPolicy(base: 10, cap: 300)
        let random = SeededRandom(seed: 42)
        for attempt in 1...12 {
            let d = policy.delay(afterAttempt: attempt, random: random)
            #expect(d >= 1 && d <= min(300, 10 * pow(2, Double(attempt - 1))))
        }
        let late = (0..<200).map { _ in policy.delay(afterAttempt: 10, random: random) }
        #expect(Set(late.map { Int($0) }).count > 50, "jitter spreads retries")
    }

    @Test func tokensAreBase32WithTheRequestedEntropy() {
        let token = SeededRandom(seed: 1).token(bytes: 20)
        #expect(token.count == 32)
        #expect(token.allSatisfy { "abcdefghijklmnopqrstuvwxyz234567".contains($0) })
        #expect(Base32.encode(Array("foobar".utf8)) == "mzxw6ytboi")
    }

    @Test func apiKeysSplitIntoPrefixAndSecret() {
        let key = APIKeyFormat.compose(prefix: "abcd2345", secret: String(repeating: "s", count: 40))
        #expect(APIKeyFormat.split(key)?.prefix == "abcd2345")
        #expect(APIKeyFormat.split("rcp_short_x") == nil)
        #expect(APIKeyFormat.split("Bearer nonsense") == nil)
    }
}

@Suite struct SystemRandomRules {
    @Test func givesExactlyTheBytesAskedFor() {
        let random = SystemRandom()
        for count in [0, 1, 7, 8, 9, 10, 16, 33] { #expect(random.bytes(count).count == count) }
    }

    @Test func drawsDifferAndUseEveryByte() {
        let random = SystemRandom()
        let draws = (0..<64).map { _ in random.bytes(10) }
        #expect(Set(draws).count == 64)
        // Each of the ten positions takes many values across draws: no byte is left constant (e.g. zero padding).
        for position in 0..<10 { #expect(Set(draws.map { $0[position] }).count > 16) }
    }
}

@Suite struct InstantRules {
    @Test func wholeMillisecondsSurviveTheTripThroughDate() {
        let random = SeededRandom(seed: 24)
        for _ in 0..<200_000 {
            let ms = Int64(random.unit() * 4_102_444_800_000)  // 1970 to 2100
            #expect(Date(epochMillis: ms).epochMillis == ms, "\(ms)")
        }
    }

    @Test func theWireFormatIsUTCToTheMillisecondAndParsesBack() {
        #expect(ISO8601.format(Date(epochMillis: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(ISO8601.format(Date(epochMillis: -1)) == "1969-12-31T23:59:59.999Z")
        #expect(ISO8601.format(Date(epochMillis: 951_868_799_999)) == "2000-02-29T23:59:59.999Z")
        #expect(ISO8601.format(Date(epochMillis: 1_795_393_772_893)) == "2026-11-23T00:29:32.893Z")
        let wholeSeconds = Date.ISO8601FormatStyle()
        let random = SeededRandom(seed: 8601)
        for _ in 0..<20_000 {
            let ms = Int64(random.unit() * 4_102_444_800_000)
            let text = ISO8601.format(Date(epochMillis: ms))
            // Foundation agrees on everything but the fraction, which it cuts instead of rounding.
            let seconds = Date(timeIntervalSince1970: Double(ms / 1000))
            #expect(text == seconds.formatted(wholeSeconds).dropLast() + "." + String(format: "%03d", ms % 1000) + "Z")
            #expect(ISO8601.parse(text)?.epochMillis == ms, "\(text)")
        }
    }
}

@Suite struct TrimmingRules {
    @Test func trimmingAgreesWithFoundation() {
        let ends = ["", " ", "\t", "\n", "\r\n", "\u{A0}", "\u{2003}", "\u{3000}", "\u{85}", "x", "ä", "😀", "\u{301}"]
        let middles = ["", "a", "a b", " ", "Grüße\nWelt", "\u{0}", "e\u{301}"]
        for set in [CharacterSet.whitespaces, .whitespacesAndNewlines] {
            for lead in ends {
                for middle in middles {
                    for trail in ends {
                        let s = lead + middle + trail
                        #expect(s.trimming(set) == s.trimmingCharacters(in: set), "\(Array(s.unicodeScalars))")
                    }
                }
            }
        }
    }
}
