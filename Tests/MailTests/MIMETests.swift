import Foundation
import Mail
import ReciprocityCore
import Testing

@Suite struct MIMETests {
    func message(
        subject: String = "Wie gefällt Ihnen Ihre Bestellung? Grüße aus Köln",
        text: String = "Grüße, Jürgen!\nÄpfel und Öl kosten 5 €.", html: String? = "<p>Grüße</p>",
        attachments: [Mail.Attachment] = [], toName: String? = "Jürgen Müller"
    ) throws -> MailMessage {
        MailMessage(
            from: try Mailbox("news@bohnenglück.example", displayName: "Kaffeerösterei Bohnenglück"),
            to: [try Mailbox("juergen@example.com", displayName: toName)], subject: subject, text: text, html: html,
            attachments: attachments, messageID: "abc@bohnenglueck.example",
            date: Date(timeIntervalSince1970: 1_790_000_000))
    }

    @Test func headersAreASCIIWithEncodedWordsThatDecodeExactly() throws {
        let rendered = try message().render()
        let raw = String(decoding: rendered.bytes, as: UTF8.self)
        #expect(rendered.bytes.allSatisfy { $0 < 128 }, "every byte of the message is ASCII")
        let subject = try #require(rendered.headers.first { $0.name == "Subject" })
        #expect(HeaderEncoding.decode(subject.value) == "Wie gefällt Ihnen Ihre Bestellung? Grüße aus Köln")
        let from = try #require(rendered.headers.first { $0.name == "From" })
        #expect(HeaderEncoding.decode(from.value) == "Kaffeerösterei Bohnenglück <news@xn--bohnenglck-heb.example>")
        for word in subject.value.split(separator: " ") { #expect(word.count <= 75) }
        // Lines with encoded words stay within 76 characters (RFC 2047 §2), the first one after the name too.
        let head = raw.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
        for line in head where line.contains("=?") { #expect(line.count <= 76, "\(line)") }
        let long = HeaderEncoding.fold(
            name: "Subject", value: HeaderEncoding.unstructured(String(repeating: "Grüße aus Köln ", count: 8)))
        for line in long.components(separatedBy: "\r\n") { #expect(line.count <= 76, "\(line)") }
        #expect(HeaderEncoding.decode(String(long.dropFirst("Subject:".count))).hasPrefix("Grüße aus Köln Grüße"))
        #expect(raw.contains("Date: Mon, 21 Sep 2026 14:13:20 +0000\r\n"))
        #expect(raw.contains("Message-ID: <abc@bohnenglueck.example>\r\n"))
        #expect(raw.contains("MIME-Version: 1.0\r\n"))
    }

    @Test func plainSubjectsStayAsTheyAreAndEverythingElseIsEncoded() {
        #expect(
            HeaderEncoding.unstructured("Danke, Anna! 10% auf Ihre Bestellung")
                == "Danke, Anna! 10% auf Ihre Bestellung")
        let word = String(repeating: "x", count: 70)
        #expect(HeaderEncoding.unstructured("a " + word + " b") == "a " + word + " b")
        // A word too long to fold, and text that looks like an encoded word, are encoded.
        for text in ["a " + word + "x b", "Preis =?UTF-8?Q?x?= heute"] {
            let value = HeaderEncoding.unstructured(text)
            #expect(value.hasPrefix("=?UTF-8?"), "\(text) -> \(value)")
            #expect(HeaderEncoding.decode(value) == text)
        }
        // Words of whole code points, 75 characters at most, that decode to the text: emoji with skin tones and
        // a combining accent (Q encoding), Greek (B encoding).
        for text in [
            String(repeating: "Danke 👍🏽 für Café\u{301} und Grüße ", count: 6),
            String(repeating: "Καλημέρα κόσμε ", count: 8),
        ] {
            let words = HeaderEncoding.encodedWords(text)
            #expect(words.count > 1 && words.allSatisfy { $0.utf8.count <= 75 }, "\(words)")
            #expect(HeaderEncoding.decode(words.joined(separator: " ")) == text)
        }
        // Control characters become spaces.
        #expect(HeaderEncoding.unstructured("Zeile\teins\r\nzwei\u{7F}") == "Zeile eins  zwei ")
    }

    @Test func crlfEverywhereAndNoLineOver998EvenForLongInput() throws {
        let long = String(repeating: "x", count: 5000) + " " + String(repeating: "ä", count: 3000)
        let rendered = try message(
            subject: String(repeating: "Sehr langer Betreff mit Ümlauten ", count: 20), text: long + "\n.leading dot",
            html: "<p>" + long + "</p>", toName: String(repeating: "Maximilian ", count: 40)
        ).render()
        let bytes = rendered.bytes
        var lineLength = 0
        for (i, b) in bytes.enumerated() {
            if b == 10 {
                #expect(i > 0 && bytes[i - 1] == 13, "LF at \(i) is part of CRLF")
                lineLength = 0
            } else if b != 13 {
                lineLength += 1
                #expect(lineLength <= 998)
                if lineLength > 998 { break }
            }
        }
        for h in rendered.headers {
            for line in h.line.components(separatedBy: "\r\n") { #expect(line.count <= 998) }
        }
        let to = try #require(rendered.headers.first { $0.name == "To" })
        #expect(HeaderEncoding.decode(to.value).hasPrefix("Maximilian Maximilian"))
        #expect(HeaderEncoding.decode(to.value).contains("…"), "a very long display name is shortened")
    }

    @Test func quotedPrintableForGermanBase64ForMostlyNonLatin() throws {
        #expect(TransferEncoding.choose(for: Array("Grüße aus Köln, schöne Äpfel".utf8)) == .quotedPrintable)
        #expect(TransferEncoding.choose(for: Array("Καλημέρα κόσμε, ευχαριστούμε".utf8)) == .base64)
        let qp = String(decoding: QuotedPrintable.encode(Array("Grüße = gut \r\nZeile".utf8)), as: UTF8.self)
        #expect(qp == "Gr=C3=BC=C3=9Fe =3D gut=20\r\nZeile\r\n")
        #expect(QuotedPrintable.decode(qp) == "Grüße = gut \nZeile\n")
        let long = String(repeating: "abcdefghij", count: 30)
        let encoded = String(decoding: QuotedPrintable.encode(Array(long.utf8)), as: UTF8.self)
        for line in encoded.components(separatedBy: "\r\n") { #expect(line.count <= 76) }
        #expect(QuotedPrintable.decode(encoded) == long + "\n")
    }

    @Test func multipartWithAttachment() throws {
        let pdf = Array(repeating: UInt8(0xFF), count: 300)
        let rendered = try message(
            attachments: [Mail.Attachment(filename: "Brühguide.pdf", contentType: "application/pdf", data: pdf)]
        ).render()
        let raw = String(decoding: rendered.bytes, as: UTF8.self)
        #expect(raw.contains("Content-Type: multipart/mixed; boundary=\"=_mix_"))
        #expect(raw.contains("Content-Type: multipart/alternative; boundary=\"=_alt_"))
        #expect(raw.contains("Content-Disposition: attachment; filename="))
        #expect(raw.contains(Data(pdf).base64EncodedString().prefix(76)))
        #expect(try message().render() == (try message().render()), "rendering is deterministic")
    }

    @Test func headerInjectionAndBadAddressesAreRefused() throws {
        #expect(throws: DomainError.self) { try Mailbox("a@example.com\r\nBcc: victim@example.com") }
        #expect(throws: DomainError.self) { try Mailbox("a@example.com", displayName: "Eve\r\nBcc: x@example.com") }
        #expect(throws: DomainError.self) { try Mailbox("not an address") }
        #expect(throws: DomainError.self) { try Mailbox("a@b") }
        var m = try message()
        m.extraHeaders = [HeaderField("X-Test", "ok\r\nBcc: x@example.com")]
        #expect(throws: DomainError.self) { try m.render() }
        let error = #expect(throws: DomainError.self) { try Mailbox("a@example.com\nX: y") }
        #expect(error?.code == "mail_header_injection")
    }

    @Test func idnDomainsArePunycoded() throws {
        #expect(IDNA.toASCII("bücher.example") == "xn--bcher-kva.example")
        #expect(IDNA.toASCII("例え.テスト") == "xn--r8jz45g.xn--zckzah")
        #expect(IDNA.toASCII("münchen.de") == "xn--mnchen-3ya.de")
        #expect(try Mailbox("kunde@Bücher.example").address == "kunde@xn--bcher-kva.example")
        #expect(try Mailbox("jürgen@example.com").needsSMTPUTF8)
        #expect(try !Mailbox("juergen@bücher.example").needsSMTPUTF8)
    }
}

@Suite struct AttachmentNameTests {
    @Test func nonASCIINamesUseRFC2231() throws {
        let m = MailMessage(
            from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.com")], subject: "x", text: "y",
            attachments: [
                Mail.Attachment(filename: "Brühguide \"2026\".pdf", contentType: "application/pdf", data: [1])
            ],
            messageID: "m@example.com", date: Date(timeIntervalSince1970: 0))
        let raw = String(decoding: try m.render().bytes, as: UTF8.self).replacingOccurrences(of: "\r\n ", with: " ")
        #expect(raw.contains("filename=\"Br_hguide _2026_.pdf\"; filename*=UTF-8''Br%C3%BChguide%20%222026%22.pdf"))
        #expect(raw.contains("Content-Type: application/pdf; name=\"Br_hguide _2026_.pdf\""))
    }
}
