import Foundation
import ReciprocityCore
import Storage

/// Writing reviews: through a signed link from an order (verified), through the open form (unverified), or by the
/// CSV import (imported). Moderation runs the same checks for every star level: the rating is not an input.
public struct ReviewService: Sendable {
    public let store: Store
    public let links: ReviewLinks
    public let cache: ReviewWidgetCache

    public init(store: Store, links: ReviewLinks, cache: ReviewWidgetCache) {
        self.store = store
        self.links = links
        self.cache = cache
    }

    /// What the form behind a review link shows.
    public struct FormContext: Sendable {
        public var target: ReviewLinks.Target
        public var request: ReviewRequestRecord
        public var workspace: Workspace
        public var productName: String
        public var orderNumber: String
        public var existing: StoredReview?
        public var defaultDisplayName: String
        public var locale: String
        /// The author may still change or delete the review (the edit window after the first submission).
        public var editable: Bool
    }

    public enum Access: Sendable {
        case form(FormContext)
        /// Genuine but expired: a friendly page, not a 404.
        case expired(workspaceName: String?)
    }

    /// Resolves a link. Tampered, unknown or foreign tokens are "not found", never more specific.
    public func open(token: String) async throws -> Access {
        let target: ReviewLinks.Target
        switch links.resolve(token) {
        case .invalid: throw Self.linkNotFound
        case .expired(let t):
            return .expired(workspaceName: try await store.workspace(id: t.workspaceID)?.name)
        case .valid(let t): target = t
        }
        guard let request = try await store.reviewRequest(id: target.requestID),
            request.workspaceID == target.workspaceID,
            let item = try await store.askedItems(requestID: request.id).first(where: { $0.sku == target.sku }),
            let workspace = try await store.workspace(id: target.workspaceID),
            let contact = try await store.contact(workspaceID: target.workspaceID, id: request.contactID),
            contact.erasedAt == nil
        else { throw Self.linkNotFound }
        // A cancelled order is not a purchase: its link no longer gives a "Verifizierter Kauf".
        guard let order = try await store.order(workspaceID: target.workspaceID, id: request.orderID),
            order.status != .cancelled
        else { throw Self.linkNotFound }
        let existing = try await store.review(requestID: request.id, sku: target.sku)
        let settings = try await store.reviewSettings(workspaceID: target.workspaceID)
        return .form(
            FormContext(
                target: target, request: request, workspace: workspace, productName: item.name,
                orderNumber: order.externalID, existing: existing,
                defaultDisplayName: ReviewDisplayName.defaultName(
                    firstName: contact.firstName, lastName: contact.lastName,
                    fallback: Locale.resolve(contact.locale) == "en" ? "Customer" : "Kunde"),
                locale: Locale.resolve(contact.locale),
                editable: settings.isEditable(
                    submittedAt: existing?.createdAt, deleted: existing?.status == .deleted, now: store.clock.now())))
    }

    static let linkNotFound = DomainError(
        .notFound, code: "link_invalid", "This link is not valid. Please use the link from your email.")

    /// Submits or edits the review behind a link. Throws `ReviewInputErrors` for the form to show.
    @discardableResult
    public func submit(token: String, input: ReviewInput, photos: [[UInt8]]) async throws -> StoredReview {
        guard case .form(let ctx) = try await open(token: token) else {
            throw DomainError(.invalid, code: "link_expired", "This link has expired.")
        }
        guard ctx.editable else {
            throw DomainError(.conflict, code: "edit_window_over", "This review can no longer be changed.")
        }
        let valid = try Self.validate(input, photos: photos)
        let request = ctx.request
        var n = Storage.Store.NewReview(
            workspaceID: ctx.workspace.id, sku: ctx.target.sku, productName: ctx.productName, source: .verified,
            input: valid.input, locale: ctx.locale)
        n.orderID = request.orderID
        n.requestID = request.id
        n.contactID = request.contactID
        n.incentive = request.incentive
        n.photos = valid.photos
        let saved = try await store.saveReview(n, moderation: Self.moderate(valid.input))
        cache.invalidate(workspaceID: ctx.workspace.id)
        return saved
    }

    /// The author deletes their review through the same link, within the edit window.
    public func delete(token: String) async throws {
        guard case .form(let ctx) = try await open(token: token), let existing = ctx.existing else {
            throw Self.linkNotFound
        }
        guard ctx.editable else {
            throw DomainError(.conflict, code: "edit_window_over", "This review can no longer be changed.")
        }
        try await store.deleteReview(workspaceID: ctx.workspace.id, id: existing.id, actor: "author")
        cache.invalidate(workspaceID: ctx.workspace.id)
    }

    /// The open form (when the merchant enables it): unverified, for a product the shop has sold.
    @discardableResult
    public func submitOpen(workspace: Workspace, sku: String, input: ReviewInput, locale: String) async throws
        -> StoredReview
    {
        let settings = try await store.reviewSettings(workspaceID: workspace.id)
        guard settings.openForm, settings.isLive,
            let name = try await store.productName(workspaceID: workspace.id, sku: sku)
        else { throw DomainError.notFound("Product") }
        let valid = try Self.validate(input, photos: [])
        let n = Storage.Store.NewReview(
            workspaceID: workspace.id, sku: sku, productName: name, source: .unverified, input: valid.input,
            locale: locale)
        let saved = try await store.saveReview(n, moderation: Self.moderate(valid.input))
        cache.invalidate(workspaceID: workspace.id)
        return saved
    }

    /// The one moderation entry point. Its only inputs are the texts: no rule can look at the rating.
    public static func moderate(_ input: ReviewInput) -> ReviewModeration.Outcome {
        ReviewModeration.check(title: input.title, text: input.body, name: input.displayName)
    }

    static func validate(_ input: ReviewInput, photos: [[UInt8]]) throws -> (
        input: ReviewInput, photos: [(ReviewPhoto.Kind, [UInt8])]
    ) {
        var errors: [String: String] = [:]
        var clean = input
        switch input.validated() {
        case .success(let v): clean = v
        case .failure(let e): errors.merge(e.byField) { a, _ in a }
        }
        var checked: [(ReviewPhoto.Kind, [UInt8])] = []
        if photos.count > ReviewPhoto.maxCount { errors["photos"] = "photo_count" }
        for bytes in photos.prefix(ReviewPhoto.maxCount) {
            switch ReviewPhoto.check(bytes) {
            case .success(let kind):
                // No camera, time or GPS position is published with a photo.
                guard let clean = PhotoMetadata.strip(bytes, kind: kind) else {
                    errors["photos"] = "photo_type"
                    continue
                }
                checked.append((kind, clean))
            case .failure(let e): errors.merge(e.byField) { a, _ in a }
            }
        }
        if !errors.isEmpty { throw ReviewInputErrors(byField: errors) }
        return (clean, checked)
    }
}
