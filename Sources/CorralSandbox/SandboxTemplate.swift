import CorralCore
import CorralPolicy
import Foundation

/// A template's name: an id (a-z, 0-9, '-', '_'), so that it can sit inside container names.
public struct TemplateName: CorralIdentifier {
    public static let kind = "template name"
    public static let prefix = "tp"
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
}

/// How a sandbox is made: image, runtime, resources, environment and setup, and the warm
/// pool kept of it. Comes from `[[templates]]` in corral.toml.
public struct SandboxTemplate: Sendable, Hashable {
    public var name: TemplateName
    public var image: String
    public var runtime: SandboxRuntime = .runc
    public var resources = SandboxResources()
    /// Environment fixed when a sandbox is made (no secrets). Per-session env comes on top.
    public var env: [String: String] = [:]
    /// Shell commands (`/bin/sh -c`) run once, in order, when a sandbox is made: before a pool
    /// member becomes idle, or before a cold sandbox is handed out.
    public var setup: [String] = []
    /// Limit for each setup command.
    public var setupTimeout: Duration = .seconds(300)
    /// Default ttl of a sandbox claimed or made from this template; a request may set its own.
    public var ttl: Duration?
    /// Default idle ttl: removed when no command ran for this long.
    public var idleTTL: Duration?
    /// Hosts every sandbox of the template may reach through its gateway (`egress = [...]`);
    /// a request's own hosts are added. Bound per sandbox, so not part of the fingerprint.
    public var egress: [String] = []
    /// A repository cloned into every sandbox of the template unless the request names one.
    /// Late-bound like egress: pool members stay generic.
    public var workspace: SandboxWorkspace?
    public var pool = PoolSettings()

    /// How many started sandboxes of the template to keep waiting, and for how long.
    public struct PoolSettings: Sendable, Hashable {
        /// Idle members to keep; 0 keeps no pool (every provision is cold).
        public var minIdle = 0
        /// Most members the pool holds at once, idle, being made and claimed together.
        public var maxTotal = 20
        /// Idle members older than this are replaced; nil keeps them.
        public var maxAge: Duration?
        /// Members made at once during a refill.
        public var refillConcurrency = 2

        public init() {}
    }

    public init(name: TemplateName, image: String = ProvisionRequest.defaultImage) {
        self.name = name
        self.image = image
    }

    /// Checks the settings that need no engine; errors name the template.
    public func validated() throws -> SandboxTemplate {
        var copy = self
        do {
            copy.resources = try resources.validated()
        } catch let error as CorralError {
            throw CorralError(error.code, "template '\(name)': \(error.message)", hint: error.hint)
        }
        guard !image.isEmpty, !image.contains(where: { $0.isWhitespace }) else {
            throw CorralError.invalidArgument("template '\(name)': invalid image reference '\(image)'")
        }
        for key in env.keys {
            guard !key.isEmpty, !key.contains("="), !key.contains("\0") else {
                throw CorralError.invalidArgument("template '\(name)': invalid environment variable name '\(key)'")
            }
        }
        guard pool.minIdle >= 0, pool.maxTotal >= 0 else {
            throw CorralError.invalidArgument("template '\(name)': pool sizes cannot be negative")
        }
        guard pool.maxTotal >= pool.minIdle else {
            throw CorralError.invalidArgument(
                "template '\(name)': pool max_total (\(pool.maxTotal)) is below min_idle (\(pool.minIdle))",
                hint: "raise max_total to at least min_idle")
        }
        guard pool.refillConcurrency >= 1 else {
            throw CorralError.invalidArgument("template '\(name)': pool refill_concurrency must be at least 1")
        }
        for (what, value) in [
            ("ttl", ttl), ("idle_ttl", idleTTL), ("max_age", pool.maxAge), ("setup_timeout", setupTimeout),
        ] {
            if let value, value <= .zero {
                throw CorralError.invalidArgument("template '\(name)': \(what) must be longer than 0")
            }
        }
        for command in setup where command.trimmingCharacters(in: .whitespaces).isEmpty {
            throw CorralError.invalidArgument("template '\(name)': a setup command is empty")
        }
        do {
            copy.egress = try egress.map(GatewayPolicy.checkEgressHost)
            copy.workspace = try workspace?.validated()
        } catch let error as CorralError {
            throw CorralError(error.code, "template '\(name)': \(error.message)", hint: error.hint)
        }
        return copy
    }

    /// What makes two members interchangeable: every setting that shapes the container, and the
    /// id the image reference resolved to. Pool sizes and ttls are not part of it.
    public func fingerprint(imageID: String) -> String {
        var text = "spec=\(Self.specVersion)\nimage=\(image)\nimage-id=\(imageID)\nruntime=\(runtime)\n"
        text += "memory=\(resources.memory.bytes)\ncpus=\(resources.cpus)\npids=\(resources.pids)\n"
        text += "tmp=\(resources.tmpSize.bytes)\nfsize=\(resources.maxFileSize.bytes)\nnofile=\(resources.openFiles)\n"
        text += "disk=\(resources.disk.bytes)\n"
        for (key, value) in env.sorted(by: { $0.key < $1.key }) {
            text += "env=\(key.count):\(key)=\(value.count):\(value)\n"
        }
        for command in setup { text += "setup=\(command.count):\(command)\n" }
        return Self.fnv1a64(text)
    }

    /// Bumped when the hardened container spec changes, so that old members are recycled.
    /// 2: a uid of the sandbox's own, its passwd and group, a workspace with a size.
    static let specVersion = 2

    static func fnv1a64(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The shape a container of this template has.
    var shape: ContainerShape {
        ContainerShape(image: image, runtime: runtime, resources: resources, env: env)
    }
}
