// The benchmark's process launcher (not a guest): `rusage FD PROGRAM [ARG...]` vforks, runs
// PROGRAM with this process's stdin, stdout and stderr, reaps it with wait4 and writes to
// FD one line: "STATUS MAXRSS_KIB UTIME_US STIME_US FORK_NS REAPED_NS" (the raw wait
// status, the child's rusage, CLOCK_MONOTONIC just before the fork and just after the reap),
// or "exec ERRNO" first when PROGRAM could not be started.
//
// Why: Linux carries the high-water mark of the memory a process had before exec into the
// ru_maxrss of what it execs, so a child forked (or vforked) from the ~22 MB Python agent
// reported the agent's peak, not its own. Forked from this small static program, the
// child's pre-exec memory is this program's (a few hundred KiB).
//
// Both this process and the child die with their parent (PR_SET_PDEATHSIG): a measuring
// agent that is killed leaves nothing running.
// native: only
// build: -O2
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void write_all(int fd, const char *text, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        static const char usage[] = "usage: rusage FD PROGRAM [ARG...]\n";
        write_all(2, usage, sizeof usage - 1);
        return 125;
    }
    char *end = NULL;
    long report = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || report < 3 || report > 1 << 20 ||
        fcntl((int)report, F_SETFD, FD_CLOEXEC) != 0) {
        static const char bad[] = "rusage: FD must be an open descriptor above 2\n";
        write_all(2, bad, sizeof bad - 1);
        return 125;
    }
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) return 125;  // the parent died before the line above
    pid_t self = getpid();
    long long forked = now_ns();
    // vfork: the child borrows this small memory until its exec (nothing to copy or
    // unmap), as the vfork of Python's subprocess did, so the child's CPU time is the same.
    pid_t child = vfork();
    if (child < 0) {
        char line[64];
        int len = snprintf(line, sizeof line, "exec %d\n", errno);
        write_all((int)report, line, (size_t)len);
        return 0;
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != self) _exit(127);
        execvp(argv[2], argv + 2);
        char line[64];
        int len = snprintf(line, sizeof line, "exec %d\n", errno);
        write_all((int)report, line, (size_t)len);
        _exit(127);
    }
    // The measuring side sees end of output when the child closes its copies.
    close(0);
    close(1);
    close(2);
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    while (wait4(child, &status, 0, &usage) < 0) {
        if (errno != EINTR) return 125;
    }
    long long reaped = now_ns();
    char line[192];
    int len = snprintf(line, sizeof line, "%d %ld %lld %lld %lld %lld\n", status,
                       usage.ru_maxrss,
                       (long long)usage.ru_utime.tv_sec * 1000000LL + usage.ru_utime.tv_usec,
                       (long long)usage.ru_stime.tv_sec * 1000000LL + usage.ru_stime.tv_usec,
                       forked, reaped);
    write_all((int)report, line, (size_t)len);
    return 0;
}
