import CorralAPI
import CorralCore
import CorralSandbox
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

extension Walker {
    /// The commands (start, attach, stdin, resize, signal, list) and the files routes that
    /// reach tmpfs (directory, rename, remove), each in its main cases.
    func commandsAndFiles(_ id: SandboxID) async throws {
        let sandbox = "/v1/sandboxes/\(id)"
        let streamed = try await call(
            "startCommand", .post, "\(sandbox)/commands", json: #"{"command": ["echo", "hi"]}"#, expect: .ok)
        #expect(streamed.text.contains(#""exitCode":0"#), "\(streamed.text)")
        try await call(
            "startCommand", .post, "\(sandbox)/commands",
            json: #"{"command": ["true"], "terminal": {"rows": 0, "columns": 80}}"#, expect: .badRequest)
        let sleeper = try await call(
            "startCommand", .post, "\(sandbox)/commands",
            json: #"{"command": ["sleep", "1000"], "terminal": {"rows": 24, "columns": 80}, "detached": true}"#,
            expect: .created
        ).decode(CommandHandle.self)
        let reader = try await call(
            "startCommand", .post, "\(sandbox)/commands",
            json: #"{"command": ["sh", "-c", "cat; sleep 1"], "stdin": true, "detached": true}"#, expect: .created
        ).decode(CommandHandle.self)
        try await call("listCommands", .get, "\(sandbox)/commands", expect: .ok)
        try await call("listCommands", .get, "/v1/sandboxes/sb-missing/commands", expect: .notFound)

        let written = try await call(
            "writeStdin", .post, "\(sandbox)/commands/\(reader.id)/stdin", body: Array("piped\n".utf8), expect: .ok)
        #expect(try written.decode(StdinWritten.self) == StdinWritten(bytes: 6, closed: true))
        let attached = try await call(
            "attachCommand", .get, "\(sandbox)/commands/\(reader.id)/output?offset=0", expect: .ok)
        #expect(attached.text.contains(Data("piped\n".utf8).base64EncodedString()), "\(attached.text)")
        try await call("writeStdin", .post, "\(sandbox)/commands/\(reader.id)/stdin", body: [1], expect: .conflict)
        try await call("attachCommand", .get, "\(sandbox)/commands/\(reader.id)/output", expect: .conflict)
        try await call("attachCommand", .get, "\(sandbox)/commands/cm-000000000000/output", expect: .notFound)
        try await call(
            "attachCommand", .get, "\(sandbox)/commands/\(sleeper.id)/output?offset=-1", expect: .badRequest)

        try await call(
            "resizeCommand", .post, "\(sandbox)/commands/\(sleeper.id)/resize", json: #"{"rows": 50, "columns": 132}"#,
            expect: .noContent)
        try await call(
            "resizeCommand", .post, "\(sandbox)/commands/\(sleeper.id)/resize",
            json: #"{"rows": 100000, "columns": 132}"#, expect: .badRequest)
        try await call(
            "signalCommand", .post, "\(sandbox)/commands/\(sleeper.id)/signal", json: #"{"signal": "NOPE"}"#,
            expect: .badRequest)
        try await call(
            "signalCommand", .post, "\(sandbox)/commands/\(sleeper.id)/signal", json: #"{"signal": "KILL"}"#,
            expect: .noContent)
        try await call(
            "signalCommand", .post, "\(sandbox)/commands/cm-000000000000/signal", json: #"{"signal": 9}"#,
            expect: .notFound)

        try await call("makeDirectory", .post, "\(sandbox)/directory?path=/tmp/walk/a&parents=true", expect: .created)
        try await call("makeDirectory", .post, "\(sandbox)/directory?path=/etc/walk", expect: .forbidden)
        try await call(
            "putFile", .put, "\(sandbox)/files?path=/tmp/walk/a/f", body: Array("x".utf8), expect: .noContent)
        try await call("putFile", .put, "\(sandbox)/files?path=/etc/walk", body: Array("x".utf8), expect: .forbidden)
        let listed = try await call("listDirectory", .get, "\(sandbox)/directory?path=/tmp/walk/a", expect: .ok)
        #expect(try listed.decode([JSONValue].self).first?["name"]?.stringValue == "f")
        try await call("listDirectory", .get, "\(sandbox)/directory?path=/tmp/none", expect: .notFound)
        try await call(
            "renamePath", .post, "\(sandbox)/rename", json: #"{"from": "/tmp/walk/a/f", "to": "/tmp/walk/g"}"#,
            expect: .noContent)
        try await call(
            "renamePath", .post, "\(sandbox)/rename", json: #"{"from": "/tmp/none", "to": "/tmp/walk/h"}"#,
            expect: .notFound)
        try await call("getFile", .get, "\(sandbox)/files?path=/tmp/walk/g", expect: .ok)
        try await call("removePath", .delete, "\(sandbox)/files?path=/tmp/walk&recursive=true", expect: .noContent)
        try await call("removePath", .delete, "\(sandbox)/files?path=/tmp/walk", expect: .notFound)
    }
}
