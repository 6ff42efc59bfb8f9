import Foundation
import Hummingbird
import ReciprocityCore

/// `multipart/form-data` (RFC 7578), for forms with file inputs. The whole body is read within a limit first;
/// parts are split on the boundary without copying more than each part.
struct MultipartForm: Sendable {
    struct Part: Sendable {
        var name: String
        var filename: String?
        var contentType: String?
        var bytes: [UInt8]
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    var parts: [Part]

    /// The first text value of a field.
    subscript(_ name: String) -> String? { parts.first { $0.name == name && $0.filename == nil }?.text }

    /// Every non-empty file sent under a name (a browser sends an empty part for an empty file input).
    func files(_ name: String) -> [Part] { parts.filter { $0.name == name && $0.filename != nil && !$0.bytes.isEmpty } }

    static func boundary(contentType: String) -> String? {
        let lower = contentType.lowercased()
        guard lower.hasPrefix("multipart/form-data") else { return nil }
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2, kv[0].lowercased() == "boundary" {
                let b = kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return (1...70).contains(b.utf8.count) ? b : nil
            }
        }
        return nil
    }

    /// Reads a form body: multipart, or url-encoded (a form without files, or a client that sends it so).
    static func read(_ request: Request, limit: Int) async throws -> MultipartForm {
        let contentType = request.headers[.contentType] ?? ""
        let buffer = try await Bodies.collect(request, limit: limit)
        if let boundary = boundary(contentType: contentType) {
            return try parse(Array(buffer: buffer), boundary: boundary)
        }
        let fields = Bodies.parseForm(String(buffer: buffer))
        return MultipartForm(
            parts: fields.map { Part(name: $0.key, filename: nil, contentType: nil, bytes: Array($0.value.utf8)) })
    }

    static func parse(_ body: [UInt8], boundary: String) throws -> MultipartForm {
        let delimiter = Array("--\(boundary)".utf8)
        let malformed = DomainError.invalid("multipart_malformed", "The form data could not be read.")
        var parts: [Part] = []
        guard var start = find(delimiter, in: body, from: 0) else { throw malformed }
        while true {
            var cursor = start + delimiter.count
            // "--" after a delimiter ends the body.
            if cursor + 1 < body.count, body[cursor] == UInt8(ascii: "-"), body[cursor + 1] == UInt8(ascii: "-") {
                break
            }
            guard let lineEnd = find([13, 10], in: body, from: cursor) else { throw malformed }
            cursor = lineEnd + 2
            guard let headerEnd = find([13, 10, 13, 10], in: body, from: cursor) else { throw malformed }
            let headers = String(decoding: body[cursor..<headerEnd], as: UTF8.self)
            let contentStart = headerEnd + 4
            guard let next = find([13, 10] + delimiter, in: body, from: contentStart) else { throw malformed }
            var name: String?
            var filename: String?
            var type: String?
            for line in headers.components(separatedBy: "\r\n") {
                let lower = line.lowercased()
                if lower.hasPrefix("content-disposition:") {
                    name = param("name", in: line)
                    filename = param("filename", in: line)
                } else if lower.hasPrefix("content-type:") {
                    type = line.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
                }
            }
            guard let name else { throw malformed }
            parts.append(
                Part(name: name, filename: filename, contentType: type, bytes: Array(body[contentStart..<next])))
            guard parts.count <= 100 else {
                throw DomainError.invalid("multipart_too_many_parts", "The form has too many fields.")
            }
            start = next + 2
        }
        return MultipartForm(parts: parts)
    }

    static func param(_ key: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let kv = piece.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == key else { continue }
            var v = kv[1].trimmingCharacters(in: .whitespaces)
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v
        }
        return nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        let first = needle[0]
        var i = from
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count && haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
