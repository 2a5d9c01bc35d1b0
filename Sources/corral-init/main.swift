// corral-init: PID 1 of every corral sandbox, and a small exec wrapper.
//
//   corral-init                 PID 1: reap orphans, forward 127.0.0.1:3128 to the gateway
//                               socket named by CORRAL_GATEWAY_SOCKET, run the commands sent
//                               over the control socket named by CORRAL_CONTROL_SOCKET
//                               (proving itself with control.key beside it, read once at
//                               boot), stop everything and exit 0 on SIGTERM or SIGINT.
//   corral-init exec [--timeout S] [--grace S] [--workdir D] [--status-fd N] -- CMD ARGS...
//                               run CMD in its own process group with a timeout (exit 124).
//   corral-init spawn-floor [COUNT] [PROGRAM...]
//                               time COUNT starts of PROGRAM (/bin/true) the way PID 1 starts
//                               commands: the floor under any way of running one.
//   corral-init version         print the version.
//
// Environment (PID 1 mode): CORRAL_GATEWAY_SOCKET (unix socket path; no forwarder without
// it), CORRAL_PROXY_PORT (default 3128), CORRAL_INIT_GRACE (seconds between SIGTERM and
// SIGKILL at shutdown, default 2).
//
// Glibc only, linked fully static (see Package.swift): it is bind-mounted read-only at
// /.corral/init into images that may have no libc of their own.
import Glibc

let corralInitVersion = "0.3.0"

let usageText = """
    usage: corral-init                      run as PID 1 (reaper, egress forwarder)
           corral-init exec [--timeout SECONDS] [--grace SECONDS] [--workdir DIR] [--status-fd N] -- COMMAND [ARGUMENT...]
           corral-init spawn-floor [COUNT] [PROGRAM [ARGUMENT...]]
           corral-init version

    """

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case nil:
    // First of all, before the control key is read: no other process of the sandbox's user
    // may read PID 1's memory, environment or descriptors through /proc/1.
    let undumpable = makeUndumpable()
    switch InitProcess.configurationFromEnvironment() {
    case .success(var configuration):
        configuration.loadControlKey(undumpable: undumpable)
        InitProcess(configuration: configuration).run()
    case .failure(let error):
        logLine(error.message)
        exit(2)
    }
case "exec":
    exit(ExecWrapper.run(Array(arguments.dropFirst())))
case "spawn-floor":
    exit(SpawnFloor.run(Array(arguments.dropFirst())))
case "version", "--version", "-V":
    print("corral-init \(corralInitVersion)")
case "help", "--help", "-h":
    print(usageText, terminator: "")
default:
    logLine("unknown command \(arguments[0])\n\(usageText)")
    exit(2)
}
