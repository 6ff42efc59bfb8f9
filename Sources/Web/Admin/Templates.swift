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
