import ArgumentParser
import CorralCore
import CorralSandbox
import CorralService

/// The flags that describe a sandbox, shared by `sandbox create` and `run`.
struct SandboxCreateOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp("Template from corral.toml: claims a warm pool member when one is idle.", valueName: "NAME"))
    var template: String?

    @Option(
        help: ArgumentHelp(
            "corral.toml with the templates (default: CORRAL_CONFIG, else $STATE/corral.toml when present).",
            valueName: "FILE"))
    var config: String?

    @Option(help: ArgumentHelp("Image to start (default \(ProvisionRequest.defaultImage)).", valueName: "REF"))
    var image: String?

    @Option(help: ArgumentHelp("Container runtime: runc, or runsc (gVisor).", valueName: "NAME"))
    var runtime: String?

    @Option(help: ArgumentHelp("Memory limit, such as 512m or 2g (default 1g).", valueName: "SIZE"))
    var memory: String?

    @Option(help: ArgumentHelp("CPU cores, such as 0.5 or 2 (default 1).", valueName: "N"))
    var cpus: String?

    @Option(help: ArgumentHelp("Most processes at once (default 256).", valueName: "N"))
    var pids: String?

    @Option(
        help: ArgumentHelp(
            "Size of /workspace, a file system of its own: a full one gives ENOSPC inside (default 10g; 0: no limit).",
            valueName: "SIZE"))
    var disk: String?

    @Option(
        help: ArgumentHelp("Remove the sandbox this long after creation, such as 30m or 2h.", valueName: "DURATION"))
    var ttl: String?

    @Option(
        name: .customLong("idle-ttl"),
        help: ArgumentHelp("Remove the sandbox once no command ran for this long, such as 15m.", valueName: "DURATION"))
    var idleTTL: String?

    @Option(
        name: .customLong("label"), help: ArgumentHelp("A label to record, KEY=VALUE (repeatable).", valueName: "K=V"))
    var labels: [String] = []

    @Option(
        name: .customLong("env"),
        help: ArgumentHelp("Environment for every command, KEY=VALUE (repeatable; no secrets).", valueName: "K=V"))
    var environment: [String] = []

    @Option(
        help: ArgumentHelp(
            "Repository to clone into /workspace through the gateway: HOST/OWNER/REPO or its https URL. The sandbox's remote carries no credential.",
            valueName: "URL"))
    var repo: String?

    @Option(
        help: ArgumentHelp(
            "Branch, tag or commit to check out (default: the repository's default branch).", valueName: "REF"))
    var ref: String?

    @Option(help: ArgumentHelp("Branch to work on (default corral/<sandbox id>).", valueName: "NAME"))
    var branch: String?

    @Flag(help: "Let the sandbox push its branch (fast-forward only; no other branch).")
    var write = false

    @Option(
        name: .customLong("allow-host"),
        help: ArgumentHelp(
            "A host the sandbox may reach through its gateway: HOST, HOST:PORT or *.DOMAIN (repeatable).",
            valueName: "HOST"))
    var allowHosts: [String] = []

    init() {}

    /// Every option set from the quick path's reading (`QuickPath.sandboxCreate`), by long name.
    init(values: [String: String], lists: [String: [String]], flags: Set<String>) {
        template = values["--template"]
        config = values["--config"]
        image = values["--image"]
        runtime = values["--runtime"]
        memory = values["--memory"]
        cpus = values["--cpus"]
        pids = values["--pids"]
        disk = values["--disk"]
        ttl = values["--ttl"]
        idleTTL = values["--idle-ttl"]
        labels = lists["--label"] ?? []
        environment = lists["--env"] ?? []
        repo = values["--repo"]
        ref = values["--ref"]
        branch = values["--branch"]
        write = flags.contains("--write")
        allowHosts = lists["--allow-host"] ?? []
    }

    /// Every option's value, in order (two parses compare by them).
    var values: [String?] {
        [template, config, image, runtime, memory, cpus, pids, disk, ttl, idleTTL, repo, ref, branch, "\(write)"]
            + [labels, environment, allowHosts].map { "\($0)" }
    }

    /// The request these flags describe; every value is checked here, before the engine is asked.
    func request() throws -> ProvisionRequest {
        var request = ProvisionRequest(image: image ?? ProvisionRequest.defaultImage)
        if let template {
            let shaping = [
                ("--image", image), ("--runtime", runtime), ("--memory", memory), ("--cpus", cpus), ("--pids", pids),
                ("--disk", disk),
            ]
            if let (flag, _) = shaping.first(where: { $0.1 != nil }) {
                throw CorralError.invalidArgument(
                    "\(flag) cannot be combined with --template: the template fixes the image, runtime and limits",
                    hint: "drop \(flag), or change the template in corral.toml")
            }
            request.template = try TemplateName(validating: template)
        }
        if let runtime { request.runtime = try SandboxRuntime(parsing: runtime) }
        if let memory { request.resources.memory = try ByteSize(parsing: memory) }
        if let cpus {
            guard let value = Double(cpus), value.isFinite, value > 0 else {
                throw CorralError.invalidArgument(
                    "invalid --cpus '\(cpus)': expected a positive number", hint: "use a value such as 0.5 or 2")
            }
            request.resources.cpus = value
        }
        if let pids {
            guard let value = Int(pids), value > 0 else {
                throw CorralError.invalidArgument(
                    "invalid --pids '\(pids)': expected a positive whole number", hint: "use a value such as 256")
            }
            request.resources.pids = value
        }
        if let disk { request.resources.disk = try ByteSize(parsing: disk) }
        if let ttl {
            let duration = try Duration(parsing: ttl)
            guard duration > .zero else {
                throw CorralError.invalidArgument("invalid --ttl '\(ttl)': it must be longer than 0")
            }
            request.ttl = duration
        }
        if let idleTTL {
            let duration = try Duration(parsing: idleTTL)
            guard duration > .zero else {
                throw CorralError.invalidArgument("invalid --idle-ttl '\(idleTTL)': it must be longer than 0")
            }
            request.idleTTL = duration
        }
        request.labels = try parsePairs(labels, what: "label")
        request.env = try parsePairs(environment, what: "environment variable")
        if let repo {
            request.workspace = try SandboxWorkspace(repository: repo, ref: ref, branch: branch, write: write)
        } else if let (flag, _) = [("--ref", ref), ("--branch", branch), ("--write", write ? "" : nil)].first(where: {
            $0.1 != nil
        }) {
            throw CorralError.invalidArgument(
                "\(flag) needs --repo", hint: "name the repository with --repo HOST/OWNER/REPO")
        }
        request.egressHosts = allowHosts
        return request
    }
}
