import CorralCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A sandbox's /workspace with a size of its own: an ext4 file system in a sparse file in the
/// sandbox's host directory, loop-mounted on the host and bind-mounted into the container.
///
/// Why this and not a quota: project quotas (XFS or ext4) need a kernel built with quota
/// support and a host file system mounted with `prjquota`, and neither holds on the machines
/// corral runs on (this kernel says "quota support not available"); the engine's
/// `StorageOpt size` limits only the container's writable layer, which a read-only root does
/// not use, and local volumes take a size only on XFS with quotas. A file system of its own
/// works on any Linux host with loop devices: a full workspace gives ENOSPC inside the
/// sandbox while the host's disk keeps its space, `df /workspace` shows the sandbox's own
/// size, and removal is an unmount and an unlink. The file is sparse, so an idle sandbox
/// costs the file system's metadata only (about 4 MiB for 10 GiB); the sizes of all
/// sandboxes may add up to more than the host's disk (overcommit, as with thin volumes).
/// Making one costs mkfs.ext4 and a mount, about 20 ms here, paid on the cold path and when a
/// pool member is made, not on a warm claim.
///
/// Needs root (mount). Everything here blocks, so it runs on threads of its own.
enum WorkspaceDisk {
    /// The sparse file and where it is mounted, inside a sandbox's host directory.
    static let imageName = "workspace.img"
    static let mountName = "workspace"

    /// Makes the file system of `size` in `directory`, mounts it at `directory/workspace`
    /// owned by `owner` (mode 0755, nothing in it), and returns the mount point. On failure
    /// nothing is left mounted.
    static func make(in directory: URL, size: ByteSize, owner: SandboxUser) async throws -> URL {
        try await runOnThread(name: "corral-disk") {
            try makeBlocking(in: directory, size: size, owner: owner)
        }
    }

    static func makeBlocking(in directory: URL, size: ByteSize, owner: SandboxUser) throws -> URL {
        guard geteuid() == 0 else {
            throw CorralError(
                .permissionDenied,
                "a workspace with a disk size needs root: corral mounts a file system of its own for each sandbox",
                hint: "run corral as root, or pass --disk 0 for a workspace without a size limit")
        }
        let image = directory.appendingPathComponent(imageName).path
        let mountPoint = directory.appendingPathComponent(mountName)
        let fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CorralError(.io, "cannot make the workspace image \(image): \(String(cString: strerror(errno)))")
        }
        let sized = ftruncate(fd, off_t(size.bytes)) == 0
        let sizeError = errno
        close(fd)
        guard sized else {
            unlink(image)
            throw CorralError(
                .io, "cannot size the workspace image \(image) to \(size): \(String(cString: strerror(sizeError)))")
        }
        do {
            // Every block of a new sparse file reads as zero, so nothing needs zeroing: no
            // discard, no eager inode tables or journal (and `noinit_itable` below keeps the
            // kernel from zeroing them later, which would fill the sparse file).
            try HostCommand.run(
                "/usr/sbin/mkfs.ext4",
                [
                    "-q", "-F", "-m", "0", "-L", "workspace",
                    "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=\(owner.uid):\(owner.gid)",
                    image,
                ], what: "make the workspace file system", hint: "install e2fsprogs (apt-get install e2fsprogs)")
            if mkdir(mountPoint.path, 0o755) != 0 && errno != EEXIST {
                throw CorralError(.io, "cannot make \(mountPoint.path): \(String(cString: strerror(errno)))")
            }
            try HostCommand.run(
                "/usr/bin/mount",
                ["-t", "ext4", "-o", "loop,nosuid,nodev,noatime,noinit_itable", image, mountPoint.path],
                what: "mount the workspace file system",
                hint: "the host needs loop devices (modprobe loop) and ext4")
        } catch {
            unmount(in: directory)
            unlink(image)
            throw error
        }
        // The sandbox's /workspace starts empty: ext4's lost+found goes (e2fsck makes it again
        // should it ever need one).
        rmdir(mountPoint.appendingPathComponent("lost+found").path)
        chmod(mountPoint.path, 0o755)
        return mountPoint
    }

    /// Unmounts the workspace in `directory`, if mounted. Lazily: a container that still holds
    /// it keeps it until it goes, and the loop device is freed with the last user.
    static func unmount(in directory: URL) {
        let mountPoint = directory.appendingPathComponent(mountName).path
        while umount2(mountPoint, Int32(MNT_DETACH)) == 0 {}
    }

    /// Whether `directory` holds a workspace image (then removal must unmount first).
    static func exists(in directory: URL) -> Bool {
        access(directory.appendingPathComponent(imageName).path, F_OK) == 0
    }
}

/// Runs a host program to completion and throws, with its stderr, when it fails. Blocking.
enum HostCommand {
    static func run(_ executable: String, _ arguments: [String], what: String, hint: String) throws {
        let output: ChildProcess.Output
        do {
            output = try ChildProcess.run(
                executable, arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"],
                limit: 4096)
        } catch {
            throw CorralError(.unavailable, "cannot \(what): cannot run \(executable)", hint: hint, underlying: error)
        }
        guard output.termination.succeeded else {
            throw CorralError(.io, "cannot \(what): \(output.reason)", hint: hint)
        }
    }
}
