import Foundation
import Testing

@testable import ReciprocityCore

/// The referral rules without storage: codes, share links, the fraud and condition decision, the address key,
/// reward states, tax, figures.
@Suite struct ReferralRulesTests {
    let programme = ReferralProgramme(active: true, targetURL: "https://shop.example/")

    func facts(
        advocate: String = "anna@example.com", friend: String = "ben@example.org",
        configure: (inout ReferralFacts) -> Void = { _ in }
    ) throws -> ReferralFacts {
        var f = ReferralFacts(
            advocateEmail: try EmailAddress(advocate), friendEmail: try EmailAddress(friend),
            items: [
                OrderItem(
                    sku: "K1", name: "Kaffee", quantity: 2, unitPrice: Money(minor: 1500, currency: .eur),
                    category: "Kaffee")
            ])
        configure(&f)
        return f
    }

    @Test func codesAreReadable() {
        let code = ReferralCode.make(firstName: "Jürgen", random: [0, 1, 2, 3])
        #expect(code == "JUERGEN-ABCD")
        #expect(ReferralCode.make(firstName: "Ö", random: [30, 30, 30, 30]) == "OE-9999")
        #expect(ReferralCode.make(firstName: "李", random: [30, 30, 30, 30]) == "FREUND-9999")
        #expect(ReferralCode.make(firstName: "Maximiliane", random: [5, 6, 7, 8]).hasPrefix("MAXIMILI-"))
        #expect(ReferralCode.normalize("  anna-7k3q ") == "ANNA-7K3Q")
        #expect(ReferralCode.normalize("anna@example.com") == nil)
        #expect(ReferralCode.normalize("A") == nil)
    }

    @Test func shareLinksEncodeEverythingButUnreserved() {
        let text = "Schau mal: Kaffee für dich & mich! https://shop.example/r/ANNA-7K3Q?x=1\nGrüße"
        #expect(
            ShareLinks.whatsApp(text: text)
                == "https://wa.me/?text=Schau%20mal%3A%20Kaffee%20f%C3%BCr%20dich%20%26%20mich%21%20https%3A%2F%2Fshop.example%2Fr%2FANNA-7K3Q%3Fx%3D1%0AGr%C3%BC%C3%9Fe"
        )
        #expect(
            ShareLinks.mailto(subject: "Tipp: Rösterei", body: "Zeile 1\nZeile 2 + mehr")
                == "mailto:?subject=Tipp%3A%20R%C3%B6sterei&body=Zeile%201%0D%0AZeile%202%20%2B%20mehr")
        #expect(
            ShareLinks.withRef("https://shop.example/?a=1&ref=OLD", code: "ANNA-7K3Q")
                == "https://shop.example/?a=1&ref=ANNA-7K3Q")
        #expect(
            ShareLinks.withRef("https://shop.example/kaffee", code: "ANNA-7K3Q")
                == "https://shop.example/kaffee?ref=ANNA-7K3Q")
    }

    @Test func theSharedTextAlwaysCarriesTheLink() {
        let link = "https://shop.example/r/ANNA-7K3Q"
        #expect(ShareLinks.text(custom: "  \n", suggestion: "Tipp!", link: link) == "Tipp! " + link)
        #expect(ShareLinks.text(custom: "Schau mal", suggestion: "Tipp!", link: link) == "Schau mal " + link)
        #expect(ShareLinks.text(custom: "Hier: \(link) !", suggestion: "Tipp!", link: link) == "Hier: \(link) !")
    }

    @Test func selfReferralByGmailAliasIsBlocked() throws {
        let d = ReferralRules.decide(
            try facts(advocate: "a.b+x@gmail.com", friend: "ab@googlemail.com"), programme: programme)
        #expect(d.status == .blocked)
        #expect(d.reasons == [.sameEmail])
        // +tags at a provider that supports them, case.
        let gmx = ReferralRules.decide(
            try facts(advocate: "Anna+shop@gmx.de", friend: "anna@GMX.de"), programme: programme)
        #expect(gmx.status == .blocked)
        // Dots only matter outside Gmail.
        let web = ReferralRules.decide(
            try facts(advocate: "a.b@example.com", friend: "ab@example.com"), programme: programme)
        #expect(web.status == .accepted)
    }

    @Test func doubtfulCasesAreFlaggedWithEveryReason() throws {
        let home = PostalAddress(name: nil, street: "Hauptstraße 5", postalCode: "10115", city: "Berlin", country: "DE")
        let same = PostalAddress(
            name: "Ben", street: "hauptstr. 5", postalCode: "10115 ", city: "berlin", country: "de")
        #expect(ReferralRules.addressKey(home) == ReferralRules.addressKey(same))
        let d = ReferralRules.decide(
            try facts {
                $0.advocateAddresses = [ReferralRules.addressKey(home)]
                $0.friendAddress = ReferralRules.addressKey(same)
                $0.advocateDevices = ["d1"]
                $0.orderDevice = "d1"
                $0.friendDomainDisposable = true
                $0.advocateReferralsLast24h = 5
            }, programme: programme)
        #expect(d.status == .flagged)
        #expect(d.reasons == [.sameAddress, .sameDevice, .disposableEmail, .velocity])
        let pay = ReferralRules.decide(
            try facts {
                $0.advocatePayments = ["p"]; $0.friendPayment = "p"
            }, programme: programme)
        #expect(pay.status == .blocked)
    }

    @Test func conditionsRejectAndExcludedItemsDoNotCount() throws {
        var p = programme
        p.minimumOrderMinor = 2000
        p.excludedCategories = ["Bücher"]
        p.excludedSKUs = ["med-1"]
        let book = OrderItem(
            sku: "B1", name: "Buch", quantity: 1, unitPrice: Money(minor: 5000, currency: .eur), category: "bücher")
        let med = OrderItem(
            sku: "MED-1", name: "Salbe", quantity: 1, unitPrice: Money(minor: 900, currency: .eur), category: nil)
        let coffee = OrderItem(
            sku: "K1", name: "Kaffee", quantity: 1, unitPrice: Money(minor: 1500, currency: .eur), category: nil)
        #expect(ReferralRules.eligibility(items: [book, med], programme: p) == .ineligible(reason: .onlyExcludedItems))
        #expect(ReferralRules.eligibility(items: [book, coffee], programme: p) == .ineligible(reason: .belowMinimum))
        #expect(ReferralRules.eligibility(items: [book, coffee, coffee], programme: p) == .eligible(baseMinor: 3000))
        // Returned units do not count; an order whose every unit came back has nothing left.
        var twoCoffees = coffee
        twoCoffees.quantity = 2
        #expect(ReferralRules.eligibility(items: [twoCoffees], programme: p) == .eligible(baseMinor: 3000))
        twoCoffees.returnedQuantity = 1
        #expect(ReferralRules.eligibility(items: [twoCoffees], programme: p) == .ineligible(reason: .belowMinimum))
        var returnedCoffee = coffee
        returnedCoffee.returnedQuantity = 1
        #expect(
            ReferralRules.eligibility(items: [returnedCoffee, book], programme: p)
                == .ineligible(reason: .onlyExcludedItems))
        var returnedBook = book
        returnedBook.returnedQuantity = 1
        #expect(
            ReferralRules.eligibility(items: [returnedCoffee, returnedBook], programme: p)
                == .ineligible(reason: .allReturned))
        let existing = ReferralRules.decide(try facts { $0.friendHadEarlierOrder = true }, programme: p)
        #expect(existing.status == .rejected && existing.reasons == [.existingCustomer])
        p.newCustomersOnly = false
        #expect(ReferralRules.decide(try facts { $0.friendHadEarlierOrder = true }, programme: p).status == .accepted)
        p.capCount = 3
        #expect(
            ReferralRules.decide(try facts { $0.advocateRewardsInCapPeriod = 3 }, programme: p).reasons == [.capReached]
        )
        // Blocking wins over conditions.
        let both = ReferralRules.decide(
            try facts(advocate: "x@example.com", friend: "X@example.com") { $0.advocateRewardsInCapPeriod = 3 },
            programme: p)
        #expect(both.status == .blocked && both.reasons == [.sameEmail, .capReached])
    }

    @Test func rewardStatesOnlyMoveForward() {
        #expect(RewardState.pending.canTransition(to: .held))
        #expect(RewardState.held.canTransition(to: .approved))
        #expect(RewardState.approved.canTransition(to: .issued))
        #expect(RewardState.issued.canTransition(to: .clawedBack))
        #expect(!RewardState.issued.canTransition(to: .void))
        #expect(!RewardState.void.canTransition(to: .issued))
        #expect(!RewardState.clawedBack.canTransition(to: .issued))
        #expect(!RewardState.pending.canTransition(to: .issued))
    }

    @Test func taxThresholdAndYear() {
        #expect(!RewardTax.reachesThreshold(25_599))
        #expect(RewardTax.reachesThreshold(25_600))
        // 31 Dec 23:30 UTC is already New Year in Berlin.
        let d = ISO8601.parse("2026-12-31T23:30:00Z")!
        #expect(RewardTax.year(of: d, timeZone: "Europe/Berlin") == 2027)
        #expect(RewardTax.year(of: d, timeZone: "UTC") == 2026)
    }

    @Test func figures() {
        let f = ReferralFigures(
            clicks: 200, advocates: 10, customers: 100, referredOrders: 10, revenueMinor: 50_000,
            rewardCostMinor: 10_000, currency: "EUR")
        #expect(f.conversion == 0.05)
        #expect(f.sharesPerCustomer == 2)
        #expect(f.kFactor == 0.1)
        #expect(f.roi == 4)
        #expect(
            ReferralFigures(
                clicks: 0, advocates: 0, customers: 0, referredOrders: 0, revenueMinor: 0, rewardCostMinor: 0,
                currency: "EUR"
            ).kFactor == nil)
    }

    @Test func programmeValidation() {
        var p = ReferralProgramme(active: true, targetURL: "ftp://x")
        p.friendReward = RewardSpec(type: .cash, valueMinor: 500)
        p.milestones = [Milestone(count: 1, reward: RewardSpec(type: .credit, valueMinor: 100))]
        p.payerIBAN = "DE00 1234"
        let fields = Set(p.validate().compactMap(\.field))
        #expect(fields == ["target_url", "friend_reward", "milestones", "payer_iban"])
        #expect(programme.validate().isEmpty)
        // A partial document keeps the defaults.
        let decoded = try? JSONDecoder().decode(
            ReferralProgramme.self, from: Data(#"{"active":true,"return_window_seconds":5}"#.utf8))
        #expect(decoded?.returnWindowSeconds == 5 && decoded?.attributionDays == 30 && decoded?.touch == .last)
    }

    @Test func userAgentFamilies() {
        #expect(
            UserAgentFamily.of("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36")
                == "chrome")
        #expect(UserAgentFamily.of("WhatsApp/2.23") == "whatsapp")
        #expect(UserAgentFamily.of("Googlebot/2.1") == "bot")
        #expect(UserAgentFamily.of("") == "unknown")
        // Every branch, case-insensitive, with a needle at the very start and the very end of the agent.
        let cases = [
            ("Mozilla/5.0 (compatible; bingbot/2.0)", "bot"), ("SPIDER", "bot"), ("x crawl", "bot"),
            ("Slack Link Preview", "bot"), ("curl/8.5.0", "tool"), ("Wget/1.21", "tool"), ("python-requests/2", "tool"),
            ("x wrk", "tool"), ("my curl", "other"), ("WhatsApp/2.23", "whatsapp"),
            ("Mozilla/5.0 Chrome/120 Safari/537.36 Edg/120.0", "edge"),
            ("Mozilla/5.0 Gecko/20100101 Firefox/130.0", "firefox"),
            ("Chromium/119", "chrome"), ("Mozilla/5.0 (iPhone) Version/17.0 Mobile Safari/604.1", "safari"),
            ("Mozilla/5.0", "other"), ("b", "other"), ("bo", "other"), ("🙂 bot", "bot"), ("Ärger", "other"),
        ]
        for (agent, family) in cases { #expect(UserAgentFamily.of(agent) == family, "\(agent)") }
    }
}

@Suite struct ReferralCookieDomain {
    /// A cookie set for a domain reaches the hosts at and below it (RFC 6265 domain-match), and only names qualify.
    @Test func aCookieDomainCoversItsHostAndTheHostsBelow() {
        #expect(ReferralProgramme.covers("shop.example", host: "shop.example"))
        #expect(ReferralProgramme.covers("shop.example", host: "www.shop.example"))
        #expect(!ReferralProgramme.covers("shop.example", host: "myshop.example"))
        #expect(!ReferralProgramme.covers("shop.example", host: "kaffee.example"))
        for bad in [
            "example", ".shop.example", "shop..example", "Shop.example", "127.0.0.1", "-a.example", "a_b.example",
        ] {
            #expect(!ReferralProgramme.covers(bad, host: "www.shop.example"), "\(bad)")
        }
        // A public suffix covers the host by name, but browsers refuse cookies for it.
        #expect(!ReferralProgramme.covers("co.uk", host: "www.kaffee.co.uk"))
        #expect(!ReferralProgramme.covers("myshopify.com", host: "kaffee.myshopify.com"))
        #expect(ReferralProgramme.covers("kaffee.co.uk", host: "www.kaffee.co.uk"))
        var p = ReferralProgramme(active: true, targetURL: "https://www.shop.example/", cookie: true)
        p.cookieDomain = "shop.example"
        #expect(p.validate().isEmpty)
        p.cookieDomain = "andere.example"
        #expect(p.validate().map(\.code) == ["cookie_domain_invalid"])
    }

    /// The API takes a domain in any case, as browsers compare them: stored in lower case, and then valid.
    @Test func aCookieDomainFromTheAPIIsStoredInLowerCase() throws {
        let json =
            #"{"active":true,"target_url":"https://www.shop.example/","cookie":true,"cookie_domain":" Shop.Example "}"#
        let p = try JSONDecoder().decode(ReferralProgramme.self, from: Data(json.utf8))
        #expect(p.cookieDomain == "shop.example" && p.validate().isEmpty)
    }
}

@Suite struct ReferralProgrammeMilestones {
    /// A milestone bonus that pays nothing, or carries a prefix no code can have, is refused like the main reward.
    @Test func aMilestoneIsCheckedLikeTheMainReward() {
        var p = ReferralProgramme()
        p.milestones = [Milestone(count: 3, reward: RewardSpec(type: .credit, valueMinor: 2000))]
        #expect(p.validate().isEmpty)
        p.milestones = [Milestone(count: 3, reward: RewardSpec(type: .credit, valueMinor: 0))]
        #expect(p.validate().map(\.code) == ["reward_value_invalid"])
        p.milestones = [Milestone(count: 3, reward: RewardSpec(type: .voucher, valueMinor: 500, voucherPrefix: "ä"))]
        #expect(p.validate().map(\.code) == ["voucher_prefix_invalid"])
        p.milestones = [Milestone(count: 3, reward: RewardSpec(type: .premium, valueMinor: 0))]
        #expect(p.validate().isEmpty)
    }
}
