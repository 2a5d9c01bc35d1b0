import AsyncAlgorithms
import CorralCore
import CorralSandbox
import Synchronization

/// Reads one started command's output for as long as it runs, whoever listens.
///
/// envd's commands outlive the stream that started them, and take input from other calls, so
/// the handle that writes their stdin must not be released when a client goes away (reading
/// from a cancelled task would release it). The pump reads in a task of its own: while a
/// Start stream is subscribed, each chunk goes to it (waiting for a slow client); once the
/// client left, output is dropped so that the command never stalls on a full buffer.
package final class E2BCommandPump: Sendable {
    package enum Event: Sendable {
        case output(CommandOutputChunk)
        case ended(CommandStatus)
        case failed(any Error)
    }

    package let command: RunningCommand
    private let subscriber = Mutex<AsyncChannel<Event>?>(nil)

    package init(command: RunningCommand) {
        self.command = command
    }

    /// The events from now on, until the command ends or `unsubscribe()`.
    package func subscribe() -> AsyncChannel<Event> {
        let channel = AsyncChannel<Event>()
        subscriber.withLock { $0 = channel }
        return channel
    }

    package func unsubscribe() {
        let channel = subscriber.withLock { current -> AsyncChannel<Event>? in
            defer { current = nil }
            return current
        }
        channel?.finish()
    }

    /// Reads until the command ends, then calls `done`.
    package func run(done: @Sendable () -> Void) async {
        do {
            while let chunk = try await command.nextChunk() {
                await deliver(.output(chunk))
            }
            await deliver(.ended(try await command.wait()))
        } catch {
            await deliver(.failed(error))
        }
        done()
        unsubscribe()
    }

    private func deliver(_ event: Event) async {
        guard let channel = subscriber.withLock({ $0 }) else { return }
        await channel.send(event)
    }
}
