import Foundation

/// An International Bank Account Number (ISO 13616).
///
/// Normalised on input (whitespace removed, uppercased) and checked by the country's registered length (other
/// countries: 15...34 characters) and by the ISO 7064 mod 97-10 check digits. `description` is the masked form so
/// that an IBAN interpolated into a log line does not leak the account number; use `value` for the real thing.
public struct IBAN: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The normalised IBAN, e.g. `DE89370400440532013000`.
    public let value: String

    /// IBAN lengths from the SWIFT IBAN registry for the SEPA countries and a few neighbours.
    static let lengths: [String: Int] = [
        "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
        "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27, "HR": 21, "HU": 28,
        "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
        "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "VA": 22,
    ]

    public init?(_ raw: String) {
        let normalised = String(raw.unicodeScalars.filter { !$0.properties.isWhitespace }).uppercased()
        guard Self.isValid(normalised) else { return nil }
        value = normalised
    }

    static func isValid(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (15...34).contains(bytes.count) else { return false }
        func isLetter(_ b: UInt8) -> Bool { b >= 65 && b <= 90 }  // A-Z
        func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }  // 0-9
        guard isLetter(bytes[0]), isLetter(bytes[1]), isDigit(bytes[2]), isDigit(bytes[3]),
            bytes.allSatisfy({ isLetter($0) || isDigit($0) })
        else { return false }
        let country = String(decoding: bytes[0..<2], as: UTF8.self)
        if let expected = lengths[country], expected != bytes.count { return false }
        // ISO 7064 mod 97-10: move the first four characters to the end, letters become 10...35, the number mod 97
        // must be 1. Computed digit by digit so no big integers are needed.
        var remainder = 0
        for b in bytes[4...] + bytes[0..<4] {
            if isDigit(b) {
                remainder = (remainder * 10 + Int(b - 48)) % 97
            } else {
                remainder = (remainder * 100 + Int(b - 65 + 10)) % 97
            }
        }
        return remainder == 1
    }

    /// Groups of four for display: `DE89 3704 0044 0532 0130 00`.
    public var formatted: String { Self.group(Array(value)) }

    /// Only the country code, the check digits and the last four characters stay visible:
    /// `DE89 •••• •••• •••• ••30 00`.
    public var masked: String {
        let chars = Array(value)
        let hidden = chars.enumerated().map { i, c in i < 4 || i >= chars.count - 4 ? c : "•" }
        return Self.group(hidden)
    }

    public var description: String { masked }

    static func group(_ chars: [Character]) -> String {
        stride(from: 0, to: chars.count, by: 4)
            .map { String(chars[$0..<min($0 + 4, chars.count)]) }
            .joined(separator: " ")
    }

    // Encoded as a plain string; decoding validates.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        guard let iban = IBAN(raw) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "Not a valid IBAN.")
        }
        self = iban
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// A Business Identifier Code (ISO 9362): 4 institution, 2 country, 2 location and optionally 3 branch characters.
/// Optional in SEPA (the IBAN suffices), but validated when given.
public struct BIC: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The normalised BIC, e.g. `COBADEFFXXX`.
    public let value: String

    public init?(_ raw: String) {
        let normalised = String(raw.unicodeScalars.filter { !$0.properties.isWhitespace }).uppercased()
        let bytes = Array(normalised.utf8)
        guard bytes.count == 8 || bytes.count == 11 else { return nil }
        func isLetter(_ b: UInt8) -> Bool { b >= 65 && b <= 90 }
        func isAlnum(_ b: UInt8) -> Bool { isLetter(b) || (b >= 48 && b <= 57) }
        // The schema's pattern: [A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?
        for (i, b) in bytes.enumerated() {
            guard (4...5).contains(i) ? isLetter(b) : isAlnum(b) else { return nil }
        }
        value = normalised
    }

    public var description: String { value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        guard let bic = BIC(raw) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "Not a valid BIC.")
        }
        self = bic
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// The account holder's name an advocate gives for cash payouts, as entered: trimmed, 1...70 characters (SEPA's
/// `Nm`), without control characters or line breaks (it goes into the payout CSV as it is, and a line break there
/// would start a row of the advocate's making), and with something left in SEPA's character set for the file.
public enum AccountHolderName {
    public static func validate(_ raw: String) -> String? {
        let name = raw.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty, name.count <= 70,
            !name.unicodeScalars.contains(where: {
                [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory)
            }),
            !SEPA.sanitize(name, maxLength: 70).isEmpty
        else { return nil }
        return name
    }
}

/// SEPA credit transfers (SCT) as a pain.001.001.09 customer-to-bank file (EPC implementation guidelines 2023),
/// which the merchant uploads to their bank to pay out cash rewards.
public enum SEPA {
    /// The account the money comes from: the merchant's.
    public struct Debtor: Sendable, Hashable {
        public var name: String
        public var iban: IBAN
        public var bic: BIC?

        public init(name: String, iban: IBAN, bic: BIC? = nil) {
            self.name = name
            self.iban = iban
            self.bic = bic
        }
    }

    /// One payment to one beneficiary.
    public struct Transfer: Sendable, Hashable {
        /// Unique within the batch, at most 35 characters of the SEPA character set; appears on the
        /// beneficiary's statement and in returns, so make it the payout's reference.
        public var endToEndID: String
        public var creditorName: String
        public var creditorIBAN: IBAN
        public var creditorBIC: BIC?
        /// Must be EUR and positive (at most 999,999,999.99).
        public var amount: Money
        /// Unstructured remittance information; converted to the SEPA character set and cut to 140 characters.
        public var remittance: String

        public init(
            endToEndID: String, creditorName: String, creditorIBAN: IBAN, creditorBIC: BIC? = nil, amount: Money,
            remittance: String
        ) {
            self.endToEndID = endToEndID
            self.creditorName = creditorName
            self.creditorIBAN = creditorIBAN
            self.creditorBIC = creditorBIC
            self.amount = amount
            self.remittance = remittance
        }
    }

    /// Why a batch cannot be turned into a payment file.
    public struct InvalidBatch: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public init(reason: String) { self.reason = reason }
        public var description: String { reason }
    }

    /// The largest amount a single SCT may carry, in cents (999,999,999.99).
    static let maxAmountMinor: Int64 = 99_999_999_999
    static let namespace = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"

    /// A complete pain.001.001.09 document: UTF-8 XML with declaration, one `PmtInf` with service level SEPA,
    /// `ChrgBr` SLEV, `ReqdExctnDt/Dt`, `NbOfTxs` and `CtrlSum` at group and payment-information level. Names and
    /// texts are converted to the SEPA character set and cut to the schema's lengths (`Nm` 70, `Ustrd` 140).
    /// `PmtInfId` is the message ID. The output depends only on the arguments.
    ///
    /// Throws `InvalidBatch` for: no transfers; a non-EUR, non-positive or too large amount; a duplicate end-to-end
    /// ID; a message or end-to-end ID that is empty, longer than 35 characters, outside the SEPA character set, or
    /// starts/ends with `/` or contains `//`; a debtor or creditor name that is empty in the SEPA character set.
    public static func creditTransfer(
        messageID: String, createdAt: Date, executionDate: Date, debtor: Debtor, transfers: [Transfer],
        timeZone: TimeZone = TimeZone(identifier: "Europe/Berlin")!
    ) throws(InvalidBatch) -> String {
        try checkID(messageID, what: "The message ID")
        guard !transfers.isEmpty else { throw InvalidBatch(reason: "The batch has no transfers.") }
        let debtorName = sanitize(debtor.name, maxLength: 70)
        guard !debtorName.isEmpty else {
            throw InvalidBatch(reason: "The debtor name '\(debtor.name)' is empty in the SEPA character set.")
        }

        var seen = Set<String>()
        var total: Int64 = 0
        for (i, t) in transfers.enumerated() {
            let label = "Transfer \(i + 1) ('\(t.endToEndID)')"
            try checkID(t.endToEndID, what: "The end-to-end ID of transfer \(i + 1)")
            guard seen.insert(t.endToEndID).inserted else {
                throw InvalidBatch(reason: "The end-to-end ID '\(t.endToEndID)' occurs more than once.")
            }
            guard t.amount.currency == .eur else {
                throw InvalidBatch(
                    reason: "\(label) is in \(t.amount.currency.code); SEPA credit transfers are in EUR only.")
            }
            guard t.amount.minor > 0 else {
                throw InvalidBatch(reason: "\(label) has the non-positive amount \(t.amount.decimalString).")
            }
            guard t.amount.minor <= maxAmountMinor else {
                throw InvalidBatch(reason: "\(label) exceeds the SEPA maximum of 999999999.99 EUR.")
            }
            guard !sanitize(t.creditorName, maxLength: 70).isEmpty else {
                throw InvalidBatch(
                    reason: "\(label) has a creditor name that is empty in the SEPA character set.")
            }
            let (sum, overflow) = total.addingReportingOverflow(t.amount.minor)
            guard !overflow else { throw InvalidBatch(reason: "The control sum overflows.") }
            total = sum
        }

        let count = String(transfers.count)
        let controlSum = Money(minor: total, currency: .eur).decimalString
        var x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        x += "<Document xmlns=\"\(namespace)\">\n"
        x += "  <CstmrCdtTrfInitn>\n"
        x += "    <GrpHdr>\n"
        x += "      <MsgId>\(escape(messageID))</MsgId>\n"
        x += "      <CreDtTm>\(dateTime(createdAt, in: timeZone))</CreDtTm>\n"
        x += "      <NbOfTxs>\(count)</NbOfTxs>\n"
        x += "      <CtrlSum>\(controlSum)</CtrlSum>\n"
        x += "      <InitgPty>\n"
        x += "        <Nm>\(escape(debtorName))</Nm>\n"
        x += "      </InitgPty>\n"
        x += "    </GrpHdr>\n"
        x += "    <PmtInf>\n"
        x += "      <PmtInfId>\(escape(messageID))</PmtInfId>\n"
        x += "      <PmtMtd>TRF</PmtMtd>\n"
        x += "      <NbOfTxs>\(count)</NbOfTxs>\n"
        x += "      <CtrlSum>\(controlSum)</CtrlSum>\n"
        x += "      <PmtTpInf>\n"
        x += "        <SvcLvl>\n"
        x += "          <Cd>SEPA</Cd>\n"
        x += "        </SvcLvl>\n"
        x += "      </PmtTpInf>\n"
        x += "      <ReqdExctnDt>\n"
        x += "        <Dt>\(date(executionDate, in: timeZone))</Dt>\n"
        x += "      </ReqdExctnDt>\n"
        x += "      <Dbtr>\n"
        x += "        <Nm>\(escape(debtorName))</Nm>\n"
        x += "      </Dbtr>\n"
        x += "      <DbtrAcct>\n"
        x += "        <Id>\n"
        x += "          <IBAN>\(escape(debtor.iban.value))</IBAN>\n"
        x += "        </Id>\n"
        x += "      </DbtrAcct>\n"
        x += "      <DbtrAgt>\n"
        x += "        <FinInstnId>\n"
        if let bic = debtor.bic {
            x += "          <BICFI>\(escape(bic.value))</BICFI>\n"
        } else {
            x += "          <Othr>\n"
            x += "            <Id>NOTPROVIDED</Id>\n"
            x += "          </Othr>\n"
        }
        x += "        </FinInstnId>\n"
        x += "      </DbtrAgt>\n"
        x += "      <ChrgBr>SLEV</ChrgBr>\n"
        for t in transfers {
            x += "      <CdtTrfTxInf>\n"
            x += "        <PmtId>\n"
            x += "          <EndToEndId>\(escape(t.endToEndID))</EndToEndId>\n"
            x += "        </PmtId>\n"
            x += "        <Amt>\n"
            x += "          <InstdAmt Ccy=\"EUR\">\(t.amount.decimalString)</InstdAmt>\n"
            x += "        </Amt>\n"
            if let bic = t.creditorBIC {
                x += "        <CdtrAgt>\n"
                x += "          <FinInstnId>\n"
                x += "            <BICFI>\(escape(bic.value))</BICFI>\n"
                x += "          </FinInstnId>\n"
                x += "        </CdtrAgt>\n"
            }
            x += "        <Cdtr>\n"
            x += "          <Nm>\(escape(sanitize(t.creditorName, maxLength: 70)))</Nm>\n"
            x += "        </Cdtr>\n"
            x += "        <CdtrAcct>\n"
            x += "          <Id>\n"
            x += "            <IBAN>\(escape(t.creditorIBAN.value))</IBAN>\n"
            x += "          </Id>\n"
            x += "        </CdtrAcct>\n"
            let remittance = sanitize(t.remittance, maxLength: 140)
            if !remittance.isEmpty {
                x += "        <RmtInf>\n"
                x += "          <Ustrd>\(escape(remittance))</Ustrd>\n"
                x += "        </RmtInf>\n"
            }
            x += "      </CdtTrfTxInf>\n"
        }
        x += "    </PmtInf>\n"
        x += "  </CstmrCdtTrfInitn>\n"
        x += "</Document>\n"
        return x
    }

    // MARK: - Character set

    /// The SEPA (EPC basic Latin) character set: `a-z A-Z 0-9 / - ? : ( ) . , ' +` and space.
    static func isSEPA(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x61...0x7A, 0x41...0x5A, 0x30...0x39: return true
        default: return "/-?:().,'+ ".unicodeScalars.contains(s)
        }
    }

    /// Replacements applied before anything else: the German umlauts and a few letters and signs that have no
    /// decomposition to a basic Latin letter.
    static let transliterations: [Unicode.Scalar: String] = [
        "ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss", "ẞ": "SS",
        "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D",
        "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i", "&": "+",
        "\u{2018}": "'", "\u{2019}": "'", "\u{201A}": "'", "\u{201B}": "'", "\u{2039}": "'", "\u{203A}": "'",
        "\"": "'", "\u{201C}": "'", "\u{201D}": "'", "\u{201E}": "'", "\u{00AB}": "'", "\u{00BB}": "'",
        "`": "'", "\u{00B4}": "'",
        "\u{2010}": "-", "\u{2011}": "-", "\u{2012}": "-", "\u{2013}": "-", "\u{2014}": "-", "\u{2212}": "-",
    ]

    /// Converts text to the SEPA character set and cuts it to `maxLength` characters.
    ///
    /// German umlauts are transliterated (ä→ae, Ä→Ae, ß→ss), `&` becomes `+`, typographic quotes and dashes become
    /// `'` and `-`, accented letters lose their accents (é→e). Whitespace, control characters and ASCII signs
    /// outside the set (`<>@_;!*` ...) become a space; anything else (emoji, other scripts) is dropped. Runs of
    /// spaces are collapsed and the result is trimmed, also after cutting.
    public static func sanitize(_ text: String, maxLength: Int) -> String {
        var out = ""
        for scalar in text.precomposedStringWithCanonicalMapping.unicodeScalars {
            if let replacement = transliterations[scalar] {
                out += replacement
                continue
            }
            // Compatibility decomposition turns é into e + combining accent, ﬁ into fi, full-width letters into
            // ASCII; keep what is in the set, drop combining marks.
            for s in String(scalar).decomposedStringWithCompatibilityMapping.unicodeScalars {
                if let replacement = transliterations[s] {
                    out += replacement
                } else if isSEPA(s) {
                    out.unicodeScalars.append(s)
                } else if s.isASCII || s.properties.isWhitespace {
                    out += " "  // ASCII signs outside the set, control characters, any whitespace
                }  // else: combining marks, emoji, other scripts are dropped
            }
        }
        let collapsed = out.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        guard maxLength > 0 else { return "" }
        return String(collapsed.prefix(maxLength)).trimmingCharacters(in: .whitespaces)
    }

    /// Message, payment-information and end-to-end IDs: 1...35 characters of the SEPA set, neither starting nor
    /// ending with `/` and without `//` (EPC implementation guidelines).
    static func checkID(_ id: String, what: String) throws(InvalidBatch) {
        guard !id.isEmpty else { throw InvalidBatch(reason: "\(what) is empty.") }
        guard id.count <= 35 else {
            throw InvalidBatch(reason: "\(what) '\(id)' is longer than 35 characters.")
        }
        guard id.unicodeScalars.allSatisfy(isSEPA) else {
            throw InvalidBatch(reason: "\(what) '\(id)' has characters outside the SEPA character set.")
        }
        guard !id.hasPrefix("/"), !id.hasSuffix("/"), !id.contains("//") else {
            throw InvalidBatch(reason: "\(what) '\(id)' must not start or end with '/' or contain '//'.")
        }
    }

    // MARK: - XML

    /// Escapes text for XML element content and attribute values.
    static func escape(_ text: String) -> String { XMLText.escape(text) }

    static func components(_ date: Date, in timeZone: TimeZone) -> DateComponents {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
    }

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    /// `YYYY-MM-DD` of the day the date falls on in the time zone.
    static func date(_ date: Date, in timeZone: TimeZone) -> String {
        let c = components(date, in: timeZone)
        return "\(pad(c.year ?? 0, 4))-\(pad(c.month ?? 1, 2))-\(pad(c.day ?? 1, 2))"
    }

    /// ISO 8601 with seconds and the zone's offset, e.g. `2025-03-01T09:30:00+01:00`.
    static func dateTime(_ date: Date, in timeZone: TimeZone) -> String {
        // Whole seconds, so that the local time and the offset agree.
        let whole = Date(timeIntervalSince1970: (date.timeIntervalSince1970).rounded(.down))
        let c = components(whole, in: timeZone)
        let offsetMinutes = Int((Double(timeZone.secondsFromGMT(for: whole)) / 60).rounded())
        let sign = offsetMinutes < 0 ? "-" : "+"
        let offset = "\(sign)\(pad(abs(offsetMinutes) / 60, 2)):\(pad(abs(offsetMinutes) % 60, 2))"
        return "\(pad(c.year ?? 0, 4))-\(pad(c.month ?? 1, 2))-\(pad(c.day ?? 1, 2))T"
            + "\(pad(c.hour ?? 0, 2)):\(pad(c.minute ?? 0, 2)):\(pad(c.second ?? 0, 2))\(offset)"
    }
}
