import CorralCore
import CorralSandbox
import DockerEngine
import Foundation
import Hummingbird

/// envd's `filesystem.Filesystem` service over corral's file operations, as the sandbox's
/// user: Stat, MakeDir, Move, ListDir (to a depth) and Remove; WatchDir and the watcher calls
/// by polling (`E2BWatchers`).
package struct E2BFilesystemService: Sendable {
    package let plane: E2BDataPlane
    package let watchers: E2BWatchers

    /// The deepest ListDir walks, whatever the request asks.
    package static let maxDepth = 16
    /// The most entries one ListDir returns.
    package static let maxEntries = 10_000

    package func stat(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
        return .object(["entry": try await entry(path, in: sandbox)])
    }

    package func makeDir(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
        if try await sandbox.stat(path) != nil {
            throw ConnectError(code: "already_exists", message: "directory \(path) already exists")
        }
        try await sandbox.makeDirectory(path, parents: true)
        return .object(["entry": try await entry(path, in: sandbox)])
    }

    package func move(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let source = try await plane.resolve(try message.protoString("source"), in: sandbox)
        let destination = try await plane.resolve(try message.protoString("destination"), in: sandbox)
        try await sandbox.rename(source, to: destination)
        return .object(["entry": try await entry(destination, in: sandbox)])
    }

    package func remove(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
        guard try await sandbox.stat(path) != nil else { throw ConnectError.notFound("path \(path) not found") }
        try await sandbox.removePath(path, recursive: true)
        return .object([:])
    }

    package func listDir(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
        let depth = min(max(Int(message["depth"]?.protoIntValue ?? 1), 1), Self.maxDepth)
        guard let stat = try await sandbox.stat(path) else { throw ConnectError.notFound("path \(path) not found") }
        guard stat.isDirectory else { throw ConnectError.invalidArgument("path \(path) is not a directory") }
        var entries: [JSONValue] = []
        var pending: [(String, Int)] = [(path, 1)]
        while let (directory, level) = pending.first {
            pending.removeFirst()
            for file in try await sandbox.listDirectory(directory).sorted(by: { $0.name < $1.name }) {
                let full = Self.join(directory, file.name)
                entries.append(Self.entry(file, path: full))
                guard entries.count < Self.maxEntries else { return .object(["entries": .array(entries)]) }
                if file.kind == .directory, level < depth { pending.append((full, level + 1)) }
            }
        }
        return .object(["entries": .array(entries)])
    }

    // MARK: Watching

    package func createWatcher(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        try Self.refuseEntries(message)
        let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
        let id = try await watchers.create(
            sandbox: sandbox, path: path, recursive: message["recursive"]?.boolValue ?? false)
        return .object(["watcherId": .string(id)])
    }

    package func watcherEvents(_ message: JSONValue, sandbox: Sandbox) async throws -> JSONValue {
        .object(["events": .array(try await watchers.events(try message.protoString("watcherId"), sandbox: sandbox))])
    }

    package func removeWatcher(_ message: JSONValue, sandbox: Sandbox) throws -> JSONValue {
        try watchers.remove(try message.protoString("watcherId"), sandbox: sandbox)
        return .object([:])
    }

    /// WatchDir: a start event once the directory is seen, then its changes as they are found.
    package func watchDir(_ request: Request, context: CorralRequestContext, sandbox: Sandbox) async -> Response {
        let presence = await ClientPresence.of(context.channel)
        let message: JSONValue
        do {
            message = try await ConnectWire.singleRequest(request)
            try Self.refuseEntries(message)
        } catch {
            return E2BStream.failed(ConnectError(converting: error))
        }
        let interval = E2BProcessService(plane: plane).keepaliveInterval(request)
        let plane = self.plane
        return E2BStream.response(
            presence: presence, keepalive: interval,
            keepaliveFrame: ConnectWire.envelope(.object(["keepalive": .object([:])]))
        ) { frames in
            let path = try await plane.resolve(try message.protoString("path"), in: sandbox)
            let recursive = message["recursive"]?.boolValue ?? false
            var snapshot = try await E2BWatchers.look(sandbox, path: path, recursive: recursive)
            await frames.send(ConnectWire.envelope(.object(["start": .object([:])])))
            while true {
                try await Task.sleep(for: E2BWatchers.interval)
                let now = try await E2BWatchers.look(sandbox, path: path, recursive: recursive)
                for event in E2BWatchers.difference(from: snapshot, to: now) {
                    await frames.send(ConnectWire.envelope(.object(["filesystem": event])))
                }
                snapshot = now
            }
        }
    }

    /// Entry info in events needs envd 0.6.3, which corral does not claim; an older SDK that
    /// asks anyway is told.
    package static func refuseEntries(_ message: JSONValue) throws {
        if message["includeEntry"]?.boolValue == true {
            throw ConnectError.unimplemented("watch events with entry info are not supported")
        }
    }

    // MARK: Entries

    /// EntryInfo for one path: from its directory's listing, which carries the time and kind.
    package func entry(_ path: String, in sandbox: Sandbox) async throws -> JSONValue {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let (directory, name) = Sandbox.split(trimmed)
        if !name.isEmpty, let listing = try? await sandbox.listDirectory(directory.isEmpty ? "/" : directory),
            let file = listing.first(where: { $0.name == name })
        {
            return Self.entry(file, path: trimmed)
        }
        guard let stat = try await sandbox.stat(trimmed) else {
            throw ConnectError.notFound("path \(trimmed) not found")
        }
        let kind: SandboxFileInfo.Kind = stat.isDirectory ? .directory : stat.isSymlink ? .symlink : .file
        return Self.entry(
            name: name.isEmpty ? "/" : name, kind: kind, size: stat.size, mode: stat.mode & 0o7777, modified: nil,
            linkTarget: stat.linkTarget, path: trimmed)
    }

    package static func entry(_ file: SandboxFileInfo, path: String) -> JSONValue {
        entry(
            name: file.name, kind: file.kind, size: file.size, mode: file.mode, modified: file.modified,
            linkTarget: file.linkTarget, path: path)
    }

    package static func entry(
        name: String, kind: SandboxFileInfo.Kind, size: Int64, mode: UInt32, modified: Date?, linkTarget: String?,
        path: String
    ) -> JSONValue {
        let type =
            switch kind {
            case .file: "FILE_TYPE_FILE"
            case .directory: "FILE_TYPE_DIRECTORY"
            case .symlink: "FILE_TYPE_SYMLINK"
            case .other: "FILE_TYPE_UNSPECIFIED"
            }
        var fields: [String: JSONValue] = [
            "name": .string(name), "type": .string(type), "path": .string(path), "size": .protoInt64(size),
            "mode": .int(Int64(mode)), "permissions": .string(permissions(kind, mode)), "owner": .string("user"),
            "group": .string("user"),
        ]
        if let modified { fields["modifiedTime"] = .protoTimestamp(modified) }
        if let linkTarget { fields["symlinkTarget"] = .string(linkTarget) }
        return .object(fields)
    }

    /// `ls -l`'s mode string, as envd gives it (`drwxr-xr-x`).
    package static func permissions(_ kind: SandboxFileInfo.Kind, _ mode: UInt32) -> String {
        var text = kind == .directory ? "d" : kind == .symlink ? "L" : "-"
        for shift in stride(from: 6, through: 0, by: -3) {
            let bits = (mode >> UInt32(shift)) & 7
            text += (bits & 4 != 0 ? "r" : "-") + (bits & 2 != 0 ? "w" : "-") + (bits & 1 != 0 ? "x" : "-")
        }
        return text
    }

    package static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
