/// The configuration file format: a small, strict subset of TOML.
///
/// ```toml
/// # comments start with '#'
/// [node]
/// listen = "0.0.0.0:7400"
/// [discovery]
/// mdns = true
/// seeds = ["10.0.0.5:7400", "seed.example:7400"]
/// [store]
/// capacity = "50GiB"
/// ```
///
/// Values are strings (double quotes), integers, booleans, or one-line arrays of strings. Every
/// error names the file, the line, and the key.
public struct ConfigFile: Sendable {
    public enum Value: Hashable, Sendable, CustomStringConvertible {
        case string(String)
        case integer(Int64)
        case bool(Bool)
        case strings([String])

        public var description: String {
            switch self {
            case .string(let s): "\"\(s)\""
            case .integer(let i): "\(i)"
            case .bool(let b): "\(b)"
            case .strings(let a): "[" + a.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
            }
        }
    }

    public struct Entry: Sendable {
        public var key: String      // "section.key"
        public var value: Value
        public var line: Int
    }

    public let path: String
    public private(set) var entries: [Entry] = []

    /// Parses `text`; `path` is used in error messages only.
    public init(text: String, path: String) throws(ConfigError) {
        self.path = path
        var section = ""
        var seen: [String: Int] = [:]
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = ConfigFile.stripComment(rawLine).trimmingWhitespace()
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else {
                    throw .syntax(path, lineNumber, "a section header looks like [name]")
                }
                section = String(line.dropFirst().dropLast()).trimmingWhitespace()
                guard section.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                    throw .syntax(path, lineNumber, "section name \"\(section)\" may use letters, digits, '_' and '-' only")
                }
                continue
            }
            guard let eq = line.firstIndex(of: "=") else {
                throw .syntax(path, lineNumber, "expected `key = value`")
            }
            let key = String(line[..<eq]).trimmingWhitespace()
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                throw .syntax(path, lineNumber, "\"\(key)\" is not a valid key")
            }
            let full = section.isEmpty ? key : "\(section).\(key)"
            if let first = seen[full] {
                throw .syntax(path, lineNumber, "key \(full) is set twice (first on line \(first))")
            }
            seen[full] = lineNumber
            let valueText = String(line[line.index(after: eq)...]).trimmingWhitespace()
            let value = try ConfigFile.parseValue(valueText, path: path, line: lineNumber, key: full)
            entries.append(Entry(key: full, value: value, line: lineNumber))
        }
    }

    private static func stripComment(_ line: Substring) -> Substring {
        var inString = false
        var escaped = false
        for i in line.indices {
            let c = line[i]
            if escaped { escaped = false; continue }
            if c == "\\" && inString { escaped = true; continue }
            if c == "\"" { inString.toggle() }
            if c == "#" && !inString { return line[..<i] }
        }
        return line
    }

    private static func parseValue(_ text: String, path: String, line: Int, key: String) throws(ConfigError) -> Value {
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        if text.hasPrefix("\"") {
            var rest = Substring(text)
            let s = try parseString(&rest, path: path, line: line, key: key)
            guard rest.trimmingWhitespace().isEmpty else {
                throw .badValue(path, line, key, "unexpected text after the closing quote")
            }
            return .string(s)
        }
        if text.hasPrefix("[") {
            guard text.hasSuffix("]") else { throw .badValue(path, line, key, "an array must close with ] on the same line") }
            var rest = Substring(text.dropFirst().dropLast())
            var items: [String] = []
            while true {
                rest = Substring(rest.trimmingWhitespace())
                if rest.isEmpty { break }
                guard rest.hasPrefix("\"") else { throw .badValue(path, line, key, "array items must be quoted strings") }
                items.append(try parseString(&rest, path: path, line: line, key: key))
                rest = Substring(rest.trimmingWhitespace())
                if rest.hasPrefix(",") { rest = rest.dropFirst() } else if !rest.isEmpty {
                    throw .badValue(path, line, key, "expected ',' between array items")
                }
            }
            return .strings(items)
        }
        let digits = text.replacingUnderscores()
        if let i = Int64(digits) { return .integer(i) }
        throw .badValue(path, line, key, "\(text) is not a string, integer, boolean or array (strings need double quotes)")
    }

    private static func parseString(_ s: inout Substring, path: String, line: Int, key: String) throws(ConfigError) -> String {
        precondition(s.hasPrefix("\""))
        s = s.dropFirst()
        var out = ""
        var escaped = false
        while let c = s.first {
            s = s.dropFirst()
            if escaped {
                switch c {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "\"", "\\": out.append(c)
                default: throw .badValue(path, line, key, "unknown escape \\\(c)")
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "\"" {
                return out
            } else {
                out.append(c)
            }
        }
        throw .badValue(path, line, key, "string is missing its closing quote")
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(String.UnicodeScalarView(scalars[first...last]))
    }

    func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}

/// A configuration problem, naming the file, line and key, and what to do.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    private enum Kind: Sendable {
        case syntax(String)
        case badValue(key: String, String)
        case unknownKey(key: String, suggestion: String?)
        case unreadable(String)
    }
    private let kind: Kind
    public let path: String
    /// 1-based line number, or 0 when the problem is not on one line.
    public let line: Int

    static func syntax(_ path: String, _ line: Int, _ why: String) -> ConfigError { .init(kind: .syntax(why), path: path, line: line) }
    static func badValue(_ path: String, _ line: Int, _ key: String, _ why: String) -> ConfigError {
        .init(kind: .badValue(key: key, why), path: path, line: line)
    }
    static func unknownKey(_ path: String, _ line: Int, _ key: String, suggestion: String?) -> ConfigError {
        .init(kind: .unknownKey(key: key, suggestion: suggestion), path: path, line: line)
    }
    static func unreadable(_ path: String, _ why: String) -> ConfigError { .init(kind: .unreadable(why), path: path, line: 0) }

    /// The offending key, if the error is about one.
    public var key: String? {
        switch kind {
        case .badValue(let k, _), .unknownKey(let k, _): k
        default: nil
        }
    }

    public var description: String {
        let place = line > 0 ? "\(path):\(line)" : path
        switch kind {
        case .syntax(let why): return "\(place): \(why)"
        case .badValue(let key, let why): return "\(place): bad value for \(key): \(why)"
        case .unknownKey(let key, let suggestion):
            return "\(place): unknown key \(key)" + (suggestion.map { " (did you mean \($0)?)" } ?? "")
                + "; see docs/operations.md for every key"
        case .unreadable(let why): return "\(place): \(why)"
        }
    }
}
