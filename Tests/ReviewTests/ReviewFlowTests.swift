import Foundation
import Logging
import Messaging
import ReciprocityCore
import Reviews
import Storage
import TestSupport
import Testing

/// The review capability on both engines: scheduling, the skip rules, one mail per order with a link per item,
/// the reminder, verified reviews through signed links, moderation that ignores the rating, imports, display.
@Suite struct ReviewFlowTests {
    static let consent = [OrderPayload.CheckoutConsent(purpose: "review_request", text: "Ja, bitte fragt mich.")]

    struct Kit {
        var store: Store
        var shop: Workspace
        var clock: ManualClock
        var reviews: ReviewModule
    }

    func withKit(_ engine: Engine, _ body: (Kit) async throws -> Void) async throws {
        var subs = EventSubscriptions()
        ReviewModule.subscribe(&subs)
        try await engine.withStore(subscriptions: subs) { store, shop, clock in
            let mailer = Mailer(
                store: store,
                composer: MailComposer(
                    catalog: try MailTemplateCatalog.load(), store: store, baseURL: "https://shop.example"),
                delivery: MailDelivery(store: store, transport: DevOutboxTransport(), logger: Engine.logger))
            let module = ReviewModule(
                store: store, mailer: mailer, baseURL: "https://shop.example", logger: Engine.logger)
            var s = ReviewSettings()
            s.timing.delay = 60
            s.disclosure = "Nur Käufer mit Bestelllink."
            try await store.saveReviewSettings(workspaceID: shop.id, s, actor: "test")
            try await body(Kit(store: store, shop: shop, clock: clock, reviews: module))
        }
    }

    /// Puts an order and runs the scheduling job the event enqueued, as the worker would.
    @discardableResult
    func put(
        _ kit: Kit, _ id: String, status: String = "delivered", email: String = "anna@example.com", items: Int = 2,
        consent: Bool = true
    ) async throws -> ReviewRequestRecord? {
        let result = try await kit.store.put(
            kit.shop, id,
            samplePayload(email: email, status: status, items: items, consents: consent ? Self.consent : nil))
        for event in result.events where ReviewRequests.triggers.contains(event.type) {
            try await kit.store.db.transaction { tx in
                try await kit.reviews.requests.schedule(eventID: event.id, tx: tx)
            }
        }
        return try await kit.store.reviewRequest(workspaceID: kit.shop.id, orderID: result.order.id)
    }

    func links(_ kit: Kit, outboxID: Int64) async throws -> [String] {
        let mail = try #require(try await kit.store.outboxMail(id: outboxID))
        // The text part is quoted-printable: undo its soft line breaks (tokens hold no "=").
        let text = (mail.message ?? "").replacingOccurrences(of: "=\r\n", with: "")
        let regex = try Regex(#"https://shop\.example/review/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"#)
        return Array(Set(text.matches(of: regex).map { String(text[$0.range]) })).sorted()
    }

    func token(_ link: String) -> String { String(link.split(separator: "/").last!) }

    // MARK: Asking

    @Test(arguments: Engine.available)
    func aDeliveredOrderGetsOneMailAfterTheDelayWithALinkPerItem(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let request = try #require(try await put(kit, "A-1"))
            #expect(request.state == .scheduled)
            #expect(try await kit.reviews.requests.send(requestID: request.id) == .notDue, "not before the delay")
            kit.clock.advance(by: 61)
            guard case .sent(let outboxID) = try await kit.reviews.requests.send(requestID: request.id) else {
                Issue.record("expected a sent request")
                return
            }
            #expect(try await kit.reviews.requests.send(requestID: request.id) == .notDue, "at most once")
            let mail = try #require(try await kit.store.outboxMail(id: outboxID))
            #expect(mail.kind == "review_request")
            #expect(mail.subject == "Wie gefällt Ihnen Ihre Bestellung A-1?")
            #expect(try await links(kit, outboxID: outboxID).count == 2)
            #expect(try await kit.store.reviewRequest(id: request.id)?.state == .sent)
            let jobs = try await kit.store.jobs(workspaceID: kit.shop.id, state: .queued).map(\.kind)
            #expect(jobs.contains(Store.reviewReminderJob))
        }
    }

    @Test(arguments: Engine.available)
    func withoutADeliveryEventShippedPlusTransitCountsAndALaterDeliveryRetimes(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let shipped = try #require(try await put(kit, "A-2", status: "shipped"))
            let t0 = kit.clock.now()
            #expect(abs(shipped.dueAt.timeIntervalSince(t0) - (3 * 86_400 + 60)) < 1)
            kit.clock.advance(by: 3600)
            let delivered = try #require(try await put(kit, "A-2", status: "delivered"))
            #expect(delivered.id == shipped.id)
            #expect(abs(delivered.dueAt.timeIntervalSince(kit.clock.now()) - 60) < 1)
        }
    }

    @Test(arguments: Engine.available)
    func aCategoryDelayOverridesTheWorkspaceDelay(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var s = try await kit.store.reviewSettings(workspaceID: kit.shop.id)
            s.timing.categoryDelays = ["Kaffee": 14 * 86_400]
            try await kit.store.saveReviewSettings(workspaceID: kit.shop.id, s, actor: "test")
            var payload = samplePayload(email: "c@example.com", status: "delivered", consents: Self.consent)
            payload.items?[0].category = "Kaffee"
            let result = try await kit.store.put(kit.shop, "A-3", payload)
            try await kit.store.db.transaction { tx in
                try await kit.store.scheduleReviewRequest(tx, workspaceID: kit.shop.id, orderID: result.order.id)
            }
            let r = try #require(try await kit.store.reviewRequest(workspaceID: kit.shop.id, orderID: result.order.id))
            #expect(abs(r.dueAt.timeIntervalSince(kit.clock.now()) - 14 * 86_400) < 1)
        }
    }

    @Test(arguments: Engine.available)
    func skipsAreLoggedWithTheirReasonAndNoMailIsWritten(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let noConsent = try #require(try await put(kit, "S-1", email: "n@example.com", consent: false))
            let returned = try #require(try await put(kit, "S-2", email: "r@example.com"))
            try await kit.store.put(
                kit.shop, "S-2",
                samplePayload(email: "r@example.com", status: "returned", items: 2, consents: Self.consent))
            let objected = try #require(try await put(kit, "S-3", email: "o@example.com"))
            try await kit.store.object(workspaceID: kit.shop.id, contactID: objected.contactID, actor: "test")
            kit.clock.advance(by: 61)
            #expect(try await kit.reviews.requests.send(requestID: noConsent.id) == .skipped(.noConsent))
            #expect(try await kit.reviews.requests.send(requestID: returned.id) == .skipped(.orderReturned))
            #expect(try await kit.reviews.requests.send(requestID: objected.id) == .skipped(.objected))
            #expect(try await kit.store.reviewRequest(id: returned.id)?.skipReason == "order_returned")
            // An order history PUT as delivered long ago mails no one.
            let old = ISO8601.format(kit.clock.now().addingTimeInterval(-90 * 86_400))
            let result = try await kit.store.put(
                kit.shop, "S-4",
                samplePayload(
                    email: "h@example.com", status: "delivered", statusTimes: ["delivered": old], consents: Self.consent
                ))
            let historic = try #require(
                try await kit.store.db.transaction { tx in
                    try await kit.store.scheduleReviewRequest(tx, workspaceID: kit.shop.id, orderID: result.order.id)
                })
            #expect(try await kit.reviews.requests.send(requestID: historic.id) == .skipped(.tooOld))
            #expect(try await kit.store.db.scalar("SELECT COUNT(*) FROM outbox") == 0)
        }
    }

    @Test(arguments: Engine.available)
    func theSameProductIsNotAskedAboutAgainWithinTwelveMonthsAndTheCapSkips(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let first = try #require(try await put(kit, "P-1", items: 1))
            kit.clock.advance(by: 61)
            guard case .sent = try await kit.reviews.requests.send(requestID: first.id) else {
                Issue.record("first request not sent")
                return
            }
            let again = try #require(try await put(kit, "P-2", items: 1))
            kit.clock.advance(by: 61)
            let second = try await kit.reviews.requests.send(requestID: again.id)
            #expect(second == .skipped(.alreadyAskedRecently))
            // The frequency cap (default 2 in 7 days) counts mails that went out.
            try await kit.store.db.execute("UPDATE outbox SET state = 'sent', sending_at = ?", kit.clock.now())
            try await kit.store.db.execute(
                "INSERT INTO outbox (workspace_id, kind, mail_class, recipient, recipient_hash, message_id, subject, state, not_before, created_at, updated_at, sending_at) SELECT workspace_id, kind, mail_class, recipient, recipient_hash, 'x' || message_id, subject, 'sent', not_before, created_at, updated_at, sending_at FROM outbox"
            )
            let capped = try #require(try await put(kit, "P-3", items: 3))
            kit.clock.advance(by: 61)
            #expect(try await kit.reviews.requests.send(requestID: capped.id) == .skipped(.frequencyCap))
        }
    }

    @Test(arguments: Engine.available)
    func oneReminderOnlyWhenNothingWasReviewed(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let a = try #require(try await put(kit, "R-1", email: "a@example.com"))
            let b = try #require(try await put(kit, "R-2", email: "b@example.com"))
            kit.clock.advance(by: 61)
            guard case .sent(let outboxA) = try await kit.reviews.requests.send(requestID: a.id),
                case .sent = try await kit.reviews.requests.send(requestID: b.id)
            else {
                Issue.record("requests not sent")
                return
            }
            let link = try await links(kit, outboxID: outboxA)[0]
            try await kit.reviews.service.submit(
                token: token(link),
                input: ReviewInput(rating: 5, title: "", body: "Sehr zufrieden damit.", displayName: "Anna M."),
                photos: [])
            kit.clock.advance(by: 7 * 86_400)
            #expect(
                try await kit.reviews.requests.remind(requestID: a.id) == .notDue, "a reviewed order is not reminded")
            guard case .sent(let reminder) = try await kit.reviews.requests.remind(requestID: b.id) else {
                Issue.record("no reminder")
                return
            }
            #expect(try await kit.store.outboxMail(id: reminder)?.kind == "review_reminder")
            #expect(try await kit.reviews.requests.remind(requestID: b.id) == .notDue, "at most one reminder")
        }
    }

    // MARK: The form behind a link

    func sentLinks(_ kit: Kit, _ id: String = "F-1", email: String = "anna@example.com") async throws -> (
        ReviewRequestRecord, [String]
    ) {
        let request = try #require(try await put(kit, id, email: email))
        kit.clock.advance(by: 61)
        guard case .sent(let outbox) = try await kit.reviews.requests.send(requestID: request.id) else {
            throw TestSetupError("not sent")
        }
        return (request, try await links(kit, outboxID: outbox))
    }

    @Test(arguments: Engine.available)
    func aReviewThroughTheLinkIsVerifiedEditableDeletableAndRecordedAsAFavour(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (request, links) = try await sentLinks(kit)
            let t = token(links[0])
            guard case .form(let ctx) = try await kit.reviews.service.open(token: t) else {
                Issue.record("form expected")
                return
            }
            #expect(ctx.defaultDisplayName == "Anna M.")
            let saved = try await kit.reviews.service.submit(
                token: t,
                input: ReviewInput(rating: 4, title: "Gut", body: "Schmeckt fein und mild.", displayName: "Anna M."),
                photos: [SamplePhotos.pngWithText])
            #expect(saved.source == .verified)
            #expect(saved.status == .published)
            #expect(saved.orderExternalID == "F-1")
            #expect(saved.photoIDs.count == 1)
            let stored = try #require(try await kit.store.reviewPhoto(workspaceID: kit.shop.id, id: saved.photoIDs[0]))
            #expect(stored.contentType == "image/png")
            #expect(!String(decoding: stored.bytes, as: UTF8.self).contains("Berlin"), "text chunks are stripped")
            let edited = try await kit.reviews.service.submit(
                token: t,
                input: ReviewInput(rating: 2, title: "", body: "Doch eher bitter im Abgang.", displayName: "A."),
                photos: [])
            #expect(edited.id == saved.id)
            #expect(edited.rating == 2)
            #expect(try await kit.store.db.scalar("SELECT COUNT(*) FROM reviews") == 1)
            let favours = try await kit.store.favours(workspaceID: kit.shop.id, contactID: request.contactID)
            #expect(favours.map(\.kind) == ["review"], "one favour per review, not per edit")
            #expect(
                try await kit.store.db.scalar("SELECT COUNT(*) FROM domain_events WHERE type = 'FavourRecorded'") == 1)
            let export = try await kit.store.exportContact(workspaceID: kit.shop.id, contactID: request.contactID)
            #expect(export.reviews.map(\.body) == ["Doch eher bitter im Abgang."], "Art. 15: the person's reviews")
            #expect(export.reviewRequests.map(\.state) == ["sent"])
            #expect(export.favours.map(\.kind) == ["review"])
            try await kit.reviews.service.delete(token: t)
            let gone = try #require(try await kit.store.review(workspaceID: kit.shop.id, id: saved.id))
            #expect(gone.status == .deleted)
            #expect(gone.body.isEmpty && gone.displayName.isEmpty && gone.photoIDs.isEmpty)
        }
    }

    @Test(arguments: Engine.available)
    func aTamperedTokenIsNotFoundAndAnExpiredOneSaysSo(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (_, links) = try await sentLinks(kit)
            var t = Array(token(links[0]))
            t[3] = t[3] == "A" ? "B" : "A"
            await #expect(throws: DomainError.self) { try await kit.reviews.service.open(token: String(t)) }
            // A cancelled order is no purchase: its links stop working.
            let (_, other) = try await sentLinks(kit, "F-2", email: "zoe@example.com")
            // (Shipped orders may still be cancelled; set directly, the transition rules are tested elsewhere.)
            try await kit.store.db.execute("UPDATE orders SET status = 'cancelled' WHERE external_id = 'F-2'")
            await #expect(throws: DomainError.self) { try await kit.reviews.service.open(token: token(other[0])) }
            kit.clock.advance(by: 181 * 86_400)
            guard case .expired = try await kit.reviews.service.open(token: token(links[0])) else {
                Issue.record("expected an expired link")
                return
            }
        }
    }

    @Test(arguments: Engine.available)
    func theIncentiveInForceWhenTheRequestIsSentIsTheOneShown(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let request = try #require(try await put(kit, "I-1"))
            var s = try await kit.store.reviewSettings(workspaceID: kit.shop.id)
            s.incentive = "5-€-Gutschein für jede Bewertung, egal wie sie ausfällt"
            try await kit.store.saveReviewSettings(workspaceID: kit.shop.id, s, actor: "t")
            kit.clock.advance(by: 61)
            guard case .sent(let outbox) = try await kit.reviews.requests.send(requestID: request.id) else {
                Issue.record("not sent")
                return
            }
            let link = try await links(kit, outboxID: outbox)[0]
            let r = try await kit.reviews.service.submit(
                token: token(link), input: ReviewInput(rating: 1, title: "", body: "Leider kaputt.", displayName: "A."),
                photos: [])
            #expect(r.incentive == s.incentive)
        }
    }

    /// §7(3) UWG: only when the merchant switched the mode on (logged), and only with the objection notice shown
    /// at checkout with a sale. Without the mode, no consent means no mail.
    @Test(arguments: Engine.available)
    func theExistingCustomerModeNeedsTheSwitchAndTheCheckoutNotice(engine: Engine) async throws {
        try await withKit(engine) { kit in
            func order(_ id: String, _ email: String, notice: Bool) async throws -> ReviewRequestRecord {
                var payload = samplePayload(email: email, status: "delivered")
                if notice { payload.existingCustomerNotice = "Sie können der Nutzung jederzeit widersprechen." }
                let result = try await kit.store.put(kit.shop, id, payload)
                return try #require(
                    try await kit.store.db.transaction { tx in
                        try await kit.store.scheduleReviewRequest(
                            tx, workspaceID: kit.shop.id, orderID: result.order.id)
                    })
            }
            let off = try await order("E-1", "e1@example.com", notice: true)
            var mail = try await kit.store.mailSettings(workspaceID: kit.shop.id)
            mail.existingCustomerMode = true
            try await kit.store.saveMailSettings(workspaceID: kit.shop.id, mail, actor: "owner@shop.example")
            let withNotice = try await order("E-2", "e2@example.com", notice: true)
            let without = try await order("E-3", "e3@example.com", notice: false)
            kit.clock.advance(by: 61)
            guard case .sent = try await kit.reviews.requests.send(requestID: withNotice.id) else {
                Issue.record("with the mode on and the notice shown, the request goes out")
                return
            }
            #expect(try await kit.reviews.requests.send(requestID: without.id) == .skipped(.noConsent))
            mail.existingCustomerMode = false
            try await kit.store.saveMailSettings(workspaceID: kit.shop.id, mail, actor: "owner@shop.example")
            #expect(try await kit.reviews.requests.send(requestID: off.id) == .skipped(.noConsent))
            let logged = try await kit.store.db.scalar(
                "SELECT COUNT(*) FROM audit_log WHERE action LIKE 'mail.existing_customer_mode.%'")
            #expect(logged == 2, "switching the mode is logged")
        }
    }

    @Test(arguments: Engine.available)
    func theOpenFormGivesUnverifiedReviewsOnlyWhenEnabled(engine: Engine) async throws {
        try await withKit(engine) { kit in
            try await put(kit, "O-1")
            let input = ReviewInput(rating: 5, title: "", body: "Habe es im Laden probiert.", displayName: "Max")
            await #expect(throws: DomainError.self) {
                try await kit.reviews.service.submitOpen(workspace: kit.shop, sku: "SKU-0", input: input, locale: "de")
            }
            var s = try await kit.store.reviewSettings(workspaceID: kit.shop.id)
            s.openForm = true
            try await kit.store.saveReviewSettings(workspaceID: kit.shop.id, s, actor: "t")
            let r = try await kit.reviews.service.submitOpen(
                workspace: kit.shop, sku: "SKU-0", input: input, locale: "de")
            #expect(r.source == .unverified)
            #expect(r.orderID == nil && r.contactID == nil)
            await #expect(throws: DomainError.self, "only products the shop sold") {
                try await kit.reviews.service.submitOpen(workspace: kit.shop, sku: "NOPE", input: input, locale: "de")
            }
            let w = try #require(try await kit.reviews.display.widget(slug: kit.shop.slug, sku: "SKU-0"))
            #expect(kit.reviews.display.json(w, locale: "de").reviews.map(\.verified) == [false])
        }
    }

    @Test(arguments: Engine.available)
    func badInputNamesEveryFieldAndWritesNothing(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (_, links) = try await sentLinks(kit)
            do {
                try await kit.reviews.service.submit(
                    token: token(links[0]), input: ReviewInput(rating: 9, title: "", body: "kurz", displayName: " "),
                    photos: [Array("GIF89a not allowed".utf8)])
                Issue.record("should have failed")
            } catch let e as ReviewInputErrors {
                #expect(Set(e.byField.keys) == ["rating", "body", "display_name", "photos"])
                #expect(e.byField["photos"] == "photo_type")
            }
            #expect(try await kit.store.db.scalar("SELECT COUNT(*) FROM reviews") == 0)
        }
    }

    /// The legal rule: no moderation rule may depend on the stars. The same texts with every rating get the same
    /// outcome.
    @Test(arguments: Engine.available)
    func moderationOutcomesDoNotDependOnTheRating(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let texts = [
                "Alles bestens, gerne wieder.", "Mehr unter www.example.com nachlesen.", "Ruft mich an: 0171 2345678",
                "So ein Drecksladen, nie wieder.", "Schreibt mir: anna@example.com",
            ]
            var outcomes: [String: Set<String>] = [:]
            for (i, text) in texts.enumerated() {
                for rating in 1...5 {
                    let (_, links) = try await sentLinks(kit, "M-\(i)-\(rating)")
                    let r = try await kit.reviews.service.submit(
                        token: token(links[0]),
                        input: ReviewInput(rating: rating, title: "", body: text, displayName: "Kim"), photos: [])
                    outcomes[text, default: []].insert(r.status.rawValue + ":" + r.holdReasons.joined(separator: ","))
                    try await kit.store.db.execute("DELETE FROM review_request_items")
                }
            }
            for (text, seen) in outcomes { #expect(seen.count == 1, "\(text): \(seen)") }
            #expect(outcomes[texts[0]] == ["published:"])
            #expect(outcomes[texts[1]] == ["held:link"])
        }
    }

    // MARK: Import, display, erasure

    @Test(arguments: Engine.available)
    func importedReviewsAreLabelledAndABadRowImportsNothing(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let bad =
                "sku,product_name,rating,title,body,author,date\nK1,Kaffee,5,Top,Sehr gut,Eva,2026-03-01\nK1,Kaffee,7,x,y,z,2026-03-02\n"
            #expect(throws: DomainError.self) { try ReviewImport.parse(bad, now: kit.clock.now()) }
            let good =
                "sku;product_name;rating;title;body;author;date\nK1;Kaffee;5;Top;\"Sehr gut; \"\"wirklich\"\"\";Eva;2026-03-01\n"
            let rows = try ReviewImport.parse(good, now: kit.clock.now())
            #expect(rows.first?.body == "Sehr gut; \"wirklich\"")
            let first = try await kit.store.importReviews(
                workspaceID: kit.shop.id, source: "Trusted Shops", rows: rows + rows, actor: "t")
            #expect(first == (1, 1), "a repeated row is imported once")
            let again = try await kit.store.importReviews(
                workspaceID: kit.shop.id, source: "Trusted Shops", rows: rows, actor: "t")
            #expect(again == (0, 1), "the same file again adds nothing")
            #expect(try await kit.store.db.scalar("SELECT COUNT(*) FROM reviews") == 1)
            let future = "sku,product_name,rating,body,date\nK1,Kaffee,5,Sehr gut,2031-01-01\n"
            #expect(throws: DomainError.self) { try ReviewImport.parse(future, now: kit.clock.now()) }
            let r = try #require(try await kit.store.reviews(workspaceID: kit.shop.id, filter: .init()).first)
            #expect(r.source == .imported)
            #expect(r.importSource == "Trusted Shops")
            let w = try #require(try await kit.reviews.display.widget(slug: kit.shop.slug, sku: "K1"))
            let json = kit.reviews.display.json(w, locale: "de")
            #expect(json.reviews.first?.verified == false)
        }
    }

    @Test(arguments: Engine.available)
    func widgetsNeedTheDisclosureAndTheFeedCarriesTheOrderOnlyForVerifiedReviews(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (_, links) = try await sentLinks(kit)
            try await kit.reviews.service.submit(
                token: token(links[0]),
                input: ReviewInput(rating: 4, title: "Gut", body: "Schmeckt fein und mild.", displayName: "Anna M."),
                photos: [])
            _ = try await kit.store.importReviews(
                workspaceID: kit.shop.id, source: "Alt",
                rows: [
                    ImportedReview(
                        sku: "SKU-0", productName: "Artikel 0", rating: 2, title: "", body: "Naja.", author: "Old",
                        createdAt: kit.clock.now())
                ], actor: "t")
            let w = try #require(try await kit.reviews.display.widget(slug: kit.shop.slug, sku: "SKU-0"))
            #expect(w.summary.count == 2)
            #expect(w.summary.sentence(locale: "de") == "3,0 von 5 aus 2 Bewertungen der letzten 12 Monate")
            let ld = try #require(kit.reviews.display.jsonLD(w))
            #expect(ld.contains(#""@type":"Product""#) && ld.contains(#""reviewCount":2"#))
            let shop = try #require(try await kit.reviews.display.widget(slug: kit.shop.slug, sku: nil))
            #expect(kit.reviews.display.jsonLD(shop) == nil, "no self-serving shop rating")
            let feed = try #require(try await kit.reviews.display.feed(slug: kit.shop.slug))
            #expect(feed.components(separatedBy: "<transaction_id>F-1</transaction_id>").count == 2)
            #expect(feed.components(separatedBy: "<collection_method>unsolicited</collection_method>").count == 2)
            var s = try await kit.store.reviewSettings(workspaceID: kit.shop.id)
            s.disclosure = ""
            try await kit.store.saveReviewSettings(workspaceID: kit.shop.id, s, actor: "t")
            #expect(try await kit.reviews.display.widget(slug: kit.shop.slug, sku: "SKU-0") == nil)
            #expect(try await kit.reviews.display.feed(slug: kit.shop.slug) == nil)
        }
    }

    @Test(arguments: Engine.available)
    func erasingAPersonRemovesTheirReviewsText(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let (request, links) = try await sentLinks(kit)
            let r = try await kit.reviews.service.submit(
                token: token(links[0]),
                input: ReviewInput(rating: 5, title: "Top", body: "Sehr zufrieden damit.", displayName: "Anna M."),
                photos: [])
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: request.contactID, actor: "t")
            let after = try #require(try await kit.store.review(workspaceID: kit.shop.id, id: r.id))
            #expect(after.status == .deleted && after.body.isEmpty && after.displayName.isEmpty)
        }
    }
}
