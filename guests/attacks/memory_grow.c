// Attack (paper: memory): grow the heap in 1 MiB steps, touching every page,
// up to MAX_MIB (default 4000, near the 4 GiB ceiling of wasm32).
// usage: memory_grow [MAX_MIB]
#include "common.h"

// Blocks are kept reachable and read back, so the compiler cannot drop the allocations.
static char *blocks[8192];
static volatile char sink;

int main(int argc, char **argv) {
    attack_init();
    long long max_mib = arg_num(argc, argv, 1, 4000);
    long long got = 0;
    if (max_mib > (long long)(sizeof blocks / sizeof *blocks)) max_mib = sizeof blocks / sizeof *blocks;
    for (; got < max_mib; got++) {
        char *block = malloc(1 << 20);
        if (block == NULL) break;
        memset(block, (int)got | 1, 1 << 20);
        blocks[got] = block;
        sink = block[(got * 4099) % (1 << 20)];
        if (got % 64 == 0) printf("memory_grow: %lld MiB\n", got);
    }
    printf("memory_grow: stopped at %lld MiB\n", got);
    return got < max_mib ? 1 : 0;
}
