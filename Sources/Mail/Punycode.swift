/// RFC 3492 Punycode and the IDNA ToASCII step for domain names (labels with non-ASCII become `xn--…`).
///
/// Only the encoding direction is needed: we send to internationalised domains, we never display them.
public enum IDNA {
    /// The ASCII form of a domain: each non-ASCII label lower-cased and Punycode-encoded with the `xn--` prefix.
    /// Returns nil when a label cannot be encoded or the result breaks DNS length limits.
    public static func toASCII(_ domain: String) -> String? {
        if domain.utf8.allSatisfy({ $0 < 0x80 }) {
            // ASCII already: lower-cased, with the same length rules as below.
            let lower = domain.lowercased()
            var length = 0
            for b in lower.utf8 {
                if b == UInt8(ascii: ".") {
                    guard (1...63).contains(length) else { return nil }
                    length = 0
                } else {
                    length += 1
                }
            }
            return (1...63).contains(length) && lower.utf8.count <= 253 ? lower : nil
        }
        var labels: [String] = []
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            let lower = label.lowercased()
            if lower.unicodeScalars.allSatisfy({ $0.isASCII }) {
                labels.append(lower)
            } else {
                guard let encoded = Punycode.encode(lower) else { return nil }
                labels.append("xn--" + encoded)
            }
            guard let last = labels.last, (1...63).contains(last.utf8.count) else { return nil }
        }
        let joined = labels.joined(separator: ".")
        return joined.utf8.count <= 253 ? joined : nil
    }
}

public enum Punycode {
    private static let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700, initialBias = 72, initialN = 128

    public static func encode(_ input: String) -> String? {
        let scalars = input.unicodeScalars.map { Int($0.value) }
        var output = scalars.filter { $0 < 0x80 }.map { Character(Unicode.Scalar(UInt8($0))) }
        let basicCount = output.count
        var handled = basicCount
        if basicCount > 0 { output.append("-") }
        var n = initialN, delta = 0, bias = initialBias
        while handled < scalars.count {
            guard let m = scalars.filter({ $0 >= n }).min() else { return nil }
            let (product, overflow) = (m - n).multipliedReportingOverflow(by: handled + 1)
            guard !overflow else { return nil }
            delta += product
            n = m
            for c in scalars {
                if c < n { delta += 1 }
                if c == n {
                    var q = delta
                    var k = base
                    while true {
                        let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                        if q < t { break }
                        output.append(digit(t + (q - t) % (base - t)))
                        q = (q - t) / (base - t)
                        k += base
                    }
                    output.append(digit(q))
                    bias = adapt(delta, handled + 1, handled == basicCount)
                    delta = 0
                    handled += 1
                }
            }
            delta += 1
            n += 1
        }
        return String(output)
    }

    private static func digit(_ d: Int) -> Character {
        Character(Unicode.Scalar(UInt8(d < 26 ? 97 + d : 22 + d)))
    }

    private static func adapt(_ delta: Int, _ numPoints: Int, _ first: Bool) -> Int {
        var delta = first ? delta / damp : delta / 2
        delta += delta / numPoints
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }
}
