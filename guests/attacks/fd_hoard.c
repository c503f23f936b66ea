// Attack (ours: descriptors): open DIR/hoard.bin (default /scratch) up to MAX times
// (default 100000) without closing any, then hold them for HOLD seconds (default 0).
// usage: fd_hoard [MAX] [DIR] [HOLD]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    long long max = arg_num(argc, argv, 1, 100000);
    char path[512];
    snprintf(path, sizeof path, "%s/hoard.bin", arg_str(argc, argv, 2, "/scratch"));
    long long hold = arg_num(argc, argv, 3, 0);
    long long held = 0;
    int flags = O_RDWR | O_CREAT;
    for (; held < max; held++) {
        int fd = open(path, flags, 0644);
        if (fd < 0 && held == 0) {
            flags = O_RDONLY;  // a read-only directory: hoard descriptors on the directory
            snprintf(path, sizeof path, "%s", arg_str(argc, argv, 2, "/scratch"));
            fd = open(path, flags | O_DIRECTORY);
        }
        if (fd < 0) {
            printf("fd_hoard: open failed after %lld descriptors: %s\n", held, strerror(errno));
            break;
        }
    }
    printf("fd_hoard: holding %lld descriptors\n", held);
    if (hold > 0) {
        struct timespec ts = {(time_t)hold, 0};
        nanosleep(&ts, NULL);
    }
    return 0;
}
