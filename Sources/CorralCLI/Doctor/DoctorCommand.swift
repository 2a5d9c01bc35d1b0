import ArgumentParser
import CorralCore
import CorralSandbox
import DockerEngine
import Foundation

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract:
            "Check the engine, its API version, runtimes, the base image and corral-init; say how to fix each failure."
    )

    @OptionGroup var global: GlobalOptions

    @Option(help: ArgumentHelp("Image to look for.", valueName: "REF"))
    var image: String = ProvisionRequest.defaultImage

    struct Check {
        var name: String
        var ok: Bool
        var detail: String
        var fix: String?
        var required = true
    }

    func run() async throws {
        let context = CommandContext(global)
        var checks: [Check] = []
        let endpoint = global.engineEndpoint
        do {
            let engine = try context.engine()
            defer { engine.shutdown() }
            let version = try await engine.version()
            let negotiated = try await engine.apiVersion()
            checks.append(
                Check(
                    name: "engine", ok: true,
                    detail: "\(endpoint) answers: engine \(version.version), API \(version.apiVersion)"))
            checks.append(Check(name: "api version", ok: true, detail: "corral speaks API \(negotiated) with it"))
            let info = try await engine.info()
            let runtimes = info.runtimes.keys.sorted()
            checks.append(
                Check(
                    name: "runtime runc", ok: info.runtimes["runc"] != nil,
                    detail: "registered: \(runtimes.joined(separator: ", "))"))
            checks.append(
                Check(
                    name: "runtime runsc", ok: info.runtimes["runsc"] != nil,
                    detail: info.runtimes["runsc"] != nil
                        ? "gVisor is available (--runtime runsc)" : "gVisor is not registered",
                    fix:
                        #"apt-get install runsc, then add {"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none","--host-uds=open"]}}} to the engine's daemon.json and restart it (scripts/engine.sh does this)"#,
                    required: false))
            if let found = try await engine.inspectImage(image) {
                checks.append(
                    Check(name: "image", ok: true, detail: "\(image) is present (\(ByteSize(bytes: found.size ?? 0)))"))
            } else {
                checks.append(
                    Check(
                        name: "image", ok: false, detail: "\(image) is not on the engine",
                        fix: image == ProvisionRequest.defaultImage ? "make image" : "build or import \(image)"))
            }
        } catch let error as CorralError {
            let fix =
                error.code == .unavailable
                ? "make engine (or scripts/engine.sh up; or systemctl start docker)" : error.hint
            checks.append(Check(name: "engine", ok: false, detail: error.description, fix: fix))
        }
        do {
            let path = try SandboxEnvironment.locateInit()
            checks.append(Check(name: "corral-init", ok: true, detail: path))
        } catch let error as CorralError {
            checks.append(Check(name: "corral-init", ok: false, detail: error.message, fix: error.hint))
        }
        do {
            let directory = try context.stateDirectory()
            let writable = FileManager.default.isWritableFile(atPath: directory.path)
            checks.append(
                Check(
                    name: "state dir", ok: writable, detail: directory.path,
                    fix: writable ? nil : "pass --state-dir or set CORRAL_STATE_DIR to a writable directory"))
        } catch let error as CorralError {
            checks.append(Check(name: "state dir", ok: false, detail: error.description, fix: error.hint))
        }
        let conflicts = SandboxUser.conflictingAccounts()
        checks.append(
            Check(
                name: "sandbox uids", ok: conflicts.isEmpty,
                detail: conflicts.isEmpty
                    ? "no host account holds a uid of the sandboxes' range (\(SandboxUser.base) and up)"
                    : "host accounts in the sandboxes' uid range: \(conflicts.joined(separator: ", "))",
                fix: "renumber those accounts: an account in the range could reach sandboxes' files and sockets"))
        let root = geteuid() == 0
        checks.append(
            Check(
                name: "root", ok: root,
                detail: root ? "corral runs as root" : "corral runs as uid \(geteuid())",
                fix: "run corral as root: each sandbox gets a uid and a workspace file system of its own"))

        for check in checks {
            let mark = check.ok ? "ok  " : (check.required ? "FAIL" : "warn")
            print("\(mark) \(check.name): \(check.detail)")
            if !check.ok, let fix = check.fix { print("     fix: \(fix)") }
        }
        if checks.contains(where: { !$0.ok && $0.required }) { throw ExitCode(1) }
    }
}
