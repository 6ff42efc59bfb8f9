import Foundation
import ReciprocityCore

public typealias AdvocateID = Int64

/// A customer who joined the referral programme.
public struct Advocate: Sendable, Equatable, Codable {
    public var id: AdvocateID
    public var workspaceID: WorkspaceID
    public var contactID: ContactID
    public var code: String
    public var active: Bool
    /// Part of the personal page's signed link; raising it revokes every earlier link.
    public var linkVersion: Int64
    public var premiumID: Int64?
    public var payoutName: String?
    public var payoutIBAN: String?
    public var joinedAt: Date
    public var email: String
    public var firstName: String?
    public var lastName: String?
    public var locale: String
}

public struct Referral: Sendable, Equatable, Codable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var advocateID: AdvocateID
    public var advocateCode: String
    public var orderID: OrderID
    public var orderExternalID: String
    public var friendContactID: ContactID
    /// How the order named the advocate: `ref`, `coupon`, `asked` (the "who referred you?" field) or `click`.
    public var via: String
    public var status: ReferralStatus
    public var reasons: [ReferralReason]
    public var baseMinor: Int64
    public var revenueMinor: Int64
    public var currency: String
    public var createdAt: Date
    public var decidedBy: String?
}

public struct Reward: Sendable, Equatable, Codable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var referralID: Int64?
    public var advocateID: AdvocateID
    public var contactID: ContactID
    public var beneficiary: String
    /// `referral` or `milestone`.
    public var reason: String
    public var milestone: Int64
    public var type: RewardType
    public var valueMinor: Int64
    public var currency: String
    public var state: RewardState
    public var heldUntil: Date?
    public var approvedBy: String?
    public var issuedAt: Date?
    public var taxYear: Int64?
    public var voucherCode: String?
    public var premiumID: Int64?
    public var outboxID: Int64?
    public var endReason: String?
    public var createdAt: Date
}

public struct Premium: Sendable, Equatable, Codable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var name: String
    public var description: String
    public var imageURL: String?
    public var costMinor: Int64
    public var shippingMinor: Int64
    public var currency: String
    public var stock: Int64
    public var active: Bool

    public init(
        id: Int64, workspaceID: WorkspaceID, name: String, description: String, imageURL: String?, costMinor: Int64,
        shippingMinor: Int64, currency: String, stock: Int64, active: Bool
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.name = name
        self.description = description
        self.imageURL = imageURL
        self.costMinor = costMinor
        self.shippingMinor = shippingMinor
        self.currency = currency
        self.stock = stock
        self.active = active
    }
}

extension Premium {
    /// Changes to a catalogue item; a field left nil keeps its value (`imageURL: .some(nil)` removes the picture).
    public struct Change: Sendable {
        public var name: String?
        public var description: String?
        public var imageURL: String??
        public var costMinor: Int64?
        public var shippingMinor: Int64?
        public var stock: Int64?
        public var active: Bool?

        public init(
            name: String? = nil, description: String? = nil, imageURL: String?? = nil, costMinor: Int64? = nil,
            shippingMinor: Int64? = nil, stock: Int64? = nil, active: Bool? = nil
        ) {
            self.name = name
            self.description = description
            self.imageURL = imageURL
            self.costMinor = costMinor
            self.shippingMinor = shippingMinor
            self.stock = stock
            self.active = active
        }

        public func apply(to p: inout Premium) {
            p.name = name ?? p.name
            p.description = description ?? p.description
            p.imageURL = imageURL ?? p.imageURL
            p.costMinor = costMinor ?? p.costMinor
            p.shippingMinor = shippingMinor ?? p.shippingMinor
            p.stock = stock ?? p.stock
            p.active = active ?? p.active
        }
    }
}

/// One click on `/r/{code}`, as the redirect saw it: no address is kept, only keyed hashes and a browser family.
public struct ReferralClick: Sendable {
    public var workspaceID: WorkspaceID
    public var advocateID: AdvocateID
    public var at: Date
    public var ipHash: String
    public var uaFamily: String
    public var device: String
    public init(
        workspaceID: WorkspaceID, advocateID: AdvocateID, at: Date, ipHash: String, uaFamily: String, device: String
    ) {
        self.workspaceID = workspaceID
        self.advocateID = advocateID
        self.at = at
        self.ipHash = ipHash
        self.uaFamily = uaFamily
        self.device = device
    }
}

/// What `/r/{code}` needs to answer, cached by the redirect.
public struct ReferralTarget: Sendable {
    public var workspaceID: WorkspaceID
    public var advocateID: AdvocateID
    public var code: String
    public var programme: ReferralProgramme
}

extension Store {
    public static let referralAttributeJob = "referrals.attribute"
    public static let referralHoldJob = "referrals.hold"
    public static let referralVoidJob = "referrals.void"
    public static let referralReleaseJob = "referrals.release"
    public static let referralSweepJob = "referrals.sweep"

    /// A SQL `IN` list of states named by the core (fixed identifiers, never user input).
    static func sqlList<S: RawRepresentable<String>>(_ values: [S]) -> String {
        "(" + values.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"
    }

    /// The reward states a void may leave: whatever `RewardState.canTransition(to: .void)` allows.
    static let voidable = sqlList(RewardState.allCases.filter { $0.canTransition(to: .void) })

    // MARK: Programme

    public func referralProgramme(workspaceID: WorkspaceID, _ tx: (any SQLExecutor)? = nil) async throws
        -> ReferralProgramme
    {
        guard
            let row = try await (tx ?? db).first(
                "SELECT settings FROM referral_programmes WHERE workspace_id = ?", workspaceID)
        else { return ReferralProgramme() }
        return (try? JSONDecoder().decode(ReferralProgramme.self, from: Data(row.text("settings").utf8)))
            ?? ReferralProgramme()
    }

    /// `seen`: the version the form was read at (`settingsVersion`); nil replaces outright (the API).
    public func saveReferralProgramme(
        workspaceID: WorkspaceID, _ p: ReferralProgramme, actor: String, seen: Int64? = nil
    ) async throws {
        if let first = p.validate().first { throw first }
        let json = String(decoding: try JSONEncoder.sorted.encode(p), as: UTF8.self)
        try await db.transaction { tx in
            try await self.requireSettingsVersion(tx, .referrals, workspaceID: workspaceID, seen: seen)
            try await tx.execute(
                """
                INSERT INTO referral_programmes (workspace_id, settings, updated_at) VALUES (?, ?, ?)
                ON CONFLICT (workspace_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at
                """, workspaceID, json, self.now)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.programme.save",
                subject: "referral_programme", detail: json)
        }
    }

    // MARK: Advocates

    static let advocateColumns = """
        a.id, a.workspace_id, a.contact_id, a.code, a.state, a.link_version, a.premium_id, a.payout_name,
        a.payout_iban, a.joined_at, c.email, c.first_name, c.last_name, c.locale
        """

    static func advocate(_ r: SQLRow) -> Advocate {
        Advocate(
            id: r.int("id"), workspaceID: r.int("workspace_id"), contactID: r.int("contact_id"), code: r.text("code"),
            active: r.text("state") == "active", linkVersion: r.int("link_version"),
            premiumID: r.optionalInt("premium_id"), payoutName: r.optionalText("payout_name"),
            payoutIBAN: r.optionalText("payout_iban"), joinedAt: r.date("joined_at"), email: r.text("email"),
            firstName: r.optionalText("first_name"), lastName: r.optionalText("last_name"), locale: r.text("locale"))
    }

    public func advocate(workspaceID: WorkspaceID, id: AdvocateID, _ tx: (any SQLExecutor)? = nil) async throws
        -> Advocate?
    {
        try await (tx ?? db).first(
            """
            SELECT \(Self.advocateColumns) FROM advocates a JOIN contacts c ON c.id = a.contact_id
            WHERE a.workspace_id = ? AND a.id = ?
            """, workspaceID, id
        ).map(Self.advocate)
    }

    public func advocate(workspaceID: WorkspaceID, contactID: ContactID) async throws -> Advocate? {
        try await db.first(
            """
            SELECT \(Self.advocateColumns) FROM advocates a JOIN contacts c ON c.id = a.contact_id
            WHERE a.workspace_id = ? AND a.contact_id = ?
            """, workspaceID, contactID
        ).map(Self.advocate)
    }

    /// The redirect's lookup: an active advocate by code, with the programme.
    public func referralTarget(code: String) async throws -> ReferralTarget? {
        guard
            let row = try await db.first(
                """
                SELECT a.id, a.workspace_id, a.code FROM advocates a
                WHERE a.code = ? AND a.state = 'active'
                """, code)
        else { return nil }
        let programme = try await referralProgramme(workspaceID: row.int("workspace_id"))
        return ReferralTarget(
            workspaceID: row.int("workspace_id"), advocateID: row.int("id"), code: row.text("code"),
            programme: programme)
    }

    public enum JoinError: Error, Sendable, Equatable {
        case noDeliveredOrder
    }

    /// Makes a customer an advocate, with their consent to programme mails. Only customers with a delivered order
    /// may join. Joining again returns the existing advocate (re-activated if they had left).
    /// `code` proposes a personal code; on a collision it is asked again.
    public func joinReferrals(
        workspaceID: WorkspaceID, contactID: ContactID, consent: ConsentChange, device: String?,
        code: @Sendable () -> String
    ) async throws -> (advocate: Advocate, joined: Bool) {
        try await retryingUniqueViolations(attempts: 6) {
            let proposed = code()
            return try await db.transaction { tx in
                let delivered = try await tx.scalar(
                    """
                    SELECT COUNT(*) FROM orders WHERE workspace_id = ? AND contact_id = ? AND delivered_at IS NOT NULL
                      AND status NOT IN ('returned', 'cancelled')
                    """, workspaceID, contactID)
                guard delivered > 0 else { throw JoinError.noDeliveredOrder }
                _ = try await self.applyConsent(tx, workspaceID: workspaceID, contactID: contactID, change: consent)
                let existing = try await tx.first(
                    "SELECT id, state FROM advocates WHERE workspace_id = ? AND contact_id = ?", workspaceID, contactID)
                let id: AdvocateID
                var joined = false
                if let existing {
                    id = existing.int("id")
                    if existing.text("state") != "active" {
                        try await tx.execute(
                            "UPDATE advocates SET state = 'active', left_at = NULL WHERE id = ?", id)
                        joined = true
                    }
                } else {
                    id = try await tx.query(
                        """
                        INSERT INTO advocates (workspace_id, contact_id, code, state, link_version, devices, joined_at)
                        VALUES (?, ?, ?, 'active', 1, '[]', ?) RETURNING id
                        """, workspaceID, contactID, proposed, self.now)[0].int("id")
                    joined = true
                }
                if let device { try await self.noteAdvocateDevice(tx, advocateID: id, device: device) }
                if joined {
                    try await self.audit(
                        tx, workspaceID: workspaceID, actor: "contact:\(contactID)", action: "referrals.join",
                        subject: "advocate:\(id)")
                }
                return (try await self.advocate(workspaceID: workspaceID, id: id, tx)!, joined)
            }
        }
    }

    /// An advocate leaves: the code stops working; earned rewards stay.
    public func leaveReferrals(workspaceID: WorkspaceID, advocateID: AdvocateID, actor: String) async throws {
        try await db.transaction { tx in
            try await tx.execute(
                "UPDATE advocates SET state = 'left', left_at = ? WHERE workspace_id = ? AND id = ? AND state = 'active'",
                self.now, workspaceID, advocateID)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.leave", subject: "advocate:\(advocateID)"
            )
        }
    }

    func leaveReferrals(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws {
        try await tx.execute(
            """
            UPDATE advocates SET state = 'left', left_at = ?
            WHERE workspace_id = ? AND contact_id = ? AND state = 'active'
            """, now, workspaceID, contactID)
    }

    /// Remembers a device the advocate used (their page, their join), so an order from it is recognised.
    public func noteAdvocateDevice(_ tx: (any SQLExecutor)? = nil, advocateID: AdvocateID, device: String)
        async throws
    {
        let ex = tx ?? db
        guard let row = try await ex.first("SELECT devices FROM advocates WHERE id = ?", advocateID) else { return }
        var devices = (try? JSONDecoder().decode([String].self, from: Data(row.text("devices").utf8))) ?? []
        guard !devices.contains(device) else { return }
        devices = Array((devices + [device]).suffix(20))
        let json = String(decoding: try JSONEncoder().encode(devices), as: UTF8.self)
        try await ex.execute("UPDATE advocates SET devices = ? WHERE id = ?", json, advocateID)
    }

    public func setPremiumChoice(workspaceID: WorkspaceID, advocateID: AdvocateID, premiumID: Int64) async throws {
        try await db.transaction { tx in
            guard
                try await tx.scalar(
                    "SELECT COUNT(*) FROM referral_premiums WHERE workspace_id = ? AND id = ? AND active = 1",
                    workspaceID, premiumID) == 1
            else { throw DomainError.invalid("premium_unknown", "This premium is not offered.", field: "premium_id") }
            try await tx.execute(
                "UPDATE advocates SET premium_id = ? WHERE workspace_id = ? AND id = ?", premiumID, workspaceID,
                advocateID)
            // A premium reward that waited for a choice is queued now, if stock allows.
            let waiting = try await tx.query(
                """
                SELECT f.reward_id FROM referral_fulfilments f JOIN referral_rewards r ON r.id = f.reward_id
                WHERE r.advocate_id = ? AND f.state = 'awaiting_choice'
                """, advocateID)
            for w in waiting {
                try await self.queuePremium(tx, rewardID: w.int("reward_id"), premiumID: premiumID)
            }
        }
    }

    public func setPayoutDetails(workspaceID: WorkspaceID, advocateID: AdvocateID, name: String, iban: IBAN)
        async throws
    {
        try await db.transaction { tx in
            try await tx.execute(
                "UPDATE advocates SET payout_name = ?, payout_iban = ? WHERE workspace_id = ? AND id = ?", name,
                iban.value, workspaceID, advocateID)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: "advocate:\(advocateID)", action: "referrals.payout_details",
                subject: "advocate:\(advocateID)", detail: iban.masked)
        }
    }

    public struct AdvocateRow: Sendable, Equatable, Codable {
        public var advocate: Advocate
        public var clicks: Int64
        public var pending: Int64
        public var confirmed: Int64
        public var rewardsMinor: Int64
    }

    public func advocates(workspaceID: WorkspaceID, limit: Int = 100, offset: Int = 0) async throws -> Page<AdvocateRow>
    {
        let total = try await db.scalar("SELECT COUNT(*) FROM advocates WHERE workspace_id = ?", workspaceID)
        let rows = try await db.query(
            """
            SELECT \(Self.advocateColumns),
              (SELECT CAST(COALESCE(SUM(d.clicks), 0) AS BIGINT) FROM referral_click_days d WHERE d.advocate_id = a.id)
                AS clicks,
              (SELECT COUNT(*) FROM referrals r WHERE r.advocate_id = a.id AND r.status IN \(Self.sqlList(ReferralStatus.open)))
                AS pending,
              (SELECT COUNT(*) FROM referrals r WHERE r.advocate_id = a.id AND r.status = 'confirmed') AS confirmed,
              (SELECT COALESCE(SUM(w.value_minor), 0) FROM referral_rewards w WHERE w.advocate_id = a.id
                AND w.beneficiary = 'advocate' AND w.state = 'issued') AS rewards
            FROM advocates a JOIN contacts c ON c.id = a.contact_id
            WHERE a.workspace_id = ? ORDER BY a.id DESC LIMIT ? OFFSET ?
            """, workspaceID, min(max(limit, 1), 500), max(offset, 0))
        return Page(
            items: rows.map {
                AdvocateRow(
                    advocate: Self.advocate($0), clicks: $0.int("clicks"), pending: $0.int("pending"),
                    confirmed: $0.int("confirmed"), rewardsMinor: $0.int("rewards"))
            }, total: Int(total), limit: limit, offset: offset)
    }

    /// Art. 17 for an advocate: payout details and devices go, and the code, which starts with the first name
    /// (`ANNA-7K3Q`), becomes `ERASED-<id>` in the admin lists, payouts and files. Friends' orders keep the code
    /// they carried.
    func eraseAdvocate(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID) async throws {
        try await tx.execute(
            """
            UPDATE advocates SET state = 'left', left_at = COALESCE(left_at, ?), payout_name = NULL,
              payout_iban = NULL, devices = '[]', link_version = link_version + 1, code = 'ERASED-' || id
            WHERE workspace_id = ? AND contact_id = ?
            """, now, workspaceID, contactID)
        // The audit log keeps that payout details were given, not the masked IBAN it noted.
        try await tx.execute(
            """
            UPDATE audit_log SET detail = '' WHERE workspace_id = ? AND action = 'referrals.payout_details'
              AND subject IN (SELECT 'advocate:' || id FROM advocates WHERE workspace_id = ? AND contact_id = ?)
            """, workspaceID, workspaceID, contactID)
    }

    // MARK: Clicks

    /// Writes a batch of clicks (the redirect's group commit) in one transaction: all of them or none, so a batch
    /// that failed can be written again without doubles. The same transaction adds them to the per-day counts
    /// (`referral_click_days`), one row per advocate and UTC day of the batch.
    ///
    /// In the device index's order: clicks from many browsers have random device hashes, and inserted as they came
    /// each one lands on another page of `referral_clicks_device`, so a batch touched (read, and wrote to the WAL)
    /// about one index page per click. Sorted, the batch walks the index once (docs/decisions/0017-click-writes.md).
    /// Through `SQLExecutor.insertEach`: on SQLite `MultiRow`'s statements bound value by value, on PostgreSQL its
    /// column arrays.
    public func recordClicks(_ clicks: [ReferralClick]) async throws {
        let clicks = clicks.sorted { ($0.workspaceID, $0.device, $0.at) < ($1.workspaceID, $1.device, $1.at) }
        try await db.transaction { tx in
            try await tx.insertEach(
                into: "referral_clicks",
                columns: ["workspace_id", "advocate_id", "at", "ip_hash", "ua_family", "device"],
                types: [.int, .int, .int, .text, .text, .text], count: clicks.count
            ) { row, column in
                let click = clicks[row]
                return switch column {
                case 0: .int(click.workspaceID)
                case 1: .int(click.advocateID)
                case 2: .int(click.at.epochMillis)
                case 3: .text(click.ipHash)
                case 4: .text(click.uaFamily)
                default: .text(click.device)
                }
            }
            try await addClickDays(tx, clicks)
        }
    }

    /// Storage limitation: click rows (hashed address and device, browser family, time) from before `cutoff` go;
    /// the per-day counts stay. Attribution reads clicks up to 365 days back (the longest window), so a cutoff
    /// must lie further back than that (`AppConfig.clickRetentionDays`).
    ///
    /// Oldest first by id, `chunk` rows at a time, each its own transaction, at most `maxChunks` per call: the flush
    /// writes clicks in time order (within a flush, sorted by device: a second at most out of order), so the first
    /// rows by id are the oldest, and no time index is needed (decision 0024 dropped the last one the clicks had).
    /// A chunk that holds a row not old enough yet ends the call; the next one, an hour later, goes on.
    public func purgeClicks(before cutoff: Date, chunk: Int = 5_000, maxChunks: Int = 100) async throws -> Int {
        var purged = 0
        for _ in 0..<maxChunks {
            let n = try await db.transaction { tx in
                try await tx.execute(
                    """
                    DELETE FROM referral_clicks WHERE id IN (SELECT id FROM referral_clicks ORDER BY id LIMIT ?)
                      AND at < ?
                    """, chunk, cutoff)
            }
            purged += n
            if n < chunk { break }
        }
        return purged
    }

    /// A batch's clicks added to the per-day counts. The keys are unique in the batch (PostgreSQL refuses to update
    /// one row twice in a statement) and sorted, so that concurrent flushes lock the rows they share in one order.
    private func addClickDays(_ tx: any SQLExecutor, _ clicks: [ReferralClick]) async throws {
        struct Key: Hashable, Comparable {
            var advocateID: AdvocateID
            var day: Int64
            static func < (a: Key, b: Key) -> Bool { (a.advocateID, a.day) < (b.advocateID, b.day) }
        }
        var counts: [Key: (workspaceID: WorkspaceID, clicks: Int64)] = [:]
        // A run of clicks for one advocate on one day (most of a batch, usually) is counted before it is hashed.
        var run: (key: Key, workspaceID: WorkspaceID, clicks: Int64)?
        for c in clicks {
            let key = Key(advocateID: c.advocateID, day: c.at.epochDay)
            if let current = run, current.key == key {
                run?.clicks += 1
                continue
            }
            if let run { counts[run.key, default: (run.workspaceID, 0)].clicks += run.clicks }
            run = (key, c.workspaceID, 1)
        }
        if let run { counts[run.key, default: (run.workspaceID, 0)].clicks += run.clicks }
        let keys = counts.keys.sorted()
        for chunk in MultiRow.inserts(
            rows: keys.count, types: [.int, .int, .int, .int], dialect: tx.dialect,
            row: {
                let value = counts[keys[$0]]!
                return [value.workspaceID, keys[$0].advocateID, keys[$0].day, value.clicks]
            })
        {
            _ = try await tx.execute(
                """
                INSERT INTO referral_click_days (workspace_id, advocate_id, day, clicks) \(chunk.source)
                ON CONFLICT (advocate_id, day) DO UPDATE SET clicks = referral_click_days.clicks + excluded.clicks
                """, chunk.binds)
        }
    }

    // MARK: Referrals

    static let referralColumns = """
        r.id, r.workspace_id, r.advocate_id, a.code, r.order_id, o.external_id, r.friend_contact_id, r.via,
        r.status, r.reasons, r.base_minor, r.revenue_minor, r.currency, r.created_at, r.decided_by
        """

    static func referral(_ r: SQLRow) -> Referral {
        let reasons = (try? JSONDecoder().decode([ReferralReason].self, from: Data(r.text("reasons").utf8))) ?? []
        return Referral(
            id: r.int("id"), workspaceID: r.int("workspace_id"), advocateID: r.int("advocate_id"),
            advocateCode: r.text("code"), orderID: r.int("order_id"), orderExternalID: r.text("external_id"),
            friendContactID: r.int("friend_contact_id"), via: r.text("via"),
            status: ReferralStatus(rawValue: r.text("status")) ?? .flagged, reasons: reasons,
            baseMinor: r.int("base_minor"), revenueMinor: r.int("revenue_minor"), currency: r.text("currency"),
            createdAt: r.date("created_at"), decidedBy: r.optionalText("decided_by"))
    }

    static let referralFrom = """
        FROM referrals r JOIN advocates a ON a.id = r.advocate_id JOIN orders o ON o.id = r.order_id
        """

    public func referrals(
        workspaceID: WorkspaceID, status: ReferralStatus? = nil, advocateID: AdvocateID? = nil, limit: Int = 100
    ) async throws -> [Referral] {
        var filter = "r.workspace_id = ?"
        var binds: [any SQLBindable] = [workspaceID]
        if let status {
            filter += " AND r.status = ?"
            binds.append(status.rawValue)
        }
        if let advocateID {
            filter += " AND r.advocate_id = ?"
            binds.append(advocateID)
        }
        return try await db.query(
            "SELECT \(Self.referralColumns) \(Self.referralFrom) WHERE \(filter) ORDER BY r.id DESC LIMIT ?",
            binds + [min(max(limit, 1), 1000)]
        ).map(Self.referral)
    }

    public func referral(workspaceID: WorkspaceID, id: Int64, _ tx: (any SQLExecutor)? = nil) async throws
        -> Referral?
    {
        try await (tx ?? db).first(
            "SELECT \(Self.referralColumns) \(Self.referralFrom) WHERE r.workspace_id = ? AND r.id = ?", workspaceID,
            id
        ).map(Self.referral)
    }

    /// A placed order named by its `OrderPlaced` event, with what attribution needs to know before deciding.
    public struct PlacedOrder: Sendable {
        public var workspaceID: WorkspaceID
        public var orderID: OrderID
        public var couponCode: String?
        /// Whether the order carries anything `attributeOrder` takes a candidate from: a referral code, a coupon,
        /// a "who referred you" answer or a device. Without one, `attributeOrder` can only answer nil.
        public var hasCandidate: Bool
    }

    /// The orders of these events (of those that name an order), by event id, in one statement per 64 events.
    public func placedOrders(_ tx: any SQLExecutor, eventIDs: [Int64]) async throws -> [Int64: PlacedOrder] {
        var orders: [Int64: PlacedOrder] = [:]
        for chunk in MultiRow.chunks(eventIDs, dialect: tx.dialect) {
            for r in try await tx.query(
                """
                SELECT e.id AS event_id, e.workspace_id, o.id AS order_id, o.coupon_code, o.referral_code,
                  o.referred_by, o.client_device
                FROM domain_events e JOIN orders o ON o.id = e.subject_id AND o.workspace_id = e.workspace_id
                WHERE e.subject_type = 'order' AND e.id IN (\(MultiRow.list(chunk.count)))
                """, Array(chunk))
            {
                orders[r.int("event_id")] = PlacedOrder(
                    workspaceID: r.int("workspace_id"), orderID: r.int("order_id"),
                    couponCode: r.optionalText("coupon_code"),
                    hasCandidate: !Self.linkTags(r).isEmpty)
            }
        }
        return orders
    }

    /// Attributes a placed order to an advocate, decides on it and creates its rewards, once per order (the
    /// unique order id on `referrals` carries "exactly once", however often the order arrives).
    /// Returns the referral, or nil when the order names no advocate or was attributed before.
    @discardableResult
    public func attributeOrder(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, orderID: OrderID, isDisposable: (String) -> Bool
    ) async throws -> Referral? {
        let programme = try await referralProgramme(workspaceID: workspaceID, tx)
        guard programme.active else { return nil }
        // The order's row lock: this decision, the order's later updates and the hold and void jobs run one after
        // another on PostgreSQL, so none of them acts on a state another has not committed yet.
        try await lockOrder(tx, orderID)
        // An order already returned or cancelled earns nothing: its void job may have run before this one.
        guard let order = try await loadOrder(tx, workspaceID: workspaceID, id: orderID),
            order.status.earnsReferral,
            try await tx.scalar("SELECT COUNT(*) FROM referrals WHERE order_id = ?", orderID) == 0
        else { return nil }
        let placedAt = order.statusTimes[.placed] ?? order.createdAt
        let device = try await tx.first("SELECT client_device FROM orders WHERE id = ?", orderID)?
            .optionalText("client_device")

        // Candidates: codes the order carries, the "who referred you?" answer, and clicks from the same device.
        var touches: [AdvocateID: (via: String, at: Date)] = [:]
        func touch(_ id: AdvocateID, _ via: String, _ at: Date) {
            if let old = touches[id] {
                let keep = programme.touch == .first ? old.at <= at : old.at >= at
                if keep { return }
            }
            touches[id] = (via, at)
        }
        for (value, via) in [(order.referralCode, "ref"), (order.couponCode, "coupon"), (order.referredBy, "asked")] {
            guard let value else { continue }
            if let code = ReferralCode.normalize(value),
                let a = try await tx.first(
                    "SELECT id FROM advocates WHERE workspace_id = ? AND code = ? AND state = 'active'", workspaceID,
                    code)
            {
                touch(a.int("id"), via, placedAt)
            } else if via == "asked", value.contains("@"),
                let a = try await tx.first(
                    """
                    SELECT a.id FROM advocates a JOIN contacts c ON c.id = a.contact_id
                    WHERE a.workspace_id = ? AND c.email_normalized = ? AND a.state = 'active'
                    """, workspaceID, value.lowercased())
            {
                touch(a.int("id"), via, placedAt)
            }
        }
        if let device {
            let since = placedAt.addingTimeInterval(-Double(programme.attributionDays) * 86_400)
            for c in try await tx.query(
                """
                SELECT k.advocate_id, MIN(k.at) AS first_at, MAX(k.at) AS last_at FROM referral_clicks k
                JOIN advocates a ON a.id = k.advocate_id AND a.state = 'active'
                WHERE k.workspace_id = ? AND k.device = ? AND k.at >= ? AND k.at <= ? GROUP BY k.advocate_id
                """, workspaceID, device, since, placedAt)
            {
                let id = c.int("advocate_id")
                // A click dates the touch of a code the order carries, too.
                let at = programme.touch == .first ? c.date("first_at") : c.date("last_at")
                let via = touches[id]?.via ?? "click"
                touches[id] = nil
                touch(id, via, at)
            }
        }
        let chosen = touches.sorted {
            programme.touch == .first
                ? ($0.value.at, $0.key) < ($1.value.at, $1.key)
                : ($0.value.at, $0.key) > ($1.value.at, $1.key)
        }.first
        guard let (advocateID, how) = chosen,
            let advocate = try await advocate(workspaceID: workspaceID, id: advocateID, tx),
            let friend = try await tx.first(
                "SELECT email FROM contacts WHERE id = ?", order.contactID)
        else { return nil }
        // The cap and the velocity rule count the advocate's referrals and rewards: one decision per advocate at a
        // time, or two at once would both count the same and both pass.
        try await lockAdvocate(tx, advocateID)

        // The facts the rules look at.
        let advocateOrders = try await tx.query(
            """
            SELECT shipping_street, shipping_postal_code, shipping_city, shipping_country, payment_fingerprint,
              client_device FROM orders WHERE workspace_id = ? AND contact_id = ? AND id <> ?
            """, workspaceID, advocate.contactID, orderID)
        var addresses = Set<String>()
        var payments = Set<String>()
        var devices = Set<String>()
        for o in advocateOrders {
            if let street = o.optionalText("shipping_street") {
                addresses.insert(
                    ReferralRules.addressKey(
                        PostalAddress(
                            name: nil, street: street, postalCode: o.text("shipping_postal_code"),
                            city: o.text("shipping_city"), country: o.text("shipping_country"))))
            }
            if let p = o.optionalText("payment_fingerprint") { payments.insert(p) }
            if let d = o.optionalText("client_device") { devices.insert(d) }
        }
        if let row = try await tx.first("SELECT devices FROM advocates WHERE id = ?", advocateID),
            let known = try? JSONDecoder().decode([String].self, from: Data(row.text("devices").utf8))
        {
            devices.formUnion(known)
        }
        let t = now
        let friendEmail = (try? EmailAddress(friend.text("email"))) ?? .placeholder
        let facts = ReferralFacts(
            advocateEmail: (try? EmailAddress(advocate.email)) ?? .placeholder, friendEmail: friendEmail,
            advocateAddresses: addresses, friendAddress: order.shippingAddress.map(ReferralRules.addressKey),
            advocatePayments: payments, friendPayment: order.paymentFingerprint, advocateDevices: devices,
            orderDevice: device, friendDomainDisposable: isDisposable(friendEmail.domain),
            advocateReferralsLast24h: Int(
                try await tx.scalar(
                    "SELECT COUNT(*) FROM referrals WHERE advocate_id = ? AND created_at >= ?", advocateID,
                    t.addingTimeInterval(-86_400))),
            // The friend's own earlier orders, or those of a contact behind another spelling of the same mailbox
            // (`contacts.identity`: case, `+tag`, Gmail's dots).
            friendHadEarlierOrder: try await tx.scalar(
                """
                SELECT COUNT(*) FROM orders
                WHERE workspace_id = ? AND contact_id IN (
                    SELECT id FROM contacts WHERE workspace_id = ? AND (id = ? OR identity = ?))
                  AND id <> ? AND status <> 'cancelled' AND COALESCE(placed_at, created_at) <= ?
                """, workspaceID, workspaceID, order.contactID, friendEmail.canonicalIdentity, orderID, placedAt) > 0,
            advocateRewardsInCapPeriod: Int(
                try await tx.scalar(
                    """
                    SELECT COUNT(*) FROM referral_rewards WHERE advocate_id = ? AND beneficiary = 'advocate'
                      AND reason = 'referral' AND state NOT IN ('void', 'clawed_back') AND created_at >= ?
                    """, advocateID, t.addingTimeInterval(-Double(programme.capDays) * 86_400))),
            items: order.items)
        let decision = ReferralRules.decide(facts, programme: programme)
        let reasons = String(decoding: try JSONEncoder().encode(decision.reasons), as: UTF8.self)
        guard
            let id = try await tx.query(
                """
                INSERT INTO referrals (workspace_id, advocate_id, order_id, friend_contact_id, via, status, reasons,
                  base_minor, minimum_minor, revenue_minor, currency, created_at, decided_at, decided_by)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'rules') ON CONFLICT (order_id) DO NOTHING RETURNING id
                """, workspaceID, advocateID, orderID, order.contactID, how.via, decision.status.rawValue, reasons,
                decision.baseMinor, programme.minimumOrderMinor, order.totals.total.minor,
                order.totals.total.currency.code, t, t
            ).first?.int("id")
        else { return nil }
        try await audit(
            tx, workspaceID: workspaceID, actor: "rules", action: "referrals.decide", subject: "referral:\(id)",
            detail:
                "order \(order.externalID) via \(how.via) → \(decision.status.rawValue)"
                + (decision.reasons.isEmpty ? "" : ": " + decision.reasons.map(\.rawValue).joined(separator: ", ")))
        if ReferralStatus.open.contains(decision.status) {
            try await createRewards(
                tx, workspaceID: workspaceID, referralID: id, advocate: advocate, friendContactID: order.contactID,
                programme: programme)
            if let delivered = order.statusTimes[.delivered] {
                try await holdRewards(tx, workspaceID: workspaceID, orderID: orderID, deliveredAt: delivered)
            }
        }
        return try await referral(workspaceID: workspaceID, id: id, tx)
    }

    func createRewards(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, referralID: Int64, advocate: Advocate,
        friendContactID: ContactID, programme p: ReferralProgramme
    ) async throws {
        var sides: [(String, ContactID, RewardSpec)] = [("advocate", advocate.contactID, p.advocateReward)]
        if let f = p.friendReward { sides.append(("friend", friendContactID, f)) }
        for (beneficiary, contact, spec) in sides {
            try await tx.execute(
                """
                INSERT INTO referral_rewards (workspace_id, referral_id, advocate_id, contact_id, beneficiary, reason,
                  milestone, type, value_minor, currency, state, created_at)
                VALUES (?, ?, ?, ?, ?, 'referral', 0, ?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING
                """, workspaceID, referralID, advocate.id, contact, beneficiary, spec.type.rawValue,
                p.value(of: spec), p.currency, now)
        }
    }

    /// Delivery starts the return window of the order's rewards. Returns the rewards now held, with their end.
    @discardableResult
    public func holdRewards(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderID: OrderID, deliveredAt: Date)
        async throws -> [(id: Int64, until: Date)]
    {
        let programme = try await referralProgramme(workspaceID: workspaceID, tx)
        let until = deliveredAt.addingTimeInterval(Double(programme.returnWindowSeconds))
        let held = try await tx.query(
            """
            UPDATE referral_rewards SET state = 'held', held_until = ?
            WHERE state = 'pending' AND referral_id IN (SELECT id FROM referrals WHERE order_id = ?)
            RETURNING id
            """, until, orderID)
        for r in held {
            try await enqueue(
                tx,
                JobRequest(
                    kind: Self.referralReleaseJob, workspaceID: workspaceID,
                    payload: #"{"reward_id":\#(r.int("id"))}"#, runAt: until,
                    idempotencyKey: "referral-release:\(r.int("id"))"))
        }
        return held.map { ($0.int("id"), until) }
    }

    /// A person's decision on a flagged referral: `accepted` lets its rewards continue, `blocked` voids them.
    public func decideReferral(workspaceID: WorkspaceID, id: Int64, accept: Bool, actor: String) async throws {
        try await db.transaction { tx in
            let changed = try await tx.execute(
                """
                UPDATE referrals SET status = ?, decided_at = ?, decided_by = ?
                WHERE workspace_id = ? AND id = ? AND status = 'flagged'
                """, accept ? "accepted" : "blocked", self.now, actor, workspaceID, id)
            guard changed == 1 else {
                throw DomainError.conflict("referral_not_flagged", "Only a flagged referral waits for a decision.")
            }
            if !accept {
                try await tx.execute(
                    """
                    UPDATE referral_rewards SET state = 'void', ended_at = ?, end_reason = 'blocked'
                    WHERE referral_id = ? AND state IN \(Self.voidable)
                    """, self.now, id)
            } else {
                // Rewards already past their window go on at once.
                for r in try await tx.query(
                    "SELECT id FROM referral_rewards WHERE referral_id = ? AND state = 'held' AND held_until <= ?", id,
                    self.now)
                {
                    try await self.enqueue(
                        tx,
                        JobRequest(
                            kind: Self.referralReleaseJob, workspaceID: workspaceID,
                            payload: #"{"reward_id":\#(r.int("id"))}"#,
                            idempotencyKey: "referral-release:\(r.int("id")):review"))
                }
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor,
                action: accept ? "referrals.review.accept" : "referrals.review.block", subject: "referral:\(id)")
        }
    }

    // MARK: Rewards

    static let rewardColumns = """
        id, workspace_id, referral_id, advocate_id, contact_id, beneficiary, reason, milestone, type, value_minor,
        currency, state, held_until, approved_by, issued_at, tax_year, voucher_code, premium_id, outbox_id,
        end_reason, created_at
        """

    static func reward(_ r: SQLRow) -> Reward {
        Reward(
            id: r.int("id"), workspaceID: r.int("workspace_id"), referralID: r.optionalInt("referral_id"),
            advocateID: r.int("advocate_id"), contactID: r.int("contact_id"), beneficiary: r.text("beneficiary"),
            reason: r.text("reason"), milestone: r.int("milestone"),
            type: RewardType(rawValue: r.text("type")) ?? .voucher, valueMinor: r.int("value_minor"),
            currency: r.text("currency"), state: RewardState(rawValue: r.text("state")) ?? .pending,
            heldUntil: r.optionalDate("held_until"), approvedBy: r.optionalText("approved_by"),
            issuedAt: r.optionalDate("issued_at"), taxYear: r.optionalInt("tax_year"),
            voucherCode: r.optionalText("voucher_code"), premiumID: r.optionalInt("premium_id"),
            outboxID: r.optionalInt("outbox_id"), endReason: r.optionalText("end_reason"),
            createdAt: r.date("created_at"))
    }

    public func reward(id: Int64, _ tx: (any SQLExecutor)? = nil) async throws -> Reward? {
        try await (tx ?? db).first("SELECT \(Self.rewardColumns) FROM referral_rewards WHERE id = ?", id)
            .map(Self.reward)
    }

    public func rewards(
        workspaceID: WorkspaceID, state: RewardState? = nil, advocateID: AdvocateID? = nil,
        referralID: Int64? = nil, limit: Int = 200
    ) async throws -> [Reward] {
        var filter = "workspace_id = ?"
        var binds: [any SQLBindable] = [workspaceID]
        if let state {
            filter += " AND state = ?"
            binds.append(state.rawValue)
        }
        if let advocateID {
            filter += " AND advocate_id = ?"
            binds.append(advocateID)
        }
        if let referralID {
            filter += " AND referral_id = ?"
            binds.append(referralID)
        }
        return try await db.query(
            "SELECT \(Self.rewardColumns) FROM referral_rewards WHERE \(filter) ORDER BY id DESC LIMIT ?",
            binds + [min(max(limit, 1), 1000)]
        ).map(Self.reward)
    }

    /// Rewards the sweep that backs up the per-reward release jobs can move on: held ones whose window has passed
    /// and that the rules may approve (the programme approves by itself, the referral is accepted or confirmed;
    /// the others wait for a person, and would otherwise fill every page), and issued or approved ones without
    /// their mail. After `afterID`, in id order, a page at a time.
    public func dueRewards(afterID: Int64 = 0, limit: Int = 200) async throws -> [(
        id: Int64, workspaceID: WorkspaceID
    )] {
        var manual: [any SQLBindable] = []
        for row in try await db.query("SELECT workspace_id, settings FROM referral_programmes") {
            let p = try? JSONDecoder().decode(ReferralProgramme.self, from: Data(row.text("settings").utf8))
            if p?.autoApprove == false { manual.append(row.int("workspace_id")) }
        }
        let byHand = manual.isEmpty ? "" : " AND r.workspace_id NOT IN (\(MultiRow.list(manual.count)))"
        let approvable: [any SQLBindable] = ReferralStatus.approvable.map(\.rawValue)
        return try await db.query(
            """
            SELECT r.id, r.workspace_id FROM referral_rewards r
            WHERE r.id > ? AND ((r.state = 'held' AND r.held_until <= ?\(byHand)
                AND (r.referral_id IS NULL OR EXISTS (SELECT 1 FROM referrals f WHERE f.id = r.referral_id
                  AND f.status IN (\(MultiRow.list(approvable.count))))))
              OR (r.state IN ('approved', 'issued') AND r.outbox_id IS NULL AND r.beneficiary = 'advocate'
                AND r.created_at <= ?))
            ORDER BY r.id LIMIT ?
            """, [afterID, now] + manual + approvable + [now.addingTimeInterval(-60), limit]
        ).map { ($0.int("id"), $0.int("workspace_id")) }
    }

    /// Approves a held reward whose window has passed: automatically (`actor` = "rules") when the referral is
    /// clean and the programme approves by itself, or by a person. Returns false when nothing was due.
    @discardableResult
    public func approveReward(workspaceID: WorkspaceID, id: Int64, actor: String) async throws -> Bool {
        try await db.transaction { tx in
            guard let reward = try await self.reward(id: id, tx), reward.workspaceID == workspaceID else {
                throw DomainError.notFound("Reward")
            }
            if reward.state == .approved { return true }
            guard reward.state == .held, let until = reward.heldUntil else {
                if actor == "rules" { return false }
                throw DomainError.conflict(
                    "reward_not_held", "Only a held reward can be approved (this one is \(reward.state.rawValue)).")
            }
            guard until <= self.now else {
                if actor == "rules" { return false }
                throw DomainError.conflict("return_window_open", "The return window has not passed yet.")
            }
            if let referralID = reward.referralID,
                let status = try await tx.first("SELECT status FROM referrals WHERE id = ?", referralID)?.text(
                    "status"), !ReferralStatus.approvable.map(\.rawValue).contains(status)
            {
                if actor == "rules" { return false }
                throw DomainError.conflict(
                    "referral_not_accepted", "The referral is \(status); decide on it in the review queue first.")
            }
            let changed = try await tx.execute(
                """
                UPDATE referral_rewards SET state = 'approved', approved_at = ?, approved_by = ?
                WHERE id = ? AND state = 'held'
                """, self.now, actor, id)
            if changed == 1 {
                try await self.audit(
                    tx, workspaceID: workspaceID, actor: actor, action: "referrals.reward.approve",
                    subject: "reward:\(id)")
            }
            return changed == 1
        }
    }

    /// Voids a reward before issue, by hand.
    public func voidReward(workspaceID: WorkspaceID, id: Int64, actor: String, reason: String) async throws {
        try await db.transaction { tx in
            let changed = try await tx.execute(
                """
                UPDATE referral_rewards SET state = 'void', ended_at = ?, end_reason = ?
                WHERE workspace_id = ? AND id = ? AND state IN \(Self.voidable)
                """, self.now, reason, workspaceID, id)
            guard changed == 1 else {
                throw DomainError.conflict("reward_not_voidable", "Only a reward not yet issued can be voided.")
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.reward.void", subject: "reward:\(id)",
                detail: reason)
        }
    }

    /// What issuing wrote, for the mail that tells the advocate.
    public struct Issued: Sendable {
        public var reward: Reward
        /// Milestone rewards the confirmed referral unlocked, approved and waiting to be issued.
        public var milestones: [Int64]
    }

    /// Issues an approved reward, once: the state change from `approved` is the guard. A voucher comes from the pool
    /// (or is generated), credit is booked, cash goes on the payout list, a premium is queued for fulfilment.
    /// The advocate's referral is confirmed and recorded as a favour.
    public func issueReward(workspaceID: WorkspaceID, id: Int64, generatedCode: String, timeZone: String)
        async throws -> Issued?
    {
        try await db.transaction { tx in
            let t = self.now
            // Every writer that touches an advocate's rewards, stock or milestones takes the advocate first, so
            // they queue instead of deadlocking (PostgreSQL).
            guard
                let owner = try await tx.first(
                    "SELECT advocate_id FROM referral_rewards WHERE id = ? AND workspace_id = ?", id, workspaceID)
            else { return nil }
            try await self.lockAdvocate(tx, owner.int("advocate_id"))
            guard
                try await tx.execute(
                    "UPDATE referral_rewards SET state = 'issued', issued_at = ?, tax_year = ? WHERE id = ? AND state = 'approved'",
                    t, RewardTax.year(of: t, timeZone: timeZone), id) == 1,
                var reward = try await self.reward(id: id, tx)
            else { return nil }
            switch reward.type {
            case .voucher:
                if reward.beneficiary == "friend" {
                    // The friend's voucher is the advocate's code, already used at checkout: recorded, not sent.
                    let code = try await tx.first("SELECT code FROM advocates WHERE id = ?", reward.advocateID)?.text(
                        "code")
                    reward.voucherCode = code
                } else {
                    let pooled = try await tx.query(
                        """
                        UPDATE referral_vouchers SET reward_id = ? WHERE id = (
                          SELECT id FROM referral_vouchers WHERE workspace_id = ? AND reward_id IS NULL
                            AND invalidated_at IS NULL ORDER BY id LIMIT 1\(tx.dialect.skipLockedClause))
                        RETURNING code
                        """, id, workspaceID)
                    if let code = pooled.first?.text("code") {
                        reward.voucherCode = code
                    } else {
                        try await tx.execute(
                            "INSERT INTO referral_vouchers (workspace_id, code, reward_id, added_at) VALUES (?, ?, ?, ?)",
                            workspaceID, generatedCode, id, t)
                        reward.voucherCode = generatedCode
                    }
                }
                try await tx.execute(
                    "UPDATE referral_rewards SET voucher_code = ? WHERE id = ?", reward.voucherCode, id)
            case .credit:
                try await tx.execute(
                    """
                    INSERT INTO referral_credit (workspace_id, contact_id, reward_id, kind, delta_minor, currency, at)
                    VALUES (?, ?, ?, 'booking', ?, ?, ?)
                    """, workspaceID, reward.contactID, id, reward.valueMinor, reward.currency, t)
            case .cash:
                try await tx.execute(
                    """
                    INSERT INTO referral_payouts (reward_id, workspace_id, advocate_id, amount_minor, currency, state,
                      created_at) VALUES (?, ?, ?, ?, ?, 'open', ?)
                    """, id, workspaceID, reward.advocateID, reward.valueMinor, reward.currency, t)
            case .premium:
                try await tx.execute(
                    """
                    INSERT INTO referral_fulfilments (reward_id, workspace_id, state, created_at)
                    VALUES (?, ?, 'awaiting_choice', ?)
                    """, id, workspaceID, t)
                if let choice = try await tx.first("SELECT premium_id FROM advocates WHERE id = ?", reward.advocateID)?
                    .optionalInt("premium_id")
                {
                    try await self.queuePremium(tx, rewardID: id, premiumID: choice)
                }
                reward = try await self.reward(id: id, tx) ?? reward
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: "rules", action: "referrals.reward.issue", subject: "reward:\(id)",
                detail: "\(reward.type.rawValue) \(reward.valueMinor) \(reward.currency)")
            var milestones: [Int64] = []
            if reward.beneficiary == "advocate", reward.reason == "referral", let referralID = reward.referralID {
                let confirmed = try await tx.execute(
                    "UPDATE referrals SET status = 'confirmed', confirmed_at = ? WHERE id = ? AND status = 'accepted'",
                    t, referralID)
                if confirmed == 1 {
                    try await self.recordFavour(
                        tx, workspaceID: workspaceID, contactID: reward.contactID, kind: "referral",
                        subjectType: "referral", subjectID: referralID)
                    milestones = try await self.reachMilestones(tx, workspaceID: workspaceID, reward: reward)
                }
            }
            return Issued(reward: reward, milestones: milestones)
        }
    }

    /// Milestone bonuses the advocate's confirmed referrals have reached, created approved, once each.
    /// The caller holds the advocate's lock (`issueReward`), so the count sees every confirmation before it.
    func reachMilestones(_ tx: any SQLExecutor, workspaceID: WorkspaceID, reward: Reward) async throws -> [Int64] {
        let programme = try await referralProgramme(workspaceID: workspaceID, tx)
        guard !programme.milestones.isEmpty else { return [] }
        let count = try await tx.scalar(
            "SELECT COUNT(*) FROM referrals WHERE advocate_id = ? AND status = 'confirmed'", reward.advocateID)
        var created: [Int64] = []
        for m in programme.milestones where Int64(m.count) <= count {
            if let id = try await tx.query(
                """
                INSERT INTO referral_rewards (workspace_id, referral_id, advocate_id, contact_id, beneficiary, reason,
                  milestone, type, value_minor, currency, state, approved_at, approved_by, created_at)
                VALUES (?, NULL, ?, ?, 'advocate', 'milestone', ?, ?, ?, ?, 'approved', ?, 'rules', ?)
                ON CONFLICT DO NOTHING RETURNING id
                """, workspaceID, reward.advocateID, reward.contactID, m.count, m.reward.type.rawValue,
                programme.value(of: m.reward), programme.currency, now, now
            ).first?.int("id") {
                created.append(id)
            }
        }
        return created
    }

    /// Queues a premium reward for fulfilment when the item is in stock: the fulfilment is claimed first (it must
    /// still wait), then a unit taken by a conditional decrement (never below 0); without a unit the claim is undone.
    func queuePremium(_ tx: any SQLExecutor, rewardID: Int64, premiumID: Int64) async throws {
        guard
            try await tx.execute(
                "UPDATE referral_fulfilments SET state = 'queued', premium_id = ? WHERE reward_id = ? AND state = 'awaiting_choice'",
                premiumID, rewardID) == 1
        else { return }
        guard
            let item = try await tx.query(
                "UPDATE referral_premiums SET stock = stock - 1 WHERE id = ? AND stock > 0 AND active = 1 RETURNING cost_minor, shipping_minor",
                premiumID
            ).first
        else {
            try await tx.execute(
                "UPDATE referral_fulfilments SET state = 'awaiting_choice', premium_id = NULL WHERE reward_id = ?",
                rewardID)
            return
        }
        // A premium counts with its cost and shipping (the VAT base, and the advocate's tax figure).
        try await tx.execute(
            "UPDATE referral_rewards SET premium_id = ?, value_minor = ? WHERE id = ?", premiumID,
            item.int("cost_minor") + item.int("shipping_minor"), rewardID)
    }

    public func noteRewardMail(workspaceID: WorkspaceID, rewardID: Int64, outboxID: Int64?, _ tx: any SQLExecutor)
        async throws
    {
        // -1 marks "no mail due" (a friend's reward, an erased advocate), so the sweep does not try again.
        try await tx.execute(
            "UPDATE referral_rewards SET outbox_id = ? WHERE id = ? AND (outbox_id IS NULL OR outbox_id = 0)",
            outboxID ?? -1, rewardID)
    }

    /// Takes the reward's mail for this transaction, or answers false when another one took it (committed, or
    /// waiting to commit: the row's lock decides). The issuing job and the sweep may both find an issued reward
    /// without a mail; only the one whose update changed the row mails. 0 marks the claim until `noteRewardMail`
    /// writes the outbox id in the same transaction.
    public func claimRewardMail(_ tx: any SQLExecutor, rewardID: Int64) async throws -> Bool {
        try await tx.execute("UPDATE referral_rewards SET outbox_id = 0 WHERE id = ? AND outbox_id IS NULL", rewardID)
            == 1
    }

    /// A return or cancellation: the referral is void, rewards not yet issued are voided, issued ones clawed back
    /// (credit reversed, an unused voucher invalidated, an open payout cancelled or an exported one owed back,
    /// a queued premium cancelled and its stock restored). Milestone bonuses the advocate no longer reaches go
    /// the same way.
    public func voidReferral(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderID: OrderID, reason: String)
        async throws
    {
        guard
            let owner = try await tx.first(
                "SELECT advocate_id FROM referrals WHERE order_id = ? AND workspace_id = ?", orderID, workspaceID)
        else { return }
        let advocateID = owner.int("advocate_id")
        // Milestones count the advocate's confirmed referrals: one writer per advocate at a time (PostgreSQL), and
        // the status is read under that lock, after an issue that confirmed the referral has committed.
        try await lockAdvocate(tx, advocateID)
        guard let ref = try await tx.first("SELECT id, status FROM referrals WHERE order_id = ?", orderID)
        else { return }
        let referralID = ref.int("id")
        try await tx.execute(
            "UPDATE referrals SET status = 'void', decided_at = ?, decided_by = 'rules' WHERE id = ? AND status <> 'void'",
            now, referralID)
        let clawedBack = try await endRewards(
            tx, workspaceID: workspaceID, where: "referral_id = ?", [referralID], reason: reason)
        // Only a referral that was confirmed counted towards milestones; those above the new count end too.
        var milestones: [Reward] = []
        if ref.text("status") == ReferralStatus.confirmed.rawValue {
            let confirmed = try await tx.scalar(
                "SELECT COUNT(*) FROM referrals WHERE advocate_id = ? AND status = 'confirmed'", advocateID)
            milestones = try await endRewards(
                tx, workspaceID: workspaceID, where: "advocate_id = ? AND reason = 'milestone' AND milestone > ?",
                [advocateID, confirmed], reason: Self.milestoneLost + reason)
        }
        try await audit(
            tx, workspaceID: workspaceID, actor: "rules", action: "referrals.void", subject: "referral:\(referralID)",
            detail:
                "\(reason); clawed back: \((clawedBack + milestones).map { "reward:\($0.id)" }.joined(separator: ", "))"
        )
    }

    /// The `end_reason` prefix of a milestone bonus ended because the advocate fell below it. Only such an end
    /// frees the milestone to be earned again (the partial unique index of migration 7); a bonus voided by hand
    /// stays ended.
    static let milestoneLost = "milestone_lost:"

    /// Serialises the writers that count an advocate's confirmed referrals (issue and void) on PostgreSQL; SQLite
    /// has one writer anyway.
    func lockAdvocate(_ tx: any SQLExecutor, _ advocateID: AdvocateID) async throws {
        _ = try await tx.first("SELECT id FROM advocates WHERE id = ?" + tx.dialect.rowLockClause, advocateID)
    }

    /// Serialises the referral jobs of one order (attribute, hold, void) with each other and with the order's
    /// updates, which lock the same row (`upsertOrderOnce`), on PostgreSQL; SQLite has one writer anyway.
    func lockOrder(_ tx: any SQLExecutor, _ orderID: OrderID) async throws {
        _ = try await tx.first("SELECT id FROM orders WHERE id = ?" + tx.dialect.rowLockClause, orderID)
    }

    /// Items came back but the order stands: the referral is judged again on what the friend kept, by the
    /// minimum order value it was decided under and the programme's exclusions. If the kept value no longer
    /// qualifies, it is voided or clawed back as after a full return. Safe to run any number of times. (The
    /// figures take the returned units off the revenue when they are read.)
    public func recheckReferral(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderID: OrderID) async throws {
        guard
            let ref = try await tx.first(
                "SELECT status, minimum_minor FROM referrals WHERE order_id = ? AND workspace_id = ?", orderID,
                workspaceID),
            let status = ReferralStatus(rawValue: ref.text("status")),
            ReferralStatus.referred.contains(status),
            let order = try await loadOrder(tx, workspaceID: workspaceID, id: orderID)
        else { return }
        var programme = try await referralProgramme(workspaceID: workspaceID, tx)
        if let minimum = ref.optionalInt("minimum_minor") { programme.minimumOrderMinor = minimum }
        switch ReferralRules.eligibility(items: order.items, programme: programme) {
        case .eligible: return
        case .ineligible(let why):
            try await voidReferral(
                tx, workspaceID: workspaceID, orderID: orderID, reason: "order_partially_returned:\(why.rawValue)")
        }
    }

    /// Ends the rewards `condition` selects: voids those not yet issued and claws back the issued ones. Answers the
    /// clawed-back rewards.
    private func endRewards(
        _ tx: any SQLExecutor, workspaceID: WorkspaceID, where condition: String, _ binds: [any SQLBindable],
        reason: String
    ) async throws -> [Reward] {
        let t = now
        try await tx.execute(
            """
            UPDATE referral_rewards SET state = 'void', ended_at = ?, end_reason = ?
            WHERE workspace_id = ? AND \(condition) AND state IN \(Self.voidable)
            """, [t, reason, workspaceID] + binds)
        let issued = try await tx.query(
            """
            UPDATE referral_rewards SET state = 'clawed_back', ended_at = ?, end_reason = ?
            WHERE workspace_id = ? AND \(condition) AND state = 'issued' RETURNING \(Self.rewardColumns)
            """, [t, reason, workspaceID] + binds
        ).map(Self.reward)
        for r in issued {
            switch r.type {
            case .credit:
                try await tx.execute(
                    """
                    INSERT INTO referral_credit (workspace_id, contact_id, reward_id, kind, delta_minor, currency, at)
                    VALUES (?, ?, ?, 'reversal', ?, ?, ?) ON CONFLICT DO NOTHING
                    """, workspaceID, r.contactID, r.id, -r.valueMinor, r.currency, t)
            case .voucher:
                try await tx.execute(
                    "UPDATE referral_vouchers SET invalidated_at = ? WHERE reward_id = ? AND redeemed_at IS NULL", t,
                    r.id)
            case .cash:
                try await tx.execute(
                    """
                    UPDATE referral_payouts SET state = CASE state WHEN 'open' THEN 'cancelled' ELSE 'owed_back' END
                    WHERE reward_id = ? AND state IN ('open', 'exported')
                    """, r.id)
            case .premium:
                let queued = try await tx.query(
                    """
                    UPDATE referral_fulfilments SET state = 'cancelled' WHERE reward_id = ?
                      AND state IN ('queued', 'awaiting_choice') RETURNING premium_id
                    """, r.id)
                if let premium = queued.first?.optionalInt("premium_id") {
                    try await tx.execute("UPDATE referral_premiums SET stock = stock + 1 WHERE id = ?", premium)
                }
            }
        }
        return issued
    }

    /// An order that uses an issued referral voucher as its coupon redeems it (an unused voucher is what a
    /// clawback can still invalidate).
    public func redeemVoucher(_ tx: any SQLExecutor, workspaceID: WorkspaceID, code: String) async throws {
        try await tx.execute(
            """
            UPDATE referral_vouchers SET redeemed_at = ? WHERE workspace_id = ? AND code = ? AND reward_id IS NOT NULL
              AND redeemed_at IS NULL AND invalidated_at IS NULL
            """, now, workspaceID, code)
    }

    public struct VoucherState: Sendable, Equatable, Codable {
        public var code: String
        public var redeemed: Bool
        public var invalidated: Bool
        /// The shop may still accept it: neither redeemed nor invalidated (clawed back).
        public var valid: Bool { !redeemed && !invalidated }
    }

    public func voucher(workspaceID: WorkspaceID, code: String) async throws -> VoucherState? {
        try await db.first(
            "SELECT code, redeemed_at, invalidated_at FROM referral_vouchers WHERE workspace_id = ? AND code = ?",
            workspaceID, code
        ).map {
            VoucherState(
                code: $0.text("code"), redeemed: $0.optionalInt("redeemed_at") != nil,
                invalidated: $0.optionalInt("invalidated_at") != nil)
        }
    }

    /// Codes for the reward voucher pool; codes already present are skipped. Returns how many were added.
    public func addReferralVouchers(workspaceID: WorkspaceID, codes: [String]) async throws -> Int {
        try await db.transaction { tx in
            var added = 0
            for code in codes {
                added += try await tx.execute(
                    """
                    INSERT INTO referral_vouchers (workspace_id, code, added_at) VALUES (?, ?, ?)
                    ON CONFLICT (workspace_id, code) DO NOTHING
                    """, workspaceID, code, self.now)
            }
            return added
        }
    }

    public func freeReferralVouchers(workspaceID: WorkspaceID) async throws -> Int64 {
        try await db.scalar(
            "SELECT COUNT(*) FROM referral_vouchers WHERE workspace_id = ? AND reward_id IS NULL AND invalidated_at IS NULL",
            workspaceID)
    }

    /// The credit balance of a contact, in minor units: of one currency when `currency` is given (credit booked
    /// before the programme changed its currency is not spent at par in the new one), of all rows otherwise.
    public func creditBalance(workspaceID: WorkspaceID, contactID: ContactID, currency: String? = nil) async throws
        -> Int64
    {
        try await creditBalance(db, workspaceID: workspaceID, contactID: contactID, currency: currency)
    }

    func creditBalance(_ tx: any SQLExecutor, workspaceID: WorkspaceID, contactID: ContactID, currency: String? = nil)
        async throws -> Int64
    {
        let sum =
            "SELECT CAST(COALESCE(SUM(delta_minor), 0) AS BIGINT) FROM referral_credit WHERE workspace_id = ? AND contact_id = ?"
        guard let currency else { return try await tx.scalar(sum, workspaceID, contactID) }
        return try await tx.scalar(sum + " AND currency = ?", workspaceID, contactID, currency)
    }

    /// Credit the shop's checkout spent on one order (`redeemCredit`), and whether the order gave it back
    /// (`releaseCredit`).
    public struct CreditRedemption: Sendable, Equatable {
        public var orderRef: String
        public var contactID: ContactID
        public var amountMinor: Int64
        public var currency: String
        public var at: Date
        public var releasedAt: Date?
        /// The contact's balance after it.
        public var balanceMinor: Int64
    }

    /// Spends `amountMinor` of a contact's credit on the order `orderRef`, once per order: the same call again
    /// answers the first redemption (`created` false). A conflict: another amount or customer for that order, more
    /// than the balance, or any spending by an order that gave its credit back. On PostgreSQL the contact's row is
    /// locked first, so that two orders spending the same credit at once are decided one after the other; the unique
    /// `(workspace_id, order_ref, kind)` keeps an order from being debited twice even by two customers at once.
    public func redeemCredit(
        workspaceID: WorkspaceID, contactID: ContactID, orderRef: String, amountMinor: Int64, currency: String,
        actor: String
    ) async throws -> (redemption: CreditRedemption, created: Bool) {
        precondition(amountMinor > 0, "a redemption spends a positive amount")
        do {
            return try await db.transaction { tx in
                _ = try await tx.query(
                    "SELECT id FROM contacts WHERE workspace_id = ? AND id = ?" + tx.dialect.rowLockClause, workspaceID,
                    contactID)
                if let earlier = try await self.creditRedemption(tx, workspaceID: workspaceID, orderRef: orderRef) {
                    return (
                        try Self.repeated(earlier, contactID: contactID, amountMinor: amountMinor, currency: currency),
                        false
                    )
                }
                let balance = try await self.creditBalance(
                    tx, workspaceID: workspaceID, contactID: contactID, currency: currency)
                guard amountMinor <= balance else {
                    throw DomainError.conflict(
                        "insufficient_credit", "The customer's credit is smaller than the amount.", field: "amount")
                }
                let t = self.now
                try await tx.execute(
                    """
                    INSERT INTO referral_credit (workspace_id, contact_id, order_ref, kind, delta_minor, currency, at)
                    VALUES (?, ?, ?, 'redemption', ?, ?, ?)
                    """, workspaceID, contactID, orderRef, -amountMinor, currency, t)
                try await self.audit(
                    tx, workspaceID: workspaceID, actor: actor, action: "referrals.credit.redeem",
                    subject: "contact:\(contactID)", detail: "order \(orderRef): \(amountMinor) \(currency)")
                return (
                    CreditRedemption(
                        orderRef: orderRef, contactID: contactID, amountMinor: amountMinor, currency: currency, at: t,
                        releasedAt: nil, balanceMinor: balance - amountMinor), true
                )
            }
        } catch StorageError.uniqueViolation {
            // Another transaction redeemed for this order in the meantime: answer as if it had come first.
            guard let earlier = try await creditRedemption(db, workspaceID: workspaceID, orderRef: orderRef) else {
                throw StorageError.database("a redemption of order \(orderRef) was refused and is not there")
            }
            return (
                try Self.repeated(earlier, contactID: contactID, amountMinor: amountMinor, currency: currency), false
            )
        }
    }

    /// The earlier redemption of an order, if the call repeats it; a conflict if it asks for something else.
    static func repeated(_ earlier: CreditRedemption, contactID: ContactID, amountMinor: Int64, currency: String) throws
        -> CreditRedemption
    {
        guard earlier.releasedAt == nil else {
            throw DomainError.conflict(
                "credit_redemption_released",
                "Order \(earlier.orderRef) gave its credit back and cannot spend credit again.", field: "order_id")
        }
        guard earlier.contactID == contactID, earlier.amountMinor == amountMinor, earlier.currency == currency else {
            throw DomainError.conflict(
                "credit_redemption_differs",
                "Order \(earlier.orderRef) has already spent credit of another amount or customer: an order spends credit once.",
                field: "order_id")
        }
        return earlier
    }

    /// Gives an order's spent credit back (the order was cancelled or changed), once: a second release answers the
    /// first. Nil if the order spent no credit.
    public func releaseCredit(workspaceID: WorkspaceID, orderRef: String, actor: String) async throws
        -> CreditRedemption?
    {
        try await db.transaction { tx in
            guard let spent = try await self.creditRedemption(tx, workspaceID: workspaceID, orderRef: orderRef) else {
                return nil
            }
            if spent.releasedAt != nil { return spent }
            let released = try await tx.execute(
                """
                INSERT INTO referral_credit (workspace_id, contact_id, order_ref, kind, delta_minor, currency, at)
                VALUES (?, ?, ?, 'release', ?, ?, ?) ON CONFLICT DO NOTHING
                """, workspaceID, spent.contactID, orderRef, spent.amountMinor, spent.currency, self.now)
            if released > 0 {
                try await self.audit(
                    tx, workspaceID: workspaceID, actor: actor, action: "referrals.credit.release",
                    subject: "contact:\(spent.contactID)",
                    detail: "order \(orderRef): \(spent.amountMinor) \(spent.currency)")
            }
            return try await self.creditRedemption(tx, workspaceID: workspaceID, orderRef: orderRef)
        }
    }

    public func creditRedemption(workspaceID: WorkspaceID, orderRef: String) async throws -> CreditRedemption? {
        try await creditRedemption(db, workspaceID: workspaceID, orderRef: orderRef)
    }

    func creditRedemption(_ tx: any SQLExecutor, workspaceID: WorkspaceID, orderRef: String) async throws
        -> CreditRedemption?
    {
        let rows = try await tx.query(
            """
            SELECT contact_id, kind, delta_minor, currency, at FROM referral_credit
            WHERE workspace_id = ? AND order_ref = ? AND kind IN ('redemption', 'release')
            """, workspaceID, orderRef)
        guard let spent = rows.first(where: { $0.text("kind") == "redemption" }) else { return nil }
        let contactID = spent.int("contact_id")
        return CreditRedemption(
            orderRef: orderRef, contactID: contactID, amountMinor: -spent.int("delta_minor"),
            currency: spent.text("currency"), at: spent.date("at"),
            releasedAt: rows.first(where: { $0.text("kind") == "release" })?.date("at"),
            balanceMinor: try await creditBalance(
                tx, workspaceID: workspaceID, contactID: contactID, currency: spent.text("currency")))
    }

    // MARK: Premiums

    static let premiumColumns =
        "id, workspace_id, name, description, image_url, cost_minor, shipping_minor, currency, stock, active"

    static func premium(_ r: SQLRow) -> Premium {
        Premium(
            id: r.int("id"), workspaceID: r.int("workspace_id"), name: r.text("name"),
            description: r.text("description"), imageURL: r.optionalText("image_url"), costMinor: r.int("cost_minor"),
            shippingMinor: r.int("shipping_minor"), currency: r.text("currency"), stock: r.int("stock"),
            active: r.bool("active"))
    }

    public func premiums(workspaceID: WorkspaceID, activeOnly: Bool = false) async throws -> [Premium] {
        try await db.query(
            "SELECT \(Self.premiumColumns) FROM referral_premiums WHERE workspace_id = ?\(activeOnly ? " AND active = 1" : "") ORDER BY id",
            workspaceID
        ).map(Self.premium)
    }

    /// Creates (id nil) or replaces a catalogue item (with `id`: every field, as given).
    @discardableResult
    public func savePremium(_ p: Premium, id: Int64?, actor: String) async throws -> Premium {
        if let id {
            return try await updatePremium(workspaceID: p.workspaceID, id: id, actor: actor) { current in
                current = Premium(
                    id: current.id, workspaceID: current.workspaceID, name: p.name, description: p.description,
                    imageURL: p.imageURL, costMinor: p.costMinor, shippingMinor: p.shippingMinor,
                    currency: p.currency, stock: p.stock, active: p.active)
            }
        }
        try Self.validate(p)
        return try await db.transaction { tx in
            let saved = Self.premium(
                try await tx.query(
                    """
                    INSERT INTO referral_premiums (workspace_id, name, description, image_url, cost_minor,
                      shipping_minor, currency, stock, active, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    RETURNING \(Self.premiumColumns)
                    """, p.workspaceID, p.name, p.description, p.imageURL, p.costMinor, p.shippingMinor, p.currency,
                    p.stock, p.active, self.now)[0])
            try await self.audit(
                tx, workspaceID: p.workspaceID, actor: actor, action: "referrals.premium.save",
                subject: "premium:\(saved.id)", detail: "stock \(saved.stock)")
            return saved
        }
    }

    /// Changes a catalogue item: `change` sees the row as it is now (locked on PostgreSQL), so fields it leaves alone
    /// keep what other writers (a reward taking a unit) gave them. `expectedStock`: the stock the merchant saw; if a
    /// reward took a unit since, the change is refused (409) instead of writing the old count back.
    @discardableResult
    public func updatePremium(
        workspaceID: WorkspaceID, id: Int64, actor: String, expectedStock: Int64? = nil,
        _ change: @escaping @Sendable (inout Premium) throws -> Void
    ) async throws -> Premium {
        try await db.transaction { tx in
            guard
                let row = try await tx.first(
                    "SELECT \(Self.premiumColumns) FROM referral_premiums WHERE workspace_id = ? AND id = ?"
                        + tx.dialect.rowLockClause, workspaceID, id)
            else { throw DomainError.notFound("Premium") }
            var p = Self.premium(row)
            if let expectedStock, expectedStock != p.stock {
                throw DomainError.conflict(
                    "premium_stock_changed",
                    "The stock changed meanwhile (now \(p.stock)): rewards took items. Check it and save again.",
                    field: "stock")
            }
            try change(&p)
            try Self.validate(p)
            try await tx.execute(
                """
                UPDATE referral_premiums SET name = ?, description = ?, image_url = ?, cost_minor = ?,
                  shipping_minor = ?, currency = ?, stock = ?, active = ?
                WHERE workspace_id = ? AND id = ?
                """, p.name, p.description, p.imageURL, p.costMinor, p.shippingMinor, p.currency, p.stock, p.active,
                workspaceID, id)
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.premium.save",
                subject: "premium:\(id)", detail: "stock \(p.stock)")
            // Restocked (or offered again): rewards whose advocate chose this item and waited are queued, oldest
            // first. Erased advocates keep no claim on stock.
            if p.active && p.stock > 0 {
                let waiting = try await tx.query(
                    """
                    SELECT f.reward_id FROM referral_fulfilments f JOIN referral_rewards r ON r.id = f.reward_id
                    JOIN advocates a ON a.id = r.advocate_id JOIN contacts c ON c.id = r.contact_id
                    WHERE f.workspace_id = ? AND f.state = 'awaiting_choice' AND a.premium_id = ?
                      AND c.erased_at IS NULL
                    ORDER BY f.created_at, f.reward_id LIMIT ?
                    """, workspaceID, id, p.stock)
                for w in waiting {
                    try await self.queuePremium(tx, rewardID: w.int("reward_id"), premiumID: id)
                }
            }
            return Self.premium(
                try await tx.query("SELECT \(Self.premiumColumns) FROM referral_premiums WHERE id = ?", id)[0])
        }
    }

    /// The largest cost or shipping of a premium, in minor units: 100 million (one million euros).
    static let maxPremiumMinor: Int64 = 100_000_000

    static func validate(_ p: Premium) throws {
        guard !p.name.trimmingCharacters(in: .whitespaces).isEmpty, p.name.count <= 200 else {
            throw DomainError.invalid(
                "premium_name_invalid", "A premium needs a name (at most 200 characters).", field: "name")
        }
        // Bounded, so that cost plus shipping (a reward's value, summed per advocate and year) cannot overflow.
        guard (0...Self.maxPremiumMinor).contains(p.costMinor), (0...Self.maxPremiumMinor).contains(p.shippingMinor)
        else {
            throw DomainError.invalid(
                "premium_cost_invalid",
                "Cost and shipping are amounts from 0 to \(Self.maxPremiumMinor) in minor units (cents).",
                field: "cost_minor")
        }
        guard p.stock >= 0 else {
            throw DomainError.invalid("premium_stock_invalid", "Stock cannot be negative.", field: "stock")
        }
        if let url = p.imageURL, !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            throw DomainError.invalid("premium_image_invalid", "The picture is an http(s) address.", field: "image_url")
        }
    }

    public func premium(workspaceID: WorkspaceID, id: Int64) async throws -> Premium? {
        try await db.first(
            "SELECT \(Self.premiumColumns) FROM referral_premiums WHERE workspace_id = ? AND id = ?", workspaceID, id
        ).map(Self.premium)
    }

    /// Where a premium shipment stands (the states `referral_fulfilments.state` allows).
    public enum FulfilmentState: String, Sendable, CaseIterable {
        /// No choice yet, or the chosen item is out of stock.
        case awaitingChoice = "awaiting_choice"
        /// A unit is taken: to ship.
        case queued, shipped
        /// A return voided the reward before it went out.
        case cancelled
    }

    public struct Fulfilment: Sendable, Equatable, Codable {
        public var rewardID: Int64
        public var state: String
        public var premium: String?
        public var name: String
        public var email: String
        public var street: String?
        public var postalCode: String?
        public var city: String?
        public var country: String?
        public var createdAt: Date
        public var shippedAt: Date?
    }

    /// The fulfilment list: premium shipments, oldest first (or the open ones first: to ship, then waiting for a
    /// choice or stock), each with the address of the advocate's latest order that had one, in one statement
    /// that pages the shipments before it looks up names and addresses. `rewardID` and `state` narrow it.
    public func fulfilments(
        workspaceID: WorkspaceID, rewardID: Int64? = nil, state: FulfilmentState? = nil, openFirst: Bool = false,
        limit: Int = Int(Int32.max), offset: Int = 0
    ) async throws -> [Fulfilment] {
        var binds: [any SQLBindable] = [workspaceID]
        var filter = ""
        if let rewardID {
            filter += " AND f.reward_id = ?"
            binds.append(rewardID)
        }
        if let state {
            filter += " AND f.state = ?"
            binds.append(state.rawValue)
        }
        let open =
            "WHEN '\(FulfilmentState.queued.rawValue)' THEN 0 WHEN '\(FulfilmentState.awaitingChoice.rawValue)' THEN 1"
        let order =
            (openFirst ? "CASE f.state \(open) ELSE 2 END, " : "")
            + "f.created_at, f.reward_id"
        binds += [Int64(max(limit, 0)), Int64(max(offset, 0))]
        return try await db.query(
            """
            SELECT f.reward_id, f.state, p.name AS premium, c.first_name, c.last_name, c.email, f.created_at,
              f.shipped_at, o.shipping_street, o.shipping_postal_code, o.shipping_city, o.shipping_country
            FROM (
              SELECT f.reward_id, f.workspace_id, f.premium_id, f.state, f.created_at, f.shipped_at
              FROM referral_fulfilments f WHERE f.workspace_id = ?\(filter) ORDER BY \(order) LIMIT ? OFFSET ?
            ) f
            JOIN referral_rewards r ON r.id = f.reward_id
            JOIN contacts c ON c.id = r.contact_id LEFT JOIN referral_premiums p ON p.id = f.premium_id
            LEFT JOIN orders o ON o.id = (
              SELECT MAX(l.id) FROM orders l WHERE l.workspace_id = f.workspace_id AND l.contact_id = c.id
                AND l.shipping_street IS NOT NULL)
            ORDER BY \(order)
            """, binds
        ).map { row in
            Fulfilment(
                rewardID: row.int("reward_id"), state: row.text("state"), premium: row.optionalText("premium"),
                name: [row.optionalText("first_name"), row.optionalText("last_name")].compactMap { $0 }
                    .joined(separator: " "), email: row.text("email"),
                street: row.optionalText("shipping_street"), postalCode: row.optionalText("shipping_postal_code"),
                city: row.optionalText("shipping_city"), country: row.optionalText("shipping_country"),
                createdAt: row.date("created_at"), shippedAt: row.optionalDate("shipped_at"))
        }
    }

    /// How many shipments `fulfilments` lists with the same filter.
    public func fulfilmentCount(workspaceID: WorkspaceID, state: FulfilmentState? = nil) async throws -> Int {
        let sql = "SELECT COUNT(*) FROM referral_fulfilments WHERE workspace_id = ?"
        guard let state else { return Int(try await db.scalar(sql, workspaceID)) }
        return Int(try await db.scalar(sql + " AND state = ?", workspaceID, state.rawValue))
    }

    /// Records that a queued premium went out: 404 for a reward of no premium in this workspace, 409 unless queued.
    /// `mail` (the advocate's notice) is enqueued in the same transaction, so it goes exactly when the state changes.
    public func markFulfilmentShipped(
        workspaceID: WorkspaceID, rewardID: Int64, actor: String, mail: OutboxDraft? = nil
    ) async throws {
        try await db.transaction { tx in
            guard
                try await tx.execute(
                    "UPDATE referral_fulfilments SET state = 'shipped', shipped_at = ? WHERE workspace_id = ? AND reward_id = ? AND state = 'queued'",
                    self.now, workspaceID, rewardID) == 1
            else {
                guard
                    try await tx.first(
                        "SELECT state FROM referral_fulfilments WHERE workspace_id = ? AND reward_id = ?", workspaceID,
                        rewardID) != nil
                else { throw DomainError.notFound("Premium shipment") }
                throw DomainError.conflict("fulfilment_not_queued", "Only a queued premium can be shipped.")
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.premium.shipped",
                subject: "reward:\(rewardID)")
            if let mail { try await self.enqueueMailUnlessErased(tx, mail) }
        }
    }

    // MARK: Payouts

    public struct Payout: Sendable, Equatable, Codable {
        public var rewardID: Int64
        public var advocateID: AdvocateID
        public var code: String
        public var amountMinor: Int64
        public var currency: String
        public var state: String
        public var name: String?
        public var iban: String?
        public var batchID: Int64?
        public var createdAt: Date
    }

    public func payouts(workspaceID: WorkspaceID, state: String? = nil) async throws -> [Payout] {
        try await db.query(
            """
            SELECT p.reward_id, p.advocate_id, COALESCE(p.creditor_code, a.code) AS code, p.amount_minor, p.currency,
              p.state, COALESCE(p.creditor_name, a.payout_name) AS payout_name,
              COALESCE(p.creditor_iban, a.payout_iban) AS payout_iban, p.batch_id, p.created_at
            FROM referral_payouts p JOIN advocates a ON a.id = p.advocate_id
            WHERE p.workspace_id = ?\(state == nil ? "" : " AND p.state = ?") ORDER BY p.created_at, p.reward_id
            """, [workspaceID] + (state.map { [$0] } ?? [])
        ).map {
            Payout(
                rewardID: $0.int("reward_id"), advocateID: $0.int("advocate_id"), code: $0.text("code"),
                amountMinor: $0.int("amount_minor"), currency: $0.text("currency"), state: $0.text("state"),
                name: $0.optionalText("payout_name"), iban: $0.optionalText("payout_iban"),
                batchID: $0.optionalInt("batch_id"), createdAt: $0.date("created_at"))
        }
    }

    /// Moves every open payout whose advocate gave bank details into a new batch, with the creditor as exported.
    /// The caller writes the SEPA file from the returned payouts; the batch's message id and the kept creditors make
    /// a repeated download the same file.
    public func createPayoutBatch(workspaceID: WorkspaceID, messageID: String, actor: String) async throws
        -> (batchID: Int64, payouts: [Payout])
    {
        let batchID = try await db.transaction { tx in
            // Locked (PostgreSQL): a second export at the same moment waits, then finds them exported and answers
            // `no_open_payouts` instead of writing an empty batch of its own.
            let open = try await tx.query(
                """
                SELECT p.reward_id, p.amount_minor FROM referral_payouts p JOIN advocates a ON a.id = p.advocate_id
                WHERE p.workspace_id = ? AND p.state = 'open' AND a.payout_iban IS NOT NULL AND p.currency = 'EUR'
                ORDER BY p.reward_id\(tx.dialect == .postgres ? " FOR UPDATE OF p" : "")
                """, workspaceID)
            guard !open.isEmpty else {
                throw DomainError.conflict("no_open_payouts", "No open payout has bank details yet.")
            }
            let total = open.reduce(Int64(0)) { $0 + $1.int("amount_minor") }
            let batch = try await tx.query(
                """
                INSERT INTO referral_payout_batches (workspace_id, message_id, count, total_minor, created_by, created_at)
                VALUES (?, ?, ?, ?, ?, ?) RETURNING id
                """, workspaceID, messageID, open.count, total, actor, self.now)[0].int("id")
            // The creditor as it goes to the bank is kept with the payout: the booking record, which neither a
            // later change of the advocate's details nor their erasure rewrites (migration 14).
            for r in open {
                try await tx.execute(
                    """
                    UPDATE referral_payouts SET state = 'exported', batch_id = ?,
                      creditor_name = (SELECT a.payout_name FROM advocates a WHERE a.id = referral_payouts.advocate_id),
                      creditor_iban = (SELECT a.payout_iban FROM advocates a WHERE a.id = referral_payouts.advocate_id),
                      creditor_code = (SELECT a.code FROM advocates a WHERE a.id = referral_payouts.advocate_id)
                    WHERE reward_id = ? AND state = 'open'
                    """, batch, r.int("reward_id"))
            }
            try await self.audit(
                tx, workspaceID: workspaceID, actor: actor, action: "referrals.payouts.export",
                subject: "payout_batch:\(batch)", detail: "\(open.count) transfers, \(total)")
            return batch
        }
        return (batchID, try await payouts(workspaceID: workspaceID).filter { $0.batchID == batchID })
    }

    public func payoutBatch(workspaceID: WorkspaceID, id: Int64) async throws -> (messageID: String, createdAt: Date)? {
        try await db.first(
            "SELECT message_id, created_at FROM referral_payout_batches WHERE workspace_id = ? AND id = ?",
            workspaceID, id
        ).map { ($0.text("message_id"), $0.date("created_at")) }
    }

    // MARK: Tax and figures

    public struct TaxRow: Sendable, Equatable, Codable {
        public var contactID: ContactID
        public var name: String
        public var email: String
        public var rewards: Int64
        public var totalMinor: Int64
        public var reachesThreshold: Bool
    }

    /// Reward value per advocate in a calendar year: issued rewards, not clawed back. A friend's reward is a
    /// discount on their own purchase, not income for a service (§22 Nr. 3 EStG), and is not counted.
    public func rewardTax(workspaceID: WorkspaceID, year: Int) async throws -> [TaxRow] {
        try await db.query(
            """
            SELECT r.contact_id, c.first_name, c.last_name, c.email, COUNT(*) AS n,
              CAST(SUM(r.value_minor) AS BIGINT) AS total
            FROM referral_rewards r JOIN contacts c ON c.id = r.contact_id
            WHERE r.workspace_id = ? AND r.state = 'issued' AND r.tax_year = ? AND r.beneficiary = 'advocate'
            GROUP BY r.contact_id, c.first_name, c.last_name, c.email ORDER BY total DESC, r.contact_id
            """, workspaceID, year
        ).map {
            TaxRow(
                contactID: $0.int("contact_id"),
                name: [$0.optionalText("first_name"), $0.optionalText("last_name")].compactMap { $0 }
                    .joined(separator: " "), email: $0.text("email"), rewards: $0.int("n"),
                totalMinor: $0.int("total"), reachesThreshold: RewardTax.reachesThreshold($0.int("total")))
        }
    }

    /// The programme's figures since `since`; clicks are counted per UTC day, so theirs start with the day `since`
    /// falls in.
    public func referralFigures(workspaceID: WorkspaceID, since: Date) async throws -> ReferralFigures {
        let programme = try await referralProgramme(workspaceID: workspaceID)
        let clicks = try await db.scalar(
            "SELECT CAST(COALESCE(SUM(clicks), 0) AS BIGINT) FROM referral_click_days WHERE workspace_id = ? AND day >= ?",
            workspaceID, since.epochDay)
        let advocates = try await db.scalar(
            "SELECT COUNT(*) FROM advocates WHERE workspace_id = ? AND state = 'active'", workspaceID)
        let customers = try await db.scalar(
            "SELECT COUNT(DISTINCT contact_id) FROM orders WHERE workspace_id = ? AND delivered_at IS NOT NULL",
            workspaceID)
        let referred = try await db.first(
            """
            SELECT COUNT(*) AS n, CAST(COALESCE(SUM(r.revenue_minor - COALESCE((
                SELECT SUM(i.unit_price_minor * i.returned_quantity) FROM order_items i WHERE i.order_id = r.order_id
              ), 0)), 0) AS BIGINT) AS revenue
            FROM referrals r
            WHERE r.workspace_id = ? AND r.status IN \(Self.sqlList(ReferralStatus.referred)) AND r.created_at >= ?
            """, workspaceID, since)
        let cost = try await db.scalar(
            """
            SELECT CAST(COALESCE(SUM(value_minor), 0) AS BIGINT) FROM referral_rewards
            WHERE workspace_id = ? AND state IN ('approved', 'issued') AND created_at >= ?
            """, workspaceID, since)
        return ReferralFigures(
            clicks: clicks, advocates: advocates, customers: customers, referredOrders: referred?.int("n") ?? 0,
            revenueMinor: referred?.int("revenue") ?? 0, rewardCostMinor: cost, currency: programme.currency)
    }

    /// Clicks and referred orders per UTC day since `since`: the clicks of whole days, from the one `since` falls in
    /// (they are counted per day), the orders from `since` on.
    public func referralDays(workspaceID: WorkspaceID, since: Date) async throws -> [(
        day: Date, clicks: Int64, orders: Int64
    )] {
        var days: [Int64: (Int64, Int64)] = [:]
        for r in try await db.query(
            """
            SELECT day AS d, CAST(SUM(clicks) AS BIGINT) AS n FROM referral_click_days WHERE workspace_id = ? AND day >= ?
            GROUP BY day
            """, workspaceID, since.epochDay)
        {
            days[r.int("d"), default: (0, 0)].0 = r.int("n")
        }
        for r in try await db.query(
            """
            SELECT created_at / 86400000 AS d, COUNT(*) AS n FROM referrals
            WHERE workspace_id = ? AND created_at >= ? AND status IN \(Self.sqlList(ReferralStatus.referred))
            GROUP BY created_at / 86400000
            """, workspaceID, since)
        {
            days[r.int("d"), default: (0, 0)].1 = r.int("n")
        }
        return days.keys.sorted().map { (Date(epochMillis: $0 * 86_400_000), days[$0]!.0, days[$0]!.1) }
    }

    /// Advocates by confirmed referrals, for the optional leaderboard (pseudonymized by the caller).
    public func referralLeaders(workspaceID: WorkspaceID, limit: Int = 10) async throws
        -> [(advocateID: AdvocateID, firstName: String?, confirmed: Int64)]
    {
        try await db.query(
            """
            SELECT a.id, c.first_name, COUNT(*) AS n FROM referrals r JOIN advocates a ON a.id = r.advocate_id
            JOIN contacts c ON c.id = a.contact_id
            WHERE r.workspace_id = ? AND r.status = 'confirmed' AND a.state = 'active'
            GROUP BY a.id, c.first_name ORDER BY n DESC, a.id LIMIT ?
            """, workspaceID, limit
        ).map { ($0.int("id"), $0.optionalText("first_name"), $0.int("n")) }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
