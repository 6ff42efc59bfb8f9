import Foundation
import LeadMagnets
import Messaging
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// The double opt-in on both engines: pending signup with its confirmation mail, one contact and one mail for
/// repeated signups, confirmation with proof, the gift (file, voucher exactly once, sample stock), the proof's
/// text version after an edit, expiry, erasure, and the follow-up sequence that stops at a purchase.
@Suite struct LeadFlowTests {
    static let consentText = "Ja, ich möchte den Newsletter von Kaffee & Co. erhalten. Abmeldung jederzeit."

    struct Kit {
        var store: Store
        var shop: Workspace
        var clock: ManualClock
        var leads: LeadModule
    }

    struct NoMX: MXResolver {
        func acceptsMail(domain: String) async -> Bool? { domain == "no-mx.example" ? false : nil }
    }

    func withKit(_ engine: Engine, _ body: (Kit) async throws -> Void) async throws {
        try await engine.withStore { store, shop, clock in
            let mailer = Mailer(
                store: store,
                composer: MailComposer(
                    catalog: try MailTemplateCatalog.load(), store: store, baseURL: "https://shop.example"),
                delivery: MailDelivery(store: store, transport: DevOutboxTransport(), logger: Engine.logger))
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lead-tests-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            let leads = LeadModule(
                store: store, mailer: mailer, baseURL: "https://shop.example",
                blobs: try LocalDiskBlobStore(root: dir), random: SystemRandom(), mxResolver: NoMX(),
                logger: Engine.logger)
            try await body(Kit(store: store, shop: shop, clock: clock, leads: leads))
        }
    }

    func magnet(_ kit: Kit, kind: GiftKind = .file, slug: String = "ratgeber", followUps: [FollowUpStep] = [])
        async throws -> LeadMagnet
    {
        try await kit.store.createLeadMagnet(
            LeadMagnet(
                workspaceID: kit.shop.id, slug: slug, name: "Ratgeber", headline: "Der Kaffee-Ratgeber", body: "",
                giftKind: kind, giftTitle: "Kaffee-Ratgeber",
                giftURL: kind == .link ? "https://shop.example/webinar" : nil,
                sampleStock: kind == .sample ? 1 : nil,
                consentText: Self.consentText, followUps: followUps), actor: "test")
    }

    func context(_ kit: Kit, ip: String = "203.0.113.7") -> SignupContext {
        SignupContext(
            formID: "lead_magnet:ratgeber", pageURL: "https://shop.example/lm/shop/ratgeber",
            evidence: ConsentEvidence(at: kit.clock.now(), ip: ip, userAgent: "Mozilla/5.0 Test"))
    }

    func signup(_ kit: Kit, _ m: LeadMagnet, _ email: String, address: PostalAddress? = nil) async throws {
        try await kit.leads.service.signup(
            workspace: kit.shop, magnet: m, input: SignupInput(email: email, firstName: "Anna", address: address),
            locale: "de", context: context(kit))
    }

    func count(_ kit: Kit, _ sql: String) async throws -> Int64 {
        try await kit.store.db.scalar(sql)
    }

    /// The confirmation link of the newest DOI mail to `email`.
    func doiToken(_ kit: Kit, _ email: String) async throws -> String {
        let row = try #require(
            try await kit.store.db.first(
                "SELECT message FROM outbox WHERE kind = 'doi_confirmation' AND recipient = ? ORDER BY id DESC LIMIT 1",
                email))
        let text = row.text("message").replacingOccurrences(of: "=\r\n", with: "")
        let match = try #require(
            text.firstMatch(of: try Regex(#"https://shop\.example/doi/([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"#)))
        return String(match.output[1].substring!)
    }

    func confirm(_ kit: Kit, _ email: String) async throws -> String {
        let result = try await kit.leads.service.confirm(
            token: try await doiToken(kit, email),
            evidence: ConsentEvidence(at: kit.clock.now(), ip: "198.51.100.9", userAgent: "Mozilla/5.0 Phone"))
        guard case .confirmed(let gift) = result else {
            Issue.record("expected a confirmation, got \(result)")
            return ""
        }
        return gift
    }

    @Test(arguments: Engine.available)
    func signupIsPendingUntilConfirmedAndTheProofHasBothSteps(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            try await signup(kit, m, "Anna@Example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM consents WHERE state = 'pending'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 0)
            kit.clock.advance(by: 30)
            let gift = try await confirm(kit, "Anna@Example.org")
            #expect(!gift.isEmpty)
            #expect(try await count(kit, "SELECT COUNT(*) FROM consents WHERE state = 'granted'") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 1)
            let contact = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("anna@example.org")))
            let proof = try #require(
                try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id).first)
            #expect(proof.text.body == Self.consentText)
            #expect(proof.text.version == 1)
            #expect(proof.signup.signup.ip == "203.0.113.7")
            #expect(proof.signup.confirmation?.ip == "198.51.100.9")
            #expect(proof.signup.confirmation?.userAgent == "Mozilla/5.0 Phone")
            #expect(proof.confirmationMail?.message?.contains("/doi/") == true)
            // The retention purge takes the bodies of old delivered mails, but not the confirmation the proof shows.
            try await kit.store.db.execute("UPDATE outbox SET state = 'sent'")
            let later = kit.clock.now().addingTimeInterval(3600)
            #expect(try await kit.store.purgeMailBodies(endedBefore: later) >= 1, "the gift mail's body goes")
            let kept = try #require(
                try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id).first)
            #expect(kept.confirmationMail?.message?.contains("/doi/") == true)
            // Confirming again is harmless: the same gift, no second mail.
            _ = try await confirm(kit, "Anna@Example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 1)
            #expect(try await kit.store.leadStats(m).confirmations == 1)
        }
    }

    @Test(arguments: Engine.available)
    func repeatedSignupsLeaveOneContactOneConsentAndOneMail(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<5 { group.addTask { try await signup(kit, m, "bert@example.org") } }
                try await group.waitForAll()
            }
            try await signup(kit, m, "BERT@example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM contacts") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM consents") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_signups") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 1)
            // After the resend window, a new attempt sends a new link; the newest link counts.
            kit.clock.advance(by: m.resendWindow + 1)
            let old = try await doiToken(kit, "bert@example.org")
            try await signup(kit, m, "bert@example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 2)
            let stale = try await kit.leads.service.confirm(token: old, evidence: ConsentEvidence(at: kit.clock.now()))
            guard case .expired = stale else {
                Issue.record("a superseded link must not confirm: \(stale)")
                return
            }
            _ = try await confirm(kit, "bert@example.org")
            // Another magnet's gift needs its own confirmation, also for a contact whose consent is on record: the
            // post is unverified, so neither the gift nor the proof may rest on it.
            let second = try await magnet(kit, kind: .link, slug: "webinar")
            try await signup(kit, second, "bert@example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'doi_confirmation'") == 3)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 1)
            _ = try await confirm(kit, "bert@example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 2)
            #expect(
                try await count(kit, "SELECT COUNT(*) FROM lead_signups WHERE confirmed_ip = '198.51.100.9'") == 2,
                "each confirmation with its own evidence")
            // The same gift again (a lost link): its delivery mail once more, nothing new confirmed or handed out.
            kit.clock.advance(by: second.resendWindow + 1)
            try await signup(kit, second, "bert@example.org")
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 3)
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_signups") == 2)
        }
    }

    @Test(arguments: Engine.available)
    func badInputIsRejectedAndNothingIsWritten(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            for (email, code) in [
                ("nobody@mailinator.com", "email_disposable"), ("x@sub.yopmail.com", "email_disposable"),
                ("not-an-address", "email_invalid"), ("a@no-mx.example", "email_no_mx"),
            ] {
                await #expect(throws: SignupErrors(byField: ["email": code])) { try await signup(kit, m, email) }
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM contacts") == 0)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox") == 0)
        }
    }

    @Test(arguments: Engine.available)
    func eachVoucherGoesToExactlyOneOfFiftyConcurrentConfirmations(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit, kind: .voucher)
            let codes = (0..<60).map { "CODE-\($0)" }
            _ = try await kit.store.addVouchers(workspaceID: kit.shop.id, magnetID: m.id, codes: codes, actor: "test")
            var tokens: [String] = []
            for i in 0..<50 {
                try await signup(kit, m, "p\(i)@example.org")
                tokens.append(try await doiToken(kit, "p\(i)@example.org"))
            }
            let gifts = try await withThrowingTaskGroup(of: String.self) { group in
                for token in tokens {
                    group.addTask {
                        guard
                            case .confirmed(let g) = try await kit.leads.service.confirm(
                                token: token, evidence: ConsentEvidence(at: kit.clock.now()))
                        else { return "" }
                        return g
                    }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            var handedOut: [String] = []
            for g in gifts {
                guard case .valid(let gift) = try await kit.leads.service.gift(token: g) else {
                    Issue.record("no gift for a confirmation")
                    continue
                }
                if let code = gift.voucherCode { handedOut.append(code) }
            }
            #expect(handedOut.count == 50)
            #expect(Set(handedOut).count == 50)
            #expect(try await count(kit, "SELECT COUNT(*) FROM lead_vouchers WHERE signup_id IS NOT NULL") == 50)
            #expect(try await kit.store.availableVouchers(magnetID: m.id) == 10)
        }
    }

    @Test(arguments: Engine.available)
    func theProofKeepsTheTextVersionShownAfterTheTextIsEdited(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var m = try await magnet(kit)
            try await signup(kit, m, "old@example.org")
            _ = try await confirm(kit, "old@example.org")
            m.consentText = "Ja, ich möchte den Newsletter erhalten – neue Fassung."
            m = try await kit.store.updateLeadMagnet(m, actor: "test")
            try await signup(kit, m, "new@example.org")
            let old = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("old@example.org")))
            let new = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("new@example.org")))
            let a = try #require(try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: old.id).first)
            let b = try #require(try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: new.id).first)
            #expect(a.text.version == 1 && a.text.body == Self.consentText)
            #expect(b.text.version == 2 && b.text.body == m.consentText)
        }
    }

    @Test(arguments: Engine.available)
    func unconfirmedSignupsExpireAndOnlyTheCountsRemain(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            try await signup(kit, m, "late@example.org")
            try await signup(kit, m, "keeps@example.org")
            _ = try await confirm(kit, "keeps@example.org")
            #expect(try await kit.leads.service.expire() == 0)
            kit.clock.advance(by: m.pendingLifetime + 1)
            let token = try await doiToken(kit, "keeps@example.org")
            #expect(try await kit.leads.service.expire() == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM contacts") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM consents") == 1)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE recipient = 'late@example.org'") == 0)
            let stats = try await kit.store.leadStats(m)
            #expect(stats.signups == 2 && stats.confirmations == 1)
            _ = token
        }
    }

    @Test(arguments: Engine.available)
    func erasureRemovesPersonalDataButKeepsTheCounts(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit, kind: .sample)
            let address = PostalAddress(
                name: "Anna Muster", street: "Weg 1", postalCode: "50667", city: "Köln", country: "de")
            try await signup(kit, m, "anna@example.org", address: address)
            _ = try await confirm(kit, "anna@example.org")
            let shipment = try #require(try await kit.store.shipments(workspaceID: kit.shop.id, magnetID: m.id).first)
            #expect(shipment.state == "queued" && shipment.address?.city == "Köln" && shipment.address?.country == "DE")
            let contact = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("anna@example.org")))
            try await kit.store.erase(workspaceID: kit.shop.id, contactID: contact.id, actor: "test")
            let proof = try #require(
                try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id).first)
            #expect(proof.signup.signup.ip == nil && proof.signup.signup.userAgent == nil)
            #expect(proof.signup.confirmation?.ip == nil && proof.signup.pageURL == nil && proof.signup.fields.isEmpty)
            #expect(try await kit.store.shipments(workspaceID: kit.shop.id, magnetID: m.id).first?.address == nil)
            #expect(try await count(kit, "SELECT COUNT(*) FROM contacts WHERE email LIKE '%anna%'") == 0)
            let stats = try await kit.store.leadStats(m)
            #expect(stats.signups == 1 && stats.confirmations == 1)
        }
    }

    @Test(arguments: Engine.available)
    func theFollowUpsStopWhenTheContactBuysAndTheOrderCountsForTheMagnet(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let steps = [
                FollowUpStep(afterSeconds: 3 * 86_400, subject: "Hat es geholfen?", body: "Noch ein Tipp."),
                FollowUpStep(afterSeconds: 7 * 86_400, subject: "Unser Angebot", body: "10 % für Sie."),
            ]
            let m = try await magnet(kit, followUps: steps)
            try await signup(kit, m, "buyer@example.org")
            _ = try await confirm(kit, "buyer@example.org")
            let signupID = try await count(kit, "SELECT id FROM lead_signups")
            #expect(try await count(kit, "SELECT COUNT(*) FROM jobs WHERE kind = 'leads.follow_up'") == 1)
            kit.clock.advance(by: 3 * 86_400)
            guard case .sent = try await kit.leads.followUps.run(signupID: signupID, step: 0) else {
                Issue.record("the first step should be sent")
                return
            }
            #expect(try await count(kit, "SELECT COUNT(*) FROM jobs WHERE kind = 'leads.follow_up'") == 2)
            // The step's job runs again (its mail committed, the job was not marked done): no second mail.
            #expect(try await kit.leads.followUps.run(signupID: signupID, step: 0) == .nothing)
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'lead_follow_up'") == 1)
            _ = try await kit.store.put(kit.shop, "B-1", samplePayload(email: "buyer@example.org", status: "paid"))
            kit.clock.advance(by: 4 * 86_400)
            #expect(try await kit.leads.followUps.run(signupID: signupID, step: 1) == .stopped("purchased"))
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'lead_follow_up'") == 1)
            let stats = try await kit.store.leadStats(m)
            #expect(stats.buyers30 == 1 && stats.buyers90 == 1 && stats.revenueMinor > 0)
        }
    }

    @Test(arguments: Engine.available)
    func anExpiredGiftLinkGetsAFreshOneOncePerWindow(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit)
            try await signup(kit, m, "anna@example.org")
            let gift = try await confirm(kit, "anna@example.org")
            kit.clock.advance(by: m.downloadLinkLifetime + 1)
            guard case .expired = try await kit.leads.service.gift(token: gift) else {
                Issue.record("the link should have expired")
                return
            }
            #expect(try await kit.leads.service.renew(token: gift))
            #expect(try await kit.leads.service.renew(token: gift))
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 2)
            // Once the person objected, an old link (shared, forwarded) brings no more mail to them.
            let contact = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("anna@example.org")))
            try await kit.store.object(workspaceID: kit.shop.id, contactID: contact.id, actor: "test")
            kit.clock.advance(by: m.downloadLinkLifetime + m.resendWindow + 1)
            #expect(try await kit.leads.service.renew(token: gift))
            #expect(try await count(kit, "SELECT COUNT(*) FROM outbox WHERE kind = 'gift_delivery'") == 2)
            var tampered = Array(gift)
            tampered[2] = tampered[2] == "A" ? "B" : "A"
            guard case .invalid = try await kit.leads.service.gift(token: String(tampered)) else {
                Issue.record("a tampered link must be invalid")
                return
            }
        }
    }
}

extension LeadFlowTests {
    @Test(arguments: Engine.available)
    func aNewSignupAfterAWithdrawalKeepsTheOldProofAndExpiresCleanly(engine: Engine) async throws {
        try await withKit(engine) { kit in
            let m = try await magnet(kit, kind: .voucher)
            _ = try await kit.store.addVouchers(
                workspaceID: kit.shop.id, magnetID: m.id, codes: ["A", "B"], actor: "t")
            try await signup(kit, m, "anna@example.org")
            _ = try await confirm(kit, "anna@example.org")
            let contact = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("anna@example.org")))
            try await kit.store.db.transaction { tx in
                try await kit.store.withdrawAllConsents(
                    tx, workspaceID: kit.shop.id, contactID: contact.id, source: "unsubscribe")
            }
            kit.clock.advance(by: 60)
            // Someone types the address again (and a different name): a new DOI; the old proof and name stay.
            try await kit.leads.service.signup(
                workspace: kit.shop, magnet: m, input: SignupInput(email: "anna@example.org", firstName: "Betrüger"),
                locale: "en", context: context(kit))
            let proofs = try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id)
            #expect(proofs.map(\.signup.state) == [.confirmed, .pending])
            #expect(proofs.first?.signup.confirmation?.ip == "198.51.100.9")
            let after = try await kit.store.contact(workspaceID: kit.shop.id, id: contact.id)
            #expect(after?.firstName == "Anna" && after?.locale == "de")
            kit.clock.advance(by: m.pendingLifetime + 1)
            #expect(try await kit.leads.service.expire() == 1)
            #expect(
                try await kit.store.consents(workspaceID: kit.shop.id, contactID: contact.id).map(\.state) == [
                    .withdrawn
                ])
            #expect(try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id).count == 1)
        }
    }

    @Test(arguments: Engine.available)
    func theProofRecordsTheVersionTheFormShowedNotTheNewestOne(engine: Engine) async throws {
        try await withKit(engine) { kit in
            var m = try await magnet(kit)
            let shown = try #require(try await kit.store.currentConsentText(m))
            m.consentText = "Neue Fassung des Einwilligungstexts."
            m = try await kit.store.updateLeadMagnet(m, actor: "test")
            var ctx = context(kit)
            ctx.shownTextID = shown.id
            try await kit.leads.service.signup(
                workspace: kit.shop, magnet: m, input: SignupInput(email: "old-page@example.org"), locale: "de",
                context: ctx)
            let contact = try #require(
                try await kit.store.contact(workspaceID: kit.shop.id, email: try EmailAddress("old-page@example.org")))
            let proof = try #require(
                try await kit.store.signupProofs(workspaceID: kit.shop.id, contactID: contact.id).first)
            #expect(proof.text.version == 1 && proof.text.body == Self.consentText)
        }
    }
}
