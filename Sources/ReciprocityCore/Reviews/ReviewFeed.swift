import Foundation

/// A review as Google's Product Review Feed 2.2 needs it. Verified purchases carry the order as `transaction_id`
/// and `collection_method` post_fulfillment (the schema has no verified flag).
public struct FeedReview: Sendable, Equatable {
    public var id: String
    public var reviewerName: String
    public var anonymous: Bool
    public var createdAt: Date
    public var title: String?
    public var content: String
    public var reviewURL: String
    public var rating: Int
    public var productName: String
    public var productURL: String
    public var sku: String?
    public var gtin: String?
    /// The order the review came through (verified purchase); nil for open-form and imported reviews.
    public var transactionID: String?

    public init(
        id: String, reviewerName: String, anonymous: Bool = false, createdAt: Date, title: String? = nil,
        content: String, reviewURL: String, rating: Int, productName: String, productURL: String, sku: String? = nil,
        gtin: String? = nil, transactionID: String? = nil
    ) {
        self.id = id
        self.reviewerName = reviewerName
        self.anonymous = anonymous
        self.createdAt = createdAt
        self.title = title
        self.content = content
        self.reviewURL = reviewURL
        self.rating = rating
        self.productName = productName
        self.productURL = productURL
        self.sku = sku
        self.gtin = gtin
        self.transactionID = transactionID
    }
}

/// Writes the feed as XML, elements in the schema's order, every value escaped.
public enum ReviewFeed {
    public static func xml(publisher: String, faviconURL: String? = nil, reviews: [FeedReview], deleted: [String] = [])
        -> String
    {
        var x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed>\n  <version>2.2</version>\n"
        x += "  <publisher>\n    <name>\(escape(publisher))</name>\n"
        if let faviconURL { x += "    <favicon>\(escape(faviconURL))</favicon>\n" }
        x += "  </publisher>\n"
        if !reviews.isEmpty {
            x += "  <reviews>\n"
            for r in reviews { x += review(r) }
            x += "  </reviews>\n"
        }
        if !deleted.isEmpty {
            x += "  <deleted_reviews>\n"
            for id in deleted { x += "    <review_id>\(escape(id))</review_id>\n" }
            x += "  </deleted_reviews>\n"
        }
        return x + "</feed>\n"
    }

    static func review(_ r: FeedReview) -> String {
        var x = "    <review>\n"
        x += "      <review_id>\(escape(r.id))</review_id>\n"
        x += "      <reviewer>\n        <name is_anonymous=\"\(r.anonymous)\">\(escape(r.reviewerName))</name>\n"
        x += "      </reviewer>\n"
        x += "      <review_timestamp>\(timestamp(r.createdAt))</review_timestamp>\n"
        if let title = r.title, !title.trimmingCharacters(in: .whitespaces).isEmpty {
            x += "      <title>\(escape(title))</title>\n"
        }
        x += "      <content>\(escape(r.content))</content>\n"
        x += "      <review_url type=\"singleton\">\(escape(r.reviewURL))</review_url>\n"
        x += "      <ratings>\n        <overall min=\"1\" max=\"5\">\(min(5, max(1, r.rating)))</overall>\n"
        x += "      </ratings>\n"
        x += "      <products>\n        <product>\n"
        if r.gtin != nil || r.sku != nil {
            x += "          <product_ids>\n"
            if let gtin = r.gtin {
                x += "            <gtins>\n              <gtin>\(escape(gtin))</gtin>\n            </gtins>\n"
            }
            if let sku = r.sku {
                x += "            <skus>\n              <sku>\(escape(sku))</sku>\n            </skus>\n"
            }
            x += "          </product_ids>\n"
        }
        x += "          <product_name>\(escape(r.productName))</product_name>\n"
        x += "          <product_url>\(escape(r.productURL))</product_url>\n"
        x += "        </product>\n      </products>\n"
        if let transaction = r.transactionID {
            x += "      <collection_method>post_fulfillment</collection_method>\n"
            x += "      <transaction_id>\(escape(transaction))</transaction_id>\n"
        } else {
            x += "      <collection_method>unsolicited</collection_method>\n"
        }
        return x + "    </review>\n"
    }

    /// XML 1.0 text (see `XMLText.escape`).
    static func escape(_ s: String) -> String { XMLText.escape(s) }

    static func timestamp(_ date: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ n: Int?) -> String { (n ?? 0) < 10 ? "0\(n ?? 0)" : "\(n ?? 0)" }
        return "\(c.year ?? 1970)-\(two(c.month))-\(two(c.day))T\(two(c.hour)):\(two(c.minute)):\(two(c.second))Z"
    }
}
