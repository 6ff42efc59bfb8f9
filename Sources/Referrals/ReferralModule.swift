import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// The referral capability's parts, built once at wiring time and shared by jobs, pages and commands.
public struct ReferralModule: Sendable {
    public let links: ReferralLinks
    public let service: ReferralService
    public let targets: RedirectCache
    public let clicks: ClickRecorder

    public init(
        store: Store, mailer: Mailer, baseURL: String, random: any RandomSource,
        disposable: @escaping @Sendable () async -> DisposableDomains,
        logger: Logger, cacheTTL: TimeInterval = 30
    ) {
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        links = ReferralLinks(store: store, baseURL: base)
        targets = RedirectCache(store: store, ttl: cacheTTL)
        clicks = ClickRecorder(store: store)
        service = ReferralService(
            store: store, mailer: mailer, links: links, disposable: disposable, random: random, logger: logger,
            targets: targets)
    }

    /// The domain events the capability reacts to.
    public static func subscribe(_ s: inout EventSubscriptions) {
        s.subscribe(Store.referralAttributeJob, to: OrderStatus.placed.eventType)
        s.subscribe(Store.referralHoldJob, to: OrderStatus.delivered.eventType)
        s.subscribe(Store.referralVoidJob, to: OrderStatus.returned.eventType)
        s.subscribe(Store.referralVoidJob, to: OrderStatus.cancelled.eventType)
    }
}

/// The signed links of the programme:
/// - the advocate's personal page (no login): workspace, advocate and the advocate's link version, which the
///   merchant (or an erasure) raises to revoke every earlier link;
/// - the join form: workspace and issue time (its minimum fill time is measured from it).
public struct ReferralLinks: Sendable {
    public let store: Store
    public let baseURL: String
    static let pagePurpose = "referral-page"
    static let joinPurpose = "referral-join"

    public init(store: Store, baseURL: String) {
        self.store = store
        self.baseURL = baseURL
    }

    /// The link an advocate shares.
    public func shareURL(code: String) -> String { baseURL + "/r/" + code }

    public func pageToken(_ a: Advocate) -> String {
        store.signToken(
            purpose: Self.pagePurpose, fields: [String(a.workspaceID), String(a.id), String(a.linkVersion)])
    }

    public func pageURL(_ a: Advocate) -> String { baseURL + "/a/" + pageToken(a) }

    /// The advocate a page token names, if the token is genuine and not revoked.
    public func advocate(pageToken token: String) async throws -> Advocate? {
        guard let f = store.verifyToken(token, purpose: Self.pagePurpose), f.count == 3, let ws = Int64(f[0]),
            let id = Int64(f[1]), let version = Int64(f[2]),
            let a = try await store.advocate(workspaceID: ws, id: id), a.linkVersion == version
        else { return nil }
        return a
    }

    public func joinToken(workspaceID: WorkspaceID, issuedAt: Date) -> String {
        store.signToken(
            purpose: Self.joinPurpose,
            fields: [String(workspaceID), String(Int64(issuedAt.timeIntervalSince1970 * 1000))])
    }

    /// When a join form token was issued, if it is genuine and for this workspace.
    public func joinIssuedAt(_ token: String, workspaceID: WorkspaceID) -> Date? {
        guard let f = store.verifyToken(token, purpose: Self.joinPurpose), f.count == 2, f[0] == String(workspaceID),
            let ms = Double(f[1])
        else { return nil }
        return Date(timeIntervalSince1970: ms / 1000)
    }
}

/// Codes the redirect has looked up, with the answer ready (the shop URL carrying the code), for `ttl` seconds
/// (saving the programme drops its workspace's entries at once on this node). Unknown codes are remembered too, so
/// a flood of made-up codes does not reach the database each time.
public final class RedirectCache: @unchecked Sendable {
    public struct Resolved: Sendable {
        public var target: ReferralTarget
        /// `targetURL?ref=CODE`.
        public var location: String
    }
    private struct Entry {
        var resolved: Resolved?
        var expires: Date
    }
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private let store: Store
    public let ttl: TimeInterval

    public init(store: Store, ttl: TimeInterval) {
        self.store = store
        self.ttl = ttl
    }

    public func resolve(code: String) async throws -> Resolved? {
        let now = store.clock.now()
        if let hit = lock.withLock({ entries[code] }), hit.expires > now { return hit.resolved }
        let resolved = try await store.referralTarget(code: code).map {
            Resolved(target: $0, location: ShareLinks.withRef($0.programme.targetURL, code: $0.code))
        }
        lock.withLock {
            if entries.count > 100_000 { entries.removeAll(keepingCapacity: true) }
            entries[code] = Entry(resolved: resolved, expires: now.addingTimeInterval(ttl))
        }
        return resolved
    }

    public func drop(workspaceID: WorkspaceID) {
        lock.withLock { entries = entries.filter { $0.value.resolved?.target.workspaceID != workspaceID } }
    }

    public func drop(code: String) { _ = lock.withLock { entries.removeValue(forKey: code) } }
}

/// Clicks gathered in memory and written in one statement every second (group commit). The request only appends
/// the raw address and user agent; hashing happens at the flush, off the redirect's path. A crash loses at most
/// the last second of clicks; orders are never batched: an acknowledged order is committed before the answer.
public final class ClickRecorder: @unchecked Sendable {
    struct Raw {
        var workspaceID: WorkspaceID
        var advocateID: AdvocateID
        var at: Date
        var ip: String
        var userAgent: String
    }
    private let lock = NSLock()
    private var pending: [Raw] = []
    private let store: Store
    /// Above this many waiting clicks new ones are dropped (and counted) rather than growing without bound.
    public let limit: Int
    public private(set) var dropped = 0

    public init(store: Store, limit: Int = 200_000) {
        self.store = store
        self.limit = limit
    }

    public func record(workspaceID: WorkspaceID, advocateID: AdvocateID, at: Date, ip: String, userAgent: String) {
        let raw = Raw(workspaceID: workspaceID, advocateID: advocateID, at: at, ip: ip, userAgent: userAgent)
        lock.withLock {
            if pending.count < limit { pending.append(raw) } else { dropped += 1 }
        }
    }

    public var waiting: Int { lock.withLock { pending.count } }

    /// Writes the clicks gathered so far; on failure they are put back for the next flush.
    public func flush() async throws {
        let batch = lock.withLock {
            let b = pending
            pending.removeAll(keepingCapacity: true)
            return b
        }
        guard !batch.isEmpty else { return }
        // Clicks repeat their address and browser (one person, reloads, a shared office line): each distinct one is
        // hashed once per flush.
        var ipHashes: [String: String] = [:]
        var devices: [String: (family: String, device: String)] = [:]
        let clicks = batch.map { raw in
            let ipHash = ipHashes[raw.ip] ?? store.ipHash(raw.ip)
            ipHashes[raw.ip] = ipHash
            let deviceKey = raw.ip + "\u{0}" + raw.userAgent
            let device =
                devices[deviceKey]
                ?? (UserAgentFamily.of(raw.userAgent), store.deviceHash(ip: raw.ip, userAgent: raw.userAgent))
            devices[deviceKey] = device
            return ReferralClick(
                workspaceID: raw.workspaceID, advocateID: raw.advocateID, at: raw.at, ipHash: ipHash,
                uaFamily: device.family, device: device.device)
        }
        do {
            try await store.recordClicks(clicks)
        } catch {
            lock.withLock { pending = batch + pending }
            throw error
        }
    }
}
