import Foundation
import ReciprocityCore
import Testing

/// The review feed validates against Google's 2.2 schema with xmllint (libxml2-utils), and every value is escaped.
@Suite struct ReviewFeedTests {
    static let xsd = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/google-product-reviews-2.2.xsd").path

    /// Runs `xmllint --schema XSD --noout` on the text; returns the exit status and what it printed.
    func xmllint(_ xml: String) throws -> (Int32, String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("feed-\(UUID().uuidString).xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["xmllint", "--schema", Self.xsd, "--noout", file.path]
        let pipe = Pipe()
        p.standardError = pipe
        p.standardOutput = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, out)
    }

    let reviews = [
        FeedReview(
            id: "r-1", reviewerName: "Jürgen M.", createdAt: Date(timeIntervalSince1970: 1_790_000_000),
            title: "Kräftig & rund <b>", content: "Schmeckt nach Schokolade. \"Sehr\" gut; <script>alert(1)</script>",
            reviewURL: "https://shop.example/produkte/espresso#review-r-1", rating: 5,
            productName: "Espresso Bohnenglück, 500 g", productURL: "https://shop.example/produkte/espresso",
            sku: "KAF-ESP-500", gtin: "4006381333931", transactionID: "BG-10042"),
        FeedReview(
            id: "r-2", reviewerName: "Anonym", anonymous: true, createdAt: Date(timeIntervalSince1970: 1_790_086_400),
            content: "Zu bitter für mich.\u{0}", reviewURL: "https://shop.example/produkte/filter#review-r-2",
            rating: 2, productName: "Filterkaffee Morgenrot", productURL: "https://shop.example/produkte/filter"),
    ]

    @Test func validatesAgainstTheSchema() throws {
        let xml = ReviewFeed.xml(
            publisher: "Kaffeerösterei Bohnenglück", faviconURL: "https://shop.example/favicon.ico", reviews: reviews,
            deleted: ["r-0"])
        let (status, output) = try xmllint(xml)
        #expect(status == 0, "xmllint: \(output)")
        #expect(output.contains("validates"))
        #expect(xml.contains("<transaction_id>BG-10042</transaction_id>"), "a verified purchase carries its order")
        #expect(xml.contains("<collection_method>post_fulfillment</collection_method>"))
        #expect(xml.contains("<collection_method>unsolicited</collection_method>"))
        #expect(!xml.contains("<script>"), "values are escaped")
        #expect(xml.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!xml.contains("\u{0}"), "characters XML cannot carry are dropped")
    }

    @Test func theValidatorCanFail() throws {
        let broken = ReviewFeed.xml(publisher: "Shop", reviews: reviews)
            .replacingOccurrences(of: "<version>2.2</version>", with: "<version>2.1</version>")
        let (status, _) = try xmllint(broken)
        #expect(status != 0)
    }
}
