// One large allocation: malloc(N MiB) (default 1024). When it fails, says so on stderr and
// exits 1, or 0 with a second argument `graceful` (a guest that copes with less memory).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1024;
    int graceful = argc > 2 && strcmp(argv[2], "graceful") == 0;
    char *volatile block = malloc((size_t)mib << 20);
    if (!block) {
        fprintf(stderr, "malloc(%ld MiB) failed\n", mib);
        return graceful ? 0 : 1;
    }
    memset(block, 0xA5, (size_t)mib << 20);
    printf("allocated %ld MiB\n", mib);
    return 0;
}
