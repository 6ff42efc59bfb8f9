/// Domain-name facts shared by the referral cookie and DKIM: which names are public suffixes, and a name's
/// organizational domain (RFC 7489 §3.2), as far as a built-in list knows them.
public enum DomainNames {
    /// Public suffixes of two labels under which shops commonly register, and shop platforms that give each shop a
    /// subdomain. Not the whole Public Suffix List (not on this machine): a suffix missing here is taken for a
    /// registrable domain.
    public static let publicSuffixes: Set<String> = [
        "co.uk", "org.uk", "me.uk", "ltd.uk", "plc.uk", "ac.uk", "gov.uk", "co.at", "or.at", "ac.at", "gv.at",
        "com.au", "net.au", "org.au", "co.nz", "org.nz", "co.jp", "ne.jp", "or.jp", "com.br", "com.tr", "com.pl",
        "com.es", "com.mx", "co.za", "co.in", "com.cn", "com.hk", "com.sg", "co.il", "co.kr", "com.ar", "gov.de",
        "github.io", "herokuapp.com", "myshopify.com", "netlify.app", "vercel.app", "pages.dev", "blogspot.com",
    ]

    /// The organizational domain: the public suffix and one label more (`shop.example` for `news.shop.example`,
    /// `kaffee.co.uk` for `www.kaffee.co.uk`). Lower case, without a trailing dot; nil for a single label or a
    /// public suffix itself.
    public static func organizationalDomain(_ name: String) -> String? {
        let labels = name.lowercased().split(separator: ".")
        guard labels.count >= 2 else { return nil }
        let lastTwo = labels.suffix(2).joined(separator: ".")
        if publicSuffixes.contains(lastTwo) {
            return labels.count >= 3 ? labels.suffix(3).joined(separator: ".") : nil
        }
        return lastTwo
    }
}
