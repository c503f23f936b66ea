// Attack (ours: preopen escape): try to leave the preopened directory DIR
// (default /scratch) with "..", absolute paths, symlinks planted in DIR that point
// outside, a rename out of DIR and a directory made outside. Each attempt prints
// "blocked ..." or, when it got outside, "BREACH ...". Planting a symlink is not yet an
// escape (following it is): it prints "planted ..." or "blocked ...".
// usage: escape [DIR]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>
#include "common.h"

static int breaches = 0;

static void report(const char *what, int ok) {
    if (ok) {
        printf("BREACH %s\n", what);
        breaches++;
    } else {
        printf("blocked %s: %s\n", what, strerror(errno));
    }
}

static void plant(const char *target, const char *link) {
    if (symlink(target, link) == 0) {
        printf("planted symlink %s -> %s\n", link, target);
    } else {
        printf("blocked symlink %s -> %s: %s\n", link, target, strerror(errno));
    }
}

static void try_read(const char *label, const char *path) {
    char what[600];
    snprintf(what, sizeof what, "%s: open %s", label, path);
    int fd = open(path, O_RDONLY);
    report(what, fd >= 0);
    if (fd >= 0) close(fd);
}

// path_open on the preopened descriptor itself, bypassing libc's path handling.
static void raw_open(__wasi_fd_t dirfd, const char *path) {
    __wasi_fd_t fd;
    __wasi_errno_t err = __wasi_path_open(dirfd, 0, path, 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    char what[600];
    snprintf(what, sizeof what, "raw path_open(fd %u, %s)", dirfd, path);
    errno = err;
    report(what, err == 0);
    if (err == 0) (void)__wasi_fd_close(fd);
}

int main(int argc, char **argv) {
    attack_init();
    const char *dir = arg_str(argc, argv, 1, "/scratch");
    char a[512], b[512];
    try_read("absolute", "/etc/passwd");
    snprintf(a, sizeof a, "%s/../etc/passwd", dir);
    try_read("dotdot", a);
    snprintf(a, sizeof a, "%s/../../../../../../etc/passwd", dir);
    try_read("dotdot", a);
    for (__wasi_fd_t fd = 3; fd < 6; fd++) {
        raw_open(fd, "../../../../../../etc/passwd");
        raw_open(fd, "/etc/passwd");
        raw_open(fd, "..");
    }
    snprintf(a, sizeof a, "%s/abs_link", dir);
    plant("/etc", a);
    snprintf(b, sizeof b, "%s/passwd", a);
    try_read("absolute symlink", b);
    snprintf(a, sizeof a, "%s/rel_link", dir);
    plant("../../../../../../etc", a);
    snprintf(b, sizeof b, "%s/passwd", a);
    try_read("relative symlink", b);
    snprintf(a, sizeof a, "%s/parent_link", dir);
    plant("..", a);
    snprintf(b, sizeof b, "%s/planted_outside", a);
    int fd = open(b, O_WRONLY | O_CREAT, 0644);
    report("create a file through parent_link", fd >= 0);
    if (fd >= 0) close(fd);
    snprintf(a, sizeof a, "%s/moved.txt", dir);
    fd = open(a, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
    snprintf(b, sizeof b, "%s/../moved_outside.txt", dir);
    report("rename a file to ..", rename(a, b) == 0);
    snprintf(b, sizeof b, "%s/../made_outside", dir);
    report("mkdir ..", mkdir(b, 0755) == 0);
    printf("escape: %d breaches\n", breaches);
    return 0;
}
