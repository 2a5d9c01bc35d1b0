// swift-tools-version:6.0
import PackageDescription

// Dependencies point down: C shims, then CorralCore, then transports and engine,
// then sandboxes and sessions, then the harness, then the command line.
let package = Package(
    name: "corral",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "corral", targets: ["corral"]),
        .executable(name: "corral-init", targets: ["corral-init"]),
        .executable(name: "corral-bench", targets: ["corral-bench"]),
        .executable(name: "corrald", targets: ["corrald"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // Hummingbird brings these two; corrald's connection guard names NIO's HTTP part types,
        // and its exec stream hands output from the command's task to the writer's.
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.20.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
        // Only the tests read YAML: OpenAPITests checks docs/openapi.yaml against the router.
        .package(url: "https://github.com/jpsim/Yams", "5.0.1"..<"7.0.0"),
        // The PostgreSQL session store; only CorralSessionPostgres links it.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // postgres-nio's TLS; named for the store's sslmode settings.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.25.0"),
        // The worker link: one HTTP/2 connection per worker, dialled by the worker, with the
        // roles reversed once it is up (docs/workers.md).
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.30.0"),
    ],
    targets: [
        // libcurl's header, and the library opened on first use (dlopen): see include/ccurl.h.
        .target(name: "CCurl"),
        // posix_spawn's GNU extensions: host programs (ChildProcess) and the host agent.
        .target(name: "CCorralProcess"),
        // libarchive's headers, and the library opened on first use (dlopen): see include/carchive.h.
        .target(name: "CArchive"),
        // The session bench's peer; only CorralBench links it.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // CRC-32C on the CPU's CRC instructions, and renameat2(RENAME_NOREPLACE), which Glibc's
        // Swift module does not export.
        .target(name: "CCorralSession"),
        .target(
            name: "CorralCore",
            dependencies: ["CCorralProcess", .product(name: "Logging", package: "swift-log")],
            exclude: ["README.md"]
        ),
        .target(name: "CurlHTTP", dependencies: ["CCurl", "CorralCore"], exclude: ["README.md"]),
        // What a sandbox may reach (grants, repositories, egress hosts): plain values that
        // provisioning, the gateway and the API share, without the gateway's implementation.
        .target(name: "CorralPolicy", dependencies: ["CorralCore"]),
        .target(name: "TarArchive", dependencies: ["CArchive", "CorralCore", "CorralPOSIX"], exclude: ["README.md"]),
        .target(name: "DockerEngine", dependencies: ["CurlHTTP", "TarArchive"], exclude: ["README.md"]),
        .target(
            name: "CorralSandbox",
            dependencies: [
                "DockerEngine", "TarArchive", "CorralPolicy", "ControlProtocol",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["README.md"]
        ),
        // Configuration (corral.toml) and the long-running service: pools, the reaper and the
        // gateway now, the HTTP API later, as one list of services.
        .target(
            name: "CorralService",
            dependencies: [
                "CorralSandbox", "CorralGateway", "CorralSession", "CorralSessionPostgres",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralSession", dependencies: ["CCorralSession", "CorralCore", "CorralPOSIX"], exclude: ["README.md"]
        ),
        // Sessions in PostgreSQL, behind the same SessionStore protocol: its own module, so that
        // the file store and whatever uses only it do not link postgres-nio.
        .target(
            name: "CorralSessionPostgres",
            dependencies: [
                "CorralSession", "CorralCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralGateway",
            dependencies: [
                "CurlHTTP", "CorralCore", "CorralPolicy",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralHarness",
            dependencies: [
                "CorralSandbox", "CorralSession", "CurlHTTP", "CorralCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"]
        ),
        // The wire types of corral's HTTP API, shared by the service and the command line's
        // client mode.
        .target(
            name: "CorralAPI", dependencies: ["CorralSandbox", "CorralSession", "CurlHTTP"], exclude: ["README.md"]),
        // corrald: the HTTP API (Hummingbird) over the service's pools, reaper and gateway.
        // The control plane's end of the worker links: the worker port and its handshake, the
        // HTTP/2 link with the roles reversed, the fleet (heartbeats, placement, lost workers)
        // and worker tokens. CorralServer routes, forwards and places with it.
        // What both ends of a worker link share: the handshake's head, the listen address, the
        // link's frame size. Nothing of either end.
        .target(
            name: "CorralLink",
            dependencies: ["CorralCore", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralFleet",
            dependencies: [
                "CorralAPI", "CorralCore", "CorralLink", "CorralService",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"]
        ),
        // What an engine host serves over HTTP (sandboxes, commands, files, pools, E2B's API for
        // its sandboxes): on a worker's link, and inside corrald under the control plane's
        // additions. Nothing of tenants, sessions, placement or the harness.
        .target(
            name: "CorralHost",
            dependencies: [
                "CorralAPI", "CorralSandbox", "CorralSession", "CorralCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralServer",
            dependencies: [
                "CorralFleet", "CorralHost", "CorralLink",
                "CorralAPI", "CorralService", "CorralGateway", "CorralSession", "CorralHarness",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            exclude: ["README.md"]
        ),
        // The engine host's end of a worker link: it dials the control plane and serves
        // CorralHost's routes on the connection it opened (docs/workers.md).
        .target(
            name: "CorralWorker",
            dependencies: [
                "CorralHost", "CorralLink", "CorralAPI", "CorralSandbox",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["README.md"]
        ),
        .target(
            name: "CorralCLI",
            dependencies: [
                "CorralSandbox", "CorralSession", "CorralService", "CorralGateway", "CorralAPI", "CorralServer",
                "CorralFleet", "CorralWorker",
                "CorralHarness", "CCorralProcess",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CorralBench",
            dependencies: [
                "CorralSandbox", "CorralSession", "CorralSessionPostgres", "CorralService", "CorralHarness",
                "CorralGateway", "CSQLite",
                // The workspace suite's upstream: the git smart-HTTP server the tests use.
                "TestSupport",
                // The api suite runs corrald in process and drives it as a client would.
                "CorralAPI", "CorralServer", "CorralFleet", "CorralWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The Swift runtime and Foundation linked in: a process start without hundreds of
        // lazily bound symbols (about 27 ms to 5 ms here). libcurl and libarchive stay shared.
        .executableTarget(
            name: "corral", dependencies: ["CorralCLI"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib", "-Xlinker", "--start-group", "-lFoundation", "-lFoundationEssentials",
                    "-lFoundationInternationalization", "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCShims",
                    "-l_FoundationCollections", "-Xlinker", "--end-group", "-lstdc++", "-Xclang-linker", "-no-pie",
                    "-Xlinker", "--no-export-dynamic",
                ])
            ]),
        .executableTarget(name: "corral-bench", dependencies: ["CorralBench"]),
        .executableTarget(name: "corrald", dependencies: ["CorralCLI"]),
        // PID 1 inside every sandbox: Glibc only, linked fully static so that it runs in any
        // image, a busybox-only rootfs included. lld, because gold warns about glibc's
        // dlopen in every static link.
        .executableTarget(
            name: "corral-init",
            dependencies: ["ControlProtocol", "CCorralInit", "CorralPOSIX"],
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"])]
        ),
        // What corral-init needs from Linux that Swift cannot call: the variadic prctl and
        // ioctl, a vfork spawn that gives a command its controlling terminal, signalfd.
        .target(name: "CCorralInit"),
        // readdir's entry names read in place (no over-read): corral-init and the host share it.
        .target(name: "CorralPOSIX"),
        // The control connection's wire format, shared by corral-init and the host: no
        // Foundation, so that corral-init stays static and small.
        .target(name: "ControlProtocol"),
        .target(name: "TestSupport", dependencies: ["CorralCore"], path: "Tests/TestSupport"),
        .testTarget(
            name: "CorralServiceTests",
            dependencies: [
                "CorralService", "CorralGateway", "CorralSession", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "CorralCoreTests", dependencies: ["CorralCore", "CorralPOSIX"]),
        .testTarget(name: "CurlHTTPTests", dependencies: ["CurlHTTP", "TestSupport"]),
        .testTarget(name: "TarArchiveTests", dependencies: ["TarArchive", "TestSupport"]),
        .testTarget(name: "DockerEngineTests", dependencies: ["DockerEngine", "TestSupport"]),
        .testTarget(name: "CorralSandboxTests", dependencies: ["CorralSandbox", "ControlProtocol", "TestSupport"]),
        .testTarget(
            name: "CorralSessionTests",
            dependencies: [
                "CorralSession", "CorralSessionPostgres", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CorralGatewayTests",
            dependencies: [
                "CorralGateway", "CorralPolicy", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "CorralCLITests", dependencies: ["CorralCLI", "TestSupport"]),
        .testTarget(
            name: "CorralServerTests",
            dependencies: [
                "CorralServer", "CorralHost", "CorralLink", "CorralFleet", "CorralWorker", "CorralAPI", "CorralHarness",
                "CorralService",
                "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(name: "CorralHarnessTests", dependencies: ["CorralHarness", "TestSupport"]),
    ]
)
