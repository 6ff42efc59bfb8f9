import Foundation
import ReciprocityCore
import Testing

@Suite struct ReviewRulesTests {
    let delivered = Date(timeIntervalSince1970: 1_790_000_000)

    @Test func timing() {
        var t = ReviewTiming()
        #expect(
            t.requestDue(deliveredAt: delivered, shippedAt: nil, categories: [])
                == delivered.addingTimeInterval(7 * 86_400))
        let shipped = delivered.addingTimeInterval(-86_400)
        #expect(
            t.requestDue(deliveredAt: nil, shippedAt: shipped, categories: [])
                == shipped.addingTimeInterval(3 * 86_400 + 7 * 86_400), "shipped + transit when no delivery event")
        #expect(t.requestDue(deliveredAt: nil, shippedAt: nil, categories: []) == nil)
        t.categoryDelays = ["kaffeemaschinen": 21 * 86_400, "tee": 2]
        #expect(
            t.requestDue(deliveredAt: delivered, shippedAt: nil, categories: ["tee", "kaffeemaschinen"])
                == delivered.addingTimeInterval(21 * 86_400), "the longest category delay wins")
        #expect(
            t.requestDue(deliveredAt: delivered, shippedAt: nil, categories: ["tee"])
                == delivered.addingTimeInterval(2),
            "a shorter category delay applies too")
        #expect(
            t.requestDue(deliveredAt: delivered, shippedAt: nil, categories: ["tee", nil])
                == delivered.addingTimeInterval(7 * 86_400), "an item without a category waits the workspace delay")
        t.delay = 1
        #expect(
            t.requestDue(deliveredAt: delivered, shippedAt: nil, categories: []) == delivered.addingTimeInterval(1),
            "seconds for demos")
        #expect(t.reminderDue(requestSentAt: delivered) == delivered.addingTimeInterval(7 * 86_400))
        t.remindersEnabled = false
        #expect(t.reminderDue(requestSentAt: delivered) == nil)
    }

    @Test func planningSkipsWithTheRealReason() throws {
        let items = [
            ReviewRequestPlanner.Item(sku: "A", name: "Espresso"), .init(sku: "B", name: "Mühle"),
            .init(sku: "A", name: "Espresso"),
        ]
        func plan(
            _ status: OrderStatus = .delivered, consent: Bool = true, mode: Bool = false, objected: Bool = false,
            asked: Set<String> = []
        ) -> Result<[ReviewRequestPlanner.Item], ReviewRequestSkipReason> {
            ReviewRequestPlanner.plan(
                status: status, consentGranted: consent, existingCustomerModeApplies: mode, objected: objected,
                items: items, askedRecently: asked)
        }
        #expect(try plan().get().map(\.sku) == ["A", "B"], "one link per product")
        #expect(plan(.cancelled) == .failure(.init(.orderCancelled)))
        #expect(plan(.returned) == .failure(.init(.orderReturned)))
        #expect(plan(consent: false) == .failure(.init(.noConsent)))
        #expect(try plan(consent: false, mode: true).get().count == 2, "§7(3) mode, switched on explicitly")
        #expect(plan(consent: true, objected: true) == .failure(.init(.objected)), "an objection beats consent")
        #expect(try plan(asked: ["A"]).get().map(\.sku) == ["B"])
        #expect(plan(asked: ["A", "B"]) == .failure(.init(.alreadyAskedRecently)))
    }

    @Test func moderationHoldsForContentNeverForTheRating() {
        #expect(ReviewModeration.check(title: "Sehr lecker", text: "Kräftig, schokoladig, gern wieder.") == .publish)
        #expect(
            ReviewModeration.check(title: "Mies", text: "Bitter und viel zu teuer. Nie wieder.") == .publish,
            "a harsh but clean review is published")
        func reasons(_ title: String, _ text: String) -> [String] {
            if case .hold(let r) = ReviewModeration.check(title: title, text: text) { return r }
            return []
        }
        #expect(reasons("Scheiße", "Der Kaffee war leider alt und fad.") == ["profanity"])
        #expect(reasons("Gut", "Besser bei www.konkurrenz.de bestellen!") == ["link"])
        #expect(reasons("Gut", "Schreibt mir: anna@example.com, ich verkaufe meinen").contains("email"))
        #expect(reasons("Gut", "Ruft an unter 0171 234 56 78, sehr gern") == ["phone"])
        #expect(reasons("Gut", "Erreichbar unter +49 (30) 1234-5678.") == ["phone"])
        #expect(
            reasons("Spät", "Bestellt am 01.03.2024, geliefert am 12.03.2024, zu spät.") == [], "dates are no phone")
        #expect(reasons("Ok", "kurz") == ["text_too_short"])
        #expect(reasons(String(repeating: "x", count: 121), "Genug Text für eine Bewertung.") == ["title_too_long"])
        // The function has no rating parameter: the same words get the same outcome at 1 and at 5 stars.
        let outcomes = (1...5).map { _ in ReviewModeration.check(title: "Mist", text: "Fuck, war das schlecht.") }
        #expect(Set(outcomes.map { "\($0)" }).count == 1)
    }

    @Test func displayNameAndSummary() {
        #expect(
            ReviewDisplayName.defaultName(firstName: "Jürgen", lastName: "Müller", fallback: "Kunde") == "Jürgen M.")
        #expect(ReviewDisplayName.defaultName(firstName: "Jürgen", lastName: nil, fallback: "Kunde") == "Jürgen")
        #expect(ReviewDisplayName.defaultName(firstName: " ", lastName: "Müller", fallback: "Kunde") == "Kunde")
        let s = RatingSummary(
            ratings: Array(repeating: 5, count: 80) + Array(repeating: 4, count: 34) + [
                3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 0, 6,
            ])
        #expect(s.count == 124)
        #expect(s.distribution == [7, 1, 2, 34, 80])
        #expect(s.sentence(locale: "de") == "4,4 von 5 aus 124 Bewertungen der letzten 12 Monate")
        #expect(s.sentence(locale: "en") == "4.4 out of 5 from 124 reviews in the last 12 months")
        #expect(RatingSummary(ratings: [5]).sentence(locale: "de") == "5,0 von 5 aus 1 Bewertung der letzten 12 Monate")
        #expect(RatingSummary(ratings: []).average == 0)
    }
}

@Suite struct PhotoMetadataTests {
    @Test func jpegLosesExifButKeepsJFIFAndTheScan() throws {
        let jpeg: [UInt8] =
            [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46, 0xFF, 0xE1, 0x00, 0x06] + Array("GPS!".utf8)
            + [0xFF, 0xDA, 0x00, 0x02, 0x55, 0xFF, 0xD9]
        let clean = try #require(PhotoMetadata.strip(jpeg, kind: .jpeg))
        #expect(clean == [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46, 0xFF, 0xDA, 0x00, 0x02, 0x55, 0xFF, 0xD9])
        #expect(PhotoMetadata.strip([0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x50], kind: .jpeg) == nil, "truncated: refused")
    }

    @Test func webpLosesExifAndItsFlag() throws {
        func chunk(_ t: String, _ d: [UInt8]) -> [UInt8] {
            Array(t.utf8) + [UInt8(d.count), 0, 0, 0] + d + (d.count % 2 == 1 ? [0] : [])
        }
        let body =
            Array("WEBP".utf8) + chunk("VP8X", [0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + chunk("VP8 ", [1, 2])
            + chunk("EXIF", Array("GPS".utf8))
        let webp = Array("RIFF".utf8) + [UInt8(body.count), 0, 0, 0] + body
        let clean = try #require(PhotoMetadata.strip(webp, kind: .webp))
        #expect(!String(decoding: clean, as: UTF8.self).contains("EXIF"))
        #expect(clean[20] == 0, "the EXIF flag in VP8X is cleared")
        #expect(Int(clean[4]) == clean.count - 8, "the RIFF size matches")
    }
}
