import CorralCore
import CurlHTTP
import Foundation

extension DockerEngineClient {
    /// `GET /events`: engine events as they happen, filtered (for example
    /// `["type": ["container"], "label": ["corral.managed=1"]]`). Runs until `body` returns.
    public func withEvents<T: Sendable>(
        filters: [String: [String]] = [:], since: Date? = nil, _ body: (EngineEvents) async throws -> T
    ) async throws -> T {
        let path = try await self.path(
            "/events",
            query: [
                ("filters", Self.filters(filters)), ("since", since.map { String(Int64($0.timeIntervalSince1970)) }),
            ])
        return try await streaming(HTTPRequest(.get, path), describedAs: "/events") { _, stream in
            try await body(EngineEvents(body: stream))
        }
    }
}

/// The events stream: one JSON object per line.
public struct EngineEvents: AsyncSequence, Sendable {
    public typealias Element = EngineEvent
    let body: HTTPResponseBody

    public struct AsyncIterator: AsyncIteratorProtocol {
        var source: HTTPResponseBody.AsyncIterator
        var buffer: [UInt8] = []

        public mutating func next() async throws -> EngineEvent? {
            while true {
                if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = buffer[..<newline]
                    buffer.removeSubrange(...newline)
                    if line.isEmpty { continue }
                    return try JSONDecoder().decode(EngineEvent.self, from: Data(line))
                }
                guard let chunk = try await source.next() else { return nil }
                buffer.append(contentsOf: chunk)
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: body.makeAsyncIterator()) }
}
