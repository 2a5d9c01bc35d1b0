import CorralAPI
import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import NIOCore

/// envd's HTTP `/files`: GET streams a file out, POST writes one (octet-stream, streamed) or
/// several (multipart/form-data, each part's file name its path). Paths are the query's `path`,
/// relative ones under the home; parent directories are made as envd makes them. Errors are
/// envd's `{"code": status, "message"}`: 404 for a missing file (the SDK's
/// `FileNotFoundException`), 400 for a directory, 403 where the user may not write.
package struct E2BFilesRoute: Sendable {
    package let plane: E2BDataPlane

    /// The largest multipart body: it is read whole before its parts are written.
    package static let maxMultipartBytes = 64 << 20

    package func read(_ request: Request, sandbox: Sandbox) async throws -> Response {
        let path = try await plane.resolve(try Self.query(request, "path"), in: sandbox)
        guard let stat = try await sandbox.stat(path) else {
            throw E2BAPIError.notFound("file '\(path)' does not exist")
        }
        guard !stat.isDirectory else { throw E2BAPIError.badRequest("path '\(path)' is a directory") }
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        // No length: the file may change while it is read, and a wrong length breaks the
        // connection; the body is chunked instead.
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                _ = try await sandbox.readFile(path) { try await writer.write(ByteBuffer(bytes: $0)) }
                try await writer.finish(nil)
            })
    }

    package func write(_ request: Request, sandbox: Sandbox) async throws -> Response {
        let contentType = request.headers[.contentType] ?? ""
        var written: [JSONValue] = []
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            let body = try await collect(request, limit: Self.maxMultipartBytes)
            let parts = try E2BMultipart.parse(body, contentType: contentType)
            let single = request.uri.queryParameters["path"].map(String.init)
            for part in parts {
                guard let name = parts.count == 1 ? (single ?? part.filename) : part.filename, !name.isEmpty else {
                    throw E2BAPIError.badRequest("a file part has no path: give its file name or ?path=")
                }
                let path = try await plane.resolve(name, in: sandbox)
                try await makeParents(path, in: sandbox)
                try await sandbox.writeFile(path, contents: part.body)
                written.append(Self.info(path))
            }
        } else {
            if request.headers[.contentEncoding].map({ $0 != "identity" }) ?? false {
                throw E2BAPIError.badRequest("compressed uploads are not accepted; send the file uncompressed")
            }
            let path = try await plane.resolve(try Self.query(request, "path"), in: sandbox)
            try await makeParents(path, in: sandbox)
            let chunks = request.body.map { Array($0.readableBytesView) }
            try await sandbox.writeFile(path, from: chunks)
            written.append(Self.info(path))
        }
        return JSONResponse.make(written)
    }

    package func makeParents(_ path: String, in sandbox: Sandbox) async throws {
        let (parent, _) = Sandbox.split(path)
        guard parent != "/", try await sandbox.stat(parent) == nil else { return }
        try await sandbox.makeDirectory(parent, parents: true)
    }

    package static func info(_ path: String) -> JSONValue {
        .object(["name": .string(Sandbox.split(path).1), "type": .string("file"), "path": .string(path)])
    }

    package static func query(_ request: Request, _ name: String) throws -> String {
        guard let value = request.uri.queryParameters[Substring(name)], !value.isEmpty else {
            throw E2BAPIError.badRequest("the query parameter '\(name)' is required")
        }
        return String(value)
    }

    /// A file error as envd's HTTP answers it.
    package static func answer(_ error: any Error) -> Response {
        if let error = error as? E2BAPIError { return error.response }
        let (status, body) = ErrorMiddleware.describe(error)
        let mapped =
            switch CorralError.Code(rawValue: body.code) {
            case .notFound: 404
            case .invalidArgument: 400
            case .permissionDenied: 403
            case .resourceExhausted: 507
            default: status
            }
        return E2BAPIError(status: mapped, message: body.message).response
    }
}

/// multipart/form-data, as httpx sends it: parts split on the boundary, each with its headers.
package enum E2BMultipart {
    package struct Part: Sendable {
        package var name: String?
        package var filename: String?
        package var body: [UInt8]
    }

    package static func parse(_ body: [UInt8], contentType: String) throws -> [Part] {
        guard let range = contentType.range(of: "boundary=") else {
            throw E2BAPIError.badRequest("multipart/form-data without a boundary")
        }
        var boundary = String(contentType[range.upperBound...])
        if let semicolon = boundary.firstIndex(of: ";") { boundary = String(boundary[..<semicolon]) }
        boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        guard !boundary.isEmpty else { throw E2BAPIError.badRequest("multipart/form-data with an empty boundary") }
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [Part] = []
        var positions: [Int] = []
        var index = 0
        while let found = find(delimiter, in: body, from: index) {
            positions.append(found)
            index = found + delimiter.count
        }
        guard positions.count >= 2 else { throw E2BAPIError.badRequest("the multipart body has no parts") }
        for (start, end) in zip(positions, positions.dropFirst()) {
            var partStart = start + delimiter.count
            // The line break after the delimiter, and the one before the next.
            if body[partStart..<min(partStart + 2, end)].elementsEqual([13, 10]) { partStart += 2 }
            var partEnd = end
            if partEnd - 2 >= partStart, body[(partEnd - 2)..<partEnd].elementsEqual([13, 10]) { partEnd -= 2 }
            let part = Array(body[partStart..<partEnd])
            guard let split = find([13, 10, 13, 10], in: part, from: 0) else {
                throw E2BAPIError.badRequest("a multipart part has no header end")
            }
            let head = String(decoding: part[..<split], as: UTF8.self)
            var name: String?
            var filename: String?
            for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
                name = parameter("name", in: String(line))
                filename = parameter("filename", in: String(line))
            }
            parts.append(Part(name: name, filename: filename, body: Array(part[(split + 4)...])))
        }
        return parts
    }

    package static func parameter(_ key: String, in line: String) -> String? {
        for piece in line.split(separator: ";") {
            let trimmed = piece.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix(key + "=") else { continue }
            var value = String(trimmed.dropFirst(key.count + 1))
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                value = String(value.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"")
            }
            return value.removingPercentEncoding ?? value
        }
        return nil
    }

    package static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else {
            return nil
        }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0], haystack[index..<(index + needle.count)].elementsEqual(needle) {
                return index
            }
            index += 1
        }
        return nil
    }
}
