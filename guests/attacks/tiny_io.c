// Attack (paper: rapid small I/O): one-byte reads and/or writes at full speed on
// DIR/tiny.bin for SECONDS (default 30) or MAX (default 100000000) calls.
// Writes cycle over the first 4 KiB so the file never grows past one page.
// usage: tiny_io [write|read|both] [SECONDS] [MAX] [DIR]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    const char *mode = arg_str(argc, argv, 1, "both");
    int do_write = strcmp(mode, "read") != 0, do_read = strcmp(mode, "write") != 0;
    budget_t b = budget_start((double)arg_num(argc, argv, 2, 30), 1024);
    long long max = arg_num(argc, argv, 3, 100000000);
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.bin", arg_str(argc, argv, 4, "/scratch"));
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        printf("tiny_io: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char byte = 'x';
    if (!do_write && pwrite(fd, &byte, 1, 0) != 1) {
        printf("tiny_io: cannot seed the file: %s\n", strerror(errno));
        return 1;
    }
    long long calls = 0, failed = 0;
    while (calls < max && budget_left(&b)) {
        off_t at = (off_t)(calls % 4096);
        if (do_write && pwrite(fd, &byte, 1, at) != 1) failed++;
        if (do_read && pread(fd, &byte, 1, do_write ? at : 0) < 0) failed++;
        calls++;
    }
    printf("tiny_io: %lld rounds (%s), %lld failed calls\n", calls, mode, failed);
    return 0;
}
