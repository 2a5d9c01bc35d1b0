import CorralCore

extension CorralClient {
    /// Makes an agent session for the task and starts its run in the service (202: the run
    /// goes on there, whoever follows it or not).
    public func startAgent(_ body: StartAgentRequest) async throws -> HarnessStatus {
        try await call(.post, "/v1/agents", body: body)
    }

    /// Resumes the session's run in the service (a wake), with an optional new user message.
    public func runHarness(_ id: SessionID, message: String?) async throws -> HarnessStatus {
        try await call(.post, "/v1/sessions/\(id)/harness/run", body: RunHarnessRequest(message: message))
    }

    /// Stops the session's run in the service; the session stays resumable.
    public func stopHarness(_ id: SessionID) async throws -> HarnessStatus {
        try await call(.post, "/v1/sessions/\(id)/harness/stop")
    }

    public func harnessStatus(_ id: SessionID) async throws -> HarnessStatus {
        try await call(.get, "/v1/sessions/\(id)/harness")
    }
}
