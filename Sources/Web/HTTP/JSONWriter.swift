import Foundation
import ReciprocityCore

/// Writes JSON byte for byte as `Bodies.encoder` does (keys sorted, nil fields left out, `/` unescaped, instants as
/// `ISO8601.format`), for responses on a hot path where `Codable` cost more than the work behind them. Callers write
/// an object's keys in sorted order; each writer has a test that holds it to the encoder's output.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// No element written yet in the innermost open object or array.
    private var first = true

    init(capacity: Int = 1024) { bytes.reserveCapacity(capacity) }

    mutating func object(_ body: (inout JSONWriter) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "{"))
        first = true
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        first = false
    }

    mutating func array<S: Sequence>(_ elements: S, _ body: (inout JSONWriter, S.Element) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "["))
        first = true
        for element in elements { body(&self, element) }
        bytes.append(UInt8(ascii: "]"))
        first = false
    }

    /// The key of the next member of the open object; the value follows.
    mutating func key(_ name: String) {
        separate()
        string(name)
        bytes.append(UInt8(ascii: ":"))
        first = true  // the value that follows takes no comma
    }

    mutating func value(_ s: String) {
        separate()
        string(s)
        first = false
    }

    mutating func value(_ n: Int64) {
        separate()
        bytes.append(contentsOf: String(n).utf8)
        first = false
    }

    mutating func value(_ n: Int) { value(Int64(n)) }

    mutating func value(_ date: Date) { value(ISO8601.format(date)) }

    /// A member that is left out when nil, as synthesized `Encodable` does.
    mutating func member(_ name: String, _ s: String?) {
        guard let s else { return }
        key(name)
        value(s)
    }

    mutating func member(_ name: String, _ n: Int64) {
        key(name)
        value(n)
    }

    mutating func member(_ name: String, _ date: Date) {
        key(name)
        value(date)
    }

    private mutating func separate() {
        if !first { bytes.append(UInt8(ascii: ",")) }
    }

    private static let hex = Array("0123456789abcdef".utf8)

    private mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0C: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0..<0x20:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(Self.hex[Int(b >> 4)])
                bytes.append(Self.hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension OrderDTO {
    /// The order as `Bodies.encoder` writes it.
    func write(to json: inout JSONWriter) {
        json.object { o in
            o.member("contact_id", contactId)
            o.member("coupon_code", couponCode)
            o.member("created_at", createdAt)
            o.member("currency", currency)
            o.member("external_id", externalId)
            o.key("items")
            o.array(items) { a, item in
                a.object { i in
                    i.member("category", item.category)
                    i.member("name", item.name)
                    i.member("quantity", Int64(item.quantity))
                    i.member("returned_quantity", Int64(item.returnedQuantity))
                    i.member("sku", item.sku)
                    i.member("unit_price", item.unitPrice)
                }
            }
            o.member("referral_code", referralCode)
            o.member("referred_by", referredBy)
            if let address = shippingAddress {
                o.key("shipping_address")
                o.object { a in
                    a.member("city", address.city)
                    a.member("country", address.country)
                    a.member("name", address.name)
                    a.member("postal_code", address.postalCode)
                    a.member("street", address.street)
                }
            }
            o.member("status", status)
            o.key("status_times")
            o.object { t in
                for (status, at) in statusTimes.sorted(by: { $0.key < $1.key }) { t.member(status, at) }
            }
            o.key("totals")
            o.object { t in
                t.member("discount", totals.discount)
                t.member("shipping", totals.shipping)
                t.member("subtotal", totals.subtotal)
                t.member("tax", totals.tax)
                t.member("total", totals.total)
            }
            o.member("updated_at", updatedAt)
        }
    }

    var json: [UInt8] {
        var json = JSONWriter()
        write(to: &json)
        return json.bytes
    }

    /// `{"order": …, "outcome": …}`, the answer to `PUT /api/v1/orders/{external_id}`.
    static func upsertResponse(_ order: OrderDTO, outcome: String) -> [UInt8] {
        var json = JSONWriter()
        json.object { o in
            o.key("order")
            order.write(to: &o)
            o.member("outcome", outcome)
        }
        return json.bytes
    }
}
