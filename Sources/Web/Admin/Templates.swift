import Foundation
import Hummingbird
import Mustache
import ReciprocityCore

/// Renders the Mustache templates shipped in the Web bundle. Values are HTML-escaped by default, by `PageHTML`.
public struct Templates: Sendable {
    let library: MustacheLibrary

    /// Loads every template with the `PageHTML` escaper set at its top (a partial or layout starts with the
    /// library's default again, so each file gets the pragma).
    public static func load() async throws -> Templates {
        guard let dir = Bundle.module.url(forResource: "Templates", withExtension: nil) else {
            throw DomainError(
                .unavailable, code: "templates_missing", "The page templates are missing from the bundle.")
        }
        var library = MustacheLibrary()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".mustache") }
        for file in files {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            try library.register(PageHTML.pragma + text, named: String(file.dropLast(".mustache".count)))
        }
        return Templates(library: library)
    }

    /// Renders a page to HTML text.
    public func render(_ name: String, _ model: [String: Any]) -> String {
        library.render(model, withTemplate: name) ?? "template \(name) missing"
    }

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

/// Page escaping: marks clinging to `"'<>&` are dropped, then the text is escaped byte by byte (`HTMLText`).
struct PageHTML: MustacheContentType {
    static let pragma: String = {
        MustacheContentTypes.register(PageHTML(), named: "PAGEHTML")
        return "{{% CONTENT_TYPE: PAGEHTML}}"
    }()

    func escapeText(_ text: String) -> String { HTMLText.escape(HTMLText.detachMarks(text)) }
}
