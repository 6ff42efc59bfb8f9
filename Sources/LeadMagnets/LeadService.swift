import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// The double opt-in: signup → confirmation mail → confirmation → gift, with the proof written at each step.
///
/// Every answer to a signup looks the same whether the address is new, pending or confirmed: the page never says
/// which. The mail differs (a confirmation, the gift, or nothing within the resend window).
public struct LeadService: Sendable {
    public let store: Store
    public let mailer: Mailer
    public let links: LeadLinks
    public let blobs: any BlobStore
    public let disposable: DisposableList
    public let mxResolver: (any MXResolver)?
    public let random: any RandomSource
    public let logger: Logger

    public init(
        store: Store, mailer: Mailer, links: LeadLinks, blobs: any BlobStore, disposable: DisposableList,
        mxResolver: (any MXResolver)?, random: any RandomSource, logger: Logger
    ) {
        self.random = random
        self.store = store
        self.mailer = mailer
        self.links = links
        self.blobs = blobs
        self.disposable = disposable
        self.mxResolver = mxResolver
        self.logger = logger
    }

    // MARK: Signup

    /// Validates and records a signup, and puts the confirmation mail into the outbox in the same transaction.
    /// Throws `SignupErrors` for input a person can fix; nothing is written then.
    public func signup(
        workspace: Workspace, magnet: LeadMagnet, input: SignupInput, locale: String, context: SignupContext
    ) async throws {
        guard magnet.active else { throw DomainError.notFound("Lead magnet") }
        let valid = try SignupRules.validate(input, magnet: magnet, disposable: await disposable.current())
        if let mxResolver, let domain = valid.email.normalized.split(separator: "@").last,
            await mxResolver.acceptsMail(domain: String(domain)) == false
        {
            throw SignupErrors(byField: ["email": "email_no_mx"])
        }
        // No name in the confirmation mail: it is typed by whoever posts the form, to any address, and would go out
        // in a mail signed by the shop ("Guten Tag <whatever was typed>"). The address owner has not confirmed yet.
        let recipient = MailRecipient(email: valid.email, firstName: nil, lastName: nil, locale: locale, contactID: nil)
        // Composed before the transaction (the composer reads settings and templates); thrown away if the
        // transaction decides that no confirmation mail is due.
        let nonce = Base64URL.encode(random.bytes(16))
        let expires = store.clock.now().addingTimeInterval(magnet.pendingLifetime)
        let draft = try await mailer.draft(
            workspace: workspace, kind: .doiConfirmation, to: recipient,
            values: [
                "gift_title": magnet.giftTitle,
                "confirm_url": links.confirmURL(workspaceID: workspace.id, nonce: nonce, expires: expires),
                "pending_days": String(max(1, Int((magnet.pendingLifetime / 86_400).rounded(.up)))),
            ])
        let step = try await store.retryingUniqueViolations {
            try await store.db.transaction { tx -> Store.SignupStep in
                let step = try await store.beginSignup(
                    tx, magnet: magnet, input: valid, locale: locale, context: context, nonce: nonce)
                if case .confirm(let signup) = step {
                    var mail = draft
                    mail.contactID = signup.contactID
                    let outboxID = try await store.enqueueMail(tx, mail)
                    try await store.noteConfirmationMail(tx, signupID: signup.id, outboxID: outboxID)
                }
                return step
            }
        }
        if case .deliver(let signup) = step {
            // A gift confirmed before, mailed again (a lost link): no follow-ups, they run from the confirmation.
            try await deliver(signup: signup, magnet: magnet, workspace: workspace)
        }
    }

    // MARK: Confirmation

    public enum Confirmation: Sendable, Equatable {
        /// Confirmed now or before: the gift page's token.
        case confirmed(giftToken: String)
        /// The link is genuine but too old, superseded, or its signup expired: offer to sign up again.
        case expired(Expired)
        case invalid
    }

    public struct Expired: Sendable, Equatable {
        public var workspace: Workspace?
        /// The magnet's landing page, while its signup is still known.
        public var landingURL: String?
    }

    public enum Opened: Sendable {
        /// Waiting for the button: the page shows the consent text first.
        case pending(LeadSignup, LeadMagnet, Workspace)
        case confirmed(giftToken: String)
        case expired(Expired)
        case invalid
    }

    /// What a confirmation link points to, without confirming (the page shows a button first).
    public func open(token: String) async throws -> Opened {
        switch links.checkConfirm(token) {
        case .invalid: return .invalid
        case .expired(let t): return .expired(try await expired(t))
        case .valid(let t):
            guard let (signup, magnet, workspace) = try await target(t) else { return .expired(try await expired(t)) }
            return signup.state == .confirmed
                ? .confirmed(giftToken: giftToken(signup, magnet)) : .pending(signup, magnet, workspace)
        }
    }

    public func confirm(token: String, evidence: ConsentEvidence) async throws -> Confirmation {
        let target: LeadLinks.DOITarget
        switch links.checkConfirm(token) {
        case .invalid: return .invalid
        case .expired(let t): return .expired(try await expired(t))
        case .valid(let t): target = t
        }
        guard let (signup, magnet, workspace) = try await self.target(target) else {
            return .expired(try await expired(target))
        }
        if signup.state == .confirmed {
            return .confirmed(giftToken: giftToken(signup, magnet))
        }
        // The delivery mail is composed first, so that the confirmation, its mail and the first follow-up commit
        // together: a failure in between leaves the signup pending, to be confirmed again, never confirmed without
        // its gift mail.
        let delivery = try await deliveryDraft(signup: signup, magnet: magnet, workspace: workspace)
        let confirmed = try await store.db.transaction { tx -> LeadSignup? in
            guard
                let confirmed = try await store.confirmSignup(
                    tx, signupID: signup.id, nonce: target.nonce, evidence: evidence)
            else { return nil }
            if let delivery { try await write(delivery, signupID: confirmed.id, tx) }
            if let job = followUpJob(signup: confirmed, magnet: magnet) { _ = try await store.enqueue(tx, job) }
            return confirmed
        }
        guard let confirmed else {
            // Lost to a concurrent confirmation (then it is confirmed), or it expired a moment ago.
            if let now = try await store.leadSignup(id: signup.id), now.state == .confirmed {
                return .confirmed(giftToken: giftToken(now, magnet))
            }
            return .expired(Expired(workspace: workspace, landingURL: landingURL(magnet, workspace)))
        }
        logger.info(
            "lead signup confirmed", metadata: ["signup": "\(signup.id)", "magnet": "\(magnet.slug)"])
        return .confirmed(giftToken: giftToken(confirmed, magnet))
    }

    /// The signup a confirmation link names, with its magnet and workspace; nil once superseded or deleted.
    func target(_ t: LeadLinks.DOITarget) async throws -> (LeadSignup, LeadMagnet, Workspace)? {
        guard let signup = try await store.leadSignup(workspaceID: t.workspaceID, doiNonce: t.nonce),
            let magnet = try await store.leadMagnet(workspaceID: t.workspaceID, id: signup.magnetID),
            let workspace = try await store.workspace(id: t.workspaceID)
        else { return nil }
        return (signup, magnet, workspace)
    }

    func expired(_ t: LeadLinks.DOITarget) async throws -> Expired {
        if let (_, magnet, workspace) = try await target(t) {
            return Expired(workspace: workspace, landingURL: landingURL(magnet, workspace))
        }
        return Expired(workspace: try await store.workspace(id: t.workspaceID), landingURL: nil)
    }

    func landingURL(_ magnet: LeadMagnet, _ workspace: Workspace) -> String {
        links.landingURL(workspaceSlug: workspace.slug, magnetSlug: magnet.slug)
    }

    func giftToken(_ signup: LeadSignup, _ magnet: LeadMagnet) -> String {
        links.giftToken(
            workspaceID: signup.workspaceID, signupID: signup.id,
            expires: store.clock.now().addingTimeInterval(magnet.downloadLinkLifetime))
    }

    // MARK: Gift

    /// The delivery mail: the gift page's link, valid for the magnet's download-link lifetime. Transactional:
    /// the person just asked for it.
    public func deliver(signup: LeadSignup, magnet: LeadMagnet, workspace: Workspace) async throws {
        guard let delivery = try await deliveryDraft(signup: signup, magnet: magnet, workspace: workspace) else {
            return
        }
        try await store.db.transaction { tx in try await write(delivery, signupID: signup.id, tx) }
    }

    /// Puts a delivery mail in the outbox and notes it on the signup; nothing when the contact was erased since the
    /// draft was made.
    func write(_ delivery: (draft: OutboxDraft, issued: Date), signupID: Int64, _ tx: any SQLExecutor) async throws {
        guard let id = try await store.enqueueMailUnlessErased(tx, delivery.draft) else { return }
        try await store.noteDeliveryMail(tx, signupID: signupID, outboxID: id, at: delivery.issued)
    }

    /// The gift's delivery mail for the signup's contact, composed with a link valid from now; nil for an erased
    /// contact.
    func deliveryDraft(signup: LeadSignup, magnet: LeadMagnet, workspace: Workspace) async throws -> (
        draft: OutboxDraft, issued: Date
    )? {
        guard let contact = try await store.contact(workspaceID: signup.workspaceID, id: signup.contactID),
            contact.erasedAt == nil
        else { return nil }
        let issued = store.clock.now()
        let expires = issued.addingTimeInterval(magnet.downloadLinkLifetime)
        let draft = try await mailer.draft(
            workspace: workspace, kind: .giftDelivery, to: try MailRecipient(contact),
            values: [
                "gift_title": magnet.giftTitle,
                "download_url": links.giftURL(workspaceID: signup.workspaceID, signupID: signup.id, expires: expires),
                "expires_at": Self.formatDate(expires, locale: contact.locale, timeZone: workspace.timeZone),
                "is_file": magnet.giftKind == .file,
            ])
        return (draft, issued)
    }

    static func formatDate(_ date: Date, locale: String, timeZone: String) -> String {
        let f = DateFormatter()
        f.timeZone = TimeZone(identifier: timeZone) ?? TimeZone(identifier: "Europe/Berlin")
        f.locale = Foundation.Locale(identifier: locale == "en" ? "en_GB" : "de_DE")
        f.dateFormat = locale == "en" ? "d MMMM yyyy, HH:mm" : "dd.MM.yyyy, HH:mm 'Uhr'"
        return f.string(from: date)
    }

    public struct Gift: Sendable {
        public var signup: LeadSignup
        public var magnet: LeadMagnet
        public var workspace: Workspace
        public var voucherCode: String?
        public var shipment: LeadShipment?
    }

    public enum GiftAccess: Sendable {
        case valid(Gift)
        case expired(Gift)
        case invalid
    }

    public func gift(token: String) async throws -> GiftAccess {
        let target: LeadLinks.GiftTarget
        let expired: Bool
        switch links.checkGift(token) {
        case .invalid: return .invalid
        case .valid(let t): (target, expired) = (t, false)
        case .expired(let t): (target, expired) = (t, true)
        }
        guard let signup = try await store.leadSignup(id: target.signupID), signup.workspaceID == target.workspaceID,
            signup.state == .confirmed, signup.erasedAt == nil,
            let magnet = try await store.leadMagnet(workspaceID: target.workspaceID, id: signup.magnetID),
            let workspace = try await store.workspace(id: target.workspaceID)
        else { return .invalid }
        let gift = Gift(
            signup: signup, magnet: magnet, workspace: workspace,
            voucherCode: magnet.giftKind == .voucher ? try await store.voucherCode(signupID: signup.id) : nil,
            shipment: magnet.giftKind == .sample ? try await store.shipment(signupID: signup.id) : nil)
        return expired ? .expired(gift) : .valid(gift)
    }

    /// How long after the confirmation an expired gift link can still bring a fresh one.
    public static let renewalHorizon: TimeInterval = 365 * 86_400

    /// A fresh delivery mail for an expired link, at most once per resend window. The answer is the same either
    /// way; the token already names the signup, so it reveals nothing new.
    public func renew(token: String) async throws -> Bool {
        guard case .expired(let gift) = try await gift(token: token) else { return false }
        try await renew(gift)
        return true
    }

    /// Once the last mail's link has expired too, a new one may go out at once; otherwise at most one per resend
    /// window (a still-valid link is already in the inbox, so "we have sent you a link" stays true). Token
    /// expiries are whole seconds (rounded down), so a link may die up to a second early.
    ///
    /// Anyone holding an old link can ask, so a fresh link goes out only for a year after the confirmation and while
    /// the person's consent to the purpose stands and their address is not suppressed (an objection, a bounce).
    public func renew(_ gift: Gift) async throws {
        guard let confirmedAt = gift.signup.confirmation?.at,
            store.clock.now().timeIntervalSince(confirmedAt) <= Self.renewalHorizon,
            let contact = try await store.contact(workspaceID: gift.signup.workspaceID, id: gift.signup.contactID),
            contact.erasedAt == nil,
            try await store.consentState(
                store.db, workspaceID: contact.workspaceID, contactID: contact.id, purpose: gift.signup.purpose)
                == .granted,
            try await store.suppressionReason(
                store.db, workspaceID: contact.workspaceID, emailHash: store.suppressionHash(contact.emailNormalized))
                == nil
        else { return }
        let wait = max(0, min(gift.magnet.resendWindow, gift.magnet.downloadLinkLifetime) - 1)
        guard
            try await store.claimDeliveryMail(
                store.db, signupID: gift.signup.id, notSince: store.clock.now().addingTimeInterval(-wait)) != nil
        else { return }
        try await deliver(signup: gift.signup, magnet: gift.magnet, workspace: gift.workspace)
    }

    /// The file's bytes for a valid gift link; counts the download.
    public func download(_ gift: Gift) async throws -> (LeadMagnet.StoredFile, [UInt8])? {
        guard gift.magnet.giftKind == .file, let file = gift.magnet.file,
            let bytes = try await blobs.get(file.key)
        else { return nil }
        try await store.recordDownload(signupID: gift.signup.id, magnetID: gift.magnet.id)
        return (file, bytes)
    }

    /// Stores an upload and points the magnet at it.
    public func upload(
        workspaceID: WorkspaceID, magnetID: LeadMagnetID, name: String, contentType: String, bytes: [UInt8],
        actor: String
    ) async throws -> LeadMagnet {
        guard !bytes.isEmpty else { throw DomainError.invalid("file_empty", "The file is empty.", field: "file") }
        guard bytes.count <= Self.maxFileBytes else {
            throw DomainError(.tooLarge, code: "file_too_large", "A gift file has at most 50 MB.", field: "file")
        }
        let safeName = Self.safeFileName(name)
        let key = try await blobs.put(bytes)
        return try await store.setLeadMagnetFile(
            workspaceID: workspaceID, id: magnetID,
            file: .init(
                key: key, name: safeName, contentType: Self.safeContentType(contentType), size: Int64(bytes.count),
                sha256: key), actor: actor)
    }

    public static let maxFileBytes = 50 * 1_048_576

    /// A file name without path, control characters or quotes; "download" if nothing is left.
    public static func safeFileName(_ name: String) -> String {
        let last = name.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        let cleaned = String(last.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F && $0 != "\"" })
            .trimmingCharacters(in: .whitespaces)
        return cleaned.isEmpty ? "download" : String(cleaned.prefix(200))
    }

    static func safeContentType(_ type: String) -> String {
        let t = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        let ok =
            t.split(separator: "/").count == 2
            && t.unicodeScalars.allSatisfy {
                CharacterSet.alphanumerics.contains($0) || "/.+-".unicodeScalars.contains($0)
            }
        // HTML and SVG would run script on our origin when opened: served as opaque bytes instead.
        guard ok, !t.contains("html"), !t.contains("svg"), !t.contains("xml") else { return "application/octet-stream" }
        return t
    }

    // MARK: Give, then ask

    /// The first "give, then ask" step of a newly confirmed signup, if the magnet has any.
    func followUpJob(signup: LeadSignup, magnet: LeadMagnet) -> JobRequest? {
        guard let first = magnet.followUps.first else { return nil }
        return FollowUps.job(
            signup: signup, step: 0, after: first.afterSeconds, from: signup.confirmation?.at ?? store.clock.now())
    }

    // MARK: Expiry

    public func expire() async throws -> Int {
        let n = try await store.expirePendingSignups()
        if n > 0 { logger.info("expired unconfirmed lead signups", metadata: ["count": "\(n)"]) }
        return n
    }
}

/// The disposable-domain list in force: the shipped one plus the additions in the database, re-read every five
/// minutes so that an update by the CLI reaches every node.
public final class DisposableList: @unchecked Sendable {
    private let lock = NSLock()
    private var list: DisposableDomains
    private var loadedAt: Date?
    private let store: Store
    private let refresh: TimeInterval

    public init(store: Store, shipped: DisposableDomains = .shipped, refresh: TimeInterval = 300) {
        self.store = store
        self.list = shipped
        self.refresh = refresh
    }

    public func current() async -> DisposableDomains {
        let now = store.clock.now()
        let (cached, stale) = lock.withLock { (list, loadedAt.map { now.timeIntervalSince($0) > refresh } ?? true) }
        guard stale else { return cached }
        guard let additions = try? await store.disposableDomainAdditions() else { return cached }
        return lock.withLock {
            list = DisposableDomains.shipped.adding(additions)
            loadedAt = now
            return list
        }
    }

    /// Forces a reload at the next check (after this node added domains).
    public func invalidate() { lock.withLock { loadedAt = nil } }
}
