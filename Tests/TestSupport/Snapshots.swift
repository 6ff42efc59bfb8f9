import Foundation
import Testing

/// Compares `text` with the stored snapshot in `__Snapshots__` beside the calling test file; records it when
/// missing (failing the test) or when `RECORD_SNAPSHOTS=1`. Review the diff of __Snapshots__ like code.
public func assertSnapshot(
    _ text: String, named name: String, filePath: StaticString = #filePath,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let dir = URL(fileURLWithPath: "\(filePath)").deletingLastPathComponent().appendingPathComponent("__Snapshots__")
    let file = dir.appendingPathComponent(name)
    let record = ProcessInfo.processInfo.environment["RECORD_SNAPSHOTS"] == "1"
    if !record, let stored = try? String(contentsOf: file, encoding: .utf8) {
        #expect(
            stored == text, "snapshot \(name) differs; run with RECORD_SNAPSHOTS=1 and review the diff",
            sourceLocation: sourceLocation)
        return
    }
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try text.write(to: file, atomically: true, encoding: .utf8)
    if !record { Issue.record("snapshot \(name) was missing and has been recorded", sourceLocation: sourceLocation) }
}
