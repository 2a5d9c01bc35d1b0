#ifndef CORRAL_CCORRAL_PROCESS_H
#define CORRAL_CCORRAL_PROCESS_H

#include <sys/types.h>

/// Starts `path` as a daemon of the command line: in a session of its own (so that the
/// terminal's signals and the caller's exit leave it alone), stdin on /dev/null, stdout and
/// stderr on `output_fd`, `ready_fd` as its descriptor 3, every other descriptor closed, and
/// signals as corral_spawn leaves them.
/// Returns 0 and the child's pid, or an errno. posix_spawn's POSIX_SPAWN_SETSID and
/// addclosefrom_np are GNU extensions that Swift does not import.
int corral_spawn_detached(const char *path, char *const argv[], char *const envp[], int output_fd, int ready_fd,
                          pid_t *pid);

/// Starts `path` with `stdin_fd`, `stdout_fd` and `stderr_fd` as its descriptors 0, 1 and 2,
/// every other descriptor closed, no signal blocked and the usual signals at their defaults
/// (whatever the caller blocks or ignores), in `directory` when not NULL. Returns 0 and the
/// child's pid, or an errno. Foundation's Process reads /proc/self/fd in the parent to find
/// what to close, and crashed doing it (a dirent over-read); this closes in the child.
int corral_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd, int stderr_fd,
                 const char *directory, pid_t *pid);

/// pipe2(fds, O_CLOEXEC): both ends closed on exec, from the start (pipe2 is a GNU
/// extension that Swift does not import).
int corral_pipe(int fds[2]);

#endif
