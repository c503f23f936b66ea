// Fails on request: `?kind=trap` (unreachable), `memory` (allocates until refused),
// `exit` (exit code 3, no output), `flood` (endless output), `sleep` (blocks in a host
// call for `?s=N` seconds).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgi.h"

static char *volatile kept[4096];

int main(void) {
    char kind[16] = "";
    query_param("kind", kind, sizeof kind);
    if (!strcmp(kind, "trap")) __builtin_trap();
    if (!strcmp(kind, "memory")) {
        for (unsigned i = 0;; i++) {
            char *volatile p = malloc(1 << 20);  // volatile: the allocation must happen
            if (!p) __builtin_trap();
            memset(p, 1, 1 << 20);
            kept[i % 4096] = p;
        }
    }
    if (!strcmp(kind, "exit")) return 3;
    if (!strcmp(kind, "flood")) {
        printf("Content-Type: text/plain\n\n");
        for (;;) fputs("flood flood flood flood flood flood flood flood\n", stdout);
    }
    if (!strcmp(kind, "sleep")) sleep((unsigned)query_number("s", 10));
    printf("Content-Type: text/plain\n\nfine\n");
    return 0;
}
