import CorralGateway
import CorralSandbox

/// Provisioning asks for a gateway through `SandboxGateway`; in one process the gateway is
/// that, and this module is the one that links both.
extension Gateway: SandboxGateway {}
