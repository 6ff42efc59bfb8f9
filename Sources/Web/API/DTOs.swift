import Foundation
import ReciprocityCore
import Storage

/// JSON shapes of the API (snake_case on the wire via the encoder). Domain values map to these at the edge.
struct OrderDTO: Encodable {
    struct Item: Encodable {
        var sku: String
        var name: String
        var quantity: Int
        var unitPrice: String
        var category: String?
        var returnedQuantity: Int
    }
    struct Totals: Encodable {
        var subtotal: String
        var shipping: String
        var tax: String
        var discount: String
        var total: String
    }
    var externalId: String
    var contactId: Int64
    var status: String
    var statusTimes: [String: Date]
    var currency: String
    var items: [Item]
    var totals: Totals
    var shippingAddress: PostalAddress?
    var couponCode: String?
    var referralCode: String?
    var referredBy: String?
    var createdAt: Date
    var updatedAt: Date

    init(_ o: Order) {
        externalId = o.externalID
        contactId = o.contactID
        status = o.status.rawValue
        statusTimes = Dictionary(uniqueKeysWithValues: o.statusTimes.map { ($0.key.rawValue, $0.value) })
        currency = o.totals.total.currency.code
        items = o.items.map {
            Item(
                sku: $0.sku, name: $0.name, quantity: $0.quantity, unitPrice: $0.unitPrice.decimalString,
                category: $0.category, returnedQuantity: $0.returnedQuantity)
        }
        totals = Totals(
            subtotal: o.totals.subtotal.decimalString, shipping: o.totals.shipping.decimalString,
            tax: o.totals.tax.decimalString, discount: o.totals.discount.decimalString,
            total: o.totals.total.decimalString)
        shippingAddress = o.shippingAddress
        couponCode = o.couponCode
        referralCode = o.referralCode
        referredBy = o.referredBy
        createdAt = o.createdAt
        updatedAt = o.updatedAt
    }
}

struct ConsentDTO: Encodable {
    var purpose: String
    var state: String
    var legalBasis: String
    var source: String
    var textId: Int64?
    var requestedAt: Date?
    var grantedAt: Date?
    var withdrawnAt: Date?
    init(_ c: Consent) {
        purpose = c.purpose.rawValue
        state = c.state.rawValue
        legalBasis = c.legalBasis.rawValue
        source = c.source
        textId = c.textID
        requestedAt = c.requested?.at
        grantedAt = c.granted?.at
        withdrawnAt = c.withdrawnAt
    }
}

struct ContactDTO: Encodable {
    var id: Int64
    var email: String
    var firstName: String?
    var lastName: String?
    var locale: String
    var source: String
    var sourceRef: String?
    var createdAt: Date
    var updatedAt: Date
    var erased: Bool
    var consents: [ConsentDTO]?
    init(_ c: Contact, consents: [Consent]? = nil) {
        id = c.id
        email = c.email
        firstName = c.firstName
        lastName = c.lastName
        locale = c.locale
        source = c.source
        sourceRef = c.sourceRef
        createdAt = c.createdAt
        updatedAt = c.updatedAt
        erased = c.erasedAt != nil
        self.consents = consents?.map(ConsentDTO.init)
    }
}

struct PageDTO<T: Encodable>: Encodable {
    var items: [T]
    var total: Int
    var limit: Int
    var offset: Int
}
