// Attack (paper: large writes): write MAX_MIB (default 1024) in 1 MiB chunks to
// DIR/big.bin (default /scratch).
// usage: disk_write [MAX_MIB] [DIR]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

static char chunk[1 << 20];

int main(int argc, char **argv) {
    attack_init();
    long long max_mib = arg_num(argc, argv, 1, 1024);
    char path[512];
    snprintf(path, sizeof path, "%s/big.bin", arg_str(argc, argv, 2, "/scratch"));
    memset(chunk, 0xA5, sizeof chunk);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("disk_write: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    long long mib = 0;
    for (; mib < max_mib; mib++) {
        if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) {
            printf("disk_write: write failed after %lld MiB: %s\n", mib, strerror(errno));
            return 1;
        }
    }
    close(fd);
    printf("disk_write: wrote %lld MiB\n", mib);
    return 0;
}
