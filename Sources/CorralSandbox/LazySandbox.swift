import CorralCore
import Foundation

/// A sandbox provisioned on first use and reused after that: what a harness holds, so that a
/// session starts by calling the brain at once and pays for a sandbox only when the first tool
/// call needs one (then, usually, a warm claim).
///
/// Concurrent first uses share one provisioning. A failed provisioning is not cached: the next
/// use tries again.
public actor LazySandbox {
    public let request: ProvisionRequest
    let provisioner: Provisioner
    private var state: State = .idle

    private enum State {
        case idle
        case provisioning(Task<Sandbox, any Error>)
        case ready(Sandbox)
        case released
    }

    public init(provisioner: Provisioner, request: ProvisionRequest) {
        self.provisioner = provisioner
        self.request = request
    }

    /// The sandbox, provisioned now if this is the first use.
    public func sandbox() async throws -> Sandbox {
        switch state {
        case .ready(let sandbox):
            return sandbox
        case .released:
            throw CorralError(.unavailable, "this session's sandbox was released", hint: "make a new LazySandbox")
        case .provisioning(let task):
            return try await task.value
        case .idle:
            let provisioner = self.provisioner
            let request = self.request
            let task = Task { try await provisioner.provision(request) }
            state = .provisioning(task)
            do {
                let sandbox = try await withTaskCancellationHandler {
                    try await task.value
                } onCancel: {
                    task.cancel()
                }
                // Released while provisioning: hand nothing out, leave nothing behind.
                if case .released = state {
                    try? await sandbox.remove()
                    throw CorralError(.unavailable, "this session's sandbox was released")
                }
                state = .ready(sandbox)
                return sandbox
            } catch {
                if case .provisioning = state { state = .idle }
                throw error
            }
        }
    }

    /// The sandbox when one was provisioned, without provisioning one.
    public var provisioned: Sandbox? {
        if case .ready(let sandbox) = state { return sandbox }
        return nil
    }

    /// execute(name, input) on the sandbox, provisioning it first if needed. A failure to
    /// provision comes back as a tool error, as a dead sandbox does.
    public func execute(tool name: String, input: JSONValue) async throws -> ToolOutput {
        let sandbox: Sandbox
        do {
            sandbox = try await self.sandbox()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return .error("\(name): no sandbox could be provisioned: \(error)")
        }
        return try await sandbox.execute(tool: name, input: input)
    }

    /// Removes the sandbox if one was provisioned; later uses fail.
    public func release() async throws {
        let previous = state
        state = .released
        if case .ready(let sandbox) = previous { try await sandbox.remove() }
    }
}
