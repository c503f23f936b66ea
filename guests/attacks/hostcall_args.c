// Attack (ours: hostile arguments to the owned host calls): each mode passes what no
// libc would, straight to the WASI imports, and prints one line per call it makes.
//   longpath CALL MB FD  CALL (symlink_target, symlink_link, open, mkdir, rename, link,
//                        unlink) with a path of MB MiB of "a/" on FD ("CALL: errno E")
//   lift                 make a/a/.../a (8 deep) and a/.../a/root -> ../../../../../../../..
//                        (8 up: the preopen itself), then rename the deepest directory to
//                        "top" ("lift: symlink=E rename=E")
//   alias FD             create FD/f, seek to 3 GiB and write one iovec of length
//                        0xFFFFFFFF whose nwritten is that iovec's own length field
//                        ("alias: errno E nwritten N")
//   badfd CALL FD        CALL (mkdir, creat, symlink, link) on descriptor FD ("badfd CALL:
//                        errno E")
//   iovecs CALL COUNT    CALL (pread, read, sock_recv, sock_send) on a file of preopen 3 with
//                        COUNT iovecs, only the last one non-empty ("iovecs CALL: errno E n N")
//   hoard N              create and keep open up to N files in preopen 3 ("hoard: opened K
//                        errno E")
// usage: hostcall_args MODE ARGS...
#include <stdint.h>
#include <wasi/api.h>
#include "common.h"

// The raw imports, which take (pointer, length): wasi-libc's wrappers would strlen().
#define RAW(name) __attribute__((__import_module__("wasi_snapshot_preview1"), __import_name__(#name)))
int32_t raw_symlink(int32_t, int32_t, int32_t, int32_t, int32_t) RAW(path_symlink);
int32_t raw_open(int32_t, int32_t, int32_t, int32_t, int32_t, int64_t, int64_t, int32_t,
                 int32_t) RAW(path_open);
int32_t raw_mkdir(int32_t, int32_t, int32_t) RAW(path_create_directory);
int32_t raw_unlink(int32_t, int32_t, int32_t) RAW(path_unlink_file);
int32_t raw_rename(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t) RAW(path_rename);
int32_t raw_link(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t) RAW(path_link);

static char *long_path(long long mb, size_t *len) {
    size_t n = (size_t)mb * 1024 * 1024;
    char *p = malloc(n + 2);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i += 2) { p[i] = 'a'; p[i + 1] = '/'; }
    p[n] = 'x';
    p[n + 1] = 0;
    *len = n + 1;
    return p;
}

static int longpath(const char *call, long long mb, int fd) {
    size_t len;
    char *p = long_path(mb, &len);
    if (!p) { printf("longpath: no memory\n"); return 2; }
    __wasi_fd_t out;
    int e = -1;
    if (!strcmp(call, "symlink_target"))
        e = raw_symlink((intptr_t)p, len, fd, (intptr_t)"zz", 2);
    else if (!strcmp(call, "symlink_link"))
        e = raw_symlink((intptr_t)"d", 1, fd, (intptr_t)p, len);
    else if (!strcmp(call, "open"))
        e = raw_open(fd, 1, (intptr_t)p, len, 0, 0, 0, 0, (intptr_t)&out);
    else if (!strcmp(call, "mkdir"))
        e = raw_mkdir(fd, (intptr_t)p, len);
    else if (!strcmp(call, "unlink"))
        e = raw_unlink(fd, (intptr_t)p, len);
    else if (!strcmp(call, "rename"))
        e = raw_rename(fd, (intptr_t)p, len, fd, (intptr_t)"zz", 2);
    else if (!strcmp(call, "link"))
        e = raw_link(fd, 0, (intptr_t)"zz", 2, fd, (intptr_t)p, len);
    printf("%s: errno %d\n", call, e);
    return 0;
}

static int lift(void) {
    char dir[64] = "a";
    for (int i = 0; i < 8; i++) {
        (void)__wasi_path_create_directory(3, dir);
        if (i < 7) strcat(dir, "/a");
    }
    char link[80];
    snprintf(link, sizeof link, "%s/root", dir);
    int e1 = __wasi_path_symlink("../../../../../../../..", 3, link);
    int e2 = __wasi_path_rename(3, dir, 3, "top");
    printf("lift: symlink=%d rename=%d\n", e1, e2);
    return 0;
}

static int alias(int dirfd) {
    __wasi_fd_t fd;
    int e = __wasi_path_open(dirfd, 0, "f", __WASI_OFLAGS_CREAT, 0x1fffffff, 0x1fffffff, 0, &fd);
    if (e) { printf("alias: open errno %d\n", e); return 2; }
    static char buf[4 << 20];
    memset(buf, 'A', sizeof buf);
    __wasi_filesize_t pos;
    (void)__wasi_fd_seek(fd, 3LL << 30, __WASI_WHENCE_SET, &pos);
    static __wasi_ciovec_t iov;
    iov.buf = (const uint8_t *)buf;
    iov.buf_len = 0xFFFFFFFFu;
    e = __wasi_fd_write(fd, &iov, 1, (__wasi_size_t *)&iov.buf_len);
    printf("alias: errno %d nwritten %u\n", e, (unsigned)iov.buf_len);
    return 0;
}

static int badfd(const char *call, int fd) {
    __wasi_fd_t out;
    int e = -1;
    if (!strcmp(call, "mkdir")) e = __wasi_path_create_directory(fd, "newdir");
    else if (!strcmp(call, "creat"))
        e = __wasi_path_open(fd, 0, "newfile", __WASI_OFLAGS_CREAT, 0x1fffffff, 0x1fffffff, 0, &out);
    else if (!strcmp(call, "symlink")) e = __wasi_path_symlink("x", fd, "newlink");
    else if (!strcmp(call, "link")) e = __wasi_path_link(fd, 0, "existing", fd, "newlink2");
    printf("badfd %s: errno %d\n", call, e);
    return 0;
}

static int iovecs(const char *call, long long count) {
    __wasi_iovec_t *v = calloc((size_t)count, sizeof *v);
    static char b[16];
    if (!v) { printf("iovecs: no memory\n"); return 2; }
    v[count - 1].buf = (uint8_t *)b;
    v[count - 1].buf_len = sizeof b;
    __wasi_fd_t fd;
    int e = __wasi_path_open(3, 0, "f", __WASI_OFLAGS_CREAT, 0x1fffffff, 0x1fffffff, 0, &fd);
    if (e) { printf("iovecs: open errno %d\n", e); return 2; }
    __wasi_ciovec_t w = {(const uint8_t *)"hello world 1234", 16};
    __wasi_size_t n = 0;
    (void)__wasi_fd_write(fd, &w, 1, &n);
    (void)__wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &(__wasi_filesize_t){0});
    n = 0;
    if (!strcmp(call, "pread")) e = __wasi_fd_pread(fd, v, count, 0, &n);
    else if (!strcmp(call, "read")) e = __wasi_fd_read(fd, v, count, &n);
    else if (!strcmp(call, "sock_recv")) {
        __wasi_roflags_t ro;
        e = __wasi_sock_recv(fd, v, count, 0, &n, &ro);
    } else if (!strcmp(call, "sock_send"))
        e = __wasi_sock_send(fd, (__wasi_ciovec_t *)v, count, 0, &n);
    printf("iovecs %s: errno %d n %u\n", call, e, (unsigned)n);
    return 0;
}

static int hoard(long long n) {
    char name[32];
    long long i;
    int e = 0;
    __wasi_fd_t fd;
    for (i = 0; i < n; i++) {
        snprintf(name, sizeof name, "f%lld", i);
        e = __wasi_path_open(3, 0, name, __WASI_OFLAGS_CREAT, 0x1fffffff, 0x1fffffff, 0, &fd);
        if (e) break;
    }
    printf("hoard: opened %lld errno %d\n", i, e);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = arg_str(argc, argv, 1, "");
    if (!strcmp(mode, "longpath") && argc > 4)
        return longpath(argv[2], arg_num(argc, argv, 3, 1), (int)arg_num(argc, argv, 4, 3));
    if (!strcmp(mode, "lift")) return lift();
    if (!strcmp(mode, "alias")) return alias((int)arg_num(argc, argv, 2, 3));
    if (!strcmp(mode, "badfd") && argc > 3) return badfd(argv[2], (int)arg_num(argc, argv, 3, 99));
    if (!strcmp(mode, "iovecs") && argc > 3) return iovecs(argv[2], arg_num(argc, argv, 3, 1));
    if (!strcmp(mode, "hoard")) return hoard(arg_num(argc, argv, 2, 5000));
    printf("usage: hostcall_args MODE ARGS...\n");
    return 2;
}
