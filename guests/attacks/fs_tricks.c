// Attack (ours: accounting on stale paths): tricks that make a host-side record of a
// descriptor's path disagree with the descriptor itself, or that grow files without
// writing their bytes. One mode per run; every outcome is printed as a line.
//   stale DIR N      mkdir DIR/d, open it as D, rename d -> e, mkdir d, create d/x;
//                    then up to N times: create x through D and rename it aside, so a
//                    check of the remembered path DIR/d/x always finds a file
//                    ("stale: created K files")
//   fifo DIR         the same dance, then rename DIR/fifo (made by the host) into the
//                    renamed directory and open it through D ("fifo: ...")
//   probe PATH...    stat and open each path, printing errno numbers ("probe P stat=E open=E")
//   create PATH      create a file ("create: errno E" or "create: ok")
//   grow HOW FILE N  grow FILE to N bytes: HOW is truncate, seek (seek to N-1, write 1),
//                    pwrite (one byte at N-1) or allocate ("grow HOW: errno E" or "... ok")
//   symlink TARGET LINK   make a symlink ("symlink LINK: errno E" or "... ok")
//   rename OLD NEW   rename ("rename NEW: errno E" or "... ok")
//   link OLD NEW     hard link, not following a symlink ("link NEW: errno E" or "... ok")
//   write FILE       open FILE read-only and write a byte anyway ("write FILE: errno E")
// usage: fs_tricks MODE ARGS...
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

static int say(const char *what, const char *name, int failed) {
    if (failed) {
        printf("%s %s: errno %d\n", what, name, errno);
        return 1;
    }
    printf("%s %s: ok\n", what, name);
    return 0;
}

// mkdir DIR/d; D = open(DIR/d); rename DIR/d -> DIR/e; mkdir DIR/d. Returns D.
static int stale_dir(const char *dir) {
    char d[512], e[512];
    snprintf(d, sizeof d, "%s/d", dir);
    snprintf(e, sizeof e, "%s/e", dir);
    if (mkdir(d, 0755) != 0) return -1;
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    if (rename(d, e) != 0 || mkdir(d, 0755) != 0) return -1;
    return fd;
}

static int stale(const char *dir, long long n) {
    int fd = stale_dir(dir);
    if (fd < 0) {
        printf("stale: setup failed: errno %d\n", errno);
        return 2;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/d/x", dir);
    int decoy = open(path, O_WRONLY | O_CREAT, 0644);
    if (decoy < 0) {
        printf("stale: decoy failed: errno %d\n", errno);
        return 2;
    }
    close(decoy);
    long long made = 0;
    char name[64];
    for (; made < n; made++) {
        int file = openat(fd, "x", O_WRONLY | O_CREAT | O_EXCL, 0644);
        snprintf(name, sizeof name, "f%07lld", made);
        if (file < 0 || close(file) != 0 || renameat(fd, "x", fd, name) != 0) {
            printf("stale: create failed after %lld files: errno %d\n", made, errno);
            return 1;
        }
    }
    printf("stale: created %lld files\n", made);
    return 0;
}

static int fifo(const char *dir) {
    int fd = stale_dir(dir);
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/fifo", dir);
    snprintf(to, sizeof to, "%s/e/p", dir);
    if (fd < 0 || rename(from, to) != 0) {
        printf("fifo: setup failed: errno %d\n", errno);
        return 2;
    }
    int pipe = openat(fd, "p", O_RDONLY);
    if (pipe < 0) {
        printf("fifo: open refused: errno %d\n", errno);
        return 0;
    }
    printf("fifo: opened\n");
    return 1;
}

static int probe(int count, char **paths) {
    struct stat st;
    for (int i = 0; i < count; i++) {
        int s = stat(paths[i], &st) == 0 ? 0 : errno;
        int fd = open(paths[i], O_RDONLY);
        int o = fd >= 0 ? 0 : errno;
        if (fd >= 0) close(fd);
        printf("probe %s stat=%d open=%d\n", paths[i], s, o);
    }
    return 0;
}

static int grow(const char *how, const char *file, long long size) {
    int fd = open(file, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return say("grow", how, 1);
    int failed;
    if (strcmp(how, "truncate") == 0) {
        failed = ftruncate(fd, size) != 0;
    } else if (strcmp(how, "seek") == 0) {
        failed = lseek(fd, size - 1, SEEK_SET) < 0 || write(fd, "x", 1) != 1;
    } else if (strcmp(how, "pwrite") == 0) {
        failed = pwrite(fd, "x", 1, size - 1) != 1;
    } else {
        int err = posix_fallocate(fd, 0, size);
        errno = err;
        failed = err != 0;
    }
    return say("grow", how, failed);
}

int main(int argc, char **argv) {
    attack_init();
    const char *mode = arg_str(argc, argv, 1, "");
    if (strcmp(mode, "stale") == 0) return stale(arg_str(argc, argv, 2, "/out"),
                                                  arg_num(argc, argv, 3, 5000));
    if (strcmp(mode, "fifo") == 0) return fifo(arg_str(argc, argv, 2, "/out"));
    if (strcmp(mode, "probe") == 0) return probe(argc - 2, argv + 2);
    if (strcmp(mode, "create") == 0 && argc > 2) {
        int fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
        return say("create", argv[2], fd < 0);
    }
    if (strcmp(mode, "grow") == 0 && argc > 4) return grow(argv[2], argv[3],
                                                           arg_num(argc, argv, 4, 0));
    if (strcmp(mode, "symlink") == 0 && argc > 3) return say("symlink", argv[3],
                                                             symlink(argv[2], argv[3]) != 0);
    if (strcmp(mode, "rename") == 0 && argc > 3) return say("rename", argv[3],
                                                            rename(argv[2], argv[3]) != 0);
    if (strcmp(mode, "link") == 0 && argc > 3) {
        return say("link", argv[3], linkat(AT_FDCWD, argv[2], AT_FDCWD, argv[3], 0) != 0);
    }
    if (strcmp(mode, "write") == 0 && argc > 2) {
        int fd = open(argv[2], O_RDONLY);
        return say("write", argv[2], fd < 0 || write(fd, "x", 1) != 1);
    }
    printf("usage: fs_tricks stale|fifo|probe|create|grow|symlink|rename|link|write ARGS...\n");
    return 2;
}
