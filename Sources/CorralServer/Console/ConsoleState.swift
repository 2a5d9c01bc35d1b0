import Foundation
import ServiceLifecycle

/// The console's settings (`CorralServer.Configuration.console`).
public struct ConsoleSettings: Sendable {
    /// Serve `/console` on both listeners.
    public var enabled = true
    /// How often the pools and the engine are sampled for the charts.
    public var sampleInterval: Duration = .seconds(5)
    /// A login ends this long after it was made, whatever happens.
    public var loginLifetime: Duration = .seconds(12 * 3600)
    /// ... or once unused for this long.
    public var loginIdleTimeout: Duration = .seconds(2 * 3600)
    /// Events a session page shows at once; earlier and later ones are a link away.
    public var timelinePageSize = 200
    /// Rows a list page shows at once.
    public var listPageSize = 50

    public init() {}
}

/// What the console keeps while corrald runs, shared by both listeners.
final class ConsoleState: Sendable {
    let settings: ConsoleSettings
    let logins: ConsoleLogins
    let operatorToken: OperatorConsoleToken
    let summaries = SessionSummaries()
    let history = ConsoleHistory()

    init(configuration: CorralServer.Configuration) {
        settings = configuration.console
        logins = ConsoleLogins(
            configuration: .init(
                lifetime: configuration.console.loginLifetime, idleTimeout: configuration.console.loginIdleTimeout))
        operatorToken = OperatorConsoleToken(stateDirectory: configuration.stateDirectory)
    }
}

extension CorralServer {
    /// The console's own long-running work: sampling for the charts. Not in the host agent
    /// (`idleExit` set), which the command line starts on demand, on the unix socket only, and
    /// which should not ping the engine every few seconds for charts nobody opens.
    var consoleServices: [any Service] {
        guard configuration.console.enabled, configuration.idleExit == nil else { return [] }
        return [
            ConsoleSampler(
                runner: runner, history: console.history, summaries: console.summaries, sessions: sessions,
                interval: configuration.console.sampleInterval, logger: logger)
        ]
    }
}
