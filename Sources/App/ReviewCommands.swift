import Foundation
import ReciprocityCore
import Reviews
import Storage

/// The review capability's CLI commands, as functions tests call.
extension Commands {
    /// `reciprocity reviews import`: old reviews from a CSV file, labelled imported with their source. All rows
    /// are checked first; one bad row names its line and nothing is written.
    public static func importReviews(_ rt: Runtime, workspace slug: String, source: String, file: String)
        async throws -> String
    {
        let w = try await workspace(rt, slug)
        let name = source.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 100 else {
            throw DomainError.invalid(
                "import_source", "Name the source of the reviews (1–100 characters), e.g. --source \"Trusted Shops\".",
                field: "source")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw DomainError.invalid("file_unreadable", "Cannot read \(file).", field: "file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DomainError.invalid("file_encoding", "\(file) is not UTF-8 text.", field: "file")
        }
        let rows = try ReviewImport.parse(text)
        let n = try await rt.store.importReviews(workspaceID: w.id, source: name, rows: rows, actor: "cli")
        rt.reviews.cache.invalidate(workspaceID: w.id)
        return "imported \(n) reviews from \(name) (labelled \"importiert\")"
    }
}
