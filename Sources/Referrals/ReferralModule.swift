import Foundation
import Logging
import Messaging
import Metrics
import ReciprocityCore
import Storage
import Synchronization

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
        clicks = ClickRecorder(store: store, logger: logger)
        service = ReferralService(
            store: store, mailer: mailer, links: links, disposable: disposable, random: random, logger: logger,
            targets: targets)
    }

    /// The domain events the capability reacts to.
    public static func subscribe(_ s: inout EventSubscriptions) {
        // An order without a code, coupon, answer or device cannot be attributed (`Store.attributeOrder`).
        s.subscribe(
            Store.referralAttributeJob, to: OrderStatus.placed.eventType, ifTaggedWithAnyOf: OrderSubmission.linkFields)
        s.subscribe(Store.referralHoldJob, to: OrderStatus.delivered.eventType)
        s.subscribe(Store.referralVoidJob, to: OrderStatus.returned.eventType)
        s.subscribe(Store.referralVoidJob, to: OrderStatus.cancelled.eventType)
        s.subscribe(Store.referralVoidJob, to: Order.itemsReturnedEvent)
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
public final class RedirectCache: Sendable {
    public struct Resolved: Sendable {
        public var target: ReferralTarget
        /// `targetURL?ref=CODE`.
        public var location: String
    }
    /// What a caller made of a resolved target (the web layer's ready response), kept with the cache entry so that
    /// it goes when the entry goes.
    public typealias Prepared = AnyObject & Sendable
    private struct Entry {
        var resolved: Resolved?
        var expires: Date
        var prepared: (any Prepared)?
    }
    private let entries = Mutex<[String: Entry]>([:])
    /// Counts the drops: a look-up that began before a drop does not store what it read (the database may have
    /// changed since: a saved programme, an erased advocate).
    private let drops = Mutex<UInt64>(0)
    private let store: Store
    public let ttl: TimeInterval

    public init(store: Store, ttl: TimeInterval) {
        self.store = store
        self.ttl = ttl
    }

    public func resolve(code: String) async throws -> Resolved? {
        let now = store.clock.now()
        if let hit = entries.withLock({ $0[code] }), hit.expires > now { return hit.resolved }
        let generation = drops.withLock { $0 }
        let resolved = try await store.referralTarget(code: code).map {
            Resolved(target: $0, location: ShareLinks.withRef($0.programme.targetURL, code: $0.code))
        }
        entries.withLock {
            guard drops.withLock({ $0 }) == generation else { return }
            if $0.count > 100_000 { $0.removeAll(keepingCapacity: true) }
            $0[code] = Entry(resolved: resolved, expires: now.addingTimeInterval(ttl))
        }
        return resolved
    }

    /// `prepare`'s result for the cached target of a known code, made once per cache entry, without asking the
    /// database. Nil when the code is not cached, expired or unknown.
    public func cached(code: String, prepare: (Resolved) -> any Prepared) -> (any Prepared)? {
        let now = store.clock.now()
        return entries.withLock { entries in
            guard let hit = entries[code], hit.expires > now, let resolved = hit.resolved else { return nil }
            if let prepared = hit.prepared { return prepared }
            let prepared = prepare(resolved)
            entries[code]?.prepared = prepared
            return prepared
        }
    }

    public func drop(workspaceID: WorkspaceID) {
        drops.withLock { $0 &+= 1 }
        entries.withLock { $0 = $0.filter { $0.value.resolved?.target.workspaceID != workspaceID } }
    }

    public func drop(code: String) {
        drops.withLock { $0 &+= 1 }
        _ = entries.withLock { $0.removeValue(forKey: code) }
    }
}

/// Clicks gathered in memory and written together every `RECIPROCITY_REFERRAL_CLICK_FLUSH_MS` (one second by
/// default; group commit). The request only appends the raw address and user agent; hashing happens at the flush,
/// off the redirect's path. A crash loses the clicks not yet written (about one interval's worth while the database
/// keeps up); orders are never batched: an acknowledged order is committed before the answer.
public final class ClickRecorder: Sendable {
    struct Raw {
        var workspaceID: WorkspaceID
        var advocateID: AdvocateID
        var at: Date
        var ip: String
        var userAgent: String
    }
    private struct Pending {
        var raw: [Raw] = []
        var dropped = 0
        var droppedUnreported = 0
        /// Redirects waiting for room (`recordWaiting`): while there are any, `record` refuses, so that the waiting
        /// ones get the room a flush makes, in turn.
        var waiters = 0
        /// The last flush failed: the database is not taking clicks.
        var failing = false
        /// Clicks a running flush took from the buffer and has not committed yet.
        var writing = 0
    }
    private let pending = Mutex(Pending())
    /// One flush at a time, so that a flush returns only once every click recorded before it is written (a second
    /// flush that found the buffer emptied by a running one used to return while that one was still writing).
    private let flushing = AsyncLock()
    private let store: Store
    private let logger: Logger
    /// At most this many clicks wait for the flush; beyond it the redirect waits for room (`recordWaiting`), so that
    /// memory stays bounded and a redirect faster than the database cannot lose clicks.
    public let limit: Int
    /// How long `recordWaiting` waits for room while the flush is failing before it drops the click (counted, and
    /// logged at the next flush). While the flush works, the redirect waits for it however long it takes.
    public let patience: Duration
    /// Clicks dropped since start-up.
    public var dropped: Int { pending.withLock { $0.dropped } }

    /// The most clicks one transaction writes.
    public let clicksPerTransaction: Int

    public init(
        store: Store, limit: Int = 200_000, clicksPerTransaction: Int = 1_000, patience: Duration = .seconds(2),
        logger: Logger
    ) {
        self.store = store
        self.limit = limit
        self.clicksPerTransaction = max(1, clicksPerTransaction)
        self.patience = patience
        self.logger = logger
    }

    /// Appends the click unless the buffer is full (or redirects wait for room); then nothing is recorded and the
    /// answer is false.
    @discardableResult
    public func record(workspaceID: WorkspaceID, advocateID: AdvocateID, at: Date, ip: String, userAgent: String)
        -> Bool
    {
        let raw = Raw(workspaceID: workspaceID, advocateID: advocateID, at: at, ip: ip, userAgent: userAgent)
        return pending.withLock {
            guard $0.waiters == 0, $0.raw.count < limit else { return false }
            $0.raw.append(raw)
            return true
        }
    }

    /// Appends the click; while the buffer is full, waits for the flush to make room. Only while the flush is
    /// failing, and after `patience`, is the click dropped and counted.
    public func recordWaiting(
        workspaceID: WorkspaceID, advocateID: AdvocateID, at: Date, ip: String, userAgent: String
    ) async {
        let raw = Raw(workspaceID: workspaceID, advocateID: advocateID, at: at, ip: ip, userAgent: userAgent)
        let start = ContinuousClock.now
        var waiting = false
        while true {
            let done: Bool = pending.withLock {
                // The first try queues behind earlier waiters; a waiter takes room whenever there is some.
                if (waiting || $0.waiters == 0) && $0.raw.count < limit {
                    $0.raw.append(raw)
                    if waiting { $0.waiters -= 1 }
                    return true
                }
                let giveUp = $0.failing && ContinuousClock.now - start >= patience
                if giveUp {
                    $0.dropped += 1
                    $0.droppedUnreported += 1
                    if waiting { $0.waiters -= 1 }
                } else if !waiting {
                    $0.waiters += 1
                }
                return giveUp
            }
            if done { return }
            waiting = true
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Clicks not written yet: in the buffer, or taken by a running flush and not yet committed.
    public var waiting: Int { pending.withLock { $0.raw.count + $0.writing } }
    /// Clicks in the buffer, not yet taken by a flush.
    public var buffered: Int { pending.withLock { $0.raw.count } }
    /// Redirects waiting for room in the buffer.
    public var redirectsWaiting: Int { pending.withLock { $0.waiters } }

    /// Writes the clicks gathered so far, after any flush already running; on failure they are put back for the next
    /// flush.
    public func flush() async throws {
        try await flushing.withLock { try await flushBuffer() }
    }

    private func flushBuffer() async throws {
        let (batch, dropped) = pending.withLock {
            let taken = ($0.raw, $0.droppedUnreported)
            $0.raw.removeAll(keepingCapacity: true)
            $0.droppedUnreported = 0
            $0.writing = taken.0.count
            return taken
        }
        if dropped > 0 {
            // Made here rather than at start-up: a metric made before the metrics backend exists counts nowhere.
            Counter(label: "reciprocity_referral_clicks_dropped_total").increment(by: dropped)
            logger.warning(
                "referral clicks dropped: the database did not take them in time",
                metadata: ["dropped": "\(dropped)", "limit": "\(limit)"])
        }
        // A transaction at a time, so that a backlog (a burst, or a database that was away) does not hold the
        // writer, and the orders waiting for it, while all of it is written.
        var written = 0
        do {
            while written < batch.count {
                let slice = batch[written..<min(written + clicksPerTransaction, batch.count)]
                try await store.recordClicks(hashed(slice))
                written = slice.endIndex
                pending.withLock { $0.writing = batch.count - written }
            }
            pending.withLock { $0.failing = false }
        } catch {
            pending.withLock {
                $0.raw = Array(batch[written...]) + $0.raw
                $0.writing = 0
                $0.failing = true
            }
            throw error
        }
    }

    /// The clicks as stored: keyed hashes of the address and the device, and the browser family.
    private func hashed(_ raws: ArraySlice<Raw>) -> [ReferralClick] {
        // Clicks from one address (a shared office line, a mobile carrier's gateway) hash it once.
        var ipHashes: [String: String] = [:]
        // A run of clicks from one browser (reloads, a load test) skips even the look-up.
        var last: (raw: Raw, click: ReferralClick)?
        return raws.map { raw in
            if let last, last.raw.ip == raw.ip, last.raw.userAgent == raw.userAgent {
                var click = last.click
                (click.workspaceID, click.advocateID, click.at) = (raw.workspaceID, raw.advocateID, raw.at)
                return click
            }
            let ipHash = ipHashes[raw.ip] ?? store.ipHash(raw.ip)
            ipHashes[raw.ip] = ipHash
            let click = ReferralClick(
                workspaceID: raw.workspaceID, advocateID: raw.advocateID, at: raw.at, ipHash: ipHash,
                uaFamily: UserAgentFamily.of(raw.userAgent),
                device: store.deviceHash(ip: raw.ip, userAgent: raw.userAgent))
            last = (raw, click)
            return click
        }
    }
}
