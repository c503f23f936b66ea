// Hostile: one fd_write whose iovecs all point at the same 4 MiB buffer, `?n=N` of
// them (default 256: 1 GiB gathered from 4 MiB of linear memory). A host that copies
// the gathered bytes before checking the output cap needs that much memory at once.
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

#include "cgi.h"

#define BLOCK (4 << 20)
#define MAX_IOVECS 4096
static char block[BLOCK];
static __wasi_ciovec_t iovecs[MAX_IOVECS];

int main(void) {
    unsigned long long n = query_number("n", 256);
    if (n > MAX_IOVECS) n = MAX_IOVECS;
    memset(block, 'A', sizeof block);
    for (unsigned long long i = 0; i < n; i++) {
        iovecs[i].buf = (const uint8_t *)block;
        iovecs[i].buf_len = BLOCK;
    }
    printf("Content-Type: text/plain\n\n");
    fflush(stdout);
    __wasi_size_t written = 0;
    __wasi_errno_t err = __wasi_fd_write(1, iovecs, (size_t)n, &written);
    printf("\nwrote %lu bytes (errno %d)\n", (unsigned long)written, (int)err);
    return 0;
}
