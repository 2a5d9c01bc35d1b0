#ifndef CORRAL_CCORRAL_PROCESS_H
#define CORRAL_CCORRAL_PROCESS_H

#include <sys/types.h>

/// Starts `path` as a daemon of the command line: in a session of its own (so that the
/// terminal's signals and the caller's exit leave it alone), stdin on /dev/null, stdout and
/// stderr on `output_fd`, `ready_fd` as its descriptor 3 and every other descriptor closed.
/// Returns 0 and the child's pid, or an errno. posix_spawn's POSIX_SPAWN_SETSID and
/// addclosefrom_np are GNU extensions that Swift does not import.
int corral_spawn_detached(const char *path, char *const argv[], char *const envp[], int output_fd, int ready_fd,
                          pid_t *pid);

#endif
