import Crypto
import Foundation
import NIOCore
import ReciprocityCore
import Storage

/// What widgets, the JSON endpoint, JSON-LD and the feed show: only published reviews, each with its label, and
/// an aggregate that always states its count and period (BGH I ZR 143/23), next to the §5b(3) disclosure.
public struct ReviewDisplay: Sendable {
    public let store: Store
    public let baseURL: String
    /// The aggregate's period.
    public static let months = 12
    /// The newest reviews a widget lists (the aggregate counts all in the period).
    public static let listed = 20

    public init(store: Store, baseURL: String) {
        self.store = store
        self.baseURL = baseURL
    }

    public struct Widget: Sendable {
        public var workspace: Workspace
        public var sku: String?
        public var productName: String?
        public var summary: RatingSummary
        public var disclosure: String
        public var reviews: [StoredReview]
        public var openForm: Bool
    }

    /// Nil when the workspace or product is unknown, or when the widget may not go live (no disclosure text yet).
    public func widget(slug: String, sku: String?) async throws -> Widget? {
        guard let workspace = try await store.workspace(slug: slug) else { return nil }
        let settings = try await store.reviewSettings(workspaceID: workspace.id)
        guard settings.isLive else { return nil }
        var productName: String?
        if let sku {
            guard let name = try await store.productName(workspaceID: workspace.id, sku: sku) else { return nil }
            productName = name
        }
        let since = store.clock.now().addingTimeInterval(-Double(Self.months) * 30.44 * 86_400)
        let distribution = try await store.ratingDistribution(workspaceID: workspace.id, sku: sku, since: since)
        // The list covers the same period as the aggregate above it.
        let reviews = try await store.publishedReviews(
            workspaceID: workspace.id, sku: sku, since: since, limit: Self.listed)
        return Widget(
            workspace: workspace, sku: sku, productName: productName,
            summary: RatingSummary(distribution: distribution),
            disclosure: settings.disclosure, reviews: reviews, openForm: settings.openForm && sku != nil)
    }

    // MARK: JSON for headless shops

    public struct ReviewJSON: Codable, Sendable, Equatable {
        public var id: Int64
        public var rating: Int
        public var title: String
        public var body: String
        public var author: String
        public var verified: Bool
        public var source: String
        public var importSource: String?
        public var incentive: String?
        public var createdAt: String
        public var reply: String?
        public var photos: [String]

        enum CodingKeys: String, CodingKey {
            case id, rating, title, body, author, verified, source, importSource, incentive, createdAt, reply, photos
        }

        /// Absent values are sent as null, so headless shops see every field.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(rating, forKey: .rating)
            try c.encode(title, forKey: .title)
            try c.encode(body, forKey: .body)
            try c.encode(author, forKey: .author)
            try c.encode(verified, forKey: .verified)
            try c.encode(source, forKey: .source)
            try c.encode(importSource, forKey: .importSource)
            try c.encode(incentive, forKey: .incentive)
            try c.encode(createdAt, forKey: .createdAt)
            try c.encode(reply, forKey: .reply)
            try c.encode(photos, forKey: .photos)
        }
    }

    public struct SummaryJSON: Codable, Sendable, Equatable {
        public var average: Double
        public var count: Int
        public var distribution: [Int]
        public var periodMonths: Int
        public var text: String
    }

    public struct WidgetJSON: Codable, Sendable, Equatable {
        public var sku: String?
        public var productName: String?
        public var summary: SummaryJSON
        public var disclosure: String
        public var reviews: [ReviewJSON]
        /// The schema.org Product markup for a headless shop's own product page (nil for the shop widget).
        public var jsonLD: String?
    }

    public func json(_ w: Widget, locale: String) -> WidgetJSON {
        WidgetJSON(
            sku: w.sku, productName: w.productName,
            summary: SummaryJSON(
                average: (w.summary.average * 100).rounded() / 100, count: w.summary.count,
                distribution: w.summary.distribution, periodMonths: Self.months,
                text: w.summary.sentence(locale: locale, months: Self.months)),
            disclosure: w.disclosure,
            reviews: w.reviews.map { r in
                ReviewJSON(
                    id: r.id, rating: r.rating, title: r.title, body: r.body, author: r.displayName,
                    verified: r.source == .verified, source: r.source.rawValue, importSource: r.importSource,
                    incentive: r.incentive, createdAt: ISO8601.format(r.createdAt), reply: r.reply,
                    photos: r.photoIDs.map { photoURL(slug: w.workspace.slug, id: $0) })
            }, jsonLD: jsonLD(w))
    }

    public func photoURL(slug: String, id: Int64) -> String { "\(baseURL)/widgets/\(slug)/photos/\(id)" }

    public func productURL(slug: String, sku: String) -> String {
        "\(baseURL)/widgets/\(slug)/products/\(Self.pathEscape(sku))"
    }

    static func pathEscape(_ s: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    // MARK: JSON-LD (schema.org Product with aggregateRating and review)

    /// Only for a product: Google ignores (and penalises) self-serving ratings of the shop as a LocalBusiness or
    /// Organization, so the shop widget has none. Every field Google requires is present: name; aggregateRating
    /// with ratingValue, reviewCount, bestRating, worstRating; each review's author, reviewRating and datePublished.
    public func jsonLD(_ w: Widget) -> String? {
        guard let sku = w.sku, let name = w.productName, w.summary.count > 0 else { return nil }
        let product: [String: Any] = [
            "@context": "https://schema.org",
            "@type": "Product",
            "name": name,
            "sku": sku,
            "url": productURL(slug: w.workspace.slug, sku: sku),
            "aggregateRating": [
                "@type": "AggregateRating",
                "ratingValue": (w.summary.average * 10).rounded() / 10,
                "reviewCount": w.summary.count,
                "bestRating": 5,
                "worstRating": 1,
            ] as [String: Any],
            "review": w.reviews.map { r -> [String: Any] in
                var review: [String: Any] = [
                    "@type": "Review",
                    "author": ["@type": "Person", "name": String(r.displayName.prefix(99))],
                    "datePublished": String(ISO8601.format(r.createdAt).prefix(10)),
                    "reviewRating": ["@type": "Rating", "ratingValue": r.rating, "bestRating": 5, "worstRating": 1],
                    "reviewBody": r.body,
                ]
                if !r.title.isEmpty { review["name"] = r.title }
                return review
            },
        ]
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: product, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        // Inside <script>: no "<", ">" or "&" may appear raw, or text could end the element.
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "<", with: "\\u003c")
            .replacingOccurrences(of: ">", with: "\\u003e").replacingOccurrences(of: "&", with: "\\u0026")
    }

    // MARK: Google product review feed

    public func feed(slug: String) async throws -> String? {
        guard let workspace = try await store.workspace(slug: slug),
            try await store.reviewSettings(workspaceID: workspace.id).isLive
        else { return nil }
        let reviews = try await store.publishedReviews(workspaceID: workspace.id, sku: nil, since: nil, limit: 100_000)
        return ReviewFeed.xml(
            publisher: workspace.name,
            reviews: reviews.map { r in
                FeedReview(
                    id: String(r.id), reviewerName: r.displayName.isEmpty ? "Anonym" : r.displayName,
                    createdAt: r.createdAt, title: r.title, content: r.body,
                    reviewURL: productURL(slug: slug, sku: r.sku) + "#review-\(r.id)", rating: r.rating,
                    productName: r.productName, productURL: productURL(slug: slug, sku: r.sku), sku: r.sku,
                    transactionID: r.source == .verified ? r.orderExternalID : nil)
            },
            deleted: try await store.deletedReviewIDs(workspaceID: workspace.id).map(String.init))
    }
}

extension RatingSummary {
    public init(distribution d: [Int]) {
        var ratings: [Int] = []
        for (i, n) in d.enumerated() { ratings += Array(repeating: i + 1, count: n) }
        self.init(ratings: ratings)
    }
}

/// Rendered widget bodies by (workspace slug, product, format, language), with an ETag. A hit touches no database
/// and copies no bytes (the body is a shared `ByteBuffer`).
/// Writes in this process invalidate their workspace at once; other nodes' entries expire after `ttl` seconds.
public final class ReviewWidgetCache: @unchecked Sendable {
    public struct Entry: Sendable {
        /// Shared, not copied, by every response that sends it.
        public var body: ByteBuffer
        public var etag: String
        public var contentType: String
        public var status: Int
        var workspaceID: WorkspaceID?
        var generation: Int
        var expires: Date
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var generations: [WorkspaceID: Int] = [:]
    private let clock: any WallClock
    public let ttl: TimeInterval
    private let capacity: Int

    public init(clock: any WallClock, ttl: TimeInterval = 30, capacity: Int = 10_000) {
        self.clock = clock
        self.ttl = ttl
        self.capacity = capacity
    }

    public func get(_ key: String) -> Entry? {
        let now = clock.now()
        return lock.withLock {
            guard let e = entries[key], e.expires > now else { return nil }
            if let ws = e.workspaceID, generations[ws, default: 0] != e.generation { return nil }
            return e
        }
    }

    /// The workspace's generation now; read it before reading the data that `put` will store.
    public func generation(_ workspaceID: WorkspaceID) -> Int { lock.withLock { generations[workspaceID, default: 0] } }

    public func put(
        _ key: String, body: [UInt8], contentType: String, status: Int = 200, workspaceID: WorkspaceID?,
        generation: Int
    ) -> Entry {
        let etag = "\"" + Hex.encode(Array(SHA256.hash(data: body).prefix(12))) + "\""
        let expires = clock.now().addingTimeInterval(ttl)
        return lock.withLock {
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            let e = Entry(
                body: ByteBuffer(bytes: body), etag: etag, contentType: contentType, status: status,
                workspaceID: workspaceID,
                generation: generation, expires: expires)
            entries[key] = e
            return e
        }
    }

    public func invalidate(workspaceID: WorkspaceID) {
        lock.withLock { generations[workspaceID, default: 0] += 1 }
    }
}
