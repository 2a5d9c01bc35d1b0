import CorralCore
import Foundation
import TestSupport
import Testing

@testable import CorralFleet
@testable import CorralServer
@testable import CorralWorker

/// Issue 12: with `[workers] client_ca`, a worker's certificate binds it to a group and a name
/// (`corral-worker://GROUP/NAME`), so that a certificate taken from one worker admits no other.
/// Real TLS on loopback: a CA made with openssl, the control plane's certificate for 127.0.0.1.
@Suite("Worker client certificates bound to a group and a name", .engine, .serialized, .timeLimit(.minutes(2)))
struct WorkerCertificateTests {
    /// A CA, the control plane's certificate and key, and a client certificate per entry of
    /// `workers` (file stem to its URI subject alternative name; nil: none), in `directory`.
    static func makePKI(in directory: URL, workers: [String: String?]) throws {
        func openssl(_ arguments: [String]) throws {
            let output = try ChildProcess.run("/usr/bin/openssl", arguments, directory: directory.path)
            guard output.status == 0 else {
                throw CorralError(
                    .io, "openssl \(arguments.first ?? ""): \(String(decoding: output.stderr, as: UTF8.self))")
            }
        }
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(
            ["req", "-x509"] + key + [
                "-days", "1", "-subj", "/CN=corral test CA", "-keyout", "ca.key", "-out", "ca.pem",
            ])
        func issue(_ stem: String, subject: String, extensions: String?) throws {
            try openssl(["req"] + key + ["-subj", subject, "-keyout", "\(stem).key", "-out", "\(stem).csr"])
            var signing = [
                "x509", "-req", "-in", "\(stem).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days",
                "1", "-out", "\(stem).pem",
            ]
            if let extensions {
                try Data(extensions.utf8).write(to: directory.appendingPathComponent("\(stem).ext"))
                signing += ["-extfile", "\(stem).ext"]
            }
            try openssl(signing)
        }
        try issue("control", subject: "/CN=corral control plane", extensions: "subjectAltName=IP:127.0.0.1\n")
        for (stem, uri) in workers {
            try issue(stem, subject: "/CN=\(stem)", extensions: uri.map { "subjectAltName=URI:\($0)\n" })
        }
    }

    @Test("only what the certificate's corral-worker name covers is admitted")
    func bindingRules() {
        #expect(WorkerCertificate.refusal(names: ["corral-worker://vpc/w1"], group: "vpc", worker: "w1") == nil)
        #expect(WorkerCertificate.refusal(names: ["corral-worker://vpc/*"], group: "vpc", worker: "any") == nil)
        #expect(
            WorkerCertificate.refusal(
                names: ["corral-worker://x/w9", "corral-worker://vpc/w1"], group: "vpc", worker: "w1")
                == nil)
        for names in [
            ["corral-worker://vpc/w2"], ["corral-worker://other/w1"], ["corral-worker://vpc/w1/x"],
            ["corral-worker://vpc"], ["corral-worker://*/w1"], ["corral-worker://vpc/"],
        ] {
            let refusal = WorkerCertificate.refusal(names: names, group: "vpc", worker: "w1")
            #expect(refusal?.code == .permissionDenied, "\(names)")
            #expect(refusal?.message.contains("is for \(names[0])") == true, "\(names): \(String(describing: refusal))")
            #expect(refusal?.hint?.contains("URI:corral-worker://vpc/w1") == true)
        }
        #expect(
            WorkerCertificate.refusal(names: [], group: "vpc", worker: "w1")?.message.contains("names no corral worker")
                == true)
    }

    // Without the binding, every one of the refused workers below connects: each has a valid
    // token for its group and a certificate the CA signed.
    @Test("a worker's client certificate admits its own name and group only; one for the whole group admits any name")
    func certificateBindsNameAndGroup() async throws {
        let pki = FileManager.default.temporaryDirectory.appendingPathComponent("corral-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: pki, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: pki) }
        try Self.makePKI(
            in: pki,
            workers: [
                "w1": "corral-worker://vpc/w1", "group": "corral-worker://vpc/*", "other": "corral-worker://other/w4",
                "plain": nil,
            ])
        @Sendable func file(_ name: String) -> String { pki.appendingPathComponent(name).path }
        try await ServerFixture.with { control in
            try await ServerFixture.with { host in
                let token = try await WorkerTokenRegistry(stateDirectory: control.state).add(group: "vpc").token
                let settings = WorkerLinkTests.settings {
                    $0.certificate = file("control.pem")
                    $0.key = file("control.key")
                    $0.clientCA = file("ca.pem")
                }
                try await LiveServer.with(control, configure: { $0.workers = settings }) { live in
                    let fleet = try #require(live.server.fleet)
                    let url = try #require(live.workerURL)
                    #expect(url.hasPrefix("https://127.0.0.1:"))
                    @Sendable func tls(_ stem: String) -> (inout WorkerAgent.Settings) -> Void {
                        { settings in
                            settings.caFile = file("ca.pem")
                            settings.certificateFile = file("\(stem).pem")
                            settings.keyFile = file("\(stem).key")
                            settings.longestBackoff = .milliseconds(200)
                        }
                    }
                    func refusal(_ name: String, certificate stem: String) async -> String {
                        var settings = WorkerAgent.Settings(server: url, token: token, name: name)
                        settings.group = "vpc"
                        tls(stem)(&settings)
                        let agent = WorkerAgent(settings: settings, host: host.server.host, logger: .init(label: name))
                        let error = await #expect(throws: CorralError.self) { try await agent.run() }
                        return error?.message ?? "no error"
                    }

                    try await WorkerLinkTests.withWorker(host, url: url, token: token, configure: tls("w1")) { _ in
                        _ = try await WorkerLinkTests.waitConnected(fleet, "w1")
                    }
                    let stolen = await refusal("w2", certificate: "w1")
                    #expect(
                        stolen.contains("is for corral-worker://vpc/w1, not worker 'w2' of group 'vpc'"), "\(stolen)")
                    let otherGroup = await refusal("w4", certificate: "other")
                    #expect(otherGroup.contains("is for corral-worker://other/w4"), "\(otherGroup)")
                    let unnamed = await refusal("w5", certificate: "plain")
                    #expect(unnamed.contains("names no corral worker"), "\(unnamed)")
                    try await WorkerLinkTests.withWorker(
                        host, url: url, token: token, name: "w3", configure: tls("group")
                    ) {
                        _ in
                        _ = try await WorkerLinkTests.waitConnected(fleet, "w3")
                    }
                    #expect(!fleet.summaries().contains { ["w2", "w4", "w5"].contains($0.name) })
                }
            }
        }
    }
}
