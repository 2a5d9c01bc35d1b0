/// Header fields in order, with case-insensitive lookup.
public struct HTTPHeaders: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [Field]

    public struct Field: Sendable, Hashable {
        public var name: String
        public var value: String
    }

    public init(_ fields: [(String, String)] = []) {
        self.fields = fields.map { Field(name: $0.0, value: $0.1) }
    }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Replaces every field of this name with one.
    public mutating func set(_ name: String, _ value: String) {
        fields.removeAll { $0.name.lowercased() == name.lowercased() }
        add(name, value)
    }

    /// The first value of the named field.
    public subscript(name: String) -> String? {
        let lowered = name.lowercased()
        return fields.first { $0.name.lowercased() == lowered }?.value
    }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }
}

public struct HTTPMethod: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let get = HTTPMethod(rawValue: "GET")
    public static let head = HTTPMethod(rawValue: "HEAD")
    public static let post = HTTPMethod(rawValue: "POST")
    public static let put = HTTPMethod(rawValue: "PUT")
    public static let delete = HTTPMethod(rawValue: "DELETE")
}

/// A request body: none, bytes in memory, or a stream of chunks (sent chunked) produced while
/// the request is in flight, for example a tar being written.
public enum HTTPRequestBody: Sendable {
    case empty
    case bytes([UInt8])
    case stream(AsyncThrowingStream<[UInt8], any Error>)
}

public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    /// Path and query, already percent-encoded, starting with `/`.
    public var path: String
    public var headers: HTTPHeaders
    public var body: HTTPRequestBody
    /// Limit on the whole exchange; nil for streams that may legitimately run for long.
    public var timeout: Duration?
    /// Close the connection after this request instead of returning it to the pool. For
    /// endpoints that take the connection over (docker's attach and exec start).
    public var forbidReuse: Bool
    /// Connect to this address (`93.184.216.34`, `[::1]`) and port instead of resolving the
    /// URL's host (CURLOPT_CONNECT_TO): for a caller that checked the address itself and must
    /// not have it resolved a second time. TLS still verifies the URL's host name.
    public var connectTo: (address: String, port: Int)?

    public init(
        _ method: HTTPMethod, _ path: String, headers: HTTPHeaders = [:], body: HTTPRequestBody = .empty,
        timeout: Duration? = nil, forbidReuse: Bool = false
    ) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.forbidReuse = forbidReuse
    }
}

public struct HTTPResponseHead: Sendable, Hashable {
    public var status: Int
    public var headers: HTTPHeaders

    public init(status: Int, headers: HTTPHeaders) {
        self.status = status
        self.headers = headers
    }
}

public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]

    public init(head: HTTPResponseHead, body: [UInt8]) {
        self.head = head
        self.body = body
    }

    public var status: Int { head.status }
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}
