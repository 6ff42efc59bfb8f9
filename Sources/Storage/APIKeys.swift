import Foundation
import ReciprocityCore

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
