import Foundation
import TarArchive
import Testing

/// An archive that tries to reach outside its target directory, and the entry that must be
/// named when it is refused. `build` gets the absolute path of the playground's `outside/`.
struct HostileArchive: Sendable, CustomTestStringConvertible {
    let label: String
    let refusedEntry: String
    let build: @Sendable (_ outside: String) throws -> [UInt8]

    var testDescription: String { label }

    init(_ label: String, refusing entry: String, _ build: @escaping @Sendable (_ outside: String) throws -> [UInt8]) {
        self.label = label
        refusedEntry = entry
        self.build = build
    }

    static let all: [HostileArchive] = [
        HostileArchive("a leading '..' component", refusing: "../outside/evil") { _ in
            try makeArchive { try $0.addFile(path: "../outside/evil", contents: [1]) }
        },
        HostileArchive("a '..' in the middle of the path", refusing: "sub/../../outside/evil") { _ in
            try makeArchive { writer in
                try writer.addDirectory(path: "sub")
                try writer.addFile(path: "sub/../../outside/evil", contents: [1])
            }
        },
        HostileArchive("an absolute path", refusing: "/tmp/corral-absolute-evil") { _ in
            try makeArchive { try $0.addFile(path: "/tmp/corral-absolute-evil", contents: [1]) }
        },
        HostileArchive("the classic: a symlink to a directory outside, then a file beneath it", refusing: "a") {
            outside in
            try makeArchive { writer in
                try writer.addSymlink(path: "a", target: outside)
                try writer.addFile(path: "a/sentinel", contents: Array("owned\n".utf8))
            }
        },
        HostileArchive("a symlink whose target climbs out", refusing: "sub/up") { _ in
            try makeArchive { writer in
                try writer.addDirectory(path: "sub")
                try writer.addSymlink(path: "sub/up", target: "../../outside")
            }
        },
        HostileArchive("a symlink that climbs out through another link", refusing: "escape") { _ in
            // p/q/x -> ../.. is the root: fine. escape -> p/q/x/.. looks like p/q but is the
            // root's parent once x is followed.
            try makeArchive { writer in
                try writer.addDirectory(path: "p/q")
                try writer.addSymlink(path: "p/q/x", target: "../..")
                try writer.addSymlink(path: "escape", target: "p/q/x/../outside")
            }
        },
        HostileArchive("a symlink standing for the target directory itself", refusing: "./") { outside in
            try makeArchive { try $0.addSymlink(path: "./", target: outside) }
        },
        HostileArchive("a hard link to an absolute path", refusing: "h") { outside in
            try makeArchive { try $0.addHardLink(path: "h", target: outside + "/sentinel") }
        },
        HostileArchive("a hard link that climbs out", refusing: "h") { _ in
            try makeArchive { try $0.addHardLink(path: "h", target: "../outside/sentinel") }
        },
        HostileArchive("a file written through a symlink the archive made", refusing: "a/passwd") { _ in
            try makeArchive { writer in
                try writer.addDirectory(path: "sub")
                try writer.addSymlink(path: "a", target: "sub")
                try writer.addFile(path: "a/passwd", contents: Array("root::0:0::/:/bin/sh\n".utf8))
            }
        },
        HostileArchive("a hard link whose target lies through a symlink", refusing: "h") { _ in
            try makeArchive { writer in
                try writer.addDirectory(path: "sub")
                try writer.addFile(path: "sub/file", contents: [1])
                try writer.addSymlink(path: "a", target: "sub")
                try writer.addHardLink(path: "h", target: "a/file")
            }
        },
        HostileArchive("a character device", refusing: "dev/null") { _ in
            RawTar.header(name: "dev/null", type: "3", mode: 0o666) + RawTar.end
        },
        HostileArchive("a block device", refusing: "disk") { _ in
            RawTar.header(name: "disk", type: "4", mode: 0o660) + RawTar.end
        },
        HostileArchive("a FIFO", refusing: "pipe") { _ in
            RawTar.header(name: "pipe", type: "6") + RawTar.end
        },
    ]
}
