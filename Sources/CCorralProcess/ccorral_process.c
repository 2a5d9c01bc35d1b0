#define _GNU_SOURCE
#include "ccorral_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

// One spawn for both entry points: `stdin_fd` -1 is /dev/null, `extra_fd` (if not -1) becomes
// descriptor 3, `new_session` runs the child in a session of its own. Every other descriptor
// is closed in the child, no signal is blocked and the usual signals are at their defaults.
static int spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd, int stderr_fd,
                 int extra_fd, int new_session, const char *directory, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int status = posix_spawn_file_actions_init(&actions);
    if (status != 0) return status;
    status = posix_spawnattr_init(&attributes);
    if (status != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return status;
    }
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    int reset[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD};
    for (unsigned i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaddset(&defaults, reset[i]);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (new_session ? POSIX_SPAWN_SETSID : 0);
    if ((status = posix_spawnattr_setflags(&attributes, flags)) == 0 &&
        (status = posix_spawnattr_setsigmask(&attributes, &none)) == 0 &&
        (status = posix_spawnattr_setsigdefault(&attributes, &defaults)) == 0 &&
        (status = stdin_fd < 0 ? posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                               : posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0)) == 0 &&
        (status = posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1)) == 0 &&
        (status = posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2)) == 0 &&
        (extra_fd < 0 || (status = posix_spawn_file_actions_adddup2(&actions, extra_fd, 3)) == 0) &&
        (directory == NULL || (status = posix_spawn_file_actions_addchdir_np(&actions, directory)) == 0) &&
        (status = posix_spawn_file_actions_addclosefrom_np(&actions, extra_fd < 0 ? 3 : 4)) == 0) {
        status = posix_spawn(pid, path, &actions, &attributes, argv, envp);
    }
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return status;
}

int corral_spawn_detached(const char *path, char *const argv[], char *const envp[], int output_fd, int ready_fd,
                          pid_t *pid) {
    return spawn(path, argv, envp, -1, output_fd, output_fd, ready_fd, 1, NULL, pid);
}

int corral_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int stdout_fd, int stderr_fd,
                 const char *directory, pid_t *pid) {
    return spawn(path, argv, envp, stdin_fd, stdout_fd, stderr_fd, -1, 0, directory, pid);
}

int corral_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
