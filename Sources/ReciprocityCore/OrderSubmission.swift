import Foundation

/// The body of `PUT /api/v1/orders/{external_id}` as it arrives (snake_case JSON). Every field is optional here so
/// that validation, not decoding, names what is missing.
public struct OrderPayload: Codable, Sendable, Equatable {
    /// Wire names are snake_case; spelled out so decoding never guesses (dictionary keys stay as sent).
    enum CodingKeys: String, CodingKey {
        case customer, currency, items, totals, status, consents
        case statusTimes = "status_times"
        case shippingAddress = "shipping_address"
        case couponCode = "coupon_code"
        case referralCode = "referral_code"
        case referredBy = "referred_by"
        case paymentFingerprint = "payment_fingerprint"
        case existingCustomerNotice = "existing_customer_notice"
        case clientIP = "client_ip"
        case clientUserAgent = "client_user_agent"
    }
    public struct Customer: Codable, Sendable, Equatable {
        enum CodingKeys: String, CodingKey {
            case email, locale
            case firstName = "first_name"
            case lastName = "last_name"
        }
        public var email: String?
        public var firstName: String?
        public var lastName: String?
        public var locale: String?
        public init(email: String?, firstName: String? = nil, lastName: String? = nil, locale: String? = nil) {
            self.email = email
            self.firstName = firstName
            self.lastName = lastName
            self.locale = locale
        }
    }
    public struct Item: Codable, Sendable, Equatable {
        enum CodingKeys: String, CodingKey {
            case sku, name, quantity, category
            case unitPrice = "unit_price"
            case returnedQuantity = "returned_quantity"
        }
        public var sku: String?
        public var name: String?
        public var quantity: Int?
        public var unitPrice: String?
        public var category: String?
        public var returnedQuantity: Int?
        public init(
            sku: String?, name: String?, quantity: Int?, unitPrice: String?, category: String? = nil,
            returnedQuantity: Int? = nil
        ) {
            self.sku = sku
            self.name = name
            self.quantity = quantity
            self.unitPrice = unitPrice
            self.category = category
            self.returnedQuantity = returnedQuantity
        }
    }
    public struct Totals: Codable, Sendable, Equatable {
        public var subtotal: String?
        public var shipping: String?
        public var tax: String?
        public var discount: String?
        public var total: String?
        public init(
            subtotal: String? = nil, shipping: String? = nil, tax: String? = nil, discount: String? = nil,
            total: String?
        ) {
            self.subtotal = subtotal
            self.shipping = shipping
            self.tax = tax
            self.discount = discount
            self.total = total
        }
    }
    public struct Address: Codable, Sendable, Equatable {
        enum CodingKeys: String, CodingKey {
            case name, street, city, country
            case postalCode = "postal_code"
        }
        public var name: String?
        public var street: String?
        public var postalCode: String?
        public var city: String?
        public var country: String?
        public init(name: String?, street: String?, postalCode: String?, city: String?, country: String?) {
            self.name = name
            self.street = street
            self.postalCode = postalCode
            self.city = city
            self.country = country
        }
    }
    public struct CheckoutConsent: Codable, Sendable, Equatable {
        enum CodingKeys: String, CodingKey {
            case purpose, text, ip
            case grantedAt = "granted_at"
            case userAgent = "user_agent"
        }
        public var purpose: String?
        public var text: String?
        public var grantedAt: String?
        public var ip: String?
        public var userAgent: String?
        public init(
            purpose: String?, text: String?, grantedAt: String? = nil, ip: String? = nil, userAgent: String? = nil
        ) {
            self.purpose = purpose
            self.text = text
            self.grantedAt = grantedAt
            self.ip = ip
            self.userAgent = userAgent
        }
    }

    public var customer: Customer?
    public var currency: String?
    public var items: [Item]?
    public var totals: Totals?
    public var status: String?
    public var statusTimes: [String: String]?
    public var shippingAddress: Address?
    public var couponCode: String?
    public var referralCode: String?
    public var referredBy: String?
    public var paymentFingerprint: String?
    public var consents: [CheckoutConsent]?
    /// The §7(3) UWG notice the checkout showed ("you may object at any time…"), if the shop shows one.
    public var existingCustomerNotice: String?
    /// The buyer's IP address and user agent at checkout, if the shop sends them: kept only as a keyed hash, to
    /// recognise an advocate ordering through their own link.
    public var clientIP: String?
    public var clientUserAgent: String?

    public init(
        customer: Customer?, currency: String?, items: [Item]?, totals: Totals?, status: String?,
        statusTimes: [String: String]? = nil, shippingAddress: Address? = nil, couponCode: String? = nil,
        referralCode: String? = nil, referredBy: String? = nil, paymentFingerprint: String? = nil,
        consents: [CheckoutConsent]? = nil, existingCustomerNotice: String? = nil, clientIP: String? = nil,
        clientUserAgent: String? = nil
    ) {
        self.clientIP = clientIP
        self.clientUserAgent = clientUserAgent
        self.customer = customer
        self.currency = currency
        self.items = items
        self.totals = totals
        self.status = status
        self.statusTimes = statusTimes
        self.shippingAddress = shippingAddress
        self.couponCode = couponCode
        self.referralCode = referralCode
        self.referredBy = referredBy
        self.paymentFingerprint = paymentFingerprint
        self.consents = consents
        self.existingCustomerNotice = existingCustomerNotice
    }
}

/// A validated order upsert: everything typed, every rule checked, nothing written yet.
public struct OrderSubmission: Sendable, Equatable {
    public var externalID: String
    public var email: EmailAddress
    public var firstName: String?
    public var lastName: String?
    public var locale: String
    public var status: OrderStatus
    public var statusTimes: [OrderStatus: Date]
    public var items: [OrderItem]
    public var totals: OrderTotals
    public var shippingAddress: PostalAddress?
    public var couponCode: String?
    public var referralCode: String?
    public var referredBy: String?
    public var paymentFingerprint: String?
    public var consents: [(purpose: ConsentPurpose, text: String, evidence: ConsentEvidence)]
    public var existingCustomerNotice: String?
    public var clientIP: String?
    public var clientUserAgent: String?

    public static func == (a: OrderSubmission, b: OrderSubmission) -> Bool {
        a.externalID == b.externalID && a.email == b.email && a.status == b.status && a.items == b.items
            && a.totals == b.totals && a.statusTimes == b.statusTimes
    }

    public static let maxItems = 500

    /// An order id as the shop sends it, trimmed: 1–128 printable ASCII characters without '/' (it is a path
    /// segment of the orders API).
    public static func externalID(_ raw: String, field: String = "external_id") throws(DomainError) -> String {
        let id = raw.trimming(.whitespaces)
        guard (1...128).contains(id.count),
            id.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && $0 != "/" })
        else {
            throw .invalid(
                "external_id_invalid", "An order id has 1–128 printable ASCII characters without '/'.", field: field)
        }
        return id
    }

    /// Validates `payload`; `receivedAt` stands in for the time of the current status when the shop sent none.
    public static func validate(externalID: String, payload p: OrderPayload, receivedAt: Date) throws(DomainError)
        -> OrderSubmission
    {
        let externalID = try Self.externalID(externalID)
        guard let customer = p.customer else { throw missing("customer") }
        guard let rawEmail = customer.email else { throw missing("customer.email") }
        let email = try EmailAddress(rawEmail, field: "customer.email")
        let firstName = try text(customer.firstName, field: "customer.first_name", max: 100)
        let lastName = try text(customer.lastName, field: "customer.last_name", max: 100)

        guard let currencyCode = p.currency else { throw missing("currency") }
        let currency = try Currency(currencyCode, field: "currency")

        guard let rawStatus = p.status else { throw missing("status") }
        guard let status = OrderStatus(rawValue: rawStatus) else {
            throw .invalid(
                "status_unknown",
                "Status must be one of \(OrderStatus.allCases.map(\.rawValue).joined(separator: ", ")).",
                field: "status")
        }
        var times: [OrderStatus: Date] = [:]
        for (key, value) in (p.statusTimes ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let s = OrderStatus(rawValue: key) else {
                throw .invalid("status_unknown", "'\(key)' is not an order status.", field: "status_times.\(key)")
            }
            guard let date = ISO8601.parse(value) else {
                throw .invalid(
                    "time_invalid", "'\(value)' is not an ISO 8601 time.", field: "status_times.\(key)")
            }
            times[s] = date
        }
        if times[status] == nil { times[status] = receivedAt }
        // Every order was placed at some point: at the latest, when its first reported status was reached.
        if times[.placed] == nil { times[.placed] = times.values.min() ?? receivedAt }

        guard let rawItems = p.items else { throw missing("items") }
        guard !rawItems.isEmpty else {
            throw .invalid("items_empty", "An order has at least one item.", field: "items")
        }
        guard rawItems.count <= maxItems else {
            throw .invalid("items_too_many", "An order has at most \(maxItems) items.", field: "items")
        }
        var items: [OrderItem] = []
        for (i, item) in rawItems.enumerated() {
            let base = "items[\(i)]"
            guard let sku = try text(item.sku, field: "\(base).sku", max: 100) else { throw missing("\(base).sku") }
            guard let name = try text(item.name, field: "\(base).name", max: 300) else {
                throw missing("\(base).name")
            }
            guard let quantity = item.quantity else { throw missing("\(base).quantity") }
            guard quantity > 0 else {
                throw .invalid("quantity_invalid", "Quantity must be at least 1.", field: "\(base).quantity")
            }
            guard quantity <= 100_000 else {
                throw .invalid("quantity_invalid", "Quantity must be at most 100000.", field: "\(base).quantity")
            }
            guard let price = item.unitPrice else { throw missing("\(base).unit_price") }
            let unitPrice = try Money(decimal: price, currency: currency, field: "\(base).unit_price")
            let category = try text(item.category, field: "\(base).category", max: 100)
            let returned = item.returnedQuantity ?? 0
            guard returned >= 0, returned <= quantity else {
                throw .invalid(
                    "returned_quantity_invalid", "Returned quantity must be between 0 and the item's quantity.",
                    field: "\(base).returned_quantity")
            }
            guard returned == 0 || ![.placed, .paid, .cancelled].contains(status) else {
                throw .invalid(
                    "returned_quantity_invalid",
                    "Units can be returned only after the order has shipped (status '\(status.rawValue)').",
                    field: "\(base).returned_quantity")
            }
            items.append(
                OrderItem(
                    sku: sku, name: name, quantity: quantity, unitPrice: unitPrice, category: category,
                    returnedQuantity: returned))
        }

        guard let t = p.totals else { throw missing("totals") }
        guard let totalString = t.total else { throw missing("totals.total") }
        func amount(_ s: String?, _ field: String) throws(DomainError) -> Money {
            guard let s else { return Money(minor: 0, currency: currency) }
            return try Money(decimal: s, currency: currency, field: field)
        }
        guard let itemsSum = items.totalMinor(units: \.quantity) else {
            throw .invalid("amount_too_large", "The items' prices and quantities add up to too large an amount.")
        }
        let totals = OrderTotals(
            subtotal: t.subtotal == nil
                ? Money(minor: itemsSum, currency: currency) : try amount(t.subtotal, "totals.subtotal"),
            shipping: try amount(t.shipping, "totals.shipping"), tax: try amount(t.tax, "totals.tax"),
            discount: try amount(t.discount, "totals.discount"),
            total: try Money(decimal: totalString, currency: currency, field: "totals.total"))

        var address: PostalAddress? = nil
        if let a = p.shippingAddress {
            guard let street = try text(a.street, field: "shipping_address.street", max: 200) else {
                throw missing("shipping_address.street")
            }
            guard let postal = try text(a.postalCode, field: "shipping_address.postal_code", max: 20) else {
                throw missing("shipping_address.postal_code")
            }
            guard let city = try text(a.city, field: "shipping_address.city", max: 100) else {
                throw missing("shipping_address.city")
            }
            guard let country = a.country, country.count == 2, country.allSatisfy({ $0.isASCII && $0.isLetter })
            else {
                throw .invalid(
                    "country_invalid", "Country is an ISO 3166-1 alpha-2 code such as DE.",
                    field: "shipping_address.country")
            }
            address = PostalAddress(
                name: try text(a.name, field: "shipping_address.name", max: 200), street: street,
                postalCode: postal, city: city, country: country.uppercased())
        }

        var consents: [(ConsentPurpose, String, ConsentEvidence)] = []
        for (i, c) in (p.consents ?? []).enumerated() {
            let base = "consents[\(i)]"
            guard let rawPurpose = c.purpose else { throw missing("\(base).purpose") }
            guard let purpose = ConsentPurpose(rawValue: rawPurpose) else {
                throw .invalid(
                    "purpose_unknown",
                    "Purpose must be one of \(ConsentPurpose.allCases.map(\.rawValue).joined(separator: ", ")).",
                    field: "\(base).purpose")
            }
            guard let consentText = try text(c.text, field: "\(base).text", max: 10_000) else {
                throw .invalid(
                    "consent_text_missing", "A consent needs the exact text that was shown.", field: "\(base).text")
            }
            var at = times[.placed] ?? receivedAt
            if let g = c.grantedAt {
                guard let d = ISO8601.parse(g) else {
                    throw .invalid("time_invalid", "'\(g)' is not an ISO 8601 time.", field: "\(base).granted_at")
                }
                at = d
            }
            consents.append(
                (
                    purpose, consentText,
                    ConsentEvidence(
                        at: at, ip: c.ip.map { String($0.prefix(45)) },
                        userAgent: c.userAgent.map { String($0.prefix(500)) })
                ))
        }

        return OrderSubmission(
            externalID: externalID, email: email, firstName: firstName, lastName: lastName,
            locale: Locale.resolve(customer.locale), status: status, statusTimes: times, items: items,
            totals: totals, shippingAddress: address,
            couponCode: try text(p.couponCode, field: "coupon_code", max: 64),
            referralCode: try text(p.referralCode, field: "referral_code", max: 64),
            referredBy: try text(p.referredBy, field: "referred_by", max: 254),
            paymentFingerprint: try text(p.paymentFingerprint, field: "payment_fingerprint", max: 128),
            consents: consents,
            existingCustomerNotice: try text(p.existingCustomerNotice, field: "existing_customer_notice", max: 10_000),
            clientIP: try text(p.clientIP, field: "client_ip", max: 45),
            clientUserAgent: try text(p.clientUserAgent, field: "client_user_agent", max: 500))
    }

    static func missing(_ field: String) -> DomainError {
        .invalid("field_missing", "'\(field)' is required.", field: field)
    }

    /// Trims; empty becomes nil; refuses control characters (except in long texts, newlines) and over-long values.
    static func text(_ value: String?, field: String, max: Int) throws(DomainError) -> String? {
        guard let value else { return nil }
        let trimmed = value.trimming(.whitespacesAndNewlines)
        if trimmed.isEmpty { return nil }
        guard trimmed.count <= max else {
            throw .invalid("text_too_long", "At most \(max) characters.", field: field)
        }
        let allowNewlines = max > 1000
        guard
            !trimmed.unicodeScalars.contains(where: {
                ($0.value < 0x20 && !(allowNewlines && ($0 == "\n" || $0 == "\r" || $0 == "\t"))) || $0.value == 0x7F
            })
        else { throw .invalid("text_control_characters", "Control characters are not allowed.", field: field) }
        return trimmed
    }
}

extension OrderSubmission {
    /// The fields that can tie an order to someone other than its buyer, by column name: a referral code, a
    /// coupon, the "who referred you?" answer and the checkout device (kept as a hash of IP and user agent).
    public static let linkFields: Set<String> = ["coupon_code", "referral_code", "referred_by", "client_device"]

    /// Which of `linkFields` this submission carries. Its order's events carry them as tags, so that a
    /// subscriber that can only act on a linked order (referral attribution) gets no job for the others.
    public var linkTags: Set<String> {
        var tags: Set<String> = []
        if couponCode != nil { tags.insert("coupon_code") }
        if referralCode != nil { tags.insert("referral_code") }
        if referredBy != nil { tags.insert("referred_by") }
        if clientIP != nil { tags.insert("client_device") }
        return tags
    }
}
