import Foundation
import LeadMagnets
import ReciprocityCore
import Storage

/// The lead magnet capability's CLI commands, as functions tests call.
extension Commands {
    /// `reciprocity leads disposable-domains --file`: adds the list's domains to the blocklist in the database,
    /// which every node re-reads within five minutes. The shipped list stays; this only adds.
    public static func addDisposableDomains(_ rt: Runtime, file: String) async throws -> String {
        let data: Data?
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            data = FileManager.default.contents(atPath: file)
        }
        guard let data else { throw DomainError.invalid("file_unreadable", "Cannot read \(file).", field: "file") }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DomainError.invalid("file_encoding", "\(file) is not UTF-8 text.", field: "file")
        }
        let lines = ReciprocityCore.DisposableDomains.parse(text)
        let valid = lines.compactMap(ReciprocityCore.DisposableDomains.normalize)
        guard !valid.isEmpty else {
            throw DomainError.invalid("list_empty", "\(file) has no domains (one per line).", field: "file")
        }
        let added = try await rt.store.addDisposableDomains(valid)
        rt.leads.service.disposable.invalidate()
        let skipped = lines.count - valid.count
        return
            "added \(added) new domains (\(valid.count - added) known\(skipped > 0 ? ", \(skipped) lines skipped" : ""))"
    }
}
