// Attack (ours: clock and poll_oneoff): "many" sleeps COUNT times (default 1000000)
// for MICROS microseconds each (default 100); "long" sleeps once for SECONDS
// (default 120), longer than any profile's timeout. Both go through poll_oneoff,
// where epoch interruption cannot reach.
// usage: sleep_storm many [COUNT] [MICROS] | sleep_storm long [SECONDS]
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    if (strcmp(arg_str(argc, argv, 1, "many"), "long") == 0) {
        long long seconds = arg_num(argc, argv, 2, 120);
        printf("sleep_storm: sleeping %lld s\n", seconds);
        struct timespec ts = {(time_t)seconds, 0};
        nanosleep(&ts, NULL);
        printf("sleep_storm: woke up\n");
        return 0;
    }
    long long count = arg_num(argc, argv, 2, 1000000);
    long long micros = arg_num(argc, argv, 3, 100);
    struct timespec ts = {(time_t)(micros / 1000000), (long)(micros % 1000000) * 1000};
    long long done = 0;
    for (; done < count; done++) nanosleep(&ts, NULL);
    printf("sleep_storm: %lld sleeps of %lld us\n", done, micros);
    return 0;
}
