// Shared helpers of the benchmark guests: a monotonic clock, a deterministic PRNG and the
// one-line report every kernel prints, so the harness can separate start-up from the hot loop
// and check that every backend computed the same result.
#ifndef STOCKADE_BENCH_H
#define STOCKADE_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// xorshift64*: the same sequence on every backend, unlike rand().
static inline uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline void fill_random(uint8_t *buf, size_t len, uint64_t seed) {
    uint64_t state = seed;
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(next_random(&state) >> 56);
}

static inline uint64_t parse_size(const char *text) {
    return (uint64_t)strtoull(text, NULL, 10);
}

static inline void report(FILE *out, const char *kernel, uint64_t size, uint64_t hot_ns,
                          uint64_t checksum) {
    fprintf(out, "bench kernel=%s size=%llu hot_ns=%llu checksum=%016llx\n", kernel,
            (unsigned long long)size, (unsigned long long)hot_ns,
            (unsigned long long)checksum);
}

#endif
