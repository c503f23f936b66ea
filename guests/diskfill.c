// Disk fill: appends 64 KiB chunks to FILE (default /out/fill.bin) until a write fails.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/out/fill.bin";
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 2; }
    static char chunk[65536];
    memset(chunk, 'd', sizeof chunk);
    long long total = 0;
    for (;;) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n <= 0) { printf("wrote %lld bytes\n", total); return 1; }
        total += n;
    }
}
