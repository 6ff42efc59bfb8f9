import Foundation
import ReciprocityCore

/// A mail template compiled for sending: a tree of text, variables and sections rendered against `MailValue`s,
/// with no dynamic casts per lookup. swift-mustache stays the reference: it parses every template first (its
/// errors are the ones users see), and anything this program does not cover (partials, blocks, delimiter changes,
/// transforms, swift-mustache's own HTML escaping, values other than strings, booleans, integers, dictionaries and
/// lists) makes `compile` or `render` return nil, and the caller renders with swift-mustache instead.
///
/// The parser follows swift-mustache 2.1's `Template+Parser.swift` step by step (standalone lines, whitespace
/// before tags, newline handling), so both give the same bytes; `MailTemplateProgramTests` compares them on
/// every shipped template and on generated ones. Decision 0020 has the measurements.
struct MailTemplateProgram: Sendable {
    enum Escape: Sendable {
        /// `CONTENT_TYPE: TEXT`, and `{{{…}}}` / `{{&…}}` everywhere.
        case none
        /// `CONTENT_TYPE: MAILHTML`: `HTMLText.escape`.
        case html
    }

    enum Path: Sendable, Equatable {
        /// `.`, or a name that splits into no parts: the top of the stack.
        case top
        /// `a.b`: the first object on the stack (from the top) that has `a`, then `b` inside it.
        case climbing([String])
        /// `.a.b`: `a` in the top of the stack only.
        case anchored([String])

        init(_ name: String) {
            if name == "." {
                self = .top
                return
            }
            let parts = name.split(separator: ".").map(String.init)
            if parts.isEmpty {
                self = .top
            } else {
                self = name.first == "." ? .anchored(parts) : .climbing(parts)
            }
        }
    }

    indirect enum Node: Sendable {
        case text(String)
        case variable(Path, Escape)
        case section(Path, [Node], inverted: Bool)
    }

    let nodes: [Node]

    /// nil when the template uses something this program does not render (see the type's comment), and where
    /// swift-mustache would not have parsed it either.
    static func compile(_ source: String) -> MailTemplateProgram? {
        var parser = Parser(source)
        // No escaping chosen yet: swift-mustache's default HTML escaping, which this program does not reproduce.
        guard let nodes = try? parser.parse(sectionName: nil, newLine: true, escape: nil) else { return nil }
        return MailTemplateProgram(nodes: nodes)
    }

    /// The rendered text, or nil when a value is of a kind this program leaves to swift-mustache.
    func render(_ root: MailValue) -> String? {
        var out = ""
        out.reserveCapacity(4096)
        var stack = [root]
        return Self.render(nodes, stack: &stack, into: &out) ? out : nil
    }

    private static func render(_ nodes: [Node], stack: inout [MailValue], into out: inout String) -> Bool {
        for node in nodes {
            switch node {
            case .text(let text):
                out += text
            case .variable(let path, let escape):
                guard let value = lookup(path, in: stack) else { continue }
                let text: String
                switch value {
                case .string(let s): text = s
                case .bool(let b): text = b ? "true" : "false"
                case .int(let i): text = String(i)
                case .dictionary, .list: return false  // swift-mustache prints a description; not for mails
                }
                switch escape {
                case .none: out += text
                case .html: out += HTMLText.escape(text)
                }
            case .section(let path, let body, let inverted):
                let value = lookup(path, in: stack)
                switch (value, inverted) {
                case (.list(let items)?, false):
                    for item in items {
                        stack.append(item)
                        defer { stack.removeLast() }
                        guard render(body, stack: &stack, into: &out) else { return false }
                    }
                case (.list(let items)?, true):
                    guard items.isEmpty else { continue }
                    stack.append(.list(items))
                    defer { stack.removeLast() }
                    guard render(body, stack: &stack, into: &out) else { return false }
                case (.bool(let b)?, _):
                    if b != inverted { guard render(body, stack: &stack, into: &out) else { return false } }
                case (let v?, false):
                    stack.append(v)
                    defer { stack.removeLast() }
                    guard render(body, stack: &stack, into: &out) else { return false }
                case (.some, true):
                    continue
                case (nil, false):
                    continue
                case (nil, true):
                    guard render(body, stack: &stack, into: &out) else { return false }
                }
            }
        }
        return true
    }

    private static func lookup(_ path: Path, in stack: [MailValue]) -> MailValue? {
        switch path {
        case .top:
            return stack.last
        case .anchored(let names):
            return descend(stack.last, names[...])
        case .climbing(let names):
            for object in stack.reversed() {
                if let child = object.child(names[0]) { return descend(child, names.dropFirst()) }
            }
            return nil
        }
    }

    private static func descend(_ object: MailValue?, _ names: ArraySlice<String>) -> MailValue? {
        var current = object
        for name in names {
            guard let c = current else { return nil }
            current = c.child(name)
        }
        return current
    }
}

/// A value in a mail's model: what `[String: Any]` models hold, typed once per mail instead of cast per lookup.
enum MailValue: Sendable {
    case string(String)
    case bool(Bool)
    case int(Int)
    case dictionary([String: MailValue])
    case list([MailValue])

    /// nil for anything else (the renderer then leaves the mail to swift-mustache). Casts here must not see more
    /// than swift-mustache does: Foundation objects (an `NSNumber` would cast to `Bool`), dictionaries whose keys
    /// are not `String` and nested optionals are left to it.
    init?(_ any: Any) {
        guard Self.isPlain(any) else { return nil }
        if let s = any as? String {
            self = .string(s)
        } else if let b = any as? Bool {
            self = .bool(b)
        } else if let i = any as? Int {
            self = .int(i)
        } else if let d = any as? [String: Any] {
            guard let converted = Self.dictionary(d) else { return nil }
            self = .dictionary(converted)
        } else if let l = any as? [Any] {
            var items: [MailValue] = []
            items.reserveCapacity(l.count)
            for element in l {
                guard let v = MailValue(element) else { return nil }
                items.append(v)
            }
            self = .list(items)
        } else {
            return nil
        }
    }

    /// A value of one of the Swift types swift-mustache handles as this type does: `String`, `Bool`, `Int`,
    /// `Dictionary<String, _>` or `Array`, by its dynamic type rather than by what a cast would bridge. (Not `is
    /// NSObject` to spot Foundation objects: on Linux that says yes to a plain `String`.)
    private static func isPlain(_ any: Any) -> Bool {
        let type = Swift.type(of: any)
        return type == String.self || type == Bool.self || type == Int.self || any is any StringKeyedDictionary
            || any is any PlainArray
    }

    static func dictionary(_ d: [String: Any]) -> [String: MailValue]? {
        var out: [String: MailValue] = [:]
        out.reserveCapacity(d.count)
        for (k, v) in d {
            guard let value = MailValue(v) else { return nil }
            out[k] = value
        }
        return out
    }

    /// The untyped form swift-mustache renders.
    var any: Any {
        switch self {
        case .string(let s): s
        case .bool(let b): b
        case .int(let i): i
        case .dictionary(let d): d.mapValues(\.any)
        case .list(let l): l.map(\.any)
        }
    }

    /// swift-mustache finds children only in dictionaries (Mirror finds none in strings, numbers and arrays).
    func child(_ name: String) -> MailValue? {
        if case .dictionary(let d) = self { return d[name] }
        return nil
    }
}

private protocol StringKeyedDictionary {}
extension Dictionary: StringKeyedDictionary where Key == String {}
private protocol PlainArray {}
extension Array: PlainArray {}

/// swift-mustache 2.1's parser (`Template+Parser.swift`) for the tags mails use, over the same Characters.
private struct Parser {
    struct Unsupported: Error {}

    let characters: [Character]
    var position = 0

    init(_ source: String) { characters = Array(source) }

    var atEnd: Bool { position == characters.count }
    var current: Character { atEnd ? "\0" : characters[position] }
    mutating func advance() { position += 1 }

    @discardableResult
    mutating func read(while predicate: (Character) -> Bool) -> String {
        let start = position
        while !atEnd && predicate(characters[position]) { position += 1 }
        return String(characters[start..<position])
    }

    /// Reads `string` if it comes next; fewer characters left than it has is an error, as in swift-mustache.
    mutating func read(string: String) throws -> Bool {
        let expected = Array(string)
        guard characters.count - position >= expected.count else { throw Unsupported() }
        guard Array(characters[position..<(position + expected.count)]) == expected else { return false }
        position += expected.count
        return true
    }

    static let nameCharacters = Set<Character>(
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_?()*")
    static let nameCharactersWithoutBrackets = Set<Character>(
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_?*")
    static let spaceOrTab: Set<Character> = [" ", "\t"]

    /// `escape` nil: no CONTENT_TYPE seen yet (swift-mustache's own HTML escaping), so no variable is compiled.
    mutating func parse(sectionName: String?, newLine: Bool, escape: MailTemplateProgram.Escape?) throws
        -> [MailTemplateProgram.Node]
    {
        var nodes: [MailTemplateProgram.Node] = []
        var newLine = newLine
        var escape = escape
        var whiteSpaceBefore = ""
        while !atEnd {
            if newLine { whiteSpaceBefore = read(while: Self.spaceOrTab.contains) }
            let text = try readUntilDelimiterOrNewline()
            if current.isNewline {
                nodes.append(.text(whiteSpaceBefore + text + String(current)))
                newLine = true
                advance()
                continue
            }
            if !text.isEmpty {
                nodes.append(.text(whiteSpaceBefore + text))
                whiteSpaceBefore = ""
                newLine = false
            }
            if atEnd { break }
            var setNewLine = false
            switch current {
            case "#", "^":
                let inverted = current == "^"
                advance()
                let name = try parseName()
                if isStandalone(newLine) {
                    setNewLine = true
                } else if !whiteSpaceBefore.isEmpty {
                    nodes.append(.text(whiteSpaceBefore))
                    whiteSpaceBefore = ""
                }
                let body = try parse(sectionName: name, newLine: setNewLine, escape: escape)
                nodes.append(.section(.init(name), body, inverted: inverted))
            case "/":
                advance()
                let name = try parseName()
                guard name == sectionName else { throw Unsupported() }
                if !isStandalone(newLine) && !whiteSpaceBefore.isEmpty { nodes.append(.text(whiteSpaceBefore)) }
                return nodes
            case "!":
                advance()
                try skipComment()
                setNewLine = isStandalone(newLine)
            case "{", "&":
                let triple = current == "{"
                if !whiteSpaceBefore.isEmpty {
                    nodes.append(.text(whiteSpaceBefore))
                    whiteSpaceBefore = ""
                }
                advance()
                let name = try parseName()
                if triple {
                    guard !atEnd, current == "}" else { throw Unsupported() }
                    advance()
                }
                nodes.append(.variable(.init(name), .none))
            case "%":
                advance()
                escape = try readContentType()
                setNewLine = isStandalone(newLine)
            case ">", "<", "$", "=":
                throw Unsupported()
            default:
                if !whiteSpaceBefore.isEmpty {
                    nodes.append(.text(whiteSpaceBefore))
                    whiteSpaceBefore = ""
                }
                let name = try parseName()
                guard let escape else { throw Unsupported() }
                nodes.append(.variable(.init(name), escape))
            }
            newLine = setNewLine
        }
        guard sectionName == nil else { throw Unsupported() }
        return nodes
    }

    /// Text up to a newline (not consumed) or up to and including `{{`.
    mutating func readUntilDelimiterOrNewline() throws -> String {
        var total = ""
        while !atEnd {
            total += read(while: { $0 != "\n" && $0 != "\r\n" && $0 != "{" })
            if current.isNewline {
                break
            } else if current == "{" {
                if try read(string: "{{") { break }
                total += "{"
                advance()
            }
        }
        return total
    }

    /// A tag's name up to and including `}}`; names with transforms (brackets) are not compiled.
    mutating func parseName() throws -> String {
        read(while: \.isWhitespace)
        let name = read(while: Self.nameCharacters.contains)
        read(while: \.isWhitespace)
        guard try read(string: "}}") else { throw Unsupported() }
        guard name.allSatisfy(Self.nameCharactersWithoutBrackets.contains) else { throw Unsupported() }
        return name
    }

    mutating func skipComment() throws {
        while !atEnd {
            if characters[position] == "}", position + 1 < characters.count, characters[position + 1] == "}" {
                position += 2
                return
            }
            position += 1
        }
        throw Unsupported()
    }

    /// `{{% CONTENT_TYPE: TEXT}}` or `MAILHTML`; anything else is left to swift-mustache.
    mutating func readContentType() throws -> MailTemplateProgram.Escape {
        read(while: \.isWhitespace)
        let variable = read(while: Self.nameCharactersWithoutBrackets.contains)
        read(while: \.isWhitespace)
        guard !atEnd, current == ":" else { throw Unsupported() }
        advance()
        read(while: \.isWhitespace)
        let value = read(while: Self.nameCharactersWithoutBrackets.contains)
        read(while: \.isWhitespace)
        guard try read(string: "}}"), variable == "CONTENT_TYPE" else { throw Unsupported() }
        switch value {
        case "TEXT": return .none
        case MailHTML.name: return .html
        default: throw Unsupported()
        }
    }

    /// At a line start (only blanks before the tag) and nothing but blanks after it to the line end: the line's
    /// newline is consumed with the tag.
    mutating func isStandalone(_ newLine: Bool) -> Bool {
        guard newLine else { return false }
        if atEnd { return true }
        var probe = position
        while probe < characters.count && Self.spaceOrTab.contains(characters[probe]) { probe += 1 }
        guard probe < characters.count, characters[probe].isNewline else { return false }
        position = probe + 1
        return true
    }
}
