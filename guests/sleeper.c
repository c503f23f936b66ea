// Sleeper: blocks in a host call (WASI poll_oneoff) for N seconds (default 8).
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 8;
    printf("sleeping %d s\n", seconds);
    fflush(stdout);
    sleep(seconds);
    printf("woke up\n");
    return 0;
}
