import CorralCore
import CorralHost
import CorralSession

/// Summaries of sessions, kept up to date by reading only what was appended since the last
/// look: the first look at a 10,000-event session reads it once; later ones read the new
/// events. Two requests for one session share one read.
actor SessionSummaries {
    private var cache: [SessionID: SessionSummary] = [:]
    private var reading: [SessionID: Task<SessionSummary, any Error>] = [:]
    static let pageSize = 1000

    /// The summary of `id` folded at least up to `head` (the head the caller saw).
    func summary(of id: SessionID, head: UInt64, store: any SessionStore) async throws -> SessionSummary {
        for _ in 0..<3 {
            if let cached = cache[id], cached.head >= head { return cached }
            if let task = reading[id] {
                _ = try? await task.value
                continue
            }
            let base = cache[id] ?? SessionSummary()
            let task = Task { try await Self.read(id, from: base, upTo: head, store: store) }
            reading[id] = task
            defer { reading[id] = nil }
            let summary = try await task.value
            // Re-checked after the await: another read may have gone further meanwhile.
            if (cache[id]?.head ?? 0) < summary.head { cache[id] = summary }
        }
        return cache[id] ?? SessionSummary()
    }

    /// The summary of `id` with `events` folded in, when they follow what is cached (a live
    /// stream has just read them: no need to read them again); otherwise as `summary(of:)`.
    func summary(of id: SessionID, after events: [Event], store: any SessionStore) async throws -> SessionSummary {
        guard let first = events.first, let last = events.last else {
            return try await summary(of: id, head: 0, store: store)
        }
        if reading[id] == nil, var cached = cache[id], cached.head + 1 == first.seq {
            cached.fold(events)
            cache[id] = cached
            return cached
        }
        return try await summary(of: id, head: last.seq, store: store)
    }

    /// What is cached, without reading: for pages that can do with a summary a moment old.
    func cached(_ id: SessionID) -> SessionSummary? { cache[id] }

    /// Forgets sessions that are gone.
    func keep(only ids: Set<SessionID>) {
        for id in cache.keys where !ids.contains(id) { cache[id] = nil }
    }

    var count: Int { cache.count }

    /// Sessions whose summaries name `sandbox`, from what is cached.
    func sessions(using sandbox: SandboxID) -> [SessionID] {
        cache.filter { $0.value.everySandbox.contains(sandbox) }.map(\.key).sorted()
    }

    static func read(_ id: SessionID, from base: SessionSummary, upTo head: UInt64, store: any SessionStore)
        async throws -> SessionSummary
    {
        var summary = base
        while summary.head < head {
            let page = try await store.readPage(id, from: summary.head + 1, limit: pageSize)
            guard !page.events.isEmpty else { break }
            summary.fold(page.events)
            try Task.checkCancellation()
        }
        return summary
    }
}
