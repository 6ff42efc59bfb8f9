import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// The referral programme's operations: joining, attribution, the reward lifecycle and its files.
/// Decisions live in `ReferralRules` (core); what must happen exactly once is guarded by the store's constraints.
public struct ReferralService: Sendable {
    public let store: Store
    let mailer: Mailer
    let links: ReferralLinks
    let disposable: @Sendable () async -> DisposableDomains
    let random: any RandomSource
    let logger: Logger
    let targets: RedirectCache

    init(
        store: Store, mailer: Mailer, links: ReferralLinks,
        disposable: @escaping @Sendable () async -> DisposableDomains,
        random: any RandomSource, logger: Logger, targets: RedirectCache
    ) {
        self.store = store
        self.mailer = mailer
        self.links = links
        self.disposable = disposable
        self.random = random
        self.logger = logger
        self.targets = targets
    }

    // MARK: Programme

    public func saveProgramme(workspaceID: WorkspaceID, _ p: ReferralProgramme, actor: String, seen: Int64? = nil)
        async throws
    {
        try await store.saveReferralProgramme(workspaceID: workspaceID, p, actor: actor, seen: seen)
        targets.drop(workspaceID: workspaceID)
    }

    // MARK: Joining

    /// How a person asks to join: the consent text they saw and the evidence of their click.
    public struct JoinRequest: Sendable {
        public var email: EmailAddress
        /// The number of one of their orders, which proves the address is theirs (public form); nil from the API,
        /// where the shop vouches for its logged-in customer.
        public var orderNumber: String?
        public var consentText: String
        public var locale: String
        public var evidence: ConsentEvidence
        public var source: String
        public var pageURL: String?
        public var device: String?

        public init(
            email: EmailAddress, orderNumber: String?, consentText: String, locale: String, evidence: ConsentEvidence,
            source: String, pageURL: String? = nil, device: String? = nil
        ) {
            self.email = email
            self.orderNumber = orderNumber
            self.consentText = consentText
            self.locale = locale
            self.evidence = evidence
            self.source = source
            self.pageURL = pageURL
            self.device = device
        }
    }

    /// A customer with a delivered order joins, opting in to programme mails. The welcome mail with the personal
    /// page's link goes out once, on joining. Errors never tell a stranger whether an address is a customer.
    public func join(workspace: Workspace, _ r: JoinRequest) async throws -> Advocate {
        let notFound = DomainError.invalid(
            "join_not_found", "We could not find a delivered order for this address and order number.",
            field: "email")
        guard let contact = try await store.contact(workspaceID: workspace.id, email: r.email), contact.erasedAt == nil
        else { throw notFound }
        if let number = r.orderNumber {
            guard let order = try await store.order(workspaceID: workspace.id, externalID: number),
                order.contactID == contact.id
            else { throw notFound }
        }
        let programme = try await store.referralProgramme(workspaceID: workspace.id)
        guard programme.active else {
            throw DomainError.conflict("programme_inactive", "The referral programme is not open at the moment.")
        }
        let change = ConsentChange(
            purpose: .referralProgram, action: .grant, text: r.consentText, textLocale: r.locale, source: r.source,
            formID: "referral-join", pageURL: r.pageURL, evidence: r.evidence)
        let random = self.random
        let first = contact.firstName
        let result: (advocate: Advocate, joined: Bool)
        do {
            result = try await store.joinReferrals(
                workspaceID: workspace.id, contactID: contact.id, consent: change, device: r.device,
                code: { ReferralCode.make(firstName: first, random: random.bytes(4)) })
        } catch Store.JoinError.noDeliveredOrder {
            throw r.orderNumber == nil
                ? DomainError.conflict(
                    "no_delivered_order", "Only a customer with a delivered order can join the programme.",
                    field: "email") : notFound
        }
        if result.joined {
            try await mailer.enqueue(
                workspace: workspace, kind: .referralWelcome, to: try MailRecipient(contact),
                values: [
                    "code": result.advocate.code, "page_url": links.pageURL(result.advocate),
                    "share_url": links.shareURL(code: result.advocate.code),
                    "incentive": programme.friendIncentive,
                ])
        }
        targets.drop(code: result.advocate.code)
        return result.advocate
    }

    /// The advocate leaves from the personal page: the programme's consent is withdrawn (with its evidence), so the
    /// code stops working at once on this node (the others' caches follow within their TTL). Earned rewards stay.
    public func leave(_ advocate: Advocate, evidence: ConsentEvidence) async throws {
        _ = try await store.db.transaction { tx in
            try await self.store.applyConsent(
                tx, workspaceID: advocate.workspaceID, contactID: advocate.contactID,
                change: ConsentChange(
                    purpose: .referralProgram, action: .withdraw, text: nil, source: "referral_page",
                    evidence: evidence))
        }
        targets.drop(code: advocate.code)
    }

    // MARK: Order events (jobs, inside the job's transaction)

    func orderOf(eventID: Int64, _ tx: any SQLExecutor) async throws -> (WorkspaceID, OrderID)? {
        guard
            let row = try await tx.first(
                "SELECT workspace_id, subject_id FROM domain_events WHERE id = ? AND subject_type = 'order'", eventID)
        else { return nil }
        return (row.int("workspace_id"), row.int("subject_id"))
    }

    /// `OrderPlaced`: attribute the order, decide on it, create its rewards; redeem a referral voucher it uses.
    public func attribute(eventID: Int64, tx: any SQLExecutor, disposable list: DisposableDomains) async throws {
        try await attribute(eventIDs: [eventID], tx: tx, disposable: list)
    }

    /// `attribute(eventID:)` for many events, as if one after another in the given order. Most orders carry
    /// nothing to attribute (no code, no answer, no known device, or no active programme): one look-up for all of
    /// them decides that, and only the rest take the full decision.
    public func attribute(eventIDs: [Int64], tx: any SQLExecutor, disposable list: DisposableDomains) async throws {
        let orders = try await store.placedOrders(tx, eventIDs: eventIDs)
        var active: [WorkspaceID: Bool] = [:]
        for eventID in eventIDs {
            guard let order = orders[eventID] else { continue }
            let (workspaceID, orderID) = (order.workspaceID, order.orderID)
            if let coupon = order.couponCode {
                try await store.redeemVoucher(tx, workspaceID: workspaceID, code: coupon)
            }
            guard order.hasCandidate else { continue }
            if active[workspaceID] == nil {
                active[workspaceID] = try await store.referralProgramme(workspaceID: workspaceID, tx).active
            }
            guard active[workspaceID] == true,
                let referral = try await store.attributeOrder(
                    tx, workspaceID: workspaceID, orderID: orderID, isDisposable: { list.contains(domain: $0) })
            else { continue }
            logger.info(
                "referral decided",
                metadata: [
                    "referral": "\(referral.id)", "status": "\(referral.status.rawValue)",
                    "reasons": "\(referral.reasons.map(\.rawValue).joined(separator: ","))",
                ])
        }
    }

    public func currentDisposable() async -> DisposableDomains { await disposable() }

    /// `OrderDelivered`: the return window starts.
    public func hold(eventID: Int64, tx: any SQLExecutor) async throws {
        guard let (workspaceID, orderID) = try await orderOf(eventID: eventID, tx),
            // Under the order's row lock, after an attribution of the same order has committed (`lockOrder`).
            let delivered = try await tx.first(
                "SELECT delivered_at FROM orders WHERE id = ?" + tx.dialect.rowLockClause, orderID)?.optionalDate(
                    "delivered_at")
        else { return }
        try await store.holdRewards(tx, workspaceID: workspaceID, orderID: orderID, deliveredAt: delivered)
    }

    /// `OrderReturned` / `OrderCancelled`: void before issue, claw back after. `OrderItemsReturned` (a partial
    /// return): the same, if what the friend kept no longer qualifies.
    public func void(eventID: Int64, tx: any SQLExecutor) async throws {
        guard let (workspaceID, orderID) = try await orderOf(eventID: eventID, tx),
            let row = try await tx.first("SELECT status FROM orders WHERE id = ?" + tx.dialect.rowLockClause, orderID),
            let status = OrderStatus(rawValue: row.text("status"))
        else { return }
        if status.hasEnded {
            try await store.voidReferral(
                tx, workspaceID: workspaceID, orderID: orderID, reason: "order_\(status.rawValue)")
        } else {
            try await store.recheckReferral(tx, workspaceID: workspaceID, orderID: orderID)
        }
    }

    // MARK: Lifecycle

    /// `referrals.release`: a reward's window has passed. Approves it when the programme approves by itself and
    /// the referral is clean, then issues it. Safe to run any number of times.
    public func release(rewardID: Int64) async throws {
        guard let reward = try await store.reward(id: rewardID) else { return }
        let programme = try await store.referralProgramme(workspaceID: reward.workspaceID)
        switch reward.state {
        case .held:
            guard programme.autoApprove,
                try await store.approveReward(workspaceID: reward.workspaceID, id: rewardID, actor: "rules")
            else { return }
            try await issue(rewardID: rewardID, workspaceID: reward.workspaceID)
        case .approved:
            try await issue(rewardID: rewardID, workspaceID: reward.workspaceID)
        case .issued where reward.outboxID == nil:
            try await mail(reward)
        default:
            return
        }
    }

    /// A person approves a held reward whose window has passed; it is issued at once.
    public func approve(workspaceID: WorkspaceID, rewardID: Int64, actor: String) async throws {
        try await store.approveReward(workspaceID: workspaceID, id: rewardID, actor: actor)
        try await issue(rewardID: rewardID, workspaceID: workspaceID)
    }

    func issue(rewardID: Int64, workspaceID: WorkspaceID) async throws {
        guard let workspace = try await store.workspace(id: workspaceID) else { return }
        let programme = try await store.referralProgramme(workspaceID: workspaceID)
        let reward = try await store.reward(id: rewardID)
        let prefix =
            reward?.reason == "milestone"
            ? programme.milestones.first { Int64($0.count) == reward?.milestone }?.reward.voucherPrefix
            : programme.advocateReward.voucherPrefix
        let code = VoucherCodes.generate(prefix: prefix ?? "", random: random.bytes(16))
        guard
            let issued = try await store.issueReward(
                workspaceID: workspaceID, id: rewardID, generatedCode: code, timeZone: workspace.timeZone)
        else { return }
        try await mail(issued.reward)
        for milestone in issued.milestones { try await issue(rewardID: milestone, workspaceID: workspaceID) }
    }

    /// The reward mail to the advocate (transactional: it tells them what they are owed), once however often it
    /// is called with the same reward, also at the same time (the issuing job and the sweep). The friend is never
    /// mailed.
    public func mail(_ reward: Reward) async throws {
        guard reward.beneficiary == "advocate",
            let workspace = try await store.workspace(id: reward.workspaceID),
            let advocate = try await store.advocate(workspaceID: reward.workspaceID, id: reward.advocateID),
            let contact = try await store.contact(workspaceID: reward.workspaceID, id: reward.contactID),
            contact.erasedAt == nil
        else {
            try await store.db.transaction { tx in
                try await store.noteRewardMail(workspaceID: reward.workspaceID, rewardID: reward.id, outboxID: nil, tx)
            }
            return
        }
        let currency = Currency(stored: reward.currency)
        var premium: Premium?
        if let id = reward.premiumID {
            premium = try await store.premium(workspaceID: reward.workspaceID, id: id)
        }
        let payoutDetailsMissing = reward.type == .cash && advocate.payoutIBAN == nil
        let draft = try await mailer.draft(
            workspace: workspace, kind: .referralReward, to: try MailRecipient(contact),
            values: [
                "is_milestone": reward.reason == "milestone",
                "is_voucher": reward.type == .voucher, "is_credit": reward.type == .credit,
                "is_cash": reward.type == .cash, "is_premium": reward.type == .premium,
                "value": Money(minor: reward.valueMinor, currency: currency).formatted(locale: contact.locale),
                "voucher_code": reward.voucherCode ?? "",
                "premium_name": premium?.name ?? "",
                "needs_choice": reward.type == .premium && premium == nil,
                "needs_bank": payoutDetailsMissing,
                "page_url": links.pageURL(advocate),
            ])
        try await store.db.transaction { tx in
            guard try await store.claimRewardMail(tx, rewardID: reward.id) else { return }
            let id = try await store.enqueueMailUnlessErased(tx, draft)
            try await store.noteRewardMail(workspaceID: reward.workspaceID, rewardID: reward.id, outboxID: id, tx)
        }
    }

    /// Marks a queued premium as shipped and tells the advocate (transactional: it is what they are owed). The
    /// notice is drafted first and committed with the state change; an erased advocate gets none.
    public func markShipped(workspaceID: WorkspaceID, rewardID: Int64, actor: String) async throws {
        var notice: OutboxDraft?
        if let reward = try await store.reward(id: rewardID), reward.workspaceID == workspaceID,
            reward.beneficiary == "advocate", let premiumID = reward.premiumID,
            let premium = try await store.premium(workspaceID: workspaceID, id: premiumID),
            let workspace = try await store.workspace(id: workspaceID),
            let advocate = try await store.advocate(workspaceID: workspaceID, id: reward.advocateID),
            let contact = try await store.contact(workspaceID: workspaceID, id: reward.contactID),
            contact.erasedAt == nil
        {
            notice = try await mailer.draft(
                workspace: workspace, kind: .referralPremiumShipped, to: try MailRecipient(contact),
                values: ["premium_name": premium.name, "page_url": links.pageURL(advocate)])
        }
        try await store.markFulfilmentShipped(workspaceID: workspaceID, rewardID: rewardID, actor: actor, mail: notice)
    }

    /// `referrals.sweep`: backs up the per-reward jobs (a node that died, a reward approved in review).
    public func sweep() async throws -> Int {
        var done = 0
        var after: Int64 = 0
        let pageSize = 200
        while true {
            let page = try await store.dueRewards(afterID: after, limit: pageSize)
            for due in page {
                do {
                    try await release(rewardID: due.id)
                    done += 1
                } catch {
                    logger.warning("referral release failed", metadata: ["reward": "\(due.id)", "error": "\(error)"])
                }
            }
            guard page.count == pageSize, let last = page.last else { return done }
            after = last.id
        }
    }

    // MARK: Files

    /// A SEPA credit-transfer file (pain.001.001.09) for every open payout with bank details; they move to a
    /// new batch, so the next file does not pay them again.
    public func exportPayouts(workspace: Workspace, actor: String) async throws -> (batchID: Int64, xml: String) {
        let payer = try await payer(workspaceID: workspace.id)
        let messageID =
            "RCP-\(workspace.id)-\(Int64(store.clock.now().timeIntervalSince1970))-"
            + VoucherCodes.generate(prefix: "", random: random.bytes(16)).replacingOccurrences(of: "-", with: "")
        let (batchID, payouts) = try await store.createPayoutBatch(
            workspaceID: workspace.id, messageID: messageID, actor: actor)
        return (batchID, try await payoutFile(workspace: workspace, batchID: batchID, payouts: payouts, payer: payer))
    }

    /// The file of a batch written before (the same transfers, the same message id).
    public func payoutFile(workspace: Workspace, batchID: Int64) async throws -> String {
        let payer = try await payer(workspaceID: workspace.id)
        let payouts = try await store.payouts(workspaceID: workspace.id).filter { $0.batchID == batchID }
        return try await payoutFile(workspace: workspace, batchID: batchID, payouts: payouts, payer: payer)
    }

    func payer(workspaceID: WorkspaceID) async throws -> SEPA.Debtor {
        guard let payer = try await store.referralProgramme(workspaceID: workspaceID).payer else {
            throw DomainError.invalid(
                "payer_missing", "Enter the account the rewards are paid from (name and IBAN) first.",
                field: "payer_iban")
        }
        return payer
    }

    func payoutFile(workspace: Workspace, batchID: Int64, payouts: [Store.Payout], payer: SEPA.Debtor)
        async throws -> String
    {
        guard let batch = try await store.payoutBatch(workspaceID: workspace.id, id: batchID) else {
            throw DomainError.notFound("Payout batch")
        }
        let transfers = payouts.compactMap { p -> SEPA.Transfer? in
            guard let iban = p.iban.flatMap(IBAN.init) else { return nil }
            return SEPA.Transfer(
                endToEndID: "RCP-R\(p.rewardID)", creditorName: p.name ?? p.code, creditorIBAN: iban,
                amount: Money(minor: p.amountMinor, currency: .eur),
                remittance: "\(workspace.name) Empfehlungspraemie \(p.code)")
        }
        do {
            return try SEPA.creditTransfer(
                messageID: batch.messageID, createdAt: batch.createdAt,
                executionDate: batch.createdAt.addingTimeInterval(86_400), debtor: payer, transfers: transfers,
                timeZone: TimeZone(identifier: workspace.timeZone) ?? .current)
        } catch {
            throw DomainError.invalid("payout_file_invalid", "The payout file could not be written: \(error.reason)")
        }
    }

    /// §22 Nr. 3 EStG: reward value per person in a year, with the €256 threshold marked.
    public func taxCSV(workspaceID: WorkspaceID, year: Int) async throws -> String {
        let rows = try await store.rewardTax(workspaceID: workspaceID, year: year).map { r in
            [
                String(year), String(r.contactID), r.name, r.email, String(r.rewards),
                Money(minor: r.totalMinor, currency: .eur).decimalString, r.reachesThreshold ? "yes" : "no",
            ]
        }
        return CSV.write([["year", "contact_id", "name", "email", "rewards", "total", "reaches_256_eur"]] + rows)
    }

    /// A customer's store credit, by address: the ledger's bookings less its reversals, in the programme's
    /// currency. An unknown address is not found.
    public func credit(workspaceID: WorkspaceID, email: EmailAddress) async throws -> (contact: Contact, balance: Money)
    {
        let contact = try await customer(workspaceID: workspaceID, email: email)
        let programme = try await store.referralProgramme(workspaceID: workspaceID)
        let currency = Currency(stored: programme.currency)
        let balance = try await store.creditBalance(
            workspaceID: workspaceID, contactID: contact.id, currency: currency.code)
        return (contact, Money(minor: balance, currency: currency))
    }

    /// Spends a customer's credit on an order at the shop's checkout (`Store.redeemCredit`): the amount in the
    /// programme's currency, once per order. A currency other than the programme's is refused, not converted.
    public func redeemCredit(
        workspaceID: WorkspaceID, email: EmailAddress, orderID: String, amount: String, currency: String?, actor: String
    ) async throws -> (redemption: Store.CreditRedemption, created: Bool) {
        let orderRef = try OrderSubmission.externalID(orderID, field: "order_id")
        let programme = try await store.referralProgramme(workspaceID: workspaceID)
        let credit = try Currency(programme.currency)
        if let currency, currency.uppercased() != credit.code {
            throw DomainError.invalid(
                "currency_mismatch", "Credit is kept in \(credit.code), not \(currency).", field: "currency")
        }
        let money = try Money(decimal: amount, currency: credit, field: "amount")
        guard money.minor > 0 else {
            throw DomainError.invalid("amount_invalid", "Spend an amount greater than zero.", field: "amount")
        }
        return try await store.redeemCredit(
            workspaceID: workspaceID, contactID: try await customer(workspaceID: workspaceID, email: email).id,
            orderRef: orderRef, amountMinor: money.minor, currency: credit.code, actor: actor)
    }

    /// The credit an order spent, by the shop's order id.
    public func creditRedemption(workspaceID: WorkspaceID, orderID: String) async throws -> Store.CreditRedemption {
        let orderRef = try OrderSubmission.externalID(orderID, field: "order_id")
        guard let redemption = try await store.creditRedemption(workspaceID: workspaceID, orderRef: orderRef) else {
            throw DomainError.notFound("Credit redemption")
        }
        return redemption
    }

    /// The shop's customer with this address; an unknown one is not found.
    func customer(workspaceID: WorkspaceID, email: EmailAddress) async throws -> Contact {
        guard let contact = try await store.contact(workspaceID: workspaceID, email: email) else {
            throw DomainError.notFound("Customer")
        }
        return contact
    }

    /// Gives the credit an order spent back, once (the order was cancelled, or its redemption changes).
    public func releaseCredit(workspaceID: WorkspaceID, orderID: String, actor: String) async throws
        -> Store.CreditRedemption
    {
        let orderRef = try OrderSubmission.externalID(orderID, field: "order_id")
        guard let released = try await store.releaseCredit(workspaceID: workspaceID, orderRef: orderRef, actor: actor)
        else { throw DomainError.notFound("Credit redemption") }
        return released
    }

    /// The cash payouts, open and exported, for the merchant's books or a bank without SEPA files: one row a
    /// payout, with the batch of the SEPA file that carried it (empty while open). The IBAN is whole, as in the
    /// SEPA file: the list exists to pay.
    public func payoutCSV(workspaceID: WorkspaceID) async throws -> String {
        let rows = try await store.payouts(workspaceID: workspaceID).map { p in
            [
                String(p.rewardID), p.code, p.name ?? "", p.iban ?? "",
                Money(minor: p.amountMinor, currency: Currency(stored: p.currency)).decimalString, p.currency,
                p.state, p.batchID.map(String.init) ?? "", ISO8601.format(p.createdAt),
            ]
        }
        return CSV.write(
            [["reward_id", "code", "name", "iban", "amount", "currency", "state", "batch_id", "created_at"]] + rows)
    }

    public func fulfilmentCSV(workspaceID: WorkspaceID) async throws -> String {
        let rows = try await store.fulfilments(workspaceID: workspaceID).map { f in
            [
                String(f.rewardID), f.state, f.premium ?? "", f.name, f.email, f.street ?? "", f.postalCode ?? "",
                f.city ?? "", f.country ?? "", ISO8601.format(f.createdAt),
            ]
        }
        return CSV.write(
            [
                [
                    "reward_id", "state", "premium", "name", "email", "street", "postal_code", "city", "country",
                    "created_at",
                ]
            ] + rows)
    }
}
