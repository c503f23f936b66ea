// The Edera microbenchmarks: `micro cpu N` (a dependent integer loop), `micro clock N`
// (clock_gettime), `micro syscall N` (getpid natively; WASI has no getpid, so the cheapest
// WASI call, fd_fdstat_get, stands for "enter the host"), `micro memcpy MIB REPS` (bandwidth).
// native: yes
// build: -O2
#include <string.h>

#include "bench.h"

#ifdef __wasi__
#include <wasi/api.h>
#else
#include <sys/syscall.h>
#include <unistd.h>
#endif

static uint64_t cpu_loop(uint64_t n) {
    uint64_t x = 88172645463325252ull;
    for (uint64_t i = 0; i < n; i++) x = x * 6364136223846793005ull + (x >> 29) + i;
    return x;
}

static uint64_t clock_loop(uint64_t n) {
    uint64_t acc = 0;
    struct timespec ts;
    for (uint64_t i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        acc += (uint64_t)ts.tv_nsec & 1;
    }
    // The readings differ per run; only the call count goes into the checksum.
    return n + (acc & 0);
}

static uint64_t syscall_loop(uint64_t n) {
    uint64_t ok = 0;
    for (uint64_t i = 0; i < n; i++) {
#ifdef __wasi__
        __wasi_fdstat_t stat;
        ok += __wasi_fd_fdstat_get(1, &stat) == 0;
#else
        ok += syscall(SYS_getpid) > 0;
#endif
    }
    return ok;
}

static uint64_t memcpy_loop(uint64_t mib, uint64_t reps, uint64_t *hot) {
    size_t len = (size_t)mib << 20;
    uint8_t *a = malloc(len), *b = malloc(len);
    fill_random(a, len, 4);
    memset(b, 0, len);
    uint64_t start = now_ns();
    for (uint64_t r = 0; r < reps; r++) {
        memcpy(r & 1 ? a : b, r & 1 ? b : a, len);
        // A data dependency between rounds keeps the copies from being elided.
        (r & 1 ? a : b)[r % len] ^= 1;
    }
    *hot = now_ns() - start;
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i += 4096) sum = sum * 31 + a[i] + b[i];
    free(a);
    free(b);
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fputs("usage: micro cpu|clock|syscall N | micro memcpy MIB REPS\n", stderr);
        return 2;
    }
    const char *kind = argv[1];
    uint64_t n = parse_size(argv[2]), size = n, sum, start = now_ns(), hot = 0;
    if (strcmp(kind, "cpu") == 0) sum = cpu_loop(n);
    else if (strcmp(kind, "clock") == 0) sum = clock_loop(n);
    else if (strcmp(kind, "syscall") == 0) sum = syscall_loop(n);
    else if (strcmp(kind, "memcpy") == 0 && argc == 4) {
        uint64_t reps = parse_size(argv[3]);
        size = (n << 20) * reps;
        sum = memcpy_loop(n, reps, &hot);
    } else {
        fprintf(stderr, "micro: unknown kernel %s\n", kind);
        return 2;
    }
    if (hot == 0) hot = now_ns() - start;
    report(stdout, kind, size, hot, sum);
    return 0;
}
