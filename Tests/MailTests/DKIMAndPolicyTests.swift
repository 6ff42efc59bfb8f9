import Crypto
import Foundation
import Mail
import ReciprocityCore
import SMTP
import Testing
import _CryptoExtras

@testable import Mail

@Suite struct DKIMTests {
    @Test func relaxedCanonicalization() {
        #expect(
            String(decoding: DKIMSigner.relaxedHeader("SUBJect:  AbC \r\n\tdef  "), as: UTF8.self) == "subject:AbC def")
        #expect(String(decoding: DKIMSigner.relaxedHeader("X-Y :\tz"), as: UTF8.self) == "x-y:z")
        #expect(
            String(decoding: DKIMSigner.relaxedBody(Array("a  b \t\r\nc\r\n\r\n\r\n".utf8)), as: UTF8.self)
                == "a b\r\nc\r\n")
        #expect(DKIMSigner.relaxedBody(Array("\r\n\r\n".utf8)).isEmpty)
        #expect(DKIMSigner.relaxedBody([]).isEmpty)
    }

    @Test func dmarcAlignmentInRelaxedMode() {
        #expect(DKIMSigner.aligns(domain: "shop.example", senderDomain: "shop.example"))
        #expect(DKIMSigner.aligns(domain: "Shop.Example", senderDomain: "news.shop.example"))
        #expect(DKIMSigner.aligns(domain: "news.shop.example", senderDomain: "shop.example"), "one organization")
        #expect(DKIMSigner.aligns(domain: "mail.shop.example", senderDomain: "news.shop.example"), "siblings")
        #expect(!DKIMSigner.aligns(domain: "shop.example", senderDomain: "othershop.example"))
        #expect(!DKIMSigner.aligns(domain: "example", senderDomain: "shop.example"), "a single label")
        #expect(DKIMSigner.aligns(domain: "kaffee.co.uk", senderDomain: "news.kaffee.co.uk"))
        #expect(!DKIMSigner.aligns(domain: "tee.co.uk", senderDomain: "kaffee.co.uk"), "under a public suffix")
        #expect(!DKIMSigner.aligns(domain: "co.uk", senderDomain: "kaffee.co.uk"), "a public suffix itself")
    }

    func rendered() throws -> RenderedMessage {
        try MailMessage(
            from: try Mailbox("news@example.test", displayName: "Bohnenglück"), to: [try Mailbox("a@example.test")],
            subject: "Grüße", text: "Hallo", html: "<p>Hallo</p>", messageID: "m1@example.test",
            date: Date(timeIntervalSince1970: 1_790_000_000),
            extraHeaders: [
                HeaderField("List-Unsubscribe", "<https://shop.example/u/t>, <mailto:news@example.test?subject=u>"),
                HeaderField("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ]
        ).render()
    }

    /// Recomputes what a verifier checks (RFC 6376 §3.7) and checks the signature with the public key.
    func verify(_ signed: RenderedMessage, key: DKIMKey) throws -> Bool {
        let sig = try #require(signed.headers.first)
        #expect(sig.name == "DKIM-Signature")
        let tags = Dictionary(
            uniqueKeysWithValues: sig.value.split(separator: ";").map {
                let kv = $0.split(separator: "=", maxSplits: 1)
                return (kv[0].trimmingCharacters(in: .whitespaces), kv.count > 1 ? String(kv[1]) : "")
            })
        let bh = Data(SHA256.hash(data: DKIMSigner.relaxedBody(signed.body))).base64EncodedString()
        guard tags["bh"] == bh else { return false }
        var data: [UInt8] = []
        for name in (tags["h"] ?? "").split(separator: ":") {
            guard let h = signed.headers.dropFirst().last(where: { $0.name.lowercased() == name }) else { return false }
            data += DKIMSigner.relaxedHeader(h.line) + [13, 10]
        }
        let b = (tags["b"] ?? "").filter { !$0.isWhitespace }
        let unsigned = HeaderField(
            "DKIM-Signature", String(sig.value[..<sig.value.range(of: "b=", options: .backwards)!.upperBound]))
        data += DKIMSigner.relaxedHeader(unsigned.line)
        let signature = try #require(Data(base64Encoded: b))
        switch key {
        case .rsa(let k):
            return k.publicKey.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: data),
                padding: .insecurePKCS1v1_5)
        case .ed25519(let k):
            return k.publicKey.isValidSignature(signature, for: Data(SHA256.hash(data: data)))
        }
    }

    @Test(arguments: DKIMKey.Algorithm.allCases)
    func signsAndVerifiesCoveringTheUnsubscribeHeaders(_ algorithm: DKIMKey.Algorithm) throws {
        let key = try DKIMKey.generate(algorithm)
        let restored = try DKIMKey(algorithm: algorithm, storedForm: key.storedForm)
        let signer = DKIMSigner(domain: "example.test", selector: "s1", key: restored)
        let signed = try signer.sign(try rendered(), timestamp: Date(timeIntervalSince1970: 1_790_000_000))
        let value = signed.headers[0].value
        #expect(value.contains("a=\(algorithm.rawValue); c=relaxed/relaxed; d=example.test; s=s1;"))
        #expect(
            value.contains(
                "h=from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post:mime-version:content-type;"))
        #expect(try verify(signed, key: key))
        var tampered = signed
        tampered.body = Array("Hallo, geändert".utf8)
        #expect(try !verify(tampered, key: key), "a changed body fails")
        var reheadered = signed
        reheadered.headers[3] = HeaderField("Subject", "Something else")
        #expect(try !verify(reheadered, key: key), "a changed subject fails")
        #expect(
            key.dnsRecordValue.hasPrefix(algorithm == .rsaSHA256 ? "v=DKIM1; k=rsa; p=MII" : "v=DKIM1; k=ed25519; p="))
        for chunk in key.zoneFileLine(domain: "example.test", selector: "s1").split(separator: "\"") {
            #expect(chunk.count <= 255)
        }
    }
}

@Suite struct SendPolicyTests {
    let now = Date(timeIntervalSince1970: 1_790_000_000)  // Mon 21 Sep 2026, 16:13 in Berlin

    @Test func marketingNeedsConsentOrTheLoggedExistingCustomerBasis() {
        #expect(
            SendPolicy.decide(SendCheck(kind: .reviewRequest, suppression: nil, consent: .granted, now: now))
                == .send(.consent))
        if case .skip(let reason) = SendPolicy.decide(
            SendCheck(kind: .reviewRequest, suppression: nil, consent: nil, now: now))
        {
            #expect(reason.contains("no consent"))
        } else {
            Issue.record("no consent must skip")
        }
        #expect(
            SendPolicy.decide(
                SendCheck(kind: .reviewRequest, suppression: nil, consent: nil, existingCustomerBasis: true, now: now))
                == .send(.existingCustomer))
        if case .skip = SendPolicy.decide(
            SendCheck(
                kind: .reviewRequest, suppression: nil, consent: .withdrawn, existingCustomerBasis: true, now: now))
        {
        } else {
            Issue.record("a withdrawal beats §7(3)")
        }
        if case .skip = SendPolicy.decide(
            SendCheck(kind: .reviewRequest, suppression: nil, consent: .pending, now: now))
        {
        } else {
            Issue.record("pending is not granted")
        }
    }

    @Test func suppressionStopsMarketingAlwaysAndTransactionalOnlyForBouncesAndComplaints() {
        #expect(
            SendPolicy.decide(SendCheck(kind: .reviewRequest, suppression: "objection", consent: .granted, now: now))
                == .skip(reason: "suppressed: objection"))
        #expect(
            SendPolicy.decide(SendCheck(kind: .doiConfirmation, suppression: "objection", consent: nil, now: now))
                == .send(nil))
        #expect(
            SendPolicy.decide(SendCheck(kind: .doiConfirmation, suppression: "bounce", consent: nil, now: now))
                == .skip(reason: "suppressed: bounce"))
        #expect(
            SendPolicy.decide(SendCheck(kind: .giftDelivery, suppression: nil, consent: nil, now: now)) == .send(nil))
    }

    @Test func frequencyCapWaitsUntilTheOldestMailLeavesTheWindow() {
        let recent = [now.addingTimeInterval(-86_400 * 6), now.addingTimeInterval(-3600)]
        let d = SendPolicy.decide(
            SendCheck(kind: .thankYou, suppression: nil, consent: .granted, recentMarketing: recent, now: now))
        #expect(d == .wait(until: recent[0].addingTimeInterval(7 * 86_400 + 1), reason: "frequency cap: 2 in 7 days"))
        let old = [now.addingTimeInterval(-86_400 * 8), now.addingTimeInterval(-3600)]
        #expect(
            SendPolicy.decide(
                SendCheck(kind: .thankYou, suppression: nil, consent: .granted, recentMarketing: old, now: now))
                == .send(.consent))
    }

    @Test func quietHoursInTheWorkspaceTimeZone() throws {
        let berlin = QuietHours(startHour: 20, endHour: 8, timeZone: "Europe/Berlin")
        #expect(berlin.end(ifQuietAt: now) == nil, "16:13 in Berlin is not quiet")
        let night = now.addingTimeInterval(6 * 3600)  // 22:13 Berlin (CEST)
        let end = try #require(berlin.end(ifQuietAt: night))
        #expect(
            end == Date(timeIntervalSince1970: 1_790_000_000 + 7 * 3600 + 46 * 60 + 40 + 8 * 3600), "08:00 next morning"
        )
        let early = now.addingTimeInterval(12 * 3600)  // 04:13 Berlin
        #expect(berlin.end(ifQuietAt: early) == end)
        let d = SendPolicy.decide(
            SendCheck(kind: .thankYou, suppression: nil, consent: .granted, quietHours: berlin, now: night))
        #expect(d == .wait(until: end, reason: "quiet hours"))
        #expect(
            SendPolicy.decide(
                SendCheck(kind: .doiConfirmation, suppression: nil, consent: nil, quietHours: berlin, now: night))
                == .send(nil), "transactional mail goes at night")
        #expect(QuietHours(startHour: 0, endHour: 0).end(ifQuietAt: night) == nil)
    }

    @Test func tokenBucketRefills() {
        var bucket = TokenBucket(rate: 2, burst: 2, now: now)
        #expect(bucket.take(now: now) == nil)
        #expect(bucket.take(now: now) == nil)
        #expect(bucket.take(now: now) == 0.5)
        #expect(bucket.take(now: now.addingTimeInterval(0.5)) == nil)
    }
}

@Suite struct SMTPConfigurationTests {
    @Test func parsesURLs() throws {
        let c = try SMTPConfiguration.parse("smtp://user%40shop:p%C3%A4ss@mail.example.com:2525?tls=starttls&pool=3")
        #expect(c.host == "mail.example.com" && c.port == 2525 && c.tls == .starttls && c.poolSize == 3)
        #expect(c.username == "user@shop" && c.password == "päss")
        #expect(try SMTPConfiguration.parse("smtps://mail.example.com").port == 465)
        #expect(try SMTPConfiguration.parse("smtps://mail.example.com").tls == .implicit)
        #expect(try SMTPConfiguration.parse("smtp://mail.example.com").tls == .starttls, "STARTTLS is the default")
        #expect(try SMTPConfiguration.parse("smtp://127.0.0.1:25?tls=none").tls == SMTPConfiguration.TLSMode.none)
        #expect(try SMTPConfiguration.parse("smtp://u:p@localhost:25?tls=none").username == "u")
        #expect(try SMTPConfiguration.parse("smtp://relay.internal:25?tls=none").username == nil)
    }

    @Test(arguments: [
        ("http://mail.example.com", "smtp_url_scheme"), ("smtp://mail.example.com?tls=maybe", "smtp_url_tls"),
        ("smtp://mail.example.com?colour=blue", "smtp_url_option"), ("smtp://:25", "smtp_url_host"),
        ("smtps://mail.example.com?tls=none", "smtp_url_tls"), ("smtp://mail.example.com?pool=0", "smtp_url_option"),
        ("smtp://u:p@mail.example.com:25?tls=none", "smtp_url_plaintext_auth"),
        ("smtp://u:p@127.0.0.1.example.com?tls=none", "smtp_url_plaintext_auth"),
        ("smtp://u:p@127.mail.example.com?tls=none", "smtp_url_plaintext_auth"),
        ("smtp://u:p@127.0.0.256?tls=none", "smtp_url_plaintext_auth"),
        ("smtp://u:p@127.0.0.+1?tls=none", "smtp_url_plaintext_auth"),
    ])
    func refusesBadURLs(_ url: String, _ code: String) {
        let error = #expect(throws: DomainError.self) { try SMTPConfiguration.parse(url) }
        #expect(error?.code == code)
    }

    @Test func dotStuffing() {
        let stuffed = String(decoding: DotStuffing.stuff(Array(".a\r\nb\r\n..c\r\n.".utf8)), as: UTF8.self)
        #expect(stuffed == "..a\r\nb\r\n...c\r\n..\r\n.\r\n")
    }
}
