import CorralCore
import CorralPolicy
import DockerEngine
import Foundation

/// What is bound to a sandbox after it is claimed or made, beside its record: the gateway's
/// policy and the repository in /workspace. Resolved from the request and its template before
/// anything is claimed, so that a request that cannot be served fails before it costs a member.
struct LateBinding: Sendable {
    var workspace: SandboxWorkspace?
    var egressHosts: [String]

    /// The repository granted (read, or write to the sandbox's branch only) and the hosts.
    func policy(for sandbox: SandboxID) -> GatewayPolicy {
        GatewayPolicy(gitGrants: workspace.map { [$0.grant(for: sandbox)] } ?? [], egressHosts: egressHosts)
    }

    /// The policy as far as it is known before the sandbox's id is: a branch the request named
    /// is pushable, and no branch at all stands for the sandbox's own.
    var requestedPolicy: GatewayPolicy {
        let grants = workspace.map { workspace in
            [
                GitGrant(
                    repository: workspace.repository, access: workspace.write ? .write : .read,
                    pushableBranches: workspace.branch.map { [$0] })
            ]
        }
        return GatewayPolicy(gitGrants: grants ?? [], egressHosts: egressHosts)
    }
}

/// What `bindWorkspace` did, for the record.
struct BoundWorkspace: Sendable {
    var policy: GatewayPolicy?
    var workspace: SandboxWorkspace?
}

extension Provisioner {
    /// The template's repository unless the request names one; the template's egress hosts
    /// and the request's. Refused when something needs the gateway and this provisioner has
    /// none (a process other than the service), and when the gateway would refuse the tenant
    /// what it asks for (security review findings 1 and 2): a pushable branch other than the
    /// sandbox's own that the operator's `push_branches` does not give the tenant, or a
    /// repository host that resolves to an address the tenant may not reach. Both are
    /// decided here, before a member is claimed or a container made, and without connecting
    /// to the repository's host, so that a request cannot probe the host's ports.
    func lateBinding(_ request: ProvisionRequest, template: SandboxTemplate?) async throws -> LateBinding {
        var hosts = template?.egress ?? []
        for host in request.egressHosts where !hosts.contains(host) { hosts.append(host) }
        let binding = LateBinding(workspace: request.workspace ?? template?.workspace, egressHosts: hosts)
        guard binding.workspace != nil || !hosts.isEmpty else { return binding }
        guard let gateway = configuration.gateway, configuration.environment.sandboxesDirectory != nil else {
            let what =
                binding.workspace.map { "cloning \($0.repository)" }
                ?? "egress to \(hosts.joined(separator: ", "))"
            throw CorralError(
                .unavailable,
                "\(what) needs the gateway, which runs in the corral service, and none serves this command",
                hint: "start the service with `corral serve`, then provision through it")
        }
        try await gateway.admit(tenant: request.tenant, sandbox: nil, policy: binding.requestedPolicy)
        return binding
    }

    /// Attaches the sandbox's gateway with its policy, then clones its repository. The caller
    /// removes the sandbox (which detaches the gateway) when this throws.
    func bindWorkspace(_ id: SandboxID, container: String, request: ProvisionRequest, binding: LateBinding)
        async throws -> BoundWorkspace
    {
        guard let gateway = configuration.gateway,
            let directory = configuration.environment.gatewayDirectory(for: id)
        else {
            return BoundWorkspace()
        }
        let policy = binding.policy(for: id)
        // Again with the id known: the branch is now the sandbox's own, or one the table allows.
        try await gateway.admit(tenant: request.tenant, sandbox: id, policy: policy)
        try await gateway.attach(
            sandbox: id, tenant: request.tenant, session: request.session, directory: directory, policy: policy)
        guard var workspace = binding.workspace else { return BoundWorkspace(policy: policy) }
        workspace.branch = workspace.branch(for: id)
        try await clone(workspace, container: container, sandbox: id)
        return BoundWorkspace(policy: policy, workspace: workspace)
    }

    /// Clones into /workspace as the sandbox user, through the sandbox's own proxy, with the
    /// credential-free gateway remote; leaves the work tree on the workspace's branch. git's
    /// own `push.default = current` makes a plain `git push` push that branch.
    private func clone(_ workspace: SandboxWorkspace, container: String, sandbox: SandboxID) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let transport = transport(container: container, sandbox: sandbox, records: nil)
        let branch = workspace.branch(for: sandbox)
        let command = SandboxCommand(
            [
                "/bin/sh", "-c", Self.cloneScript, "corral-clone", workspace.repository.gatewayRemoteURL,
                workspace.ref ?? "", branch, configuration.environment.workspace,
                "http://\(SandboxEnvironment.proxyAddress)",
            ],
            environment: ["GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"], workingDirectory: "/",
            timeout: configuration.workspaceTimeout)
        var stderr = OutputCapture(limit: 16 << 10)
        let status = try await transport.run(command) { stream, bytes in
            if stream == .stderr { stderr.append(bytes) }
        }
        guard status.exitCode == 0 else {
            throw cloneFailure(
                workspace, sandbox: sandbox, status: status, stderr: stderr.text(streamName: "stderr"))
        }
        logger.info(
            "workspace cloned",
            metadata: [
                "sandbox": "\(sandbox)", "repository": "\(workspace.repository)", "ref": "\(workspace.ref ?? "-")",
                "branch": "\(branch)", "write": "\(workspace.write)",
                "ms": "\(Int((clock.now - started).milliseconds))",
            ])
    }

    /// `$1` remote, `$2` ref (may be empty), `$3` branch, `$4` directory, `$5` proxy. Exit 3:
    /// the directory is not empty; exit 4: no such ref. Arguments are passed positionally and
    /// always quoted, and ref and branch are checked beforehand, so nothing in them is run.
    static let cloneScript = #"""
        set -eu
        remote=$1 ref=$2 branch=$3 dir=$4 proxy=$5
        if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
            echo "corral: $dir is not empty (the template's setup wrote there?); a repository needs it empty" >&2
            exit 3
        fi
        checkout=
        [ -n "$ref" ] && checkout=--no-checkout
        git clone --quiet $checkout --config "http.proxy=$proxy" --config push.default=current -- "$remote" "$dir"
        cd "$dir"
        if [ -n "$ref" ]; then
            target=$(git rev-parse --verify --quiet "refs/remotes/origin/$ref^{commit}" \
                || git rev-parse --verify --quiet "refs/tags/$ref^{commit}" \
                || git rev-parse --verify --quiet "$ref^{commit}" || true)
            if [ -z "$target" ]; then
                echo "corral: the repository has no branch, tag or commit '$ref'" >&2
                exit 4
            fi
            git checkout --quiet --no-track -B "$branch" "$target"
        else
            git checkout --quiet --no-track -B "$branch"
        fi
        """#

    /// One line saying why the clone failed: the gateway's own reason when it gave one (a
    /// missing or refused credential, an unreachable host, a repository not there), else
    /// git's. Nothing here can hold a token: the sandbox never had one.
    func cloneFailure(_ workspace: SandboxWorkspace, sandbox: SandboxID, status: CommandStatus, stderr: String)
        -> CorralError
    {
        let prefix = "cannot clone \(workspace.repository) into sandbox \(sandbox)"
        if status.timedOut {
            return CorralError(
                .timeout, "\(prefix): it took longer than \(configuration.workspaceTimeout.compactDescription)",
                hint: "a large repository needs a longer workspace timeout")
        }
        let lines = stderr.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        if let line = lines.first(where: { $0.contains("corral gateway:") }),
            let start = line.range(of: "corral gateway:")
        {
            let reason = String(line[start.upperBound...]).trimmingCharacters(in: .whitespaces)
            let code: CorralError.Code
            if reason.contains("credential") || reason.contains("denied") || reason.contains("no grant") {
                code = .permissionDenied
            } else if reason.contains("has no repository") {
                code = .notFound
            } else {
                code = .unavailable
            }
            return CorralError(code, "\(prefix): the gateway says: \(reason)")
        }
        if let line = lines.first(where: { $0.hasPrefix("corral: ") }) {
            let reason = String(line.dropFirst("corral: ".count))
            return status.exitCode == 4
                ? CorralError(
                    .notFound, "\(prefix): \(reason)", hint: "name a branch, tag or commit the repository has")
                : CorralError(.invalidArgument, "\(prefix): \(reason)")
        }
        let reason =
            lines.first(where: { $0.hasPrefix("fatal:") || $0.hasPrefix("error:") })
            ?? lines.last ?? "git exited with status \(status.exitCode)"
        return CorralError(.unavailable, "\(prefix): \(reason.prefix(300))")
    }

    // MARK: After a restart

    /// Attaches the gateway of every running sandbox of this instance whose record holds a
    /// policy: a restarted service must, since the sockets closed with the old process.
    /// Sandboxes attached already are left as they are. Returns the ids attached; a sandbox
    /// that cannot be attached is logged and skipped, so one bad record does not cut off the
    /// rest.
    @discardableResult
    public func reattachGateways() async throws -> [SandboxID] {
        guard let gateway = configuration.gateway else { return [] }
        let store = try records()
        let running = try await engine.listContainers(
            all: false, labels: ["\(SandboxLabels.managed)=1", "\(SandboxLabels.instance)=\(try instanceID())"])
        let attached = Set(gateway.attachedSandboxes)
        var done: [SandboxID] = []
        for summary in running {
            guard case .sandbox(_, let id) = SandboxLabels.classify(containerName: summary.name) else { continue }
            await listenControl(id)
            guard !attached.contains(id), let directory = configuration.environment.gatewayDirectory(for: id)
            else { continue }
            do {
                guard let record = try store.read(id), let policy = record.gateway else { continue }
                try await gateway.attach(
                    sandbox: id, tenant: record.tenant, session: record.session, directory: directory, policy: policy)
                done.append(id)
            } catch {
                logger.info(
                    "cannot attach a sandbox's gateway again", metadata: ["sandbox": "\(id)", "error": "\(error)"])
            }
        }
        if !done.isEmpty { logger.info("gateways attached again", metadata: ["sandboxes": "\(done.count)"]) }
        return done
    }
}
