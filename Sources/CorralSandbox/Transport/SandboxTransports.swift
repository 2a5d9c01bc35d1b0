import CorralCore
import DockerEngine

/// The one place that decides how commands reach a sandbox from this process: its control
/// connection when this process keeps one (`control`), with the engine's exec behind it, or
/// the engine's exec alone.
enum SandboxTransports {
    static func make(
        engine: DockerEngineClient, container: String, sandbox: SandboxID, environment: SandboxEnvironment,
        records: SandboxRecordStore?, control: ControlChannels?
    ) -> any SandboxTransport {
        let engineTransport = EngineExecTransport(
            engine: engine, container: container, sandbox: sandbox, environment: environment, records: records)
        guard let control else { return engineTransport }
        return ControlTransport(engine: engineTransport, channels: control)
    }
}
