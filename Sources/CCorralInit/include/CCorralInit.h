// What corral-init needs from Linux that Swift cannot call or that Glibc's module does not
// export: the variadic prctl and ioctl, a vfork-based spawn whose child makes a terminal its
// controlling one, signalfd, pipe2, accept4 and the pseudo-terminal calls. Everything here
// is a thin wrapper: policy stays in Swift.
#ifndef CCORRALINIT_H
#define CCORRALINIT_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

/// What `corral_spawn` starts. Every descriptor corral-init holds is close-on-exec, so the
/// child sees 0, 1 and 2 and nothing else.
typedef struct corral_spawn_request {
    /// NULL-terminated argument vector; argv[0] is what the program sees as its name.
    char *const *argv;
    /// NULL-terminated environment.
    char *const *envp;
    /// NULL-terminated paths to try with execve, in order (the caller resolved PATH).
    char *const *candidates;
    /// Changed to before the exec; NULL to stay.
    const char *directory;
    /// Duplicated onto 0, 1 and 2.
    int stdin_fd;
    int stdout_fd;
    int stderr_fd;
    /// A terminal's replica (opened O_NOCTTY): made the controlling terminal of the child's
    /// new session before the duplication. -1 for none.
    int terminal_fd;
} corral_spawn_request;

/// Where a failed spawn failed, for the message.
enum {
    CORRAL_SPAWN_STEP_NONE = 0,
    CORRAL_SPAWN_STEP_FORK = 1,
    CORRAL_SPAWN_STEP_SESSION = 2,
    CORRAL_SPAWN_STEP_TERMINAL = 3,
    CORRAL_SPAWN_STEP_DESCRIPTORS = 4,
    CORRAL_SPAWN_STEP_DIRECTORY = 5,
    CORRAL_SPAWN_STEP_EXEC = 6,
};

/// Starts the request's program in a session (and process group) of its own, with every
/// signal unblocked. Returns 0 and sets *pid, or an errno and sets *step; a child that failed
/// after the fork has been reaped already.
int corral_spawn(const corral_spawn_request *request, pid_t *pid, int *step);

/// PR_SET_DUMPABLE; returns prctl's result.
int corral_set_dumpable(int dumpable);
/// PR_GET_DUMPABLE.
int corral_get_dumpable(void);

/// TIOCSWINSZ on a terminal: the kernel sends SIGWINCH to its foreground process group.
int corral_set_window_size(int fd, unsigned short rows, unsigned short columns);
/// TIOCGWINSZ; 0 on success.
int corral_get_window_size(int fd, unsigned short *rows, unsigned short *columns);

/// A new pseudo-terminal: the primary side, close-on-exec and non-blocking, in *primary, and
/// the replica's path in `name`. Returns 0 or an errno.
int corral_open_pty(int *primary, char *name, size_t name_length);

/// A close-on-exec, non-blocking signalfd for `mask` (the signals must be blocked); -1 on error.
int corral_signalfd(const sigset_t *mask);
/// Reads and discards what a signalfd holds; returns how many signals it held.
int corral_drain_signalfd(int fd);

/// pipe2 with O_CLOEXEC, and O_NONBLOCK on the ends asked for.
int corral_pipe(int fds[2], int nonblock_read, int nonblock_write);

/// accept4 with SOCK_CLOEXEC.
int corral_accept(int fd);

/// CLOCK_REALTIME in milliseconds since the epoch.
long long corral_wall_milliseconds(void);

#endif
