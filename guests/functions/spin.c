// Burns CPU: `?n=N` iterations (default: until a limit stops it), then reports.
#include <stdio.h>

#include "cgi.h"

int main(void) {
    unsigned long long n = query_number("n", 0);
    volatile unsigned long long x = 0;
    for (unsigned long long i = 0; n == 0 || i < n; i++) x += i * 2654435761u;
    printf("Content-Type: text/plain\n\nspun %llu\n", (unsigned long long)x);
    return 0;
}
