import Foundation
import Hummingbird
import ReciprocityCore
import Storage

/// The JSON API: thin adapters that decode, call a named store or domain function, and map to DTOs.
struct APIRoutes {
    let env: WebEnvironment
    var store: Store { env.store }

    func register(on router: Router<AppContext>) {
        router.put(SiteURL.Route.apiOrder.routerPath) { request, context in try await putOrder(request, context) }
        router.get(SiteURL.Route.apiOrder.routerPath) { _, context in try await getOrder(context) }
        router.get(SiteURL.Route.apiOrders.routerPath) { request, context in try await listOrders(request, context) }
        router.get(SiteURL.Route.apiContacts.routerPath) { request, context in try await listContacts(request, context)
        }
        router.get(SiteURL.Route.apiContact.routerPath) { _, context in try await getContact(context) }
        router.get(SiteURL.Route.apiContactExport.routerPath) { _, context in try await exportContact(context) }
        router.post(SiteURL.Route.apiContactErase.routerPath) { _, context in try await eraseContact(context) }
        router.post(SiteURL.Route.apiContactObjection.routerPath) { _, context in try await objectContact(context) }
        router.post(SiteURL.Route.apiMailEvents.routerPath) { request, context in try await mailEvent(request, context)
        }
    }

    /// The generic bounce and complaint webhook: a relay or ESP reports what happened to a mail we sent.
    func mailEvent(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        struct Payload: Decodable {
            var type: String
            var messageID: String
            var permanent: Bool?
            var detail: String?
            enum CodingKeys: String, CodingKey {
                case type, permanent, detail
                case messageID = "message_id"
            }
        }
        let payload = try await Bodies.json(Payload.self, from: request, limit: 65_536)
        guard ["bounce", "complaint", "delay"].contains(payload.type) else {
            throw DomainError.invalid("mail_event_type", "type must be bounce, complaint or delay.", field: "type")
        }
        let id = payload.messageID.trimmingCharacters(in: CharacterSet(charactersIn: "<> "))
        guard !id.isEmpty, id.count <= 998 else {
            throw DomainError.invalid(
                "message_id_invalid", "message_id is our Message-ID header value.", field: "message_id")
        }
        guard let mail = try await store.outboxMail(messageID: id), mail.workspaceID == principal.workspaceID else {
            throw DomainError.notFound("Mail")
        }
        let permanent = payload.type == "complaint" || (payload.type == "bounce" && (payload.permanent ?? true))
        _ = try await store.recordBounce(
            outboxID: mail.id, type: payload.type, permanent: permanent,
            detail: String((payload.detail ?? "").prefix(2000)), source: "webhook")
        return Response(status: .noContent)
    }

    func putOrder(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let externalID = context.parameters.get("external_id") ?? ""
        let (payload, body) = try await Bodies.jsonWithBytes(OrderPayload.self, from: request, limit: env.maxBodyBytes)
        let submission = try OrderSubmission.validate(
            externalID: externalID, payload: payload, receivedAt: env.clock.now())
        let result = try await store.upsertOrder(
            workspaceID: principal.workspaceID, submission: submission, fingerprint: Store.fingerprint(body: body))
        env.wakeWorkers(forKinds: result.jobKinds)
        var response = Bodies.jsonResponse(
            bytes: OrderDTO.upsertResponse(OrderDTO(result.order), outcome: result.outcome.rawValue),
            status: result.outcome == .created ? .created : .ok)
        if result.outcome == .created {
            response.headers[.location] = SiteURL.apiOrder(externalID: result.order.externalID).path
        }
        return response
    }

    func getOrder(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        guard
            let order = try await store.order(
                workspaceID: principal.workspaceID, externalID: context.parameters.get("external_id") ?? "")
        else { throw DomainError.notFound("Order") }
        return Bodies.jsonResponse(bytes: OrderDTO(order).json)
    }

    func listOrders(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let q = request.uri.queryParameters
        var status: OrderStatus? = nil
        if let s = q.get("status") {
            guard let parsed = OrderStatus(rawValue: s) else {
                throw DomainError.invalid("status_unknown", "'\(s)' is not an order status.", field: "status")
            }
            status = parsed
        }
        let (limit, offset) = try q.paging()
        let page = try await store.orders(
            workspaceID: principal.workspaceID, status: status, limit: limit, offset: offset)
        return try Bodies.jsonResponse(
            PageDTO(items: page.items.map(OrderDTO.init), total: page.total, limit: page.limit, offset: page.offset))
    }

    func listContacts(_ request: Request, _ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let q = request.uri.queryParameters
        let (limit, offset) = try q.paging()
        let page = try await store.contacts(
            workspaceID: principal.workspaceID, search: q.get("q"), limit: limit, offset: offset)
        return try Bodies.jsonResponse(
            PageDTO(items: page.items.map { ContactDTO($0) }, total: page.total, limit: page.limit, offset: page.offset)
        )
    }

    func getContact(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let id = try context.int64Parameter("id")
        guard let contact = try await store.contact(workspaceID: principal.workspaceID, id: id) else {
            throw DomainError.notFound("Contact")
        }
        let consents = try await store.consents(workspaceID: principal.workspaceID, contactID: id)
        return try Bodies.jsonResponse(ContactDTO(contact, consents: consents))
    }

    func exportContact(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        let export = try await store.exportContact(
            workspaceID: principal.workspaceID, contactID: try context.int64Parameter("id"))
        return try Bodies.jsonResponse(export)
    }

    func eraseContact(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        try await store.erase(
            workspaceID: principal.workspaceID, contactID: try context.int64Parameter("id"),
            actor: "apikey:\(principal.keyID)")
        env.forgetCached(workspaceID: principal.workspaceID)
        return Response(status: .noContent)
    }

    func objectContact(_ context: AppContext) async throws -> Response {
        let principal = try context.principal()
        try await store.object(
            workspaceID: principal.workspaceID, contactID: try context.int64Parameter("id"),
            actor: "apikey:\(principal.keyID)")
        env.reviews?.cache.invalidate(workspaceID: principal.workspaceID)
        return Response(status: .noContent)
    }
}

extension Parameters {
    /// `limit` (1–500, default 50) and `offset` of a list operation (docs/api.md, Pagination).
    func paging() throws -> (limit: Int, offset: Int) {
        func int(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
            guard let raw = get(name) else { return value }
            guard let n = Int(raw), range.contains(n) else {
                throw DomainError.invalid(
                    "parameter_invalid",
                    "'\(name)' must be a whole number from \(range.lowerBound) to \(range.upperBound).",
                    field: name)
            }
            return n
        }
        return (try int("limit", default: 50, range: 1...500), try int("offset", default: 0, range: 0...Int(Int32.max)))
    }
}
