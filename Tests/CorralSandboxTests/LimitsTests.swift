import CorralCore
import Testing

@testable import CorralSandbox

@Suite("Limits out of range are refused before the engine is asked")
struct LimitsTests {
    // Low finding of the security review: a huge pids value reached the engine, whose answer
    // (a 502) showed a host cgroup path.
    @Test("pids, memory, open files, sizes and disk beyond what the kernel takes are invalid arguments")
    func outOfRange() throws {
        let cases: [(String, (inout SandboxResources) -> Void)] = [
            ("pids", { $0.pids = 1_000_000_000_000 }),
            ("pids", { $0.pids = 7 }),
            ("memory", { $0.memory = .tebibytes(2) }),
            ("open files", { $0.openFiles = 1 << 30 }),
            ("tmp size", { $0.tmpSize = .tebibytes(100) }),
            ("cpus", { $0.cpus = .infinity }),
            // CI's fuzzer found this one: a quota below the kernel's 1 ms made the engine fail.
            ("cpus", { $0.cpus = 0.00001 }),
            ("disk", { $0.disk = .mebibytes(1) }),
            ("disk", { $0.disk = .tebibytes(17) }),
        ]
        for (what, change) in cases {
            var resources = SandboxResources()
            change(&resources)
            #expect {
                _ = try resources.validated()
            } throws: { error in
                let error = error as? CorralError
                return error?.code == .invalidArgument && error?.message.contains(what) == true
                    && error?.message.contains("/sys/fs/cgroup") == false
            }
        }
        var fine = SandboxResources()
        fine.pids = 1 << 22
        fine.disk = ByteSize(bytes: 0)
        #expect(try fine.validated() == fine)
    }
}
