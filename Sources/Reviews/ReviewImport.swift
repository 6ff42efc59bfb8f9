import Foundation
import ReciprocityCore
import Storage

/// The CSV import of old reviews (e.g. from a previous review service). Every row is checked before anything is
/// written; one bad row names its line and nothing is imported. Imported reviews are labelled "importiert" with
/// their source, and are never shown as verified.
public enum ReviewImport {
    public static let columns = ["sku", "product_name", "rating", "title", "body", "author", "date"]
    public static let required = ["sku", "product_name", "rating", "body", "date"]
    public static let maxRows = 100_000

    /// `now` bounds the dates: a review dated in the future would sit at the top of every list and count as
    /// recent for years. A day of slack covers time zones.
    public static func parse(_ text: String, now: Date) throws(DomainError) -> [ImportedReview] {
        let table = try CSV.parse(text)
        let missing = required.filter { !table.header.contains($0) }
        guard missing.isEmpty else {
            throw .invalid(
                "csv_columns",
                "Missing column(s): \(missing.joined(separator: ", ")). Expected: \(columns.joined(separator: ","))."
            )
        }
        guard table.rows.count <= maxRows else {
            throw .invalid("csv_too_many_rows", "At most \(maxRows) rows per import.")
        }
        var out: [ImportedReview] = []
        for (line, row) in table.rows {
            func v(_ c: String) -> String { table.value(row, c) }
            guard let rating = Int(v("rating")), (1...5).contains(rating) else {
                throw .invalid("csv_rating", "Line \(line): rating must be a whole number from 1 to 5.")
            }
            guard let date = parseDate(v("date")) else {
                throw .invalid("csv_date", "Line \(line): date must be YYYY-MM-DD or ISO 8601 (got \"\(v("date"))\").")
            }
            guard date <= now.addingTimeInterval(86_400) else {
                throw .invalid("csv_date_future", "Line \(line): the date \(v("date")) lies in the future.")
            }
            guard !v("sku").isEmpty, v("sku").count <= 100, !v("product_name").isEmpty else {
                throw .invalid("csv_product", "Line \(line): sku and product_name are required (sku ≤ 100 characters).")
            }
            let author = v("author").isEmpty ? "Anonym" : v("author")
            let valid: ReviewInput
            switch ReviewInput(rating: rating, title: v("title"), body: v("body"), displayName: author)
                .validated(limits: .imported)
            {
            case .success(let ok): valid = ok
            case .failure(let e):
                let detail = e.byField.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(
                    separator: ", ")
                throw .invalid("csv_review", "Line \(line): \(detail).")
            }
            out.append(
                ImportedReview(
                    sku: v("sku"), productName: v("product_name"), rating: rating, title: valid.title, body: valid.body,
                    author: valid.displayName, createdAt: date))
        }
        return out
    }

    static func parseDate(_ s: String) -> Date? {
        if let d = ISO8601.parse(s) { return d }
        return ISO8601.parse(s + "T12:00:00Z")
    }
}
