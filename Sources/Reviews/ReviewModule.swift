import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// The review capability's parts, built once at wiring time and shared by jobs, pages and commands.
public struct ReviewModule: Sendable {
    public let links: ReviewLinks
    public let cache: ReviewWidgetCache
    public let service: ReviewService
    public let display: ReviewDisplay
    public let requests: ReviewRequests

    public init(store: Store, mailer: Mailer, baseURL: String, logger: Logger, cacheTTL: TimeInterval = 30) {
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        links = ReviewLinks(store: store, baseURL: base)
        cache = ReviewWidgetCache(clock: store.clock, ttl: cacheTTL)
        service = ReviewService(store: store, links: links, cache: cache)
        display = ReviewDisplay(store: store, baseURL: base)
        requests = ReviewRequests(store: store, mailer: mailer, links: links, logger: logger)
    }

    /// The domain events the capability reacts to, for the store's subscriptions.
    public static func subscribe(_ s: inout EventSubscriptions) {
        for trigger in ReviewRequests.triggers { s.subscribe(Store.reviewScheduleJob, to: trigger) }
    }
}
