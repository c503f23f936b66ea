// Attack (paper: CPU): spin for SECONDS (default 120) of pure computation.
// usage: cpu_loop [SECONDS]
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    double seconds = (double)arg_num(argc, argv, 1, 120);
    budget_t b = budget_start(seconds, 1u << 22);
    volatile unsigned long long x = 1;
    while (budget_left(&b)) x = x * 6364136223846793005ull + 1442695040888963407ull;
    printf("cpu_loop: %llu iterations, done\n", b.calls);
    return 0;
}
