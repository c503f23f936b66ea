// Memory hog: allocates and touches 1 MiB blocks until malloc fails (then exits 1),
// or up to N MiB with an argument.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
// Keeps every block reachable so the compiler cannot elide the allocations.
char *volatile blocks[1 << 16];

int main(int argc, char **argv) {
    long limit = argc > 1 ? atol(argv[1]) : -1;
    long mib = 0;
    for (; limit < 0 || mib < limit; mib++) {
        char *block = malloc(1 << 20);
        if (!block) {
            fprintf(stderr, "malloc failed after %ld MiB\n", mib);
            return 1;
        }
        memset(block, 0xA5, 1 << 20);
        blocks[mib & 0xffff] = block;
    }
    printf("allocated %ld MiB\n", mib);
    return 0;
}
