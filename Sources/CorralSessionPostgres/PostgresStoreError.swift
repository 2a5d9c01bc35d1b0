import CorralCore
import PostgresNIO

/// Turns what postgres-nio throws into the `CorralError` the file store would give, or
/// `.unavailable` when the database cannot be reached. Never SQL text, never the password:
/// the URL is named as `PostgresStoreURL.description` renders it.
enum PostgresStoreError {
    /// SQLSTATE classes and codes that mean the database is not there (now).
    static func isUnavailable(_ state: String) -> Bool {
        state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57P") || state == "40001"
            || state == "40P01"
    }

    static func map(_ error: any Error, url: PostgresStoreURL, doing what: String) -> CorralError {
        if let error = error as? CorralError { return error }
        if error is CancellationError { return CorralError(.cancelled, "\(what) was cancelled") }
        if let transaction = error as? PostgresTransactionError {
            if let inner = transaction.closureError ?? transaction.commitError ?? transaction.beginError {
                return map(inner, url: url, doing: what)
            }
        }
        guard let psql = error as? PSQLError else {
            return unavailable(url, what, reason: "\(type(of: error))")
        }
        if let info = psql.serverInfo, let state = info[.sqlState] {
            let message = info[.message] ?? "error \(state)"
            switch state {
            case "28P01", "28000":
                return CorralError(
                    .permissionDenied, "cannot log in to the session store at \(url): \(message)",
                    hint: "check the user and password in [store] url or CORRAL_STORE_URL")
            case "3D000":
                return CorralError(
                    .unavailable, "the session store at \(url) has no database '\(url.database)'",
                    hint: "create it (CREATE DATABASE \(url.database) OWNER \(url.user)), or fix the URL")
            case "42501":
                return CorralError(
                    .permissionDenied, "the session store at \(url) refused \(what): \(message)",
                    hint: "grant \(url.user) the rights on schema \(url.schema), or use the database owner")
            case let state where state.hasPrefix("23"):
                if state == "23505" {
                    return CorralError(.alreadyExists, "\(what): it exists already", hint: "choose another id")
                }
                return CorralError(.invalidArgument, "\(what): the value breaks a rule of the store (\(state))")
            case let state where state.hasPrefix("22"):
                return CorralError(
                    .invalidArgument, "\(what): the store cannot hold a value given (\(message))",
                    hint: "text may not contain NUL characters")
            case let state where state.hasPrefix("54"):
                return CorralError(.resourceExhausted, "\(what): over a limit of the store (\(message))")
            case let state where isUnavailable(state):
                return unavailable(url, what, reason: message)
            default:
                return CorralError(
                    .internalError, "\(what) failed in the session store at \(url): \(message) (SQLSTATE \(state))",
                    hint: "this is a bug or a damaged schema; report it with the database's log")
            }
        }
        switch psql.code {
        case .queryCancelled: return CorralError(.cancelled, "\(what) was cancelled")
        case .sslUnsupported:
            return CorralError(
                .unavailable, "the session store at \(url) does not speak TLS",
                hint: "add ?sslmode=disable (or prefer) to the URL, or enable ssl on the server")
        case .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
            return CorralError(
                .permissionDenied, "cannot log in to the session store at \(url): \(psql.code)",
                hint: "check the user and password in [store] url or CORRAL_STORE_URL")
        default:
            return unavailable(url, what, reason: reason(psql))
        }
    }

    /// A short reason for a connection that failed: NIO's errors nest the target and errno.
    static func reason(_ error: PSQLError) -> String {
        let text = error.underlying.map { String(describing: $0) } ?? error.code.description
        let known = [
            ("Connection refused", "connection refused"), ("connectTimeout", "connect timed out"),
            ("timed out", "timed out"), ("Connection reset", "connection reset"), ("No such file", "no such socket"),
        ]
        if let match = known.first(where: { text.contains($0.0) }) { return match.1 }
        if error.code == .serverClosedConnection || error.code == .uncleanShutdown {
            return "the server closed the connection"
        }
        return String(text.prefix(160))
    }

    /// Clients may retry after this: the pool reconnects on its own once the server is back.
    static let retryAfterSeconds = 2

    static func unavailable(_ url: PostgresStoreURL, _ what: String, reason: String) -> CorralError {
        var error = CorralError(
            .unavailable, "the session store at \(url) is unavailable (\(what): \(reason))",
            hint: "check that PostgreSQL runs and answers there (scripts/postgres.sh status); retry once it does")
        error.retryAfterSeconds = retryAfterSeconds
        return error
    }
}
