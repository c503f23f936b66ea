// A large response: `?bytes=N` bytes of 'x' (default 1 MiB) after the headers.
#include <stdio.h>
#include <string.h>

#include "cgi.h"

static char block[65536];

int main(void) {
    unsigned long long left = query_number("bytes", 1024 * 1024);
    memset(block, 'x', sizeof block);
    printf("Content-Type: application/octet-stream\n\n");
    while (left > 0) {
        size_t n = left < sizeof block ? (size_t)left : sizeof block;
        if (fwrite(block, 1, n, stdout) != n) return 1;
        left -= n;
    }
    return 0;
}
