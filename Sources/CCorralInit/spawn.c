#define _GNU_SOURCE
#include "CCorralInit.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

// The child of vfork shares the parent's memory until it execs or exits: it may only make
// system calls and write to `report`, which the parent reads once it runs again. No malloc,
// no stdio, no return from this function in the child.
struct spawn_report {
    volatile int error;
    volatile int step;
};

static int move_descriptor(int from, int to) {
    if (from == to) {
        // dup2 onto itself keeps close-on-exec, which would close it at the exec.
        int flags = fcntl(from, F_GETFD);
        return flags < 0 ? -1 : fcntl(from, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return dup2(from, to) < 0 ? -1 : 0;
}

int corral_spawn(const corral_spawn_request *request, pid_t *pid, int *step) {
    struct spawn_report report = {0, CORRAL_SPAWN_STEP_NONE};
    sigset_t all, previous;
    sigfillset(&all);
    // No signal handler may run in the child while it shares our memory.
    pthread_sigmask(SIG_SETMASK, &all, &previous);

    pid_t child = vfork();
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        if (setsid() < 0) {
            report.step = CORRAL_SPAWN_STEP_SESSION;
            report.error = errno;
            _exit(127);
        }
        if (request->terminal_fd >= 0 && ioctl(request->terminal_fd, TIOCSCTTY, 0) < 0) {
            report.step = CORRAL_SPAWN_STEP_TERMINAL;
            report.error = errno;
            _exit(127);
        }
        int sources[3] = {request->stdin_fd, request->stdout_fd, request->stderr_fd};
        // A source below 3 could be overwritten by an earlier dup2: move sources up first.
        for (int index = 0; index < 3; index++) {
            if (sources[index] >= 0 && sources[index] < 3 && sources[index] != index) {
                int moved = fcntl(sources[index], F_DUPFD_CLOEXEC, 3);
                if (moved < 0) {
                    report.step = CORRAL_SPAWN_STEP_DESCRIPTORS;
                    report.error = errno;
                    _exit(127);
                }
                for (int other = index; other < 3; other++) {
                    if (sources[other] == sources[index] && other != index) sources[other] = moved;
                }
                sources[index] = moved;
            }
        }
        for (int index = 0; index < 3; index++) {
            if (sources[index] >= 0 && move_descriptor(sources[index], index) < 0) {
                report.step = CORRAL_SPAWN_STEP_DESCRIPTORS;
                report.error = errno;
                _exit(127);
            }
        }
#ifdef SYS_close_range
        // Everything corral-init opens is close-on-exec; this is a second line for kernels
        // that have it (gVisor may not: then ENOSYS, and nothing is lost).
        syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
        if (request->directory != NULL && chdir(request->directory) < 0) {
            report.step = CORRAL_SPAWN_STEP_DIRECTORY;
            report.error = errno;
            _exit(127);
        }
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        int error = ENOENT;
        int denied = 0;
        for (char *const *candidate = request->candidates; *candidate != NULL; candidate++) {
            execve(*candidate, request->argv, request->envp);
            error = errno;
            if (error == EACCES) {
                denied = 1;
            } else if (error != ENOENT && error != ENOTDIR && error != ESTALE && error != ELOOP
                       && error != ENAMETOOLONG) {
                break;
            }
        }
        report.step = CORRAL_SPAWN_STEP_EXEC;
        report.error = (denied && (error == ENOENT || error == ENOTDIR)) ? EACCES : error;
        _exit(127);
    }
    int forkError = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (child < 0) {
        *step = CORRAL_SPAWN_STEP_FORK;
        return forkError;
    }
    if (report.error != 0) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        *step = report.step;
        return report.error;
    }
    *pid = child;
    *step = CORRAL_SPAWN_STEP_NONE;
    return 0;
}

int corral_set_dumpable(int dumpable) { return prctl(PR_SET_DUMPABLE, (unsigned long)dumpable, 0UL, 0UL, 0UL); }

int corral_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL); }

int corral_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size;
    memset(&size, 0, sizeof size);
    size.ws_row = rows;
    size.ws_col = columns;
    return ioctl(fd, TIOCSWINSZ, &size);
}

int corral_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) < 0) return -1;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

int corral_open_pty(int *primary, char *name, size_t name_length) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return errno;
    if (grantpt(fd) < 0 || unlockpt(fd) < 0 || ptsname_r(fd, name, name_length) != 0) {
        int error = errno != 0 ? errno : EIO;
        close(fd);
        return error;
    }
    *primary = fd;
    return 0;
}

int corral_signalfd(const sigset_t *mask) { return signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK); }

int corral_drain_signalfd(int fd) {
    struct signalfd_siginfo info[16];
    int count = 0;
    for (;;) {
        ssize_t got = read(fd, info, sizeof info);
        if (got > 0) {
            count += (int)(got / (ssize_t)sizeof info[0]);
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        return count;
    }
}

int corral_pipe(int fds[2], int nonblock_read, int nonblock_write) {
    if (pipe2(fds, O_CLOEXEC) < 0) return -1;
    if (nonblock_read) fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    if (nonblock_write) fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    return 0;
}

int corral_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

long long corral_wall_milliseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}
