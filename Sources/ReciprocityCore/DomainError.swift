import Foundation

/// What kind of failure a `DomainError` is. Adapters map it to a transport status (HTTP, CLI exit).
public enum ErrorKind: String, Sendable, Codable {
    case invalid, notFound, conflict, unauthorized, forbidden, rateLimited, tooLarge, unavailable
}

/// A domain error with a stable machine-readable code, a human message and, where one is at fault, the field.
///
/// Codes are part of the public API (they appear in problem+json `type` URIs and CLI output): never rename one.
public struct DomainError: Error, Sendable, Equatable, CustomStringConvertible {
    public var kind: ErrorKind
    public var code: String
    public var message: String
    /// A JSON-pointer-like path to the field at fault, e.g. `customer.email` or `items[2].quantity`.
    public var field: String?

    public init(_ kind: ErrorKind, code: String, _ message: String, field: String? = nil) {
        self.kind = kind
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String {
        if let field { return "\(code): \(message) (\(field))" }
        return "\(code): \(message)"
    }

    public static func invalid(_ code: String, _ message: String, field: String? = nil) -> DomainError {
        DomainError(.invalid, code: code, message, field: field)
    }
    public static func notFound(_ what: String) -> DomainError {
        DomainError(.notFound, code: "not_found", "\(what) was not found.")
    }
    public static func conflict(_ code: String, _ message: String, field: String? = nil) -> DomainError {
        DomainError(.conflict, code: code, message, field: field)
    }
}
