// Attack (paper: pseudo-terminals and devices): open device files through a
// preopened device directory (default /dev) and read from them. /dev/ptmx is opened
// up to PTYS times (default 8) at once: each open allocates a pseudo-terminal.
// Every device that opens is a breach, reported as a "BREACH" line.
// usage: device_open [DEVDIR] [PTYS]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

static const char *devices[] = {"random", "urandom", "zero", "null", "full", "tty", "kmsg", "mem"};

static int try_open(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) {
        printf("blocked %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[64];
    ssize_t got = read(fd, buf, sizeof buf);
    printf("BREACH opened %s (read %zd bytes)\n", path, got);
    return fd;
}

int main(int argc, char **argv) {
    attack_init();
    const char *dir = arg_str(argc, argv, 1, "/dev");
    long long ptys = arg_num(argc, argv, 2, 8);
    char path[512];
    int breaches = 0;
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, devices[i]);
        int fd = try_open(path, O_RDONLY | O_NONBLOCK);
        if (fd >= 0) {
            breaches++;
            close(fd);
        }
    }
    int held[256];
    long long opened = 0;
    if (ptys > 256) ptys = 256;
    snprintf(path, sizeof path, "%s/ptmx", dir);
    while (opened < ptys) {
        int fd = try_open(path, O_RDONLY | O_NONBLOCK);  // allocates a pty all the same
        if (fd < 0) break;
        held[opened++] = fd;
    }
    for (long long i = 0; i < opened; i++) close(held[i]);
    breaches += (int)opened;
    printf("device_open: %d devices opened\n", breaches);
    return 0;
}
