import Crypto
import Foundation

/// Where uploaded files live (lead magnet downloads). The keys are opaque; the metadata stays in the database.
public protocol BlobStore: Sendable {
    func put(_ bytes: [UInt8]) async throws -> String
    func get(_ key: String) async throws -> [UInt8]?
}

/// Files on local disk, named by their SHA-256 (identical uploads share one file), written to a temporary name
/// and renamed, so a reader never sees half a file. Several nodes need a shared folder (NFS) or another store.
public struct LocalDiskBlobStore: BlobStore {
    public let root: URL

    public init(root: URL) throws {
        self.root = root
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    public func put(_ bytes: [UInt8]) async throws -> String {
        let key = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        let target = root.appendingPathComponent(key)
        if FileManager.default.fileExists(atPath: target.path) { return key }
        let temp = root.appendingPathComponent(".\(key).\(UUID().uuidString).tmp")
        try Data(bytes).write(to: temp, options: .atomic)
        do {
            try FileManager.default.moveItem(at: temp, to: target)
        } catch  where FileManager.default.fileExists(atPath: target.path) {
            try? FileManager.default.removeItem(at: temp)
        }
        return key
    }

    public func get(_ key: String) async throws -> [UInt8]? {
        guard key.count == 64, key.allSatisfy({ $0.isHexDigit }) else { return nil }
        return FileManager.default.contents(atPath: root.appendingPathComponent(key).path).map(Array.init)
    }
}
