import Foundation

/// One header of a tar stream, as `TarReader` reads it.
public struct TarEntry: Sendable, Equatable, CustomStringConvertible {
    public enum EntryType: Sendable, Equatable, CustomStringConvertible {
        case file
        case directory
        case symlink
        /// A hard link to an earlier entry, named by `linkTarget`.
        case hardlink
        /// A character or block device, a FIFO or a socket; `TarEntry.description` says which.
        case other

        public var description: String {
            switch self {
            case .file: "file"
            case .directory: "directory"
            case .symlink: "symlink"
            case .hardlink: "hard link"
            case .other: "special file"
            }
        }
    }

    /// The name as stored in the archive (not normalised: may start with `./`).
    public var path: String
    public var type: EntryType
    /// Bytes of data that follow the header (0 for everything but files).
    public var size: Int64
    /// Permission bits, including set-user-id, set-group-id and sticky (`0o7777`).
    public var mode: UInt32
    public var uid: Int
    public var gid: Int
    public var mtime: Date
    /// The target of a symlink, or the earlier entry a hard link names; nil otherwise.
    public var linkTarget: String?
    /// The raw `S_IFMT` bits, which tell devices, FIFOs and sockets apart for `.other`.
    var fileTypeBits: UInt32

    public init(
        path: String, type: EntryType, size: Int64 = 0, mode: UInt32, uid: Int = 0, gid: Int = 0,
        mtime: Date = Date(timeIntervalSince1970: 0), linkTarget: String? = nil
    ) {
        self.path = path
        self.type = type
        self.size = size
        self.mode = mode & 0o7777
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.linkTarget = linkTarget
        switch type {
        case .file, .hardlink: fileTypeBits = FileTypeBits.regular
        case .directory: fileTypeBits = FileTypeBits.directory
        case .symlink: fileTypeBits = FileTypeBits.symlink
        case .other: fileTypeBits = 0
        }
    }

    /// What kind of entry this is, in words: "file", "character device", "FIFO", ...
    public var kindDescription: String {
        guard type == .other else { return type.description }
        switch fileTypeBits {
        case FileTypeBits.characterDevice: return "character device"
        case FileTypeBits.blockDevice: return "block device"
        case FileTypeBits.fifo: return "FIFO"
        case FileTypeBits.socket: return "socket"
        default: return "entry of unknown type"
        }
    }

    public var description: String {
        var text = "\(kindDescription) \(quoted(path))"
        if let linkTarget { text += " -> \(quoted(linkTarget))" }
        return text
    }
}

/// A numeric owner and group, as tar stores them (names are never written).
public struct TarOwnership: Sendable, Hashable {
    public var uid: Int
    public var gid: Int

    public init(uid: Int, gid: Int) {
        self.uid = uid
        self.gid = gid
    }

    public static let root = TarOwnership(uid: 0, gid: 0)
}

/// What to do with device, FIFO and socket entries, which a sandbox copy never needs.
public enum SpecialFilePolicy: Sendable, Equatable {
    /// Stop with an error naming the entry.
    case refuse
    /// Leave the entry out and count it in the summary's `skipped`.
    case skip
}
