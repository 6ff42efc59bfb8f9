import Foundation
import ReciprocityCore

/// Where and how to send: parsed from `RECIPROCITY_SMTP_URL`, e.g. `smtp://user:pass@host:587?tls=starttls`.
public struct SMTPConfiguration: Sendable, Equatable {
    public enum TLSMode: String, Sendable {
        /// Plain connect, then STARTTLS; refused if the server does not offer it. The default.
        case starttls
        /// TLS from the first byte (port 465, `smtps://`).
        case implicit
        /// No TLS at all: for a local relay on loopback (credentials are refused for any other host).
        case none
    }

    public var host: String
    public var port: Int
    public var tls: TLSMode
    public var username: String?
    public var password: String?
    /// EHLO name. Defaults to the host of the public base URL.
    public var heloName: String
    /// PEM file of an extra CA to trust (a private relay, tests). System roots stay trusted.
    public var caFile: String?
    /// How many connections the pool may hold open.
    public var poolSize: Int
    /// A connection is closed (QUIT) after this many messages, so long-lived sessions do not grow.
    public var maxMessagesPerConnection: Int
    public var timeouts: Timeouts

    public struct Timeouts: Sendable, Equatable {
        public var connect: Duration = .seconds(15)
        /// Greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET: one reply each (RFC 5321 §4.5.3.2 allows more;
        /// a relay that takes this long is treated as down and the mail is retried).
        public var command: Duration = .seconds(60)
        /// From the final dot to the reply; the server may scan the message here.
        public var dataEnd: Duration = .seconds(120)
        /// Waiting for a pooled session while every one is busy; then the send fails with nothing sent (retried).
        public var poolWait: Duration = .seconds(60)
        public init() {}
    }

    public init(
        host: String, port: Int, tls: TLSMode = .starttls, username: String? = nil, password: String? = nil,
        heloName: String = "localhost", caFile: String? = nil, poolSize: Int = 4, maxMessagesPerConnection: Int = 100,
        timeouts: Timeouts = Timeouts()
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.heloName = heloName
        self.caFile = caFile
        self.poolSize = poolSize
        self.maxMessagesPerConnection = maxMessagesPerConnection
        self.timeouts = timeouts
    }

    /// Parses `smtp://[user[:pass]@]host[:port][?tls=starttls|implicit|none&pool=N&max_per_connection=N&helo=NAME
    /// &timeout=SECONDS]` or `smtps://…` (implicit TLS). Errors name what is wrong in one line.
    public static func parse(_ url: String, heloName: String = "localhost", caFile: String? = nil) throws(DomainError)
        -> SMTPConfiguration
    {
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased() else {
            throw .invalid("smtp_url_invalid", "RECIPROCITY_SMTP_URL is not a URL: '\(redacted(url))'.")
        }
        guard scheme == "smtp" || scheme == "smtps" else {
            throw .invalid(
                "smtp_url_scheme",
                "RECIPROCITY_SMTP_URL must start with smtp:// or smtps://, got '\(scheme)://'. Example: smtp://user:pass@mail.example.com:587?tls=starttls"
            )
        }
        guard let host = c.host, !host.isEmpty else {
            throw .invalid("smtp_url_host", "RECIPROCITY_SMTP_URL has no host.")
        }
        var query: [String: String] = [:]
        for item in c.queryItems ?? [] { query[item.name.lowercased()] = item.value ?? "" }
        let known: Set = ["tls", "pool", "max_per_connection", "helo", "timeout"]
        if let unknown = query.keys.first(where: { !known.contains($0) }) {
            throw .invalid(
                "smtp_url_option", "RECIPROCITY_SMTP_URL has an unknown option '\(unknown)'; known: \(known.sorted()).")
        }
        var tls: TLSMode = scheme == "smtps" ? .implicit : .starttls
        if let t = query["tls"] {
            guard let mode = TLSMode(rawValue: t.lowercased()) else {
                throw .invalid(
                    "smtp_url_tls", "RECIPROCITY_SMTP_URL: tls must be starttls, implicit or none, got '\(t)'.")
            }
            guard !(scheme == "smtps" && mode != .implicit) else {
                throw .invalid("smtp_url_tls", "RECIPROCITY_SMTP_URL: smtps:// always uses implicit TLS.")
            }
            tls = mode
        }
        var config = SMTPConfiguration(
            host: host, port: c.port ?? (tls == .implicit ? 465 : 587), tls: tls,
            username: c.percentEncodedUser?.removingPercentEncoding,
            password: c.percentEncodedPassword?.removingPercentEncoding,
            heloName: query["helo"] ?? heloName, caFile: caFile)
        guard (1...65535).contains(config.port) else {
            throw .invalid("smtp_url_port", "RECIPROCITY_SMTP_URL: the port must be 1–65535.")
        }
        // A password in clear text only to a relay on this machine.
        guard !(tls == .none && config.username != nil && !isLoopback(host)) else {
            throw .invalid(
                "smtp_url_plaintext_auth",
                "RECIPROCITY_SMTP_URL: tls=none sends the password unencrypted; use it only with a relay on loopback, or use starttls or implicit."
            )
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws(DomainError) -> Int? {
            guard let v = query[key] else { return nil }
            guard let n = Int(v), range.contains(n) else {
                throw .invalid("smtp_url_option", "RECIPROCITY_SMTP_URL: \(key) must be a number in \(range).")
            }
            return n
        }
        if let n = try int("pool", 1...256) { config.poolSize = n }
        if let n = try int("max_per_connection", 1...100_000) { config.maxMessagesPerConnection = n }
        if let n = try int("timeout", 1...3600) {
            config.timeouts.command = .seconds(n)
            config.timeouts.dataEnd = .seconds(n * 2)
        }
        return config
    }

    /// `localhost`, 127.0.0.0/8 or ::1.
    static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let octets = h.split(separator: ".", omittingEmptySubsequences: false)
        let ipv4 =
            octets.count == 4
            && octets.allSatisfy { o in
                !o.isEmpty && o.count <= 3 && o.allSatisfy { ("0"..."9").contains($0) } && UInt8(o) != nil
            }
        return h == "localhost" || h == "::1" || (ipv4 && octets[0] == "127")
    }

    static func redacted(_ url: String) -> String {
        guard var c = URLComponents(string: url), c.password != nil else { return String(url.prefix(60)) }
        c.password = "***"
        return c.string ?? ""
    }
}
