import Foundation

/// Removal of a sandbox's host directory, which may hold a mounted workspace: unmounted
/// first, so that removal never walks into a file system that is still in use.
enum SandboxHostDirectory {
    static func remove(_ directory: URL) {
        WorkspaceDisk.unmount(in: directory)
        try? FileManager.default.removeItem(at: directory)
    }
}
