import CorralCore
import CorralSandbox
import Foundation
import Testing

@testable import CorralAPI
@testable import CorralHost
@testable import CorralServer

@Suite("The exec stream read and written by hand, against the Codable forms")
struct ExecStreamWireTests {
    @Test("a request written by hand decodes as JSONDecoder decodes JSONEncoder's")
    func requests() throws {
        let commands: [SandboxCommand] = [
            SandboxCommand(["true"]),
            SandboxCommand(
                ["sh", "-c", "echo \"a\\b\" /x\n\t\u{1}é 💡"], environment: ["B": "2", "A": "x=\"y\"", "Z\u{7}": ""],
                workingDirectory: "/workspace/sub dir", timeout: .seconds(90)),
            SandboxCommand(["ls"], workingDirectory: "/", timeout: .milliseconds(1500)),
        ]
        for command in commands {
            let request = ExecRequest(command)
            let byHand = try JSONDecoder().decode(ExecRequest.self, from: Data(ExecStreamWire.encode(request)))
            let codable = try JSONDecoder().decode(ExecRequest.self, from: JSONEncoder().encode(request))
            #expect(byHand == codable)
            #expect(byHand == request)
        }
    }

    @Test("the lines the service writes read the same by hand as with JSONDecoder")
    func lines() throws {
        let events: [ExecStreamEvent] = [
            .output(.stdout, Array("hello\n".utf8)),
            .output(.stderr, (0...255).map { UInt8($0) }),  // base64 with '/' and '+'
            .output(.stdout, []),
            .finished(CommandStatus(exitCode: 3, timedOut: false, oomKilled: false, durationMilliseconds: 4.25)),
            .finished(CommandStatus(exitCode: 137, timedOut: true, oomKilled: true, durationMilliseconds: 1e-7)),
            .finished(CommandStatus(exitCode: -1, timedOut: false, oomKilled: false, durationMilliseconds: 12_345_678)),
        ]
        for event in events {
            let line = HostAPI.line(event).dropLast()  // without its newline
            #expect(ExecStreamWire.quickEvent(Array(line)) != nil, "\(String(decoding: line, as: UTF8.self))")
            #expect(try ExecStreamWire.decode(Array(line)) == event)
        }
    }

    @Test("an error line, a key it does not know and a \\u escape go to JSONDecoder; broken lines are errors")
    func fallBack() throws {
        let failed = ExecStreamEvent.failed(CorralError(.unavailable, "the sandbox is gone"))
        let line = Array(HostAPI.line(failed).dropLast())
        #expect(ExecStreamWire.quickEvent(line) == nil)
        #expect(try ExecStreamWire.decode(line) == failed)
        let unknown = Array(#"{"stream":"stdout","data":"aGk=","later":[1,{"x":null}]}"#.utf8)
        #expect(ExecStreamWire.quickEvent(unknown) == nil)
        #expect(try ExecStreamWire.decode(unknown).bytes == Array("hi".utf8))
        let escaped = Array(#"{"stream":"std\u006fut","data":"aGk="}"#.utf8)
        #expect(ExecStreamWire.quickEvent(escaped) == nil)
        #expect(try ExecStreamWire.decode(escaped).stdioStream == .stdout)
        let partial = Array(#"{"status":{"exitCode":0,"timedOut":false}}"#.utf8)
        #expect(ExecStreamWire.quickEvent(partial) == nil)
        for broken in [#"{"stream":"stdout""#, #"{"status":{"exitCode":1.5,"#, "", "[]", #"{"data":"a"} x"#] {
            #expect(ExecStreamWire.quickEvent(Array(broken.utf8)) == nil)
            #expect(throws: (any Error).self) { try ExecStreamWire.decode(Array(broken.utf8)) }
        }
    }
}
