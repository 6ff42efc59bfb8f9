import Foundation
import ReciprocityCore
import Storage
import TestSupport
import Testing

@Suite struct ContactStoreContract {
    func grant(
        _ store: Store, _ shop: Workspace, _ contact: ContactID, _ purpose: ConsentPurpose, text: String, ip: String
    )
        async throws -> Consent
    {
        try await store.db.transaction { tx in
            try await store.applyConsent(
                tx, workspaceID: shop.id, contactID: contact,
                change: ConsentChange(
                    purpose: purpose, action: .grant, text: text, source: "lead_magnet", formID: "guide",
                    pageURL: "https://shop.example/guide",
                    evidence: ConsentEvidence(at: store.clock.now(), ip: ip, userAgent: "UA")))
        }
    }

    @Test(arguments: Engine.available)
    func editingAConsentTextMakesANewVersionAndOldProofsKeepTheirs(engine: Engine) async throws {
        try await engine.withStore { store, shop, clock in
            let a = try await store.put(shop, "O-1", samplePayload(email: "a@example.com")).order.contactID
            let b = try await store.put(shop, "O-2", samplePayload(email: "b@example.com")).order.contactID
            let first = try await grant(store, shop, a, .newsletter, text: "Version eins", ip: "198.51.100.1")
            clock.advance(by: 10)
            let same = try await grant(store, shop, b, .newsletter, text: "Version eins", ip: "198.51.100.2")
            let edited = try await grant(store, shop, b, .newsletter, text: "Version zwei", ip: "198.51.100.2")
            #expect(first.textID == same.textID)
            #expect(edited.textID != first.textID)
            let proofA = try await store.exportContact(workspaceID: shop.id, contactID: a)
            #expect(proofA.consents[0].text == "Version eins")
            #expect(proofA.consents[0].textVersion == 1)
            let proofB = try await store.exportContact(workspaceID: shop.id, contactID: b)
            #expect(proofB.consents[0].textVersion == 2)
            #expect(proofB.consentHistory.map(\.textVersion) == [1, 2])
        }
    }

    @Test(arguments: Engine.available)
    func aGrantNeedsTheTextThatWasShown(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            let a = try await store.put(shop, "O-1", samplePayload()).order.contactID
            await #expect(throws: DomainError.self) {
                _ = try await store.db.transaction { tx in
                    try await store.applyConsent(
                        tx, workspaceID: shop.id, contactID: a,
                        change: ConsentChange(
                            purpose: .survey, action: .grant, text: "  ", source: "api",
                            evidence: .init(at: store.clock.now())))
                }
            }
            #expect(try await store.consents(workspaceID: shop.id, contactID: a).isEmpty)
        }
    }

    @Test(arguments: Engine.available)
    func anObjectionWithdrawsEveryConsentAndSuppressesTheAddress(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            let id = try await store.put(shop, "O-1", samplePayload()).order.contactID
            _ = try await grant(store, shop, id, .newsletter, text: "News", ip: "198.51.100.1")
            _ = try await grant(store, shop, id, .reviewRequest, text: "Bewertung", ip: "198.51.100.1")
            try await store.object(workspaceID: shop.id, contactID: id, actor: "test")
            let consents = try await store.consents(workspaceID: shop.id, contactID: id)
            #expect(consents.allSatisfy { $0.state == .withdrawn })
            #expect(try await store.isSuppressed(workspaceID: shop.id, email: EmailAddress("Anna.Muster@example.com")))
            #expect(
                try await store.auditEntries(workspaceID: shop.id, subject: "contact:\(id)").map(\.action) == [
                    "contact.object"
                ])
        }
    }

    @Test(arguments: Engine.available)
    func erasureRemovesEveryIdentifyingFieldButKeepsCountsAndTheSuppression(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            // setup
            let id = try await store.put(shop, "E-1", samplePayload(email: "erika@example.com", status: "delivered"))
                .order.contactID
            try await store.put(shop, "E-2", samplePayload(email: "erika@example.com"))
            try await store.put(shop, "OTHER", samplePayload(email: "other@example.com"))
            _ = try await grant(store, shop, id, .newsletter, text: "News", ip: "198.51.100.7")
            // MUT
            try await store.erase(workspaceID: shop.id, contactID: id, actor: "test")
            try await store.erase(workspaceID: shop.id, contactID: id, actor: "test")  // a repeat is harmless
            // validate: nothing identifies the person any more
            let export = try await store.exportContact(workspaceID: shop.id, contactID: id)
            let json = String(decoding: try JSONEncoder().encode(export), as: UTF8.self)
            for pii in ["erika", "Anna", "Muster", "Hauptstra", "198.51.100.7", "10115"] {
                #expect(!json.contains(pii), "\(pii) survived erasure")
            }
            #expect(export.contact.erasedAt != nil)
            #expect(export.suppressed)
            // What was done about the person is in the export, from the audit log.
            #expect(export.auditLog.map(\.action) == ["contact.erase"], "once: the repeat changes nothing")
            #expect(export.auditLog.first?.by == "test")
            #expect(Store.exportedActor("user:7") == "staff" && Store.exportedActor("apikey:3") == "shop_system")
            let erased = try #require(try await store.contact(workspaceID: shop.id, id: id))
            #expect(try await store.isSuppressed(erased), "an erased contact is always suppressed")
            // counts stay
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM orders") == 3)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM consents") == 1)
            #expect(try await store.orders(workspaceID: shop.id, contactID: id).total == 2)
            // the address stays blocked, by salted hash only
            #expect(try await store.isSuppressed(workspaceID: shop.id, email: EmailAddress("ERIKA@example.com")))
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM suppressions WHERE email_hash LIKE '%erika%'") == 0)
            // a new order from the same address is a new contact, still suppressed
            let again = try await store.put(shop, "E-3", samplePayload(email: "erika@example.com"))
            #expect(again.order.contactID != id)
            #expect(try await store.isSuppressed(workspaceID: shop.id, email: EmailAddress("erika@example.com")))
        }
    }

    /// The export (Art. 15) holds everything the store keeps about the person's orders, and their mails; erasure
    /// leaves none of it.
    @Test(arguments: Engine.available)
    func theExportHoldsTheOrdersFraudFieldsAndTheMails(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            var payload = samplePayload(email: "erika@example.com")
            payload.referredBy = "Tante Inge"
            payload.paymentFingerprint = "pf-4711"
            payload.clientIP = "198.51.100.23"
            payload.clientUserAgent = "Mozilla/5.0 Erika"
            let id = try await store.put(shop, "X-1", payload).order.contactID
            try await store.enqueueTestMail(
                shop, contactID: id, to: "erika@example.com", messageID: "m1@shop.example", subject: "Danke, Erika",
                message: "Hallo Erika")
            let export = try await store.exportContact(workspaceID: shop.id, contactID: id)
            let order = try #require(export.orders.first)
            #expect(order.referredBy == "Tante Inge" && order.paymentFingerprint == "pf-4711")
            let device = try #require(order.clientDevice)
            #expect(!device.contains("198.51.100.23"), "a keyed hash, not the address")
            #expect(export.mails.map(\.subject) == ["Danke, Erika"])
            #expect(
                export.mails.first?.recipient == "erika@example.com" && export.mails.first?.message == "Hallo Erika")
            #expect(export.mails.first?.state == "queued")

            try await store.erase(workspaceID: shop.id, contactID: id, actor: "test")
            let after = try await store.exportContact(workspaceID: shop.id, contactID: id)
            let json = String(decoding: try JSONEncoder().encode(after), as: UTF8.self)
            for pii in ["Inge", "pf-4711", device, "Erika", "erika"] { #expect(!json.contains(pii), "\(pii) survived") }
            #expect(after.mails.count == 1 && after.mails.first?.message == nil, "the record stays, the copy goes")
        }
    }

    @Test(arguments: Engine.available)
    func searchFindsContactsByEmailOrNameCaseInsensitively(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            try await store.put(shop, "S-1", samplePayload(email: "jürgen@example.com", firstName: "Jürgen"))
            try await store.put(shop, "S-2", samplePayload(email: "x_y%z@example.com", firstName: "Zoë"))
            #expect(try await store.contacts(workspaceID: shop.id, search: "JÜRGEN").items.count <= 1)
            #expect(try await store.contacts(workspaceID: shop.id, search: "example").total == 2)
            #expect(
                try await store.contacts(workspaceID: shop.id, search: "_y%").total == 1, "LIKE wildcards are escaped")
            #expect(try await store.contacts(workspaceID: shop.id, search: "muster").total == 2)
        }
    }

    /// A mail drafted before its contact was erased is not enqueued after: the erasure emptied the outbox of their
    /// mails, and a late one would bring the address back (the reward mail and the premium notice draft first).
    @Test(arguments: Engine.available)
    func aMailDraftedBeforeAnErasureIsNotEnqueuedAfterIt(engine: Engine) async throws {
        try await engine.withStore { store, shop, _ in
            let id = try await store.put(shop, "E-1", samplePayload(email: "erika@example.com", status: "delivered"))
                .order.contactID
            func draft(_ n: Int) throws -> OutboxDraft {
                OutboxDraft(
                    workspaceID: shop.id, contactID: id, kind: .referralPremiumShipped,
                    recipient: try EmailAddress("erika@example.com"), messageID: "<m\(n)@shop.example>",
                    subject: "Ihre Prämie", message: "Subject: Ihre Prämie\r\n\r\nHallo")
            }
            let (early, late) = (try draft(1), try draft(2))
            let sent = try await store.db.transaction { tx in try await store.enqueueMailUnlessErased(tx, early) }
            #expect(sent != nil)
            // A bounce's diagnostics quote the address; erasure takes them too.
            try await store.db.execute(
                "UPDATE outbox SET state = 'bounced', reason = ?, smtp_reply = ? WHERE id = ?",
                "550 5.1.1 <erika@example.com>: unknown", "550 5.1.1 <erika@example.com>", sent)
            try await store.db.execute(
                "INSERT INTO mail_events (workspace_id, outbox_id, type, detail, source, at) VALUES (?, ?, 'bounce', ?, 'dsn', 0)",
                shop.id, sent, "Diagnostic-Code: smtp; 550 <erika@example.com>")
            try await store.erase(workspaceID: shop.id, contactID: id, actor: "test")
            #expect(
                try await store.db.scalar(
                    "SELECT COUNT(*) FROM outbox WHERE reason LIKE '%erika%' OR smtp_reply LIKE '%erika%'") == 0)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM mail_events WHERE detail LIKE '%erika%'") == 0)
            let skipped = try await store.db.transaction { tx in try await store.enqueueMailUnlessErased(tx, late) }
            #expect(skipped == nil)
            #expect(
                try await store.db.scalar("SELECT COUNT(*) FROM outbox WHERE message_id = '<m2@shop.example>'") == 0)
            #expect(try await store.db.scalar("SELECT COUNT(*) FROM outbox WHERE recipient = 'erika@example.com'") == 0)
        }
    }
}
