import Foundation
import Logging
import Messaging
import NIOCore
import ReciprocityCore
import Storage

/// The lead magnet capability's parts, built once at wiring time and shared by pages, jobs and commands.
public struct LeadModule: Sendable {
    public let links: LeadLinks
    public let service: LeadService
    public let followUps: FollowUps
    public let pages: LandingCache
    public let views: ViewCounter

    public init(
        store: Store, mailer: Mailer, baseURL: String, blobs: any BlobStore, random: any RandomSource,
        mxResolver: (any MXResolver)? = nil, logger: Logger, cacheTTL: TimeInterval = 30
    ) {
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        links = LeadLinks(store: store, baseURL: base)
        service = LeadService(
            store: store, mailer: mailer, links: links, blobs: blobs, disposable: DisposableList(store: store),
            mxResolver: mxResolver, random: random, logger: logger)
        followUps = FollowUps(store: store, mailer: mailer, logger: logger)
        pages = LandingCache(clock: store.clock, ttl: cacheTTL)
        views = ViewCounter(store: store)
    }
}

/// Rendered landing pages, shared by every request for `ttl` seconds. A page is kept in two pieces around its
/// form token, which is fresh for every response (the minimum fill time is measured from it). A save on this node
/// drops the magnet's page at once; other nodes' copies expire.
public final class LandingCache: @unchecked Sendable {
    public struct Entry: Sendable {
        public var magnet: LeadMagnet
        public var workspace: Workspace
        /// The consent text version the page shows.
        public var textID: Int64?
        public var head: ByteBuffer
        public var tail: ByteBuffer
        var expires: Date
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private let clock: any WallClock
    public let ttl: TimeInterval
    /// Where the token goes in a rendered page.
    public static let tokenMark = "\u{1}FORM-TOKEN\u{1}"

    public init(clock: any WallClock, ttl: TimeInterval) {
        self.clock = clock
        self.ttl = ttl
    }

    public func get(_ key: String) -> Entry? {
        let now = clock.now()
        return lock.withLock { entries[key].flatMap { $0.expires > now ? $0 : nil } }
    }

    /// Stores a page rendered with `tokenMark` where the token goes.
    @discardableResult
    public func put(_ key: String, page: String, magnet: LeadMagnet, workspace: Workspace, textID: Int64?) -> Entry {
        let parts = page.components(separatedBy: Self.tokenMark)
        let entry = Entry(
            magnet: magnet, workspace: workspace, textID: textID, head: ByteBuffer(string: parts[0]),
            tail: ByteBuffer(string: parts.dropFirst().joined()), expires: clock.now().addingTimeInterval(ttl))
        lock.withLock {
            if entries.count >= 10_000 { entries.removeAll(keepingCapacity: true) }
            entries[key] = entry
        }
        return entry
    }

    public func invalidate(magnetID: LeadMagnetID) {
        lock.withLock {
            let keys = entries.filter { $0.value.magnet.id == magnetID }.map(\.key)
            for k in keys {
                entries[k] = nil
                stamped[k] = nil
            }
        }
    }

    private var stamped: [String: (tick: Int64, body: ByteBuffer)] = [:]

    /// The page with a form token issued at the end of the current tenth of a second, shared by every response in
    /// that tenth: one HMAC and one copy per 100 ms, not per request. Rounding the issue time up can only make a
    /// form look younger (by at most 0.1 s), so the minimum fill time is never shortened.
    public func body(_ entry: Entry, key: String, token: (Date) -> String) -> ByteBuffer {
        let tick = Int64((clock.now().timeIntervalSince1970 * 10).rounded(.down)) + 1
        if let hit = lock.withLock({ stamped[key] }), hit.tick == tick { return hit.body }
        let body = Self.body(entry, token: token(Date(timeIntervalSince1970: TimeInterval(tick) / 10)))
        lock.withLock {
            if stamped.count >= 10_000 { stamped.removeAll(keepingCapacity: true) }
            stamped[key] = (tick, body)
        }
        return body
    }

    /// The page with `token` in its place: one copy of the bytes, no rendering.
    public static func body(_ entry: Entry, token: String) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(entry.head.readableBytes + token.utf8.count + entry.tail.readableBytes)
        out.writeImmutableBuffer(entry.head)
        out.writeString(token)
        out.writeImmutableBuffer(entry.tail)
        return out
    }
}

/// Landing page views, counted in memory and added to the daily counters in one write per magnet every few
/// seconds (a write per view would cap the cached page at the database's write rate). Views of the last
/// interval are lost if the process is killed; signups and confirmations are counted in their transactions.
public final class ViewCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var pending: [LeadMagnetID: Int64] = [:]
    private let store: Store

    public init(store: Store) { self.store = store }

    public func count(_ magnetID: LeadMagnetID) {
        lock.withLock { pending[magnetID, default: 0] += 1 }
    }

    /// Writes the counts gathered so far. On failure they are put back for the next flush.
    public func flush() async throws {
        let batch = lock.withLock {
            let b = pending
            pending.removeAll(keepingCapacity: true)
            return b
        }
        guard !batch.isEmpty else { return }
        do {
            try await store.db.transaction { tx in
                for (magnet, views) in batch.sorted(by: { $0.key < $1.key }) {
                    try await self.store.bumpLeadStats(tx, magnetID: magnet, views: views)
                }
            }
        } catch {
            lock.withLock { for (k, v) in batch { pending[k, default: 0] += v } }
            throw error
        }
    }
}
