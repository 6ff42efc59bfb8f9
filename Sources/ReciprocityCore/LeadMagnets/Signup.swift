import Foundation

/// What a person typed into a lead magnet form, before any check.
public struct SignupInput: Sendable, Equatable {
    public var email: String
    public var firstName: String
    /// Custom field key → value.
    public var custom: [String: String]
    /// For samples: where to send it.
    public var address: PostalAddress?

    public init(email: String, firstName: String = "", custom: [String: String] = [:], address: PostalAddress? = nil) {
        self.email = email
        self.firstName = firstName
        self.custom = custom
        self.address = address
    }
}

/// A signup that passed validation: the values the store writes.
public struct ValidSignup: Sendable, Equatable {
    public var email: EmailAddress
    public var firstName: String?
    public var custom: [String: String]
    public var address: PostalAddress?
}

/// Every input error at once (field → message code), for the form to show them all.
public struct SignupErrors: Error, Sendable, Equatable {
    public var byField: [String: String]
    public init(byField: [String: String]) { self.byField = byField }
}

public enum SignupRules {
    public static let valueMax = 200

    /// Checks the input against the magnet's form and the disposable-domain list. Throws every error at once.
    public static func validate(_ input: SignupInput, magnet: LeadMagnet, disposable: DisposableDomains)
        throws(SignupErrors) -> ValidSignup
    {
        var errors: [String: String] = [:]
        var email: EmailAddress?
        do {
            let e = try EmailAddress(input.email)
            if disposable.contains(email: e) { errors["email"] = "email_disposable" } else { email = e }
        } catch {
            errors["email"] = error.code == "email_missing" ? "email_missing" : "email_invalid"
        }
        func clean(_ s: String) -> String {
            String(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F })
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let firstName = clean(input.firstName)
        if firstName.count > 100 { errors["first_name"] = "too_long" }
        var custom: [String: String] = [:]
        for f in magnet.fields {
            let value = clean(input.custom[f.key] ?? "")
            if value.isEmpty {
                if f.required { errors["custom_\(f.key)"] = "required" }
            } else if value.count > valueMax {
                errors["custom_\(f.key)"] = "too_long"
            } else {
                custom[f.key] = value
            }
        }
        var address: PostalAddress?
        if magnet.giftKind == .sample {
            let given = input.address ?? PostalAddress(name: "", street: "", postalCode: "", city: "", country: "")
            let a = PostalAddress(
                name: clean(given.name ?? ""), street: clean(given.street), postalCode: clean(given.postalCode),
                city: clean(given.city), country: clean(given.country).uppercased())
            for (field, value) in [
                ("name", a.name ?? ""), ("street", a.street), ("postal_code", a.postalCode), ("city", a.city),
            ] {
                if value.isEmpty {
                    errors[field] = "required"
                } else if value.count > valueMax {
                    errors[field] = "too_long"
                }
            }
            if a.country.count != 2 || !a.country.allSatisfy({ $0.isASCII && $0.isLetter }) {
                errors["country"] = "country_invalid"
            }
            address = a
        }
        guard errors.isEmpty, let email else { throw SignupErrors(byField: errors) }
        return ValidSignup(
            email: email, firstName: firstName.isEmpty ? nil : firstName, custom: custom, address: address)
    }
}

/// What a form submission's bot checks found. Pure: the page decides what to answer for each.
public enum FormGuard {
    public enum Verdict: Sendable, Equatable {
        case pass
        /// The honeypot was filled: answer as if it worked, save nothing.
        case honeypot
        /// Faster than a person fills the form: ask to submit again (a person with autofill just clicks again).
        case tooFast
        /// No valid token, or one for another form, or older than `maxAge`: ask to reload.
        case badToken
        /// An embedded form posted from an origin the merchant did not allow.
        case foreignOrigin
    }

    public static let maxAge: TimeInterval = 86_400

    /// A post's `Origin` header against this installation's own origin and, for embedded forms, the sites
    /// `allowed` accepts.
    public static func origin(
        _ header: String?, ownOrigin: String, allowed: (String) -> Bool = { _ in false }
    ) -> Origin {
        guard let header, header != "null" else { return .unknown }
        return allowed(header) || normalizedOrigin(header) == normalizedOrigin(ownOrigin) ? .allowed : .foreign
    }

    /// `scheme://host[:port]`, lower-cased, or nil when `value` is not a bare origin.
    public static func normalizedOrigin(_ value: String) -> String? {
        guard let url = URL(string: value.trimmingCharacters(in: .whitespaces)),
            let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = url.host?.lowercased(), !host.isEmpty, url.path.isEmpty || url.path == "/", url.query == nil
        else { return nil }
        return "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
    }

    /// Where a post came from, by its `Origin` header.
    public enum Origin: Sendable, Equatable {
        /// No header, or `null` (privacy settings, file pages).
        case unknown
        /// This installation, or a site the magnet allows.
        case allowed
        case foreign
    }

    /// - Parameters:
    ///   - issuedAt: when the form token was issued (nil: the token is missing or forged).
    ///   - embedded: the static token of an embedded form (no issue time; the origin must be allowed instead).
    ///   - origin: a landing-page token posted from a foreign site is a scraped token.
    public static func check(
        honeypot: String, issuedAt: Date?, embedded: Bool, origin: Origin, minimumFillTime: TimeInterval, now: Date
    ) -> Verdict {
        if !honeypot.isEmpty { return .honeypot }
        if embedded { return origin == .allowed ? .pass : .foreignOrigin }
        guard let issuedAt else { return .badToken }
        let age = now.timeIntervalSince(issuedAt)
        if age < minimumFillTime { return .tooFast }
        if age > maxAge { return .badToken }
        return origin == .foreign ? .foreignOrigin : .pass
    }
}

/// Domains of throw-away mailboxes. The shipped list is a resource; `reciprocity leads disposable-domains` adds the
/// merchant's updates, which the store keeps. Subdomains of a listed domain are disposable too.
public struct DisposableDomains: Sendable {
    public private(set) var domains: Set<String>

    public init(_ domains: some Sequence<String>) {
        self.domains = Set(domains.compactMap(Self.normalize))
    }

    /// The list shipped with this build.
    public static let shipped: DisposableDomains = {
        guard
            let url = Bundle.module.url(
                forResource: "disposable-domains", withExtension: "txt", subdirectory: "Resources"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { return DisposableDomains([]) }
        return DisposableDomains(parse(text))
    }()

    /// Lines of a list: `#` comments and blank lines are skipped.
    public static func parse(_ text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.isEmpty || t.hasPrefix("#") ? nil : t
        }
    }

    /// A plausible domain, lower-cased; nil for anything else.
    public static func normalize(_ domain: String) -> String? {
        let d = domain.trimmingCharacters(in: .whitespaces).lowercased().trimmingCharacters(
            in: CharacterSet(charactersIn: "."))
        guard d.contains("."), d.count <= 253,
            d.unicodeScalars.allSatisfy({
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "." || $0 == "-"
            })
        else { return nil }
        return d
    }

    public func adding(_ more: some Sequence<String>) -> DisposableDomains {
        var copy = self
        copy.domains.formUnion(more.compactMap(Self.normalize))
        return copy
    }

    public func contains(domain: String) -> Bool {
        var d = Substring(domain.lowercased())
        while true {
            if domains.contains(String(d)) { return true }
            guard let dot = d.firstIndex(of: ".") else { return false }
            d = d[d.index(after: dot)...]
            if !d.contains(".") { return false }
        }
    }

    public func contains(email: EmailAddress) -> Bool {
        guard let at = email.normalized.lastIndex(of: "@") else { return false }
        return contains(domain: String(email.normalized[email.normalized.index(after: at)...]))
    }
}

/// Looks up whether a domain receives mail. Injected, so tests and air-gapped installs decide; nil means unknown
/// (a failed lookup never rejects a person).
public protocol MXResolver: Sendable {
    func acceptsMail(domain: String) async -> Bool?
}
