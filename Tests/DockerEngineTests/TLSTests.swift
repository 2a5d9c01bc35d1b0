import CorralCore
import CurlHTTP
import DockerEngine
import Foundation
import TestSupport
import Testing

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
struct TestCertificates {
    let directory: URL
    var ca: String { directory.appendingPathComponent("ca.pem").path }
    var serverCert: String { directory.appendingPathComponent("server-cert.pem").path }
    var serverKey: String { directory.appendingPathComponent("server-key.pem").path }
    var clientCert: String { directory.appendingPathComponent("cert.pem").path }
    var clientKey: String { directory.appendingPathComponent("key.pem").path }

    init(in directory: URL) throws {
        self.directory = directory
        let script = """
            set -e
            cd '\(directory.path)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=corral-test-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 -extfile server.ext 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=corral-client 2>/dev/null
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 2 -extfile client.ext 2>/dev/null
            """
        let made = try ChildProcess.run("/bin/sh", ["-c", script])
        guard made.termination.succeeded else {
            throw CorralError(.internalError, "openssl could not make test certificates: \(made.reason)")
        }
    }
}

@Suite("TLS with client certificates")
struct TLSTests {
    /// `openssl s_server -WWW` serves files from its directory over TLS and, with -Verify,
    /// demands a client certificate signed by the CA: a real TLS peer on loopback.
    @Test("a TLS server that demands a client certificate is reached with one, and refuses us without")
    func clientCertificates() async throws {
        try await withTemporaryDirectory { directory in
            let certificates = try TestCertificates(in: directory)
            try Data("pong".utf8).write(to: directory.appendingPathComponent("ping.txt"))
            let port = try freeLoopbackPort()
            let server = try ChildProcess.spawn(
                "/usr/bin/openssl",
                [
                    "s_server", "-accept", "127.0.0.1:\(port)", "-WWW", "-Verify", "2", "-verify_return_error",
                    "-CAfile", certificates.ca, "-cert", certificates.serverCert, "-key", certificates.serverKey,
                    "-quiet",
                ], directory: directory.path)
            defer {
                server.signal(SIGTERM)
                server.wait()
            }
            try await waitForListener(port: port)

            let good = try CurlHTTPClient(
                endpoint: HTTPEndpoint(
                    parsing: "tcp://127.0.0.1:\(port)",
                    tls: TLSConfiguration(
                        caFile: certificates.ca, certificateFile: certificates.clientCert,
                        keyFile: certificates.clientKey)))
            defer { good.shutdown() }
            let response = try await good.execute(HTTPRequest(.get, "/ping.txt", forbidReuse: true))
            #expect(response.status == 200)
            #expect(response.bodyText == "pong")

            let anonymous = try CurlHTTPClient(
                endpoint: HTTPEndpoint(
                    parsing: "tcp://127.0.0.1:\(port)", tls: TLSConfiguration(caFile: certificates.ca)))
            defer { anonymous.shutdown() }
            await #expect(throws: CorralError.self) { _ = try await anonymous.execute(HTTPRequest(.get, "/ping.txt")) }

            let untrusting = try CurlHTTPClient(
                endpoint: HTTPEndpoint(
                    parsing: "tcp://127.0.0.1:\(port)",
                    tls: TLSConfiguration(
                        caFile: "/etc/ssl/certs/ca-certificates.crt", certificateFile: certificates.clientCert,
                        keyFile: certificates.clientKey)))
            defer { untrusting.shutdown() }
            do {
                _ = try await untrusting.execute(HTTPRequest(.get, "/ping.txt"))
                Issue.record("a server signed by an unknown CA was trusted")
            } catch let error as CorralError {
                #expect(error.code == .unavailable)
                #expect(error.hint?.contains("--tls-ca") == true)
            }
        }
    }

    /// When scripts/engine.sh started the engine, it also listens with --tlsverify on loopback
    /// and exports where the client files are (see `scripts/engine.sh env`).
    @Test(
        "a real engine run with --tlsverify answers over TLS",
        .enabled(
            if: ProcessInfo.processInfo.environment["CORRAL_TEST_TLS_ENGINE"] != nil,
            "no TLS engine: scripts/engine.sh starts one with the engine it starts; CORRAL_TEST_TLS_ENGINE and CORRAL_TEST_TLS_{CA,CERT,KEY} name it"
        )
    )
    func realEngineOverTLS() async throws {
        let environment = ProcessInfo.processInfo.environment
        let endpoint = try #require(environment["CORRAL_TEST_TLS_ENGINE"])
        let client = try DockerEngineClient(
            parsing: endpoint,
            tls: TLSConfiguration(
                caFile: environment["CORRAL_TEST_TLS_CA"], certificateFile: environment["CORRAL_TEST_TLS_CERT"],
                keyFile: environment["CORRAL_TEST_TLS_KEY"]))
        defer { client.shutdown() }
        #expect(try await client.ping())
        let version = try await client.apiVersion()
        #expect(version >= APIVersion.oldestSupported)
        let info = try await client.info()
        #expect(info.runtimes["runc"] != nil)
    }
}

func freeLoopbackPort() throws -> Int {
    let server = try StubHTTPServer(loopbackHandler: { _, _ in false })
    defer { server.stop() }
    return server.port ?? 0
}

/// Waits until something accepts TCP connections on 127.0.0.1:port.
func waitForListener(port: Int) async throws {
    for _ in 0..<200 {
        if TestEnvironment.tcpPortAccepts(port: port) { return }
        try await Task.sleep(for: .milliseconds(25))
    }
    throw CorralError(.timeout, "nothing listens on 127.0.0.1:\(port)")
}
