// Attack (paper: entropy reads): call random_get in a loop for SECONDS (default 30),
// CHUNK bytes (default 256) per call, up to MAX calls (default 100000000).
// usage: entropy_flood [SECONDS] [CHUNK] [MAX]
#include <wasi/api.h>
#include "common.h"

static uint8_t buffer[1 << 16];

int main(int argc, char **argv) {
    attack_init();
    budget_t b = budget_start((double)arg_num(argc, argv, 1, 30), 256);
    long long chunk = arg_num(argc, argv, 2, 256);
    long long max = arg_num(argc, argv, 3, 100000000);
    if (chunk < 1 || chunk > (long long)sizeof buffer) chunk = 256;
    long long calls = 0, failed = 0;
    while (calls < max && budget_left(&b)) {
        if (__wasi_random_get(buffer, (__wasi_size_t)chunk) != 0) failed++;
        calls++;
    }
    printf("entropy_flood: %lld calls of %lld bytes, %lld failed\n", calls, chunk, failed);
    return 0;
}
