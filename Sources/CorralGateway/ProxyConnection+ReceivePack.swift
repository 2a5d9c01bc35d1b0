import CorralCore
import CorralPolicy
import CurlHTTP
import Foundation
import NIOCore

/// Pushes: the body is spooled to disk, its commands checked against the grant (pushable
/// branches, no deletion, no force-push), and only then sent upstream whole. A refused push
/// gets a proper report-status answer, so git prints `! [remote rejected] … (reason)`.
extension ProxyConnection {
    func handleReceivePack(
        _ head: ProxyRequestHead, _ request: GitRequest, grant: GitGrant, credential: ResolvedCredential?,
        upstream: DialTarget
    ) async throws -> Bool {
        let repository = request.repository
        let target = "\(repository)"
        if let encoding = head.headers["Content-Encoding"], encoding.lowercased() != "identity" {
            await record(.gitPush, .denied, target: target, reason: "a compressed push body cannot be checked")
            await refuse(
                head, 415,
                "corral gateway: pushes with Content-Encoding \(encoding) cannot be checked; push uncompressed")
            return false
        }
        if head.expectsContinue { try await write("HTTP/1.1 100 Continue\r\n\r\n") }

        let spoolDirectory = try core.mirrors.makeSpoolDirectory()
        defer { try? FileManager.default.removeItem(at: spoolDirectory) }
        let pushURL = spoolDirectory.appendingPathComponent("push")
        let spool = try SpoolFile(url: pushURL)
        var size: Int64 = 0
        try await reader.readBody(head.framing, limit: core.configuration.maxPushBytes) { slice in
            size += Int64(slice.readableBytes)
            try await spool.append(slice)
        }

        // The command section is small; 1 MiB holds thousands of commands.
        let prefix = try await spool.read(at: 0, count: Int(min(size, 1 << 20)))
        let parsed: ReceivePackRequest
        do {
            parsed = try ReceivePackRequest.parse(prefix, complete: Int64(prefix.count) == size)
        } catch {
            let reason: String
            switch error {
            case .needMore: reason = "the push's command section is longer than 1 MiB"
            case .malformed(let why): reason = "malformed receive-pack request: \(why)"
            case .unsupported(let why): reason = why
            }
            await record(.gitPush, .denied, target: target, reason: reason)
            await respond(400, "corral gateway: \(reason)", close: true)
            return false
        }

        // The operator's push_branches is applied here too, not only at provisioning: a policy
        // recorded before the table changed, or set by `updatePolicy`, cannot widen it.
        let rules = core.configuration.pushBranches
        let pushable = grant.branches(for: binding.sandbox).filter {
            rules.allows(tenant: binding.tenant, branch: $0, sandbox: binding.sandbox)
        }
        var refusals: [String: String] = [:]
        var updates: [ReceivePackRequest.Command] = []
        for command in parsed.commands {
            let branch = command.ref.hasPrefix("refs/heads/") ? String(command.ref.dropFirst("refs/heads/".count)) : nil
            guard let branch, pushable.contains(branch) else {
                if let branch, grant.branches(for: binding.sandbox).contains(branch) {
                    refusals[command.ref] =
                        "\(command.ref) is not pushable: \(rules.refusal(tenant: binding.tenant, branch: branch, sandbox: binding.sandbox))"
                } else {
                    refusals[command.ref] =
                        "\(command.ref) is not pushable from this sandbox (pushable: \(pushable.joined(separator: ", ")))"
                }
                continue
            }
            if command.isDelete {
                refusals[command.ref] = "deleting \(command.ref) is refused"
            } else if !command.isCreate {
                updates.append(command)
            }
        }
        if refusals.isEmpty && !updates.isEmpty {
            do {
                let verdicts = try await core.mirrors.checkFastForwards(
                    updates, repository: repository, tenant: binding.tenant, credential: credential, upstream: upstream,
                    spoolDirectory: spoolDirectory, pushFile: pushURL, packOffset: Int64(parsed.packOffset),
                    packPresent: Int64(parsed.packOffset) < size)
                refusals.merge(verdicts) { first, _ in first }
            } catch let error as CorralError {
                for command in updates { refusals[command.ref] = "cannot check for a force-push: \(error.message)" }
            }
        }

        let refs = parsed.commands.map(\.ref).joined(separator: ", ")
        if !refusals.isEmpty {
            let reason = parsed.commands.compactMap { command in refusals[command.ref].map { "\(command.ref): \($0)" } }
                .joined(separator: "; ")
            await record(.gitPush, .denied, target: target, reason: reason, credential: credential?.entry.name)
            try await answerRefusal(parsed, refusals: refusals, keepAlive: head.keepAlive)
            return head.keepAlive
        }
        await record(.gitPush, .allowed, target: target, reason: "push of \(refs)", credential: credential?.entry.name)
        var forwarded = head
        forwarded.headers.set("Content-Type", "application/x-git-receive-pack-request")
        return try await forwardGit(
            forwarded, request, body: .stream(spool.stream()), credential: credential, upstream: upstream)
    }

    /// Answers a refused push as receive-pack would: 200 with a report-status naming each
    /// ref. Every ref of the push is refused when any is, so a push never lands in part.
    private func answerRefusal(_ request: ReceivePackRequest, refusals: [String: String], keepAlive: Bool) async throws
    {
        let list = request.commands.map { command in
            (ref: command.ref, reason: refusals[command.ref] ?? "not pushed: another ref in this push was refused")
        }
        guard request.capabilities.contains("report-status") || request.capabilities.contains("report-status-v2") else {
            let text = list.map { "\($0.ref): \($0.reason)" }.joined(separator: "; ")
            await respond(403, "corral gateway: push refused: \(text)", close: true)
            return
        }
        let messages = list.filter { refusals[$0.ref] != nil }.map {
            $0.reason.contains($0.ref) ? "corral gateway: \($0.reason)" : "corral gateway: \($0.ref): \($0.reason)"
        }
        let body = PktLine.refusalReport(refusals: list, capabilities: request.capabilities, messages: messages)
        var headers: [(String, String)] = [
            ("Content-Type", "application/x-git-receive-pack-result"), ("Cache-Control", "no-cache"),
            ("Content-Length", "\(body.count)"),
        ]
        if !keepAlive { headers.append(("Connection", "close")) }
        try await writeHead(status: 200, headers: headers)
        try await write(channel.allocator.buffer(bytes: body))
    }
}
