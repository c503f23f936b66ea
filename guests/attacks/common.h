// Helpers shared by the attack guests: argument parsing, a monotonic clock and a
// time budget, so that every attack stops on its own even when nothing contains it.
#ifndef STOCKADE_ATTACK_COMMON_H
#define STOCKADE_ATTACK_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// argv[i] as a number, or `fallback` when absent.
static inline long long arg_num(int argc, char **argv, int i, long long fallback) {
    return i < argc ? strtoll(argv[i], NULL, 10) : fallback;
}

// argv[i] as a string, or `fallback` when absent.
static inline const char *arg_str(int argc, char **argv, int i, const char *fallback) {
    return i < argc ? argv[i] : fallback;
}

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// A time budget checked every `stride` calls, so the clock itself is not the flood.
typedef struct {
    double end;
    unsigned long long calls;
    unsigned long long stride;
} budget_t;

static inline budget_t budget_start(double seconds, unsigned long long stride) {
    budget_t b = {now_seconds() + seconds, 0, stride ? stride : 1};
    return b;
}

static inline int budget_left(budget_t *b) {
    if (++b->calls % b->stride != 0) return 1;
    return now_seconds() < b->end;
}

// Line-buffered stdout: progress lines survive a guest that is stopped mid-way.
static inline void attack_init(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

#endif
