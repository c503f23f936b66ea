// Descriptor holder: opens FILE up to COUNT times, keeping each, then sleeps SECONDS
// holding them. A failed open prints its errno and exits 1: what a run sharing a
// process with others must never see past its own quota (EMFILE turned into EIO).
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: fdhold FILE COUNT SECONDS\n"); return 2; }
    long count = atol(argv[2]);
    for (long i = 0; i < count; i++) {
        if (open(argv[1], O_RDONLY) < 0) {
            printf("open %ld failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("held %ld descriptors\n", count);
    fflush(stdout);
    sleep((unsigned)atoi(argv[3]));
    return 0;
}
