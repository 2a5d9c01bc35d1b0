import CorralCore
import Foundation
import Hummingbird
import NIOCore

/// Connect's framing over HTTP/1.1 with the JSON codec, as envd speaks it.
///
/// Unary calls are a plain JSON body each way. Streams (server, client) carry envelopes: one
/// byte of flags, four bytes of big-endian length, then the message; the response's last
/// envelope has flag 0x02 and holds `{}` or `{"error": {"code", "message"}}`.
package enum ConnectWire {
    package static let streamContentType = "application/connect+json"
    package static let unaryContentType = "application/json"
    package static let endStreamFlag: UInt8 = 0x02
    /// The largest message a request may carry: envd's requests are small (paths, pids, input).
    package static let maxMessageBytes = 4 << 20

    package static func envelope(_ message: JSONValue, flags: UInt8 = 0) -> [UInt8] {
        envelope(bytes: encode(message), flags: flags)
    }

    package static func envelope(bytes payload: [UInt8], flags: UInt8) -> [UInt8] {
        let length = UInt32(payload.count)
        var frame: [UInt8] = [flags, UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff)]
        frame.append(UInt8(length & 0xff))
        frame.append(contentsOf: payload)
        return frame
    }

    /// The last envelope of a stream: success, or the error the stream ended with.
    package static func endStream(_ error: ConnectError?) -> [UInt8] {
        guard let error else { return envelope(.object([:]), flags: endStreamFlag) }
        let body: JSONValue = .object([
            "error": .object(["code": .string(error.code), "message": .string(error.message)])
        ])
        return envelope(body, flags: endStreamFlag)
    }

    package static func encode(_ value: JSONValue) -> [UInt8] {
        Array((try? JSONEncoder().encode(value)) ?? Data("{}".utf8))
    }

    package static func decode(_ bytes: [UInt8]) throws -> JSONValue {
        if bytes.isEmpty { return .object([:]) }
        do {
            let value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
            guard case .object = value else { throw ConnectError.invalidArgument("the message is not a JSON object") }
            return value
        } catch let error as ConnectError {
            throw error
        } catch {
            throw ConnectError.invalidArgument("the message is not valid JSON")
        }
    }

    /// Splits a byte stream into envelopes as they complete.
    package struct EnvelopeReader {
        private var buffer: [UInt8] = []

        package mutating func append(_ bytes: some Sequence<UInt8>) { buffer.append(contentsOf: bytes) }

        /// The next whole envelope, or nil until more bytes arrive.
        package mutating func next() throws -> (flags: UInt8, payload: [UInt8])? {
            guard buffer.count >= 5 else { return nil }
            let length = Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
            guard length <= ConnectWire.maxMessageBytes else {
                throw ConnectError(code: "resource_exhausted", message: "a message of \(length) bytes is too large")
            }
            guard buffer.count >= 5 + length else { return nil }
            let flags = buffer[0]
            if flags & 0x01 != 0 {
                throw ConnectError.unimplemented("compressed messages are not accepted; send them uncompressed")
            }
            let payload = Array(buffer[5..<(5 + length)])
            buffer.removeFirst(5 + length)
            return (flags, payload)
        }

        /// Bytes left over that make no whole envelope.
        package var hasPartial: Bool { !buffer.isEmpty }
    }

    /// The one message of a server-streaming call's request body.
    package static func singleRequest(_ request: Request) async throws -> JSONValue {
        var reader = EnvelopeReader()
        var message: JSONValue?
        var total = 0
        for try await buffer in request.body {
            total += buffer.readableBytes
            guard total <= maxMessageBytes + 5 else {
                throw ConnectError(code: "resource_exhausted", message: "the request is too large")
            }
            reader.append(buffer.readableBytesView)
            while let (flags, payload) = try reader.next() {
                guard flags & endStreamFlag == 0, message == nil else {
                    throw ConnectError.invalidArgument("a server-streaming request carries exactly one message")
                }
                message = try decode(payload)
            }
        }
        guard let message, !reader.hasPartial else {
            throw ConnectError.invalidArgument("the request's envelope is missing or cut short")
        }
        return message
    }

    /// A unary call's request body: one JSON object.
    package static func unaryRequest(_ request: Request) async throws -> JSONValue {
        var bytes: [UInt8] = []
        for try await buffer in request.body {
            guard bytes.count + buffer.readableBytes <= maxMessageBytes else {
                throw ConnectError(code: "resource_exhausted", message: "the request is too large")
            }
            bytes.append(contentsOf: buffer.readableBytesView)
        }
        return try decode(bytes)
    }

    package static func unaryResponse(_ message: JSONValue) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = unaryContentType
        return Response(
            status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: encode(message))))
    }

    package static func unaryError(_ error: ConnectError) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = unaryContentType
        let body: JSONValue = .object(["code": .string(error.code), "message": .string(error.message)])
        return Response(
            status: HTTPResponse.Status(code: error.httpStatus), headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: encode(body))))
    }

    package static var streamHeaders: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = streamContentType
        return headers
    }
}

/// proto3's JSON mapping for the few field types envd uses.
extension JSONValue {
    /// `bytes`: standard base64.
    package static func protoBytes(_ bytes: [UInt8]) -> JSONValue { .string(Data(bytes).base64EncodedString()) }

    /// `int64` and `uint64`: a decimal string.
    package static func protoInt64(_ value: Int64) -> JSONValue { .string(String(value)) }

    /// `google.protobuf.Timestamp`: RFC 3339 in UTC.
    package static func protoTimestamp(_ date: Date) -> JSONValue {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return .string(formatter.string(from: date))
    }

    /// A `bytes` field: base64, standard or URL-safe, padded or not.
    package var protoBytesValue: [UInt8]? {
        guard var text = stringValue else { return nil }
        text = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while text.count % 4 != 0 { text += "=" }
        return Data(base64Encoded: text).map(Array.init)
    }

    /// An integer field, as a number or (proto3 allows both) a decimal string.
    package var protoIntValue: Int64? {
        if let value = intValue { return value }
        return stringValue.flatMap { Int64($0) }
    }

    /// A string field; absent is proto3's default, the empty string.
    package func protoString(_ key: String) throws -> String {
        guard let value = self[key] else { return "" }
        guard let text = value.stringValue else { throw ConnectError.invalidArgument("'\(key)' must be a string") }
        return text
    }
}
