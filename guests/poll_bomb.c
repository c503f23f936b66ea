// Hostile poll_oneoff calls. "abs" sleeps until an absolute time SECONDS (default 8)
// from now on CLOCK (mono or real) with TIMER_ABSTIME: a host that hands the
// subscription to a blocking poll without converting it sleeps past any deadline.
// "many" polls once with COUNT relative clock subscriptions of SECONDS each (default
// 1300000 and 8). "mixed" polls FD (default 0) for reading together with an absolute
// monotonic clock SECONDS away. Prints "poll_bomb: errno E events N" and exits 0.
// usage: poll_bomb abs [SECONDS] [mono|real] | many [COUNT] [SECONDS] | mixed [SECONDS] [FD]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "abs";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "abs") == 0) {
        long long seconds = argc > 2 ? atoll(argv[2]) : 8;
        clockid_t clock = argc > 3 && strcmp(argv[3], "real") == 0 ? CLOCK_REALTIME
                                                                   : CLOCK_MONOTONIC;
        struct timespec until;
        clock_gettime(clock, &until);
        until.tv_sec += seconds;
        printf("poll_bomb: sleeping until %lld s from now\n", seconds);
        int err = clock_nanosleep(clock, TIMER_ABSTIME, &until, NULL);
        printf("poll_bomb: errno %d events 1\n", err);
        return 0;
    }
    long long seconds = 8;
    size_t count = 1;
    int fd = 0;
    if (strcmp(mode, "many") == 0) {
        count = argc > 2 ? (size_t)atoll(argv[2]) : 1300000;
        seconds = argc > 3 ? atoll(argv[3]) : 8;
    } else {
        seconds = argc > 2 ? atoll(argv[2]) : 8;
        fd = argc > 3 ? atoi(argv[3]) : 0;
        count = 2;
    }
    __wasi_subscription_t *subs = calloc(count, sizeof *subs);
    __wasi_event_t *events = calloc(count, sizeof *events);
    if (!subs || !events) {
        printf("poll_bomb: out of memory\n");
        return 2;
    }
    for (size_t i = 0; i < count; i++) {
        subs[i].userdata = i;
        subs[i].u.tag = __WASI_EVENTTYPE_CLOCK;
        subs[i].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
        subs[i].u.u.clock.timeout = (uint64_t)seconds * 1000000000ull;
    }
    if (strcmp(mode, "mixed") == 0) {
        __wasi_timestamp_t now = 0;
        __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &now);
        subs[0].u.u.clock.timeout = now + (uint64_t)seconds * 1000000000ull;
        subs[0].u.u.clock.flags = __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
        subs[1].u.tag = __WASI_EVENTTYPE_FD_READ;
        subs[1].u.u.fd_read.file_descriptor = fd;
    }
    __wasi_size_t n = 0;
    __wasi_errno_t err = __wasi_poll_oneoff(subs, events, count, &n);
    printf("poll_bomb: errno %d events %u\n", err, n);
    return 0;
}
