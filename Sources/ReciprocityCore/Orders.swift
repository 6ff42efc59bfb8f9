import Foundation

public typealias OrderID = Int64

/// The lifecycle of an order as the shop reports it.
public enum OrderStatus: String, Sendable, Codable, CaseIterable {
    case placed, paid, shipped, delivered
    case partiallyReturned = "partially_returned"
    case returned, cancelled

    /// The domain event emitted when an order reaches this status.
    public var eventType: String {
        switch self {
        case .placed: "OrderPlaced"
        case .paid: "OrderPaid"
        case .shipped: "OrderShipped"
        case .delivered: "OrderDelivered"
        case .partiallyReturned: "OrderPartiallyReturned"
        case .returned: "OrderReturned"
        case .cancelled: "OrderCancelled"
        }
    }

    /// Returned or cancelled: the order no longer stands (a partial return still does).
    public var hasEnded: Bool { self == .cancelled || self == .returned }

    /// Whether a referral can still be decided on an order in this status: not once it has ended (a partial return
    /// is judged on what was kept, `ReferralRules.eligibility`).
    public var earnsReferral: Bool { !hasEnded }

    private var stage: Int {
        switch self {
        case .placed: 0
        case .paid: 1
        case .shipped: 2
        case .delivered: 3
        case .partiallyReturned: 4
        case .returned: 5
        case .cancelled: 6
        }
    }

    /// Whether the shop may report `next` after `self`. Shops may skip steps (placed → delivered), never go back.
    /// Cancellation is possible before shipping; after that, goods come back as a return.
    public func canTransition(to next: OrderStatus) -> Bool {
        if next == self { return true }
        switch (self, next) {
        case (.cancelled, _), (.returned, _): return false
        case (_, .cancelled): return self == .placed || self == .paid
        case (.placed, .partiallyReturned), (.paid, .partiallyReturned), (.placed, .returned), (.paid, .returned):
            return false
        default: return next.stage > stage
        }
    }
}

public struct OrderItem: Sendable, Equatable, Codable {
    public var sku: String
    public var name: String
    public var quantity: Int
    public var unitPrice: Money
    public var category: String?
    /// Units of `quantity` the customer sent back (0 … quantity), as the shop reports them.
    public var returnedQuantity: Int
    public init(
        sku: String, name: String, quantity: Int, unitPrice: Money, category: String?, returnedQuantity: Int = 0
    ) {
        self.sku = sku
        self.name = name
        self.quantity = quantity
        self.unitPrice = unitPrice
        self.category = category
        self.returnedQuantity = returnedQuantity
    }

    /// The units the customer kept.
    public var keptQuantity: Int { max(0, quantity - returnedQuantity) }
}

extension Collection where Element == OrderItem {
    /// The sum of unit price × `units` over the items, in minor units; nil when it would overflow Int64 (13-digit
    /// prices times large quantities do, and a trap would end the process).
    public func totalMinor(units: (OrderItem) -> Int) -> Int64? {
        var sum: Int64 = 0
        for item in self {
            let (line, lineOverflow) = item.unitPrice.minor.multipliedReportingOverflow(by: Int64(units(item)))
            let (next, sumOverflow) = sum.addingReportingOverflow(line)
            guard !lineOverflow, !sumOverflow else { return nil }
            sum = next
        }
        return sum
    }
}

extension Order {
    /// The event an order raises whenever the shop reports more returned units of some item than before (on any
    /// status; a partial return is the usual case), once per order and set of returned units.
    public static let itemsReturnedEvent = "OrderItemsReturned"
}

/// The units of an order that came back, per SKU (a SKU may stand on several lines).
public struct ReturnedUnits: Sendable, Equatable {
    public private(set) var bySKU: [String: Int64] = [:]

    public init() {}

    public init(_ items: [OrderItem]) {
        for item in items { add(sku: item.sku, units: Int64(item.returnedQuantity)) }
    }

    public mutating func add(sku: String, units: Int64) {
        if units > 0 { bySKU[sku, default: 0] += units }
    }

    public var total: Int64 { bySKU.values.reduce(0, +) }

    /// Whether some SKU has more units back than in `earlier`: news, even if fewer of another came back (a
    /// correction). Fewer alone is not.
    public func exceeds(_ earlier: ReturnedUnits) -> Bool {
        bySKU.contains { $0.value > earlier.bySKU[$0.key, default: 0] }
    }

    /// One text per set of returned units, the same for the same set in any order (SKUs hold no control
    /// characters: `OrderSubmission` refuses them).
    public var canonical: String {
        bySKU.sorted { $0.key < $1.key }.map { "\($0.key)\u{0}\($0.value)" }.joined(separator: "\n")
    }
}

public struct PostalAddress: Sendable, Equatable, Codable {
    public var name: String?
    public var street: String
    public var postalCode: String
    public var city: String
    public var country: String
    public init(name: String?, street: String, postalCode: String, city: String, country: String) {
        self.name = name
        self.street = street
        self.postalCode = postalCode
        self.city = city
        self.country = country
    }

    /// The address on one line, as a page shows it: "Anna Muster, Hauptstraße 1, 10115 Berlin, DE".
    public var oneLine: String {
        [name, street, "\(postalCode) \(city)", country].compactMap { $0 }.filter { !$0.isEmpty }
            .joined(separator: ", ")
    }
}

public struct OrderTotals: Sendable, Equatable {
    public var subtotal: Money
    public var shipping: Money
    public var tax: Money
    public var discount: Money
    public var total: Money
    public init(subtotal: Money, shipping: Money, tax: Money, discount: Money, total: Money) {
        self.subtotal = subtotal
        self.shipping = shipping
        self.tax = tax
        self.discount = discount
        self.total = total
    }
}

/// A stored order.
public struct Order: Sendable, Equatable {
    public var id: OrderID
    public var workspaceID: WorkspaceID
    public var externalID: String
    public var contactID: ContactID
    public var status: OrderStatus
    public var statusTimes: [OrderStatus: Date]
    public var items: [OrderItem]
    public var totals: OrderTotals
    public var shippingAddress: PostalAddress?
    public var couponCode: String?
    public var referralCode: String?
    public var referredBy: String?
    public var paymentFingerprint: String?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: OrderID, workspaceID: WorkspaceID, externalID: String, contactID: ContactID, status: OrderStatus,
        statusTimes: [OrderStatus: Date], items: [OrderItem], totals: OrderTotals, shippingAddress: PostalAddress?,
        couponCode: String?, referralCode: String?, referredBy: String?, paymentFingerprint: String?,
        createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.workspaceID = workspaceID
        self.externalID = externalID
        self.contactID = contactID
        self.status = status
        self.statusTimes = statusTimes
        self.items = items
        self.totals = totals
        self.shippingAddress = shippingAddress
        self.couponCode = couponCode
        self.referralCode = referralCode
        self.referredBy = referredBy
        self.paymentFingerprint = paymentFingerprint
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}
