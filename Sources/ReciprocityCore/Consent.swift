import Foundation

public typealias ContactID = Int64

/// A person a workspace knows by email. The address is stored as given plus normalized for matching.
public struct Contact: Sendable, Equatable {
    public var id: ContactID
    public var workspaceID: WorkspaceID
    public var email: String
    public var emailNormalized: String
    public var firstName: String?
    public var lastName: String?
    public var locale: String
    /// How the address was obtained: `order`, `lead_magnet`, `import`, `api`, `admin`.
    public var source: String
    /// The order, form or file that the source refers to.
    public var sourceRef: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var erasedAt: Date?

    public init(
        id: ContactID, workspaceID: WorkspaceID, email: String, emailNormalized: String, firstName: String?,
        lastName: String?, locale: String, source: String, sourceRef: String?, createdAt: Date, updatedAt: Date,
        erasedAt: Date?
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.email = email
        self.emailNormalized = emailNormalized
        self.firstName = firstName
        self.lastName = lastName
        self.locale = locale
        self.source = source
        self.sourceRef = sourceRef
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.erasedAt = erasedAt
    }

    public var displayName: String {
        [firstName, lastName].compactMap { $0 }.joined(separator: " ")
    }
}

/// Consent is given per purpose, never in bulk.
public enum ConsentPurpose: String, Sendable, Codable, CaseIterable {
    case newsletter
    case reviewRequest = "review_request"
    case survey
    case referralProgram = "referral_program"
}

public enum ConsentState: String, Sendable, Codable {
    case pending, granted, withdrawn
}

/// The legal basis a marketing mail relies on (COMPLIANCE-DE: consent, or the §7(3) UWG existing-customer rule).
public enum LegalBasis: String, Sendable, Codable {
    case consent
    case existingCustomer = "existing_customer_7_3"
}

/// A versioned text shown to a person when asking for consent. Identical texts share one version.
public struct ConsentText: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var purpose: ConsentPurpose
    public var version: Int
    public var locale: String
    public var body: String
    public var createdAt: Date
    public init(
        id: Int64, workspaceID: WorkspaceID, purpose: ConsentPurpose, version: Int, locale: String, body: String,
        createdAt: Date
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.purpose = purpose
        self.version = version
        self.locale = locale
        self.body = body
        self.createdAt = createdAt
    }
}

/// Evidence of one step of a consent: who, when, where, and what they saw.
public struct ConsentEvidence: Sendable, Equatable, Codable {
    public var at: Date
    public var ip: String?
    public var userAgent: String?
    public init(at: Date, ip: String? = nil, userAgent: String? = nil) {
        self.at = at
        self.ip = ip
        self.userAgent = userAgent
    }
}

/// The current consent of a contact for one purpose, with the evidence for its state.
public struct Consent: Sendable, Equatable {
    public var id: Int64
    public var workspaceID: WorkspaceID
    public var contactID: ContactID
    public var purpose: ConsentPurpose
    public var state: ConsentState
    public var legalBasis: LegalBasis
    public var textID: Int64?
    public var source: String
    public var formID: String?
    public var pageURL: String?
    public var requested: ConsentEvidence?
    public var granted: ConsentEvidence?
    public var withdrawnAt: Date?
    public var updatedAt: Date

    public init(
        id: Int64, workspaceID: WorkspaceID, contactID: ContactID, purpose: ConsentPurpose, state: ConsentState,
        legalBasis: LegalBasis, textID: Int64?, source: String, formID: String?, pageURL: String?,
        requested: ConsentEvidence?, granted: ConsentEvidence?, withdrawnAt: Date?, updatedAt: Date
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.contactID = contactID
        self.purpose = purpose
        self.state = state
        self.legalBasis = legalBasis
        self.textID = textID
        self.source = source
        self.formID = formID
        self.pageURL = pageURL
        self.requested = requested
        self.granted = granted
        self.withdrawnAt = withdrawnAt
        self.updatedAt = updatedAt
    }
}

/// A consent change to apply. The rules of which changes are allowed live in `ConsentRules`.
public struct ConsentChange: Sendable {
    public enum Action: String, Sendable, Codable { case request, grant, withdraw }
    public var purpose: ConsentPurpose
    public var action: Action
    public var legalBasis: LegalBasis
    public var text: String?
    public var textLocale: String
    public var source: String
    public var formID: String?
    public var pageURL: String?
    public var evidence: ConsentEvidence

    public init(
        purpose: ConsentPurpose, action: Action, legalBasis: LegalBasis = .consent, text: String?,
        textLocale: String = "de", source: String, formID: String? = nil, pageURL: String? = nil,
        evidence: ConsentEvidence
    ) {
        self.purpose = purpose
        self.action = action
        self.legalBasis = legalBasis
        self.text = text
        self.textLocale = textLocale
        self.source = source
        self.formID = formID
        self.pageURL = pageURL
        self.evidence = evidence
    }
}

public enum ConsentRules {
    /// Whether the person has decided on a purpose: granted or withdrawn (a pending request is no decision).
    public static func decided(_ state: ConsentState?) -> Bool { state == .granted || state == .withdrawn }

    /// A purpose the person has not consented to and not objected to: mail for it may still come under §7(3) UWG
    /// (an existing customer), so the preference centre offers an objection to that purpose alone.
    public static func objectable(_ state: ConsentState?) -> Bool { !decided(state) }

    /// What a preference centre save withdraws: every consent whose box was unticked (`keep` lacks it), and every
    /// objectable purpose whose objection was ticked (`object` has it). Ticking never grants.
    public static func preferenceWithdrawals(
        consents: [ConsentPurpose: ConsentState], keep: Set<ConsentPurpose>, object: Set<ConsentPurpose>
    ) -> [ConsentPurpose] {
        ConsentPurpose.allCases.filter {
            let state = consents[$0]
            return (state == .granted && !keep.contains($0)) || (objectable(state) && object.contains($0))
        }
    }

    /// The state after applying `action` to a consent in `current` (nil: none yet).
    /// A withdrawal is final until a new, explicitly granted consent; a request never downgrades a grant.
    public static func next(from current: ConsentState?, action: ConsentChange.Action) -> ConsentState {
        switch (current, action) {
        case (_, .withdraw): return .withdrawn
        case (_, .grant): return .granted
        case (.granted?, .request): return .granted
        case (_, .request): return .pending
        }
    }

    /// A grant must carry the text the person saw; consent without a recorded text cannot be proven.
    public static func validate(_ change: ConsentChange) throws(DomainError) {
        if change.action != .withdraw && change.legalBasis == .consent {
            guard let text = change.text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw .invalid(
                    "consent_text_missing", "A consent needs the exact text that was shown.", field: "text")
            }
        }
        if let text = change.text, text.count > 10_000 {
            throw .invalid("consent_text_too_long", "A consent text has at most 10,000 characters.", field: "text")
        }
    }
}

/// IPs kept for consent proof are stored in full; elsewhere they are truncated (data minimisation, Art. 5 DSGVO).
public enum IPAddressPolicy {
    /// IPv4 keeps the first three octets; IPv6 the first three groups (/48).
    public static func truncate(_ ip: String) -> String {
        if ip.contains(":") {
            let groups = ip.split(separator: ":", omittingEmptySubsequences: false).prefix(3)
            return groups.joined(separator: ":") + "::"
        }
        let octets = ip.split(separator: ".")
        guard octets.count == 4 else { return "" }
        return octets.prefix(3).joined(separator: ".") + ".0"
    }
}
