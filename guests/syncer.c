// Sync storm: N times (default 1000) pwrite 1 byte + fsync on FILE (default /out/sync.bin).
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    const char *path = argc > 2 ? argv[2] : "/out/sync.bin";
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) { perror("open"); return 2; }
    for (int i = 0; i < rounds; i++) {
        if (pwrite(fd, "s", 1, 0) != 1 || fsync(fd) != 0) { perror("sync"); return 1; }
    }
    printf("%d syncs\n", rounds);
    return 0;
}
