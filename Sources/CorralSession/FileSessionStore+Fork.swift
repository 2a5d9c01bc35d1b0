import CorralCore
import Foundation

extension FileSessionStore {
    /// A fork shares its parent's history by hard links to the parent's sealed segments,
    /// which are never written again, and a copy of the part of the segment that holds
    /// `atSeq`. The fork's last segment is always its own file, so its appends never reach
    /// the parent's.
    func fork(_ parent: SessionHandle, atSeq: UInt64, newID: SessionID) throws -> SessionInfo {
        try parent.advance(recover: false)
        let (segments, head) = parent.view.withLock { ($0.segments, $0.head) }
        guard atSeq <= head else {
            throw CorralError(
                .invalidArgument, "cannot fork session \(parent.id) at seq \(atSeq): its head is \(head)",
                hint: "fork at a seq from 0 to \(head)")
        }
        let epoch = try parent.lock.epoch()
        let manifest = SessionManifest(
            format: SessionManifest.currentFormat, id: newID, tenant: parent.manifest.tenant,
            created: Timestamp.format(nanoseconds: Timestamp.nowNanoseconds()), metadata: parent.manifest.metadata,
            forkedFrom: ForkOrigin(session: parent.id, seq: atSeq), segmentBytes: configuration.segmentBytes)
        try install(manifest, epoch: epoch) { staging in
            guard atSeq > 0 else { return }
            var lastLinked = false
            for (position, first) in segments.enumerated() where first <= atSeq {
                let isParentActive = position == segments.count - 1
                let lastSeq = isParentActive ? head : segments[position + 1] - 1
                if !isParentActive && lastSeq <= atSeq {
                    try Self.linkOrCopy(parent.paths.segment(first), to: staging.segment(first))
                    if FileIO.exists(parent.paths.index(first)) {
                        try? Self.linkOrCopy(parent.paths.index(first), to: staging.index(first))
                    }
                    lastLinked = true
                } else {
                    let (segmentFirst, end, entries) = try parent.boundary(after: atSeq)
                    try Self.copyPrefix(
                        parent.paths.segment(segmentFirst), bytes: end, to: staging.segment(segmentFirst))
                    try Self.writeIndex(entries, to: staging.index(segmentFirst))
                    lastLinked = false
                }
            }
            if lastLinked {
                // The fork writes on in a segment of its own, never in a shared file.
                try FileSessionStore.writeDurably(
                    LogFormat.segmentHeader(firstSeq: atSeq + 1), to: staging.segment(atSeq + 1))
                try Self.writeIndex([], to: staging.index(atSeq + 1))
            }
        }
        return SessionInfo(
            id: newID, tenant: manifest.tenant, created: manifest.createdDate, metadata: manifest.metadata,
            forkedFrom: manifest.forkedFrom, head: atSeq, epoch: epoch)
    }

    static func linkOrCopy(_ source: String, to target: String) throws {
        if link(source, target) == 0 { return }
        switch errno {
        case EXDEV, EPERM, EMLINK, ENOTSUP:
            let file = try OpenFile(path: source, flags: O_RDONLY)
            try copyPrefix(source, bytes: try file.size(), to: target)
        default:
            throw FileIO.error("link \(source) to", target)
        }
    }

    static func copyPrefix(_ source: String, bytes count: UInt64, to target: String) throws {
        let input = try OpenFile(path: source, flags: O_RDONLY)
        let output = try OpenFile(path: target, flags: O_WRONLY | O_CREAT | O_EXCL)
        var position: UInt64 = 0
        while position < count {
            let chunk = try FileIO.pread(
                input.fd, count: Int(min(4 << 20, count - position)), at: position, path: source)
            guard !chunk.isEmpty else {
                throw CorralError(.io, "\(source) ended at byte \(position) while \(count) bytes were being copied")
            }
            try FileIO.pwrite(output.fd, chunk, at: position, path: target)
            position += UInt64(chunk.count)
        }
        try FileIO.syncData(output.fd, path: target)
    }

    static func writeIndex(_ entries: [IndexEntry], to path: String) throws {
        var bytes = LogFormat.indexHeader()
        for entry in entries {
            bytes.appendLittleEndian(entry.seq)
            bytes.appendLittleEndian(entry.offset)
        }
        let file = try OpenFile(path: path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        try FileIO.pwrite(file.fd, bytes, at: 0, path: path)
    }
}
