import Foundation
import HTTPTypes
import Hummingbird
import ReciprocityCore

/// RFC 9457 problem details: the one shape of every API error.
public struct Problem: Codable, Sendable, Equatable {
    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    public var code: String
    public var field: String?
    public var instance: String?
    public var requestId: String?

    enum CodingKeys: String, CodingKey {
        case type, title, status, detail, code, field, instance
        case requestId = "request_id"
    }

    public init(status: HTTPResponse.Status, code: String, detail: String, field: String? = nil) {
        self.type = "urn:reciprocity:problem:\(code)"
        self.title = status.reasonPhrase
        self.status = status.code
        self.detail = detail
        self.code = code
        self.field = field
    }

    public static func status(for kind: ErrorKind) -> HTTPResponse.Status {
        switch kind {
        case .invalid: .unprocessableContent
        case .notFound: .notFound
        case .conflict: .conflict
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .rateLimited: .tooManyRequests
        case .tooLarge: .contentTooLarge
        case .unavailable: .serviceUnavailable
        }
    }

    /// Maps any error to a problem. Unknown errors become a 500 that reveals nothing; the caller logs them.
    public static func from(_ error: any Error) -> (Problem, known: Bool) {
        switch error {
        case let e as DomainError:
            return (Problem(status: status(for: e.kind), code: e.code, detail: e.message, field: e.field), true)
        case let e as DecodingError:
            return (decoding(e), true)
        case let e as HTTPError:
            let code =
                switch e.status {
                case .contentTooLarge: "body_too_large"
                case .notFound: "not_found"
                case .methodNotAllowed: "method_not_allowed"
                case .unsupportedMediaType: "unsupported_media_type"
                default: "http_\(e.status.code)"
                }
            return (Problem(status: e.status, code: code, detail: e.body ?? e.status.reasonPhrase), true)
        default:
            return (
                Problem(
                    status: .internalServerError, code: "internal_error",
                    detail: "Something went wrong on our side. The request id helps us find out what."), false
            )
        }
    }

    /// Turns a decoding failure into a problem that names the field at fault, in the API's snake_case.
    static func decoding(_ error: DecodingError) -> Problem {
        func path(_ keys: [any CodingKey]) -> String {
            var out = ""
            for key in keys {
                if let i = key.intValue {
                    out += "[\(i)]"
                } else {
                    out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
                }
            }
            return out
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            let field = path(ctx.codingPath + [key])
            return Problem(
                status: .unprocessableContent, code: "field_missing", detail: "'\(field)' is required.", field: field)
        case .typeMismatch(let type, let ctx), .valueNotFound(let type, let ctx):
            let field = path(ctx.codingPath)
            return Problem(
                status: .unprocessableContent, code: "type_mismatch",
                detail: "'\(field.isEmpty ? "body" : field)' must be \(describe(type)).",
                field: field.isEmpty ? nil : field)
        case .dataCorrupted(let ctx):
            if ctx.codingPath.isEmpty {
                return Problem(status: .badRequest, code: "malformed_json", detail: "The body is not valid JSON.")
            }
            let field = path(ctx.codingPath)
            return Problem(
                status: .unprocessableContent, code: "value_invalid", detail: ctx.debugDescription, field: field)
        @unknown default:
            return Problem(status: .badRequest, code: "malformed_json", detail: "The body could not be read.")
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Bool.Type: "true or false"
        case is Double.Type: "a number"
        default:
            "\(type)".hasPrefix("Array") ? "an array" : "an object"
        }
    }

    public func response(requestID: String, path: String) -> Response {
        var p = self
        p.requestId = requestID
        p.instance = path
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(p)) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
