import Foundation
import HTTPTypes
import Hummingbird
import LeadMagnets
import Logging
import Messaging
import ReciprocityCore
import Referrals
import Reviews
import Storage

/// Everything the HTTP adapters need, injected by the App target.
public struct WebEnvironment: Sendable {
    public var store: Store
    public var clock: any WallClock
    public var random: any RandomSource
    /// The public base URL, without a trailing slash; links in pages and mails start with it.
    public var baseURL: String
    public var templates: Templates
    /// Renders Prometheus text for `/metrics`.
    public var metricsText: @Sendable () async -> String
    /// Called after an enqueue so a local worker looks for work at once.
    public var wakeWorkers: @Sendable () -> Void
    /// The same for jobs of known kinds, so the worker asks only the claim group they belong to; nil: `wakeWorkers`.
    public var wakeWorkersForKinds: (@Sendable ([String]) -> Void)?
    /// Maximum JSON body size accepted by the API, in bytes.
    public var maxBodyBytes: Int
    /// bcrypt cost for admin passwords.
    public var bcryptCost: UInt8
    public var loginLimiter: RateLimiter
    /// Test-only routes (crash tests): never on in production.
    public var testHooks: Bool
    /// The mail engine (outbox, templates, test sends). Nil only in routing-only tests.
    public var mailer: Mailer?
    /// The review capability (form, widgets, feed). Nil only in routing-only tests.
    public var reviews: ReviewModule?
    /// The lead magnet capability (landing pages, double opt-in, gifts). Nil only in routing-only tests.
    public var leads: LeadModule?
    /// The referral programme (redirect, join form, personal pages). Nil only in routing-only tests.
    public var referrals: ReferralModule?
    /// Public forms (review form, open form, lead magnet signups): per IP, to slow bots and abuse.
    public var publicFormLimiter: RateLimiter
    /// Lead magnet signups per address: a person cannot be flooded with confirmation mails.
    public var signupEmailLimiter: RateLimiter
    public var logger: Logger
    /// Shared by the router's middleware and the fast path, so both count and name requests alike.
    let requestIDs: RequestIDs
    let requestMetrics = RequestMetricsCache()

    public init(
        store: Store, clock: any WallClock, random: any RandomSource, baseURL: String, templates: Templates,
        metricsText: @escaping @Sendable () async -> String, wakeWorkers: @escaping @Sendable () -> Void = {},
        maxBodyBytes: Int = 1_048_576, bcryptCost: UInt8 = 12, loginLimiter: RateLimiter? = nil,
        testHooks: Bool = false, mailer: Mailer? = nil, reviews: ReviewModule? = nil, leads: LeadModule? = nil,
        publicFormBurst: Int = 20, logger: Logger
    ) {
        self.mailer = mailer
        self.reviews = reviews
        self.leads = leads
        // A burst of `publicFormBurst` posts per IP, then one every 6 seconds (a shared office IP signs up a few
        // people; a script does not sign up thousands).
        self.publicFormLimiter = RateLimiter(
            capacity: Double(publicFormBurst), refillPerSecond: 1.0 / 6, clock: clock)
        self.signupEmailLimiter = RateLimiter(capacity: 5, refillPerSecond: 1.0 / 3600, clock: clock)
        self.store = store
        self.clock = clock
        self.random = random
        self.requestIDs = RequestIDs(random: random)
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.templates = templates
        self.metricsText = metricsText
        self.wakeWorkers = wakeWorkers
        self.maxBodyBytes = maxBodyBytes
        self.bcryptCost = bcryptCost
        self.loginLimiter = loginLimiter ?? RateLimiter(capacity: 5, refillPerSecond: 1.0 / 60, clock: clock)
        self.testHooks = testHooks
        self.logger = logger
    }

    /// Proxies whose `X-Forwarded-For` is believed (`RECIPROCITY_TRUSTED_PROXIES`). Empty: the TCP peer is the
    /// client.
    public var trustedProxies: Set<String> = []

    /// The client's address: the TCP peer, or behind a trusted proxy the last address in `X-Forwarded-For` that is
    /// not itself a trusted proxy. Consent proof and the per-IP limits use it.
    public func clientIP(_ request: Request, _ context: AppContext) -> String {
        clientIP(peer: context.peerIP, forwardedFor: request.headers[Self.forwardedFor])
    }

    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// The client as rate limits count it: `clientIP`, and for IPv6 its /64, the network one subscriber gets (a
    /// single client has all of its addresses).
    public func limiterKey(_ request: Request, _ context: AppContext) -> String {
        Self.limiterKey(ip: clientIP(request, context))
    }

    public static func limiterKey(ip: String) -> String {
        guard ip.contains(":") else { return ip }
        var address = in6_addr()
        guard inet_pton(AF_INET6, ip, &address) == 1 else { return ip }
        let bytes = withUnsafeBytes(of: &address) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return bytes[12..<16].map(String.init).joined(separator: ".")  // IPv4-mapped: the IPv4 address
        }
        return stride(from: 0, to: 8, by: 2).map { String(format: "%x", Int(bytes[$0]) << 8 | Int(bytes[$0 + 1])) }
            .joined(separator: ":") + "::/64"
    }

    /// `clientIP` from the TCP peer's address and the `X-Forwarded-For` header.
    public func clientIP(peer: String, forwardedFor header: String?) -> String {
        guard trustedProxies.contains(peer), let header else { return peer }
        let hops = header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return hops.last { !trustedProxies.contains($0) } ?? peer
    }

    /// The lead magnet capability, or a 503 problem when this build was wired without it (routing-only tests).
    public func requireLeads() throws -> LeadModule {
        guard let leads else {
            throw DomainError(.unavailable, code: "leads_unavailable", "Lead magnets are not configured.")
        }
        return leads
    }

    /// The referral programme, or a 503 problem when this build was wired without it.
    public func requireReferrals() throws -> ReferralModule {
        guard let referrals else {
            throw DomainError(.unavailable, code: "referrals_unavailable", "Referrals are not configured.")
        }
        return referrals
    }

    /// A public page (`{{<public}}` templates): the UI strings, the title, the shop's name and its legal links.
    func publicPage(
        _ name: String, locale: String, title: String, _ extra: [String: Any], workspace: Workspace? = nil,
        status: HTTPResponse.Status = .ok
    ) -> Response {
        templates.page(name, publicModel(locale: locale, title: title, extra, workspace: workspace), status: status)
    }

    func publicModel(locale: String, title: String, _ extra: [String: Any], workspace: Workspace?) -> [String: Any] {
        let t = Strings.table(locale)
        var model: [String: Any] = ["t": t, "lang": locale, "title": t[title] ?? title]
        if let w = workspace {
            model["shop"] = w.name
            if !w.privacyURL.isEmpty { model["privacy_url"] = w.privacyURL }
            if !w.imprintURL.isEmpty { model["imprint_url"] = w.imprintURL }
            model["has_legal"] = !w.privacyURL.isEmpty || !w.imprintURL.isEmpty
        }
        for (k, v) in extra { model[k] = v }
        return model
    }

    /// Cookies get `Secure` when the public URL is https.
    public var secureCookies: Bool { baseURL.hasPrefix("https://") }

}

/// A token bucket per key (IP, account). In memory, per node: it slows guessing, the bcrypt cost does the rest.
public final class RateLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private var buckets: [String: (tokens: Double, at: Date)] = [:]
    let capacity: Double
    let refillPerSecond: Double
    let clock: any WallClock

    public init(capacity: Double, refillPerSecond: Double, clock: any WallClock, maxKeys: Int = 100_000) {
        self.capacity = capacity
        self.refillPerSecond = refillPerSecond
        self.clock = clock
        self.maxKeys = maxKeys
    }

    /// The most buckets kept. Beyond it, full buckets (the same as none) go first, then the longest untouched;
    /// never all at once, which would hand every key, an attacked account's too, a fresh bucket.
    let maxKeys: Int

    /// Takes a token for `key`; false when the bucket is empty.
    public func allow(_ key: String) -> Bool { take([key]) }

    /// Takes a token from each key's bucket if every one has a token, else none; false then.
    public func take(_ keys: [String]) -> Bool {
        let now = clock.now()
        return lock.withLock {
            if buckets.count + keys.count > maxKeys { evict(at: now) }
            let available = keys.map { tokens($0, at: now) }
            guard available.allSatisfy({ $0 >= 1 }) else {
                // The refill so far is kept, so the time of a refused try does not count against the key.
                for (key, a) in zip(keys, available) where buckets[key] != nil { buckets[key] = (a, now) }
                return false
            }
            for (key, a) in zip(keys, available) { buckets[key] = (a - 1, now) }
            return true
        }
    }

    /// Returns a token taken by `take` (an attempt that turned out not to count, e.g. a successful login).
    public func giveBack(_ keys: [String]) {
        let now = clock.now()
        lock.withLock {
            for key in keys where buckets[key] != nil {
                buckets[key] = (min(capacity, tokens(key, at: now) + 1), now)
            }
        }
    }

    /// Drops the full buckets, then, if that was not enough, the longest untouched down to nine tenths. Call with
    /// the lock held.
    private func evict(at now: Date) {
        buckets = buckets.filter { key, _ in tokens(key, at: now) < capacity }
        guard buckets.count > maxKeys * 9 / 10 else { return }
        let oldest = buckets.sorted { $0.value.at < $1.value.at }.prefix(buckets.count - maxKeys * 9 / 10)
        for (key, _) in oldest { buckets[key] = nil }
    }

    /// The bucket's tokens at `now`, refilled since it was last touched. Call with the lock held.
    private func tokens(_ key: String, at now: Date) -> Double {
        guard let b = buckets[key] else { return capacity }
        return min(capacity, b.tokens + now.timeIntervalSince(b.at) * refillPerSecond)
    }
}

extension WebEnvironment {
    /// After a change enqueued jobs of these kinds: wakes the local worker for them, if any.
    func wakeWorkers(forKinds kinds: [String]) {
        guard !kinds.isEmpty else { return }
        if let wakeWorkersForKinds { wakeWorkersForKinds(kinds) } else { wakeWorkers() }
    }
}

extension WebEnvironment {
    /// After an erasure (Art. 17): this node's caches that hold the person's data let it go at once; the review
    /// widgets' rendered pages and the referral codes' redirect targets (the erased advocate's code no longer
    /// redirects). Other nodes drop theirs when the entries expire (the redirect cache's 30 seconds, the review
    /// cache's lifetime).
    func forgetCached(workspaceID: WorkspaceID) {
        reviews?.cache.invalidate(workspaceID: workspaceID)
        referrals?.targets.drop(workspaceID: workspaceID)
    }
}
