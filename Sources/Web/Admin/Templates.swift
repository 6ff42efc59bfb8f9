import Foundation
import Hummingbird
import Mustache
import ReciprocityCore

/// Renders the Mustache templates shipped in the Web bundle. Values are HTML-escaped by default.
public struct Templates: Sendable {
    let library: MustacheLibrary

    public static func load() async throws -> Templates {
        guard let dir = Bundle.module.url(forResource: "Templates", withExtension: nil) else {
            throw DomainError(
                .unavailable, code: "templates_missing", "The page templates are missing from the bundle.")
        }
        return Templates(library: try await MustacheLibrary(directory: dir.path))
    }

    /// Renders a page to HTML text.
    public func render(_ name: String, _ model: [String: Any]) -> String {
        library.render(Self.escapable(model), withTemplate: name) ?? "template \(name) missing"
    }

    /// swift-mustache escapes per `Character`: `"` followed by a combining mark (or after a prepend mark) is one
    /// Character that matches no escape, so the quote would reach the page raw and end an attribute. Every
    /// string in a model is therefore cut down so that a `"'<>&` always stands alone: the marks clinging to it go.
    static func escapable(_ value: Any) -> Any {
        switch value {
        case let s as String: return escapable(s)
        case let d as [String: Any]: return d.mapValues(escapable)
        case let a as [[String: Any]]: return a.map { $0.mapValues(escapable) }
        case let a as [Any]: return a.map(escapable)
        default: return value
        }
    }

    static func escapable(_ s: String) -> String {
        guard s.utf8.contains(where: { Self.special.contains($0) }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            if c.unicodeScalars.count > 1,
                c.unicodeScalars.contains(where: { $0.isASCII && Self.special.contains(UInt8($0.value)) })
            {
                for scalar in c.unicodeScalars where scalar.isASCII && Self.special.contains(UInt8(scalar.value)) {
                    out.unicodeScalars.append(scalar)
                }
            } else {
                out.append(c)
            }
        }
        return out
    }

    static let special: Set<UInt8> = [
        UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "&"),
    ]

    public func page(_ name: String, _ model: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: render(name, model))))
    }

    func errorPage(problem: Problem, requestID: String, locale: String) -> Response {
        let model: [String: Any] = [
            "t": Strings.table(locale), "lang": locale, "title": Strings.table(locale)["error_title"] ?? "",
            "status": problem.status, "detail": Strings.table(locale)["error_\(problem.code)"] ?? problem.detail,
            "request_id": requestID,
            "home": SiteURL.adminHome.path,
        ]
        return page("error", model, status: .init(code: problem.status))
    }
}
