/// A short list of records the control plane keeps (tenants, worker tokens): a JSON file in the
/// state directory by default, or a row of the PostgreSQL store, which every replica of the
/// control plane shares.
///
/// Every change is a read-modify-write that no concurrent change can lose, whichever process
/// makes it. A read sees every change that finished before it began: a token removed by one
/// replica is refused by all of them from then on.
package protocol RecordList<Element>: Sendable {
    associatedtype Element: Codable & Sendable

    /// Where the list is, for messages: a file's path, or the store's URL (no password) and
    /// the list's name.
    var location: String { get }

    func load() async throws -> [Element]

    /// Applies `change` to the current list and keeps the result, whole or not at all: when
    /// `change` throws, nothing is written and the error comes back.
    func modify(_ change: (inout [Element]) throws -> Void) async throws
}
