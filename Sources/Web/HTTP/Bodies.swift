import Foundation
import Hummingbird
import NIOCore
import ReciprocityCore

/// Reading request bodies with a size limit, and writing JSON responses, the same way everywhere.
enum Bodies {
    static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw DomainError(.tooLarge, code: "body_too_large", "The body is larger than \(limit) bytes.")
        }
        do {
            return try await request.body.collect(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw DomainError(.tooLarge, code: "body_too_large", "The body is larger than \(limit) bytes.")
        }
    }

    static func json<T: Decodable>(_ type: T.Type, from request: Request, limit: Int) async throws -> T {
        try await jsonWithBytes(type, from: request, limit: limit).value
    }

    /// Decodes the body and also returns its raw bytes (for fingerprinting).
    static func jsonWithBytes<T: Decodable>(_ type: T.Type, from request: Request, limit: Int) async throws
        -> (value: T, bytes: [UInt8])
    {
        if let contentType = request.headers[.contentType], !contentType.lowercased().hasPrefix("application/json") {
            throw DomainError(.invalid, code: "unsupported_media_type", "Send the body as application/json.")
        }
        let buffer = try await collect(request, limit: limit)
        guard buffer.readableBytes > 0 else {
            throw DomainError(.invalid, code: "body_missing", "A JSON body is required.")
        }
        let bytes = Array(buffer: buffer)
        return (try JSONDecoder().decode(T.self, from: Data(bytes)), bytes)
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(ISO8601.format(date))
        }
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        jsonResponse(bytes: try encoder.encode(value), status: status)
    }

    /// JSON already written (`JSONWriter`).
    static func jsonResponse<Bytes: Sequence<UInt8>>(bytes: Bytes, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A file to download (CSV, XML), never cached.
    static func download(_ text: String, contentType: String, filename: String) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: contentType, .contentDisposition: "attachment; filename=\"\(filename)\"",
                .cacheControl: "no-store",
            ], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Parses `application/x-www-form-urlencoded`.
    static func form(_ request: Request, limit: Int = 65_536) async throws -> [String: String] {
        let buffer = try await collect(request, limit: limit)
        return parseForm(String(buffer: buffer))
    }

    static func parseForm(_ body: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            let key = decode(kv[0])
            if fields[key] == nil { fields[key] = kv.count > 1 ? decode(kv[1]) : "" }
        }
        return fields
    }
}
