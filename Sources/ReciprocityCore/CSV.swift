import Foundation

/// RFC 4180 CSV: quoted fields with doubled quotes, CRLF or LF line ends, a header row. Also reads `;` as the
/// separator when the header uses it (German spreadsheet exports).
public enum CSV {
    public struct Table: Sendable, Equatable {
        public var header: [String]
        /// Each row with its 1-based line number in the file, for error messages.
        public var rows: [(line: Int, fields: [String])]

        public static func == (a: Table, b: Table) -> Bool {
            a.header == b.header && a.rows.map(\.line) == b.rows.map(\.line)
                && a.rows.map(\.fields) == b.rows.map(\.fields)
        }

        /// The value of a column in a row, trimmed; "" if the row is short.
        public func value(_ row: [String], _ column: String) -> String {
            guard let i = header.firstIndex(of: column), i < row.count else { return "" }
            return row[i].trimmingCharacters(in: .whitespaces)
        }
    }

    public static func parse(_ text: String) throws(DomainError) -> Table {
        var body = Substring(text)
        if body.hasPrefix("\u{FEFF}") { body = body.dropFirst() }
        let firstLine = body.prefix { $0 != "\n" && $0 != "\r\n" }
        let separator: Character = firstLine.contains(";") && !firstLine.contains(",") ? ";" : ","
        var records: [(Int, [String])] = []
        var field = ""
        var fields: [String] = []
        var quoted = false
        var line = 1
        var recordLine = 1
        var i = body.startIndex
        while i < body.endIndex {
            let c = body[i]
            if quoted {
                if c == "\"" {
                    let next = body.index(after: i)
                    if next < body.endIndex && body[next] == "\"" {
                        field.append("\"")
                        i = next
                    } else {
                        quoted = false
                    }
                } else {
                    if c == "\n" || c == "\r\n" { line += 1 }
                    field.append(c == "\r\n" ? "\n" : c)
                }
            } else if c == "\"" && field.isEmpty {
                quoted = true
            } else if c == separator {
                fields.append(field)
                field = ""
            } else if c == "\n" || c == "\r\n" || c == "\r" {
                fields.append(field)
                records.append((recordLine, fields))
                fields = []
                field = ""
                line += 1
                recordLine = line
            } else {
                field.append(c)
            }
            i = body.index(after: i)
        }
        if quoted { throw .invalid("csv_unterminated", "Line \(recordLine): a quoted field is not closed.") }
        if !field.isEmpty || !fields.isEmpty {
            fields.append(field)
            records.append((recordLine, fields))
        }
        records.removeAll { $0.1.allSatisfy { $0.trimmingCharacters(in: .whitespaces).isEmpty } }
        guard let header = records.first else { throw .invalid("csv_empty", "The file has no header row.") }
        return Table(
            header: header.1.map { $0.trimmingCharacters(in: .whitespaces).lowercased() },
            rows: records.dropFirst().map { (line: $0.0, fields: $0.1) })
    }
}

extension CSV {
    /// RFC 4180 output: fields with a comma, quote or line break are quoted, quotes doubled; CRLF line ends.
    /// A field starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading apostrophe, so a spreadsheet does not run it as a
    /// formula (CSV injection).
    public static func write(_ rows: [[String]]) -> String {
        rows.map { row in
            row.map { value -> String in
                var v = value
                if let first = v.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) { v = "'" + v }
                // By scalar: "\r\n" is one `Character`, equal to neither "\r" nor "\n".
                guard v.unicodeScalars.contains(where: { "\",\n\r;".unicodeScalars.contains($0) }) else {
                    return v
                }
                return "\"" + v.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            }.joined(separator: ",")
        }.joined(separator: "\r\n") + "\r\n"
    }
}
