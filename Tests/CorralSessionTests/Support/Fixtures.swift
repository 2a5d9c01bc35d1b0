import CorralCore
import Foundation
import TestSupport

@testable import CorralSession

/// A store over a fresh directory, with small segments so that a few hundred events span
/// several of them.
func makeStore(_ directory: URL, segmentBytes: UInt64 = 64 << 20, maxEventBytes: Int? = nil) -> FileSessionStore {
    var configuration = FileSessionStore.Configuration()
    configuration.segmentBytes = segmentBytes
    if let maxEventBytes { configuration.maxEventBytes = maxEventBytes }
    return FileSessionStore(directory: directory.appendingPathComponent("sessions"), configuration: configuration)
}

func event(_ type: String = "user.message", id: String? = nil, _ data: JSONValue = ["text": "hello"]) -> NewEvent {
    NewEvent(id: id.map { EventID(unchecked: $0) }, type: type, data: data)
}

extension SessionStore {
    func all(_ session: SessionID) async throws -> [Event] {
        var events: [Event] = []
        for try await event in read(session) { events.append(event) }
        return events
    }
}

/// Files of a session directory, by name.
func sessionFiles(_ store: FileSessionStore, _ id: SessionID) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: store.directory.appendingPathComponent(id.rawValue).path)
        .sorted()
}

func sessionPath(_ store: FileSessionStore, _ id: SessionID, _ name: String) -> String {
    store.directory.appendingPathComponent(id.rawValue).appendingPathComponent(name).path
}

func fileBytes(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func appendBytes(_ bytes: [UInt8], to path: String) throws {
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(bytes))
    try handle.close()
}

/// Random JSON of bounded size: nested values, strings with escapes and non-ASCII text,
/// integers, finite doubles.
func randomJSON<G: RandomNumberGenerator>(depth: Int = 0, using generator: inout G) -> JSONValue {
    let choice = Int.random(in: 0..<(depth > 2 ? 5 : 7), using: &generator)
    switch choice {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &generator))
    case 2: return .int(Int64.random(in: Int64.min...Int64.max, using: &generator))
    case 3:
        let value = Double.random(in: -1e12...1e12, using: &generator) * (Bool.random(using: &generator) ? 1 : 1e-9)
        return .double(value)
    case 4: return .string(randomText(using: &generator))
    case 5:
        return .array(
            (0..<Int.random(in: 0...4, using: &generator)).map { _ in randomJSON(depth: depth + 1, using: &generator) })
    default:
        var members: [String: JSONValue] = [:]
        for _ in 0..<Int.random(in: 0...4, using: &generator) {
            members[randomText(using: &generator)] = randomJSON(depth: depth + 1, using: &generator)
        }
        return .object(members)
    }
}

func randomText<G: RandomNumberGenerator>(using generator: inout G) -> String {
    let pieces = [
        "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{1F}", "é", "漢", "🦀", "\u{2028}", "{", "]", ",",
    ]
    return (0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator) ?? "" }
        .joined()
}
