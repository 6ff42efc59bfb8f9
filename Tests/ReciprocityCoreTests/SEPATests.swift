import Foundation
import XCTest

@testable import ReciprocityCore

/// IBAN/BIC checks, the SEPA character set, and pain.001.001.09 payout files (validated with xmllint when the
/// schema is at hand).
final class SEPATests: XCTestCase {
    // MARK: - Fixtures

    static let debtorIBAN = IBAN("DE89370400440532013000")!
    let debtor = SEPA.Debtor(name: "Kaffeerösterei Müller GmbH", iban: SEPATests.debtorIBAN, bic: BIC("COBADEFFXXX"))
    /// 2026-07-01T10:00:00.5Z, i.e. 12:00:00 in Berlin (CEST).
    let createdAt = Date(timeIntervalSince1970: 1_782_900_000.5)
    /// 2026-06-30T22:30:00Z, already 1 July in Berlin.
    let executionDate = Date(timeIntervalSince1970: 1_782_858_600)

    func eur(_ minor: Int64) -> Money { Money(minor: minor, currency: .eur) }

    func transfer(
        _ id: String, _ minor: Int64, name: String = "Anna Schmidt", iban: String = "AT611904300234573201",
        bic: String? = nil, remittance: String = "Praemie Empfehlung"
    ) -> SEPA.Transfer {
        SEPA.Transfer(
            endToEndID: id, creditorName: name, creditorIBAN: IBAN(iban)!, creditorBIC: bic.flatMap { BIC($0) },
            amount: eur(minor), remittance: remittance)
    }

    func document(
        _ transfers: [SEPA.Transfer], messageID: String = "PAYOUT-2026-07-01-1"
    ) throws(SEPA.InvalidBatch) -> String {
        try SEPA.creditTransfer(
            messageID: messageID, createdAt: createdAt, executionDate: executionDate, debtor: debtor,
            transfers: transfers)
    }

    /// The error a batch throws, or nil.
    func batchError(_ body: () throws(SEPA.InvalidBatch) -> String) -> SEPA.InvalidBatch? {
        do {
            _ = try body()
            return nil
        } catch {
            return error
        }
    }

    func occurrences(of needle: String, in haystack: String) -> Int {
        haystack.components(separatedBy: needle).count - 1
    }

    // MARK: - IBAN

    func testAccountHolderNameRefusesLineBreaksAndControlCharacters() {
        XCTAssertEqual(AccountHolderName.validate("  Anna Müller "), "Anna Müller")
        XCTAssertNil(AccountHolderName.validate("Anna\r\n=cmd|' /C calc'!A0"))
        XCTAssertNil(AccountHolderName.validate("Anna\u{2028}Muster"))
        XCTAssertNil(AccountHolderName.validate("Anna\u{0}"))
        XCTAssertNil(AccountHolderName.validate("   "))
        XCTAssertNil(AccountHolderName.validate(String(repeating: "a", count: 71)))
        XCTAssertNil(AccountHolderName.validate("😀😀"), "nothing left for the SEPA file")
    }

    func testIBANValidAcrossCountries() {
        for raw in [
            "DE89370400440532013000", "AT611904300234573201", "CH9300762011623852957", "NL91ABNA0417164300",
            "BE68539007547034", "FR1420041010050500013M02606", "GB29NWBK60161331926819",
            "IT60X0542811101000000123456", "ES9121000418450200051332", "PL61109010140000071219812874",
            "DK5000400440116243", "SE4550000000058398257466", "FI2112345600000785", "IE29AIBK93115212345678",
            "PT50000201231234567890154", "LU280019400644750000",
        ] {
            XCTAssertEqual(IBAN(raw)?.value, raw, raw)
        }
    }

    func testIBANNormalisesSpacesAndCase() {
        XCTAssertEqual(IBAN("DE89 3704 0044 0532 0130 00")?.value, "DE89370400440532013000")
        XCTAssertEqual(IBAN("  de89 3704 0044 0532 0130 00 ")?.value, "DE89370400440532013000")
        XCTAssertEqual(IBAN("fr14 2004 1010 0505 0001 3m02 606")?.value, "FR1420041010050500013M02606")
        XCTAssertEqual(IBAN("DE89 3704 0044 0532 0130 00"), IBAN("de89370400440532013000"))
    }

    func testIBANRejectsBadChecksum() {
        XCTAssertNil(IBAN("DE88370400440532013000"))  // check digits off by one
        XCTAssertNil(IBAN("DE89370400440532013001"))  // last digit changed
        XCTAssertNil(IBAN("DE89370400440523013000"))  // two digits swapped
        XCTAssertNil(IBAN("NL91ABNA0417164301"))
    }

    func testIBANRejectsWrongLength() {
        // These have correct mod-97 check digits but the wrong length for Germany.
        XCTAssertNil(IBAN("DE5137040044053201300"))  // 21
        XCTAssertNil(IBAN("DE543704004405320130001"))  // 23
        // Countries without a registered length: 15...34.
        XCTAssertEqual(IBAN("ZZ8112345678901")?.value, "ZZ8112345678901")
        XCTAssertNil(IBAN("ZZ121234567890"))  // 14
        XCTAssertNil(IBAN(""))
        XCTAssertNil(IBAN("DE89"))
    }

    func testIBANRejectsBadShape() {
        XCTAssertNil(IBAN("DE89-3704-0044-0532-0130-00"))
        XCTAssertNil(IBAN("1E89370400440532013000"))
        XCTAssertNil(IBAN("DEX9370400440532013000"))
        XCTAssertNil(IBAN("DE89370400440532013ä00"))
    }

    func testIBANFormattedAndMasked() {
        let iban = IBAN("DE89370400440532013000")!
        XCTAssertEqual(iban.formatted, "DE89 3704 0044 0532 0130 00")
        XCTAssertEqual(iban.masked, "DE89 •••• •••• •••• ••30 00")
        XCTAssertEqual(iban.description, iban.masked)
        XCTAssertFalse("\(iban)".contains("0532"))
        let be = IBAN("BE68539007547034")!
        XCTAssertEqual(be.formatted, "BE68 5390 0754 7034")
        XCTAssertEqual(be.masked, "BE68 •••• •••• 7034")
    }

    func testIBANCodableRoundTripAndValidation() throws {
        let iban = IBAN("DE89370400440532013000")!
        let data = try JSONEncoder().encode([iban])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), "[\"DE89370400440532013000\"]")
        XCTAssertEqual(try JSONDecoder().decode([IBAN].self, from: data), [iban])
        XCTAssertThrowsError(try JSONDecoder().decode([IBAN].self, from: Data("[\"DE88370400440532013000\"]".utf8)))
    }

    // MARK: - BIC

    func testBIC() {
        XCTAssertEqual(BIC("COBADEFFXXX")?.value, "COBADEFFXXX")
        XCTAssertEqual(BIC("cobadeff")?.value, "COBADEFF")
        XCTAssertEqual(BIC("GENO DEM1 GLS")?.value, "GENODEM1GLS")
        XCTAssertNil(BIC("COBADE"))
        XCTAssertNil(BIC("COBADEFFXX"))  // 10
        XCTAssertNil(BIC("COBA1EFFXXX"))  // digit in the country code
        XCTAssertNil(BIC("COBADEFF-XX"))
    }

    // MARK: - Character set

    func testSanitizeTransliteratesUmlauts() {
        XCTAssertEqual(SEPA.sanitize("Jürgen Groß & Söhne", maxLength: 70), "Juergen Gross + Soehne")
        XCTAssertEqual(SEPA.sanitize("ÄÖÜäöüß", maxLength: 70), "AeOeUeaeoeuess")
        // Decomposed input (u + combining diaeresis) is treated like the precomposed letter.
        XCTAssertEqual(SEPA.sanitize("Mu\u{0308}ller", maxLength: 70), "Mueller")
        XCTAssertEqual(SEPA.sanitize("José Núñez, Françoise Łukasz", maxLength: 70), "Jose Nunez, Francoise Lukasz")
    }

    func testSanitizeDropsEmojiAndReplacesSigns() {
        XCTAssertEqual(SEPA.sanitize("Danke 🎉👍🏽 dir!", maxLength: 70), "Danke dir")
        XCTAssertEqual(SEPA.sanitize("👨‍👩‍👧", maxLength: 70), "")
        XCTAssertEqual(SEPA.sanitize("a<b>c\td\ne_f;g@h", maxLength: 70), "a b c d e f g h")
        XCTAssertEqual(SEPA.sanitize("„Kaffee“ – 100 %", maxLength: 70), "'Kaffee' - 100")
        XCTAssertEqual(SEPA.sanitize("Ref: 12/34 (ok)? +1 's.", maxLength: 70), "Ref: 12/34 (ok)? +1 's.")
        XCTAssertEqual(SEPA.sanitize("北京 Beijing", maxLength: 70), "Beijing")
    }

    func testSanitizeOutputIsAlwaysInTheCharacterSet() {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-?:().,'+ ")
        let wild = "Ünïcödé ✓ <tag> & \"quotes\" \u{0}\u{7}\r\n€ 10,– ½ ﬁne Ｆｕｌｌ 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 🇩🇪"
        let clean = SEPA.sanitize(wild, maxLength: 140)
        XCTAssertTrue(clean.allSatisfy { allowed.contains($0) }, clean)
        XCTAssertFalse(clean.hasPrefix(" ") || clean.hasSuffix(" ") || clean.contains("  "), clean)
        XCTAssertTrue(clean.contains("fine Full"), clean)
    }

    func testSanitizeTruncates() {
        XCTAssertEqual(SEPA.sanitize(String(repeating: "a", count: 200), maxLength: 140).count, 140)
        // Transliteration counts: ß is two characters.
        XCTAssertEqual(SEPA.sanitize("Straße", maxLength: 5), "Stras")
        // No trailing space after cutting.
        XCTAssertEqual(SEPA.sanitize("abcd efgh", maxLength: 5), "abcd")
        XCTAssertEqual(SEPA.sanitize("abc", maxLength: 0), "")
    }

    // MARK: - Documents

    func testSingleTransferDocument() throws {
        let xml = try document([transfer("E2E-1", 2500, bic: "BKAUATWW")])
        XCTAssertTrue(xml.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"))
        XCTAssertTrue(xml.contains("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09\">"))
        XCTAssertEqual(occurrences(of: "<NbOfTxs>1</NbOfTxs>", in: xml), 2)
        XCTAssertEqual(occurrences(of: "<CtrlSum>25.00</CtrlSum>", in: xml), 2)
        XCTAssertTrue(xml.contains("<InstdAmt Ccy=\"EUR\">25.00</InstdAmt>"))
        XCTAssertTrue(xml.contains("<MsgId>PAYOUT-2026-07-01-1</MsgId>"))
        XCTAssertTrue(xml.contains("<CreDtTm>2026-07-01T12:00:00+02:00</CreDtTm>"))
        XCTAssertTrue(xml.contains("<ReqdExctnDt>\n        <Dt>2026-07-01</Dt>\n      </ReqdExctnDt>"))
        XCTAssertTrue(xml.contains("<SvcLvl>\n          <Cd>SEPA</Cd>"))
        XCTAssertTrue(xml.contains("<ChrgBr>SLEV</ChrgBr>"))
        XCTAssertTrue(xml.contains("<Nm>Kaffeeroesterei Mueller GmbH</Nm>"))
        XCTAssertTrue(xml.contains("<IBAN>DE89370400440532013000</IBAN>"))
        XCTAssertTrue(xml.contains("<BICFI>COBADEFFXXX</BICFI>"))
        XCTAssertTrue(xml.contains("<BICFI>BKAUATWW</BICFI>"))
        XCTAssertTrue(xml.contains("<Ustrd>Praemie Empfehlung</Ustrd>"))
        XCTAssertEqual(occurrences(of: "<PmtInf>", in: xml), 1)
        try assertSchemaValid(xml)
    }

    func testSumsAndCounts() throws {
        let xml = try document([
            transfer("E2E-1", 1000, name: "Jürgen Groß & Söhne"),
            transfer("E2E-2", 2550, iban: "NL91ABNA0417164300"),
            transfer("E2E-3", 1, iban: "FR1420041010050500013M02606"),
        ])
        XCTAssertEqual(occurrences(of: "<NbOfTxs>3</NbOfTxs>", in: xml), 2)
        XCTAssertEqual(occurrences(of: "<CtrlSum>35.51</CtrlSum>", in: xml), 2)
        XCTAssertEqual(occurrences(of: "<CdtTrfTxInf>", in: xml), 3)
        XCTAssertTrue(xml.contains("<InstdAmt Ccy=\"EUR\">10.00</InstdAmt>"))
        XCTAssertTrue(xml.contains("<InstdAmt Ccy=\"EUR\">25.50</InstdAmt>"))
        XCTAssertTrue(xml.contains("<InstdAmt Ccy=\"EUR\">0.01</InstdAmt>"))
        XCTAssertTrue(xml.contains("<Nm>Juergen Gross + Soehne</Nm>"))
        // Without a creditor BIC there is no CdtrAgt.
        XCTAssertFalse(xml.contains("<CdtrAgt>"))
        try assertSchemaValid(xml)
    }

    func testLargeSumsAreExact() throws {
        let xml = try document([transfer("A", 99_999_999_999), transfer("B", 99_999_999_999), transfer("C", 3)])
        XCTAssertEqual(occurrences(of: "<CtrlSum>2000000000.01</CtrlSum>", in: xml), 2)
        XCTAssertTrue(xml.contains("<InstdAmt Ccy=\"EUR\">999999999.99</InstdAmt>"))
        try assertSchemaValid(xml)
    }

    func testNamesAndTextsAreCleanedAndCut() throws {
        let longName = "Jürgen Groß & Söhne Kaffeehandelsgesellschaft mit beschränkter Haftung und Compagnie KG"
        let longText = String(repeating: "Danke für deine Empfehlung 🎉 – Bestellung #4711; ", count: 5)
        let xml = try document([transfer("E2E-1", 500, name: longName, remittance: longText)])
        let name = try XCTUnwrap(value(of: "Nm", in: xml, occurrence: 2))  // InitgPty, Dbtr, Cdtr
        XCTAssertEqual(name, SEPA.sanitize(longName, maxLength: 70))
        XCTAssertLessThanOrEqual(name.count, 70)
        XCTAssertTrue(name.hasPrefix("Juergen Gross + Soehne Kaffeehandelsgesellschaft"))
        let ustrd = try XCTUnwrap(value(of: "Ustrd", in: xml))
        XCTAssertLessThanOrEqual(ustrd.count, 140)
        XCTAssertTrue(ustrd.hasPrefix("Danke fuer deine Empfehlung - Bestellung 4711 Danke"), ustrd)
        try assertSchemaValid(xml)
    }

    func testEmptyRemittanceIsOmitted() throws {
        let xml = try document([transfer("E2E-1", 500, remittance: " 🎉 ")])
        XCTAssertFalse(xml.contains("<RmtInf>"))
        XCTAssertFalse(xml.contains("<Ustrd>"))
        try assertSchemaValid(xml)
    }

    func testDebtorWithoutBICSaysNotProvided() throws {
        let xml = try SEPA.creditTransfer(
            messageID: "M1", createdAt: createdAt, executionDate: executionDate,
            debtor: SEPA.Debtor(name: "Shop", iban: SEPATests.debtorIBAN), transfers: [transfer("E1", 100)])
        XCTAssertTrue(xml.contains("<FinInstnId>\n          <Othr>\n            <Id>NOTPROVIDED</Id>"))
        XCTAssertFalse(xml.contains("<BICFI>"))
        try assertSchemaValid(xml)
    }

    func testTimesInTheGivenZone() throws {
        let winter = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z
        let xml = try SEPA.creditTransfer(
            messageID: "M1", createdAt: winter, executionDate: winter, debtor: debtor, transfers: [transfer("E1", 1)])
        XCTAssertTrue(xml.contains("<CreDtTm>2026-01-01T01:00:00+01:00</CreDtTm>"))
        XCTAssertTrue(xml.contains("<Dt>2026-01-01</Dt>"))
        let utc = try SEPA.creditTransfer(
            messageID: "M1", createdAt: createdAt, executionDate: executionDate, debtor: debtor,
            transfers: [transfer("E1", 1)], timeZone: TimeZone(identifier: "UTC")!)
        XCTAssertTrue(utc.contains("<CreDtTm>2026-07-01T10:00:00+00:00</CreDtTm>"))
        XCTAssertTrue(utc.contains("<Dt>2026-06-30</Dt>"))
    }

    func testDeterministic() throws {
        let batch = [transfer("E2E-1", 1000), transfer("E2E-2", 2000)]
        XCTAssertEqual(try document(batch), try document(batch))
    }

    func testEscaping() throws {
        XCTAssertEqual(SEPA.escape("a&b<c>\"d'e"), "a&amp;b&lt;c&gt;&quot;d&apos;e")
        let xml = try document([
            transfer("E2E-1", 100, name: "O'Brien & Co <Ltd>", remittance: "Ref 1 & 2 <script>x</script>")
        ])
        XCTAssertTrue(xml.contains("<Nm>O&apos;Brien + Co Ltd</Nm>"))
        XCTAssertTrue(xml.contains("<Ustrd>Ref 1 + 2 script x /script</Ustrd>"))
        XCTAssertFalse(xml.contains("<Ltd>"))
        XCTAssertFalse(xml.contains("<script>"))
        // Every '&' in the document starts an entity.
        let ampersands = occurrences(of: "&", in: xml)
        XCTAssertEqual(ampersands, occurrences(of: "&apos;", in: xml) + occurrences(of: "&amp;", in: xml))
        try assertSchemaValid(xml)
    }

    // MARK: - Invalid batches

    func testNoTransfers() {
        let error = batchError { () throws(SEPA.InvalidBatch) in try document([]) }
        XCTAssertEqual(error, SEPA.InvalidBatch(reason: "The batch has no transfers."))
    }

    func testNonEURAmount() throws {
        var t = transfer("E2E-1", 1000)
        t.amount = Money(minor: 1000, currency: try Currency("CHF"))
        let error = batchError { () throws(SEPA.InvalidBatch) in try document([t]) }
        XCTAssertTrue(error?.reason.contains("CHF") == true, "\(String(describing: error))")
    }

    func testNonPositiveAmounts() {
        for minor: Int64 in [0, -100] {
            let error = batchError { () throws(SEPA.InvalidBatch) in try document([transfer("E2E-1", minor)]) }
            XCTAssertTrue(error?.reason.contains("non-positive") == true, "\(String(describing: error))")
        }
    }

    func testTooLargeAmount() {
        let error = batchError { () throws(SEPA.InvalidBatch) in try document([transfer("E2E-1", 100_000_000_000)]) }
        XCTAssertTrue(error?.reason.contains("maximum") == true, "\(String(describing: error))")
    }

    func testDuplicateEndToEndID() {
        let error = batchError { () throws(SEPA.InvalidBatch) in
            try document([transfer("E2E-1", 100), transfer("E2E-2", 100), transfer("E2E-1", 200)])
        }
        XCTAssertEqual(error, SEPA.InvalidBatch(reason: "The end-to-end ID 'E2E-1' occurs more than once."))
    }

    func testIDLengths() throws {
        let id35 = String(repeating: "X", count: 35)
        let id36 = String(repeating: "X", count: 36)
        XCTAssertNoThrow(try document([transfer(id35, 100)], messageID: id35))
        try assertSchemaValid(try document([transfer(id35, 100)], messageID: id35))
        let longEndToEnd = batchError { () throws(SEPA.InvalidBatch) in try document([transfer(id36, 100)]) }
        XCTAssertTrue(longEndToEnd?.reason.contains("longer than 35") == true, "\(String(describing: longEndToEnd))")
        let longMessage = batchError { () throws(SEPA.InvalidBatch) in
            try document([transfer("E2E-1", 100)], messageID: id36)
        }
        XCTAssertTrue(longMessage?.reason.contains("message ID") == true, "\(String(describing: longMessage))")
        // 35 characters, not bytes: but non-ASCII is outside the character set anyway.
        XCTAssertNotNil(batchError { () throws(SEPA.InvalidBatch) in try document([transfer("Zahlung-ü", 100)]) })
    }

    func testMalformedIDs() {
        for bad in ["", "A&B", "A<B", "/ABC", "ABC/", "A//B", "Prämie"] {
            let asEndToEnd = batchError { () throws(SEPA.InvalidBatch) in try document([transfer(bad, 100)]) }
            XCTAssertNotNil(asEndToEnd, "end-to-end ID '\(bad)'")
            let asMessage = batchError { () throws(SEPA.InvalidBatch) in
                try document([transfer("E1", 100)], messageID: bad)
            }
            XCTAssertNotNil(asMessage, "message ID '\(bad)'")
        }
    }

    func testNameEmptyInTheCharacterSet() {
        let creditor = batchError { () throws(SEPA.InvalidBatch) in try document([transfer("E1", 100, name: "🎉")]) }
        XCTAssertTrue(creditor?.reason.contains("creditor name") == true, "\(String(describing: creditor))")
        let debtor = batchError { () throws(SEPA.InvalidBatch) in
            try SEPA.creditTransfer(
                messageID: "M1", createdAt: createdAt, executionDate: executionDate,
                debtor: SEPA.Debtor(name: "北京", iban: SEPATests.debtorIBAN), transfers: [transfer("E1", 100)])
        }
        XCTAssertTrue(debtor?.reason.contains("debtor name") == true, "\(String(describing: debtor))")
    }

    // MARK: - Helpers

    /// The text of the n-th (0-based) `<tag>…</tag>` in the document.
    func value(of tag: String, in xml: String, occurrence: Int = 0) -> String? {
        let parts = xml.components(separatedBy: "<\(tag)>")
        guard parts.count > occurrence + 1 else { return nil }
        return parts[occurrence + 1].components(separatedBy: "</\(tag)>").first
    }

    /// The schema: a copy next to the tests (Fixtures/), else the project's shared schemas directory.
    static let schema: String? = {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let candidates = [
            here.appendingPathComponent("Fixtures/pain.001.001.09.xsd"),
            here.appendingPathComponent("../../../shared/schemas/pain.001.001.09.xsd").standardizedFileURL,
        ]
        return candidates.map(\.path).first { FileManager.default.fileExists(atPath: $0) }
    }()

    /// Validates with `xmllint --schema` (scripts/test installs libxml2-utils); a missing schema or tool fails.
    func assertSchemaValid(_ xml: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let xsd = Self.schema else { return XCTFail("pain.001 schema not found", file: file, line: line) }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pain-\(UUID().uuidString).xml")
        try xml.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["xmllint", "--noout", "--schema", xsd, url.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return XCTFail("cannot run xmllint: \(error)", file: file, line: line) }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "xmllint: \(output)\n\(xml)", file: file, line: line)
    }
}
