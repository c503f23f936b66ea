// Benign I/O workload: writes SIZE KiB (default 4096) to FILE in 4 KiB chunks, reads it
// back in 4 KiB chunks, prints a checksum. Used to measure the cost of metered host calls.
// native: yes
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long kib = argc > 1 ? atol(argv[1]) : 4096;
    const char *path = argc > 2 ? argv[2] : "/out/io.bin";
    static unsigned char chunk[4096];
    for (int i = 0; i < 4096; i++) chunk[i] = (unsigned char)(i * 7);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 2; }
    for (long i = 0; i < kib; i++) if (write(fd, chunk, sizeof chunk) != sizeof chunk) return 3;
    close(fd);
    fd = open(path, O_RDONLY);
    unsigned long sum = 0;
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        for (ssize_t i = 0; i < n; i++) sum = sum * 31 + chunk[i];
    close(fd);
    unlink(path);
    printf("%lu\n", sum);
    return 0;
}
