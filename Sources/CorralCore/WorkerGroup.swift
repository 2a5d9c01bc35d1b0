import Foundation

/// Worker groups: the workers that serve the same tenants (one customer's network, one region).
/// A tenant bound to groups only ever gets sandboxes on their workers; an unbound tenant, and
/// the service's own in-process worker, are in `default`.
public enum WorkerGroup {
    public static let defaultName = "default"

    /// 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit: a group's name appears in
    /// headers, labels and file names.
    public static func validate(_ name: String) throws {
        let allowed = name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
        guard (1...63).contains(name.utf8.count), allowed, name.utf8.first != 0x2D else {
            throw CorralError.invalidArgument(
                "'\(name.prefix(70))' is not a worker group name", hint: "use 1 to 63 of a-z, 0-9 and '-'")
        }
    }
}
