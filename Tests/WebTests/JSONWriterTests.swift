import Foundation
import ReciprocityCore
import Testing

@testable import Web

/// The hand-written JSON of hot responses must be the bytes `Bodies.encoder` writes for the same value.
@Suite struct JSONWriterRules {
    /// Strings that exercise every escaping rule: quotes, backslashes, slashes, every control character, DEL,
    /// the line separators JavaScript cares about, non-Latin text, emoji, SQL and HTML metacharacters.
    static let awkward: [String] = [
        "", "plain", "Tee \"Bio\" 100% \\ Baumwolle", "a/b/c</script>", "<b>&amp;</b>' OR 1=1; --",
        String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) })), "\u{7F}\u{2028}\u{2029}",
        "Müller Straße 5 · Köln", "日本語 😀 👍🏽", "\u{0}null\u{0}",
    ]

    static func order(_ n: Int, random: SeededRandom) -> Order {
        func pick() -> String { awkward[Int(random.unit() * Double(awkward.count))] }
        func maybe() -> String? { random.unit() < 0.5 ? nil : pick() }
        let eur = Currency.eur
        let statuses = OrderStatus.allCases.filter { _ in random.unit() < 0.5 }
        let ms = { Int64(random.unit() * 4_102_444_800_000) }
        return Order(
            id: Int64(n), workspaceID: 1, externalID: pick() + "\(n)", contactID: Int64(random.unit() * 1e12),
            status: statuses.last ?? .placed,
            statusTimes: Dictionary(uniqueKeysWithValues: statuses.map { ($0, Date(epochMillis: ms())) }),
            items: (0..<Int(random.unit() * 4)).map { i in
                OrderItem(
                    sku: pick(), name: pick(), quantity: i * 7 - 3,
                    unitPrice: Money(minor: Int64(random.unit() * 2_000_000) - 1_000_000, currency: eur),
                    category: maybe(), returnedQuantity: Int(random.unit() * 3))
            },
            totals: OrderTotals(
                subtotal: Money(minor: 1980, currency: eur), shipping: Money(minor: 0, currency: eur),
                tax: Money(minor: -5, currency: eur), discount: Money(minor: 123_456_789, currency: eur),
                total: Money(minor: Int64(random.unit() * 1e9), currency: eur)),
            shippingAddress: random.unit() < 0.5
                ? nil
                : PostalAddress(name: maybe(), street: pick(), postalCode: pick(), city: pick(), country: "DE"),
            couponCode: maybe(), referralCode: maybe(), referredBy: maybe(), paymentFingerprint: maybe(),
            createdAt: Date(epochMillis: ms()), updatedAt: Date(timeIntervalSince1970: random.unit() * 4e9))
    }

    @Test func anOrderIsWrittenAsTheEncoderWritesIt() throws {
        let random = SeededRandom(seed: 6)
        for n in 0..<500 {
            let dto = OrderDTO(Self.order(n, random: random))
            let expected = try Bodies.encoder.encode(dto)
            #expect(String(decoding: dto.json, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        }
    }

    @Test func theUpsertAnswerIsWrittenAsTheEncoderWritesIt() throws {
        struct Body: Encodable {
            var outcome: String
            var order: OrderDTO
        }
        let random = SeededRandom(seed: 7)
        for (n, outcome) in ["created", "updated", "unchanged"].enumerated() {
            let dto = OrderDTO(Self.order(n, random: random))
            let expected = try Bodies.encoder.encode(Body(outcome: outcome, order: dto))
            let written = OrderDTO.upsertResponse(dto, outcome: outcome)
            #expect(String(decoding: written, as: UTF8.self) == String(decoding: expected, as: UTF8.self))
        }
    }

    @Test func theWrittenBytesAreValidJSONThatReadsBackToTheSameStrings() throws {
        for s in Self.awkward {
            var json = JSONWriter()
            json.object { o in o.member("s", s) }
            let back = try JSONSerialization.jsonObject(with: Data(json.bytes)) as? [String: String]
            #expect(back == ["s": s])
        }
    }
}
