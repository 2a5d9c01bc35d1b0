import CorralCore
import CurlHTTP
import Foundation

extension DockerEngineClient {
    /// `POST /containers/{id}/exec`; returns the exec id.
    public func createExec(container: String, _ request: ExecCreateRequest) async throws -> String {
        let response = try await call(.post, "/containers/\(Self.segment(container))/exec", json: request)
        return try decode(IDResponse.self, from: response, path: "/containers/\(container)/exec").id
    }

    /// `POST /exec/{id}/start`, attached: hands the demultiplexed output to `body` as it
    /// arrives. The engine takes the connection over and closes it when the process's
    /// output ends, so the connection is never reused. `timeout` bounds the whole stream.
    public func withExecOutput<T: Sendable>(
        _ execID: String, timeout: Duration? = nil, _ body: (ExecOutput) async throws -> T
    ) async throws -> T {
        let path = try await self.path("/exec/\(Self.segment(execID))/start")
        let request = HTTPRequest(
            .post, path, headers: ["Content-Type": "application/json"],
            body: .bytes(Array(#"{"Detach":false,"Tty":false}"#.utf8)), timeout: timeout, forbidReuse: true)
        return try await streaming(request, describedAs: "/exec/\(execID)/start") { _, stream in
            try await body(ExecOutput(body: stream))
        }
    }

    public func inspectExec(_ execID: String) async throws -> ExecInspect {
        try await get(ExecInspect.self, "/exec/\(Self.segment(execID))/json")
    }
}

/// Exec output as it arrives: pieces of stdout and stderr, in the order the engine sent them.
public struct ExecOutput: AsyncSequence, Sendable {
    public typealias Element = (StdioStream, [UInt8])
    let body: HTTPResponseBody

    public struct AsyncIterator: AsyncIteratorProtocol {
        var source: HTTPResponseBody.AsyncIterator
        var demuxer = StreamDemuxer()
        var pending: [(StdioStream, [UInt8])] = []

        public mutating func next() async throws -> (StdioStream, [UInt8])? {
            while pending.isEmpty {
                guard let chunk = try await source.next() else {
                    guard demuxer.isAtFrameBoundary else {
                        throw CorralError(.engine, "the engine's exec output ended in the middle of a frame")
                    }
                    return nil
                }
                pending = try demuxer.push(chunk).reversed()
            }
            return pending.removeLast()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: body.makeAsyncIterator()) }
}
