// Attack (paper: fsync storm): pwrite one byte then fsync (or fdatasync) in a loop,
// for SECONDS (default 30) or MAX (default 10000000) rounds, on DIR/sync.bin.
// The file stays one byte long: a byte quota never sees the device flushes.
// usage: fsync_storm [fsync|fdatasync] [SECONDS] [MAX] [DIR]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    int data_only = strcmp(arg_str(argc, argv, 1, "fsync"), "fdatasync") == 0;
    budget_t b = budget_start((double)arg_num(argc, argv, 2, 30), 64);
    long long max = arg_num(argc, argv, 3, 10000000);
    char path[512];
    snprintf(path, sizeof path, "%s/sync.bin", arg_str(argc, argv, 4, "/scratch"));
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        printf("fsync_storm: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    long long rounds = 0, failed = 0;
    char byte = 0;
    while (rounds < max && budget_left(&b)) {
        byte++;
        if (pwrite(fd, &byte, 1, 0) != 1) failed++;
        if ((data_only ? fdatasync(fd) : fsync(fd)) != 0) failed++;
        rounds++;
    }
    printf("fsync_storm: %lld rounds of pwrite+%s, %lld failed calls\n", rounds,
           data_only ? "fdatasync" : "fsync", failed);
    return 0;
}
