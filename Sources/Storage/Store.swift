import Crypto
import Foundation
import ReciprocityCore

/// The storage facade: one database, the clock, and the secrets some records are keyed with.
/// Each capability's queries live in its own extension file (`Store+Orders.swift`, …), written once in portable SQL.
public struct Store: Sendable {
    public let db: any SQLDatabase
    public let clock: any WallClock
    /// Keys the salted hashes kept after erasure (suppression list), so they cannot be reversed by guessing.
    let hashKey: SymmetricKey
    /// HMAC under `hashKey` with the key already absorbed: copied per hash, it skips the key schedule, which was the
    /// larger part of hashing a short text (referral clicks hash two per click).
    let keyedHasher: PreparedHMAC
    let tokenHashers = TokenHashers()
    /// Concurrent order upserts, written together (`Store+OrderBatches.swift`).
    let orderBatches = OrderBatchQueue(lanes: 2, maxBatch: MultiRow.maxRows)
    /// Recently read API keys (`APIKeyCache`).
    let apiKeyCache = APIKeyCache()
    /// Which jobs each domain event fans out to; set at wiring time.
    public let subscriptions: EventSubscriptions

    public init(db: any SQLDatabase, clock: any WallClock, secret: [UInt8], subscriptions: EventSubscriptions = .init())
    {
        self.db = db
        self.clock = clock
        self.hashKey = SymmetricKey(
            data: HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: secret), info: Array("reciprocity.suppression.v1".utf8),
                outputByteCount: 32))
        self.keyedHasher = PreparedHMAC(key: hashKey)
        self.subscriptions = subscriptions
    }

    var now: Date { clock.now() }

    /// The salted hash by which an address is remembered on the suppression list.
    public func suppressionHash(_ normalizedEmail: String) -> String { keyedHash(normalizedEmail) }

    /// A keyed hash of an IP address and a user agent: the same device is recognised, the address is not kept.
    public func deviceHash(ip: String, userAgent: String) -> String {
        keyedHash("device|\(ip)|\(userAgent)", bytes: 16)
    }

    /// A keyed hash of an IP address alone, as a referral click keeps it.
    public func ipHash(_ ip: String) -> String { keyedHash("ip|\(ip)", bytes: 16) }

    /// HMAC-SHA256 under the store's hash key, hex, truncated to `bytes`.
    func keyedHash(_ text: String, bytes: Int = 32) -> String {
        Hex.encode(keyedHasher.mac(Array(text.utf8), bytes: bytes))
    }
}

/// HMAC-SHA256 with its key already absorbed; each use starts from a copy of that state.
final class PreparedHMAC: Sendable {
    private let keyed: HMAC<SHA256>
    init(key: SymmetricKey) { keyed = HMAC<SHA256>(key: key) }
    func mac(_ data: [UInt8], bytes: Int = 32) -> [UInt8] {
        var hasher = keyed
        hasher.update(data: data)
        return Array(hasher.finalize().prefix(bytes))
    }
}

public enum Hex {
    public static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
    public static func sha256(_ string: String) -> String { encode(Array(SHA256.hash(data: Array(string.utf8)))) }
}

/// Appends to the audit log: who did what to which record. Merchant choices with legal weight are logged here.
extension Store {
    public func audit(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID?, actor: String, action: String, subject: String,
        detail: String = ""
    ) async throws {
        try await tx.execute(
            "INSERT INTO audit_log (workspace_id, actor, action, subject, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
            workspaceID, actor, action, subject, detail, now)
    }

    public struct AuditEntry: Sendable, Codable, Equatable {
        public var actor: String
        public var action: String
        public var subject: String
        public var detail: String
        public var at: Date
    }

    public func auditEntries(workspaceID: WorkspaceID, subject: String? = nil, limit: Int = 100) async throws
        -> [AuditEntry]
    {
        let rows =
            if let subject {
                try await db.query(
                    "SELECT actor, action, subject, detail, at FROM audit_log WHERE workspace_id = ? AND subject = ? ORDER BY id DESC LIMIT ?",
                    workspaceID, subject, limit)
            } else {
                try await db.query(
                    "SELECT actor, action, subject, detail, at FROM audit_log WHERE workspace_id = ? ORDER BY id DESC LIMIT ?",
                    workspaceID, limit)
            }
        return rows.map {
            AuditEntry(
                actor: $0.text("actor"), action: $0.text("action"), subject: $0.text("subject"),
                detail: $0.text("detail"), at: $0.date("at"))
        }
    }
}

extension Store {
    /// Runs `body` again when it lost a race on a unique index (two identical submissions at once): the retry
    /// finds the row the winner wrote.
    public func retryingUniqueViolations<T: Sendable>(attempts: Int = 3, _ body: () async throws -> T) async throws -> T
    {
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch StorageError.uniqueViolation where attempt < attempts {
                attempt += 1
            }
        }
    }
}
