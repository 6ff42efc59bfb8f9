import Foundation
import ReciprocityCore
import Synchronization

/// Issues API keys: the plaintext is returned once and never stored; only the prefix and a hash of the secret are.
public enum APIKeys {
    public static func issue(
        store: Store, random: any RandomSource, workspaceID: WorkspaceID, name: String, scope: APIScope, actor: String
    ) async throws -> (key: APIKey, plaintext: String) {
        let prefix = String(random.token(bytes: 5).prefix(8))
        let secret = random.token(bytes: 24)
        // The key and its audit entry exist together or not at all.
        let key = try await store.db.transaction { tx in
            let key = try await store.createAPIKey(
                workspaceID: workspaceID, name: name, prefix: prefix, secretHash: Hex.sha256(secret), scope: scope,
                in: tx)
            try await store.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "apikey.create", subject: "apikey:\(key.id)",
                detail: scope.rawValue)
            return key
        }
        return (key, APIKeyFormat.compose(prefix: prefix, secret: secret))
    }
}

/// API keys read in the last second, by prefix. Every API request authenticates, and under an order load the key's
/// look-up was the most frequent statement on PostgreSQL: one per request, more than all the batched order writes.
///
/// A key revoked through this store is dropped at once. One revoked elsewhere (another node, the CLI in another
/// process) stops working here within `ttl`. Unknown prefixes are not remembered, so made-up keys cannot fill it.
/// The time is monotonic, not the store's clock: a test's frozen clock must not keep an entry forever.
final class APIKeyCache: Sendable {
    struct Entry {
        var key: APIKey
        var secretHash: String
        var readAt: ContinuousClock.Instant
    }
    let ttl: Duration
    let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    init(ttl: Duration = .seconds(1), capacity: Int = 1_024) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func get(_ prefix: String) -> (key: APIKey, secretHash: String)? {
        entries.withLock { e in
            guard let entry = e[prefix] else { return nil }
            guard ContinuousClock.now - entry.readAt < ttl else {
                e[prefix] = nil
                return nil
            }
            return (entry.key, entry.secretHash)
        }
    }

    func put(_ key: APIKey, secretHash: String) {
        entries.withLock { e in
            if e.count >= capacity { e.removeAll(keepingCapacity: true) }
            e[key.prefix] = Entry(key: key, secretHash: secretHash, readAt: .now)
        }
    }

    /// After a recorded use, so that the next requests do not find the use due again.
    func noteUse(of key: APIKey, at: Date) {
        entries.withLock { e in
            if e[key.prefix]?.key.id == key.id { e[key.prefix]?.key.lastUsedAt = at }
        }
    }

    func drop(id: Int64) {
        entries.withLock { e in
            for (prefix, entry) in e where entry.key.id == id { e[prefix] = nil }
        }
    }
}
