// Compute kernel for core benchmarks: FNV-1a over a buffer plus a prime sieve.
// Argument: problem size (default 2000000). Prints a checksum.
// native: yes
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    unsigned char *buf = malloc(n);
    char *sieve = calloc(n + 1, 1);
    if (!buf || !sieve) return 2;
    for (long i = 0; i < n; i++) buf[i] = (unsigned char)(i * 31 + 7);
    uint32_t h = 2166136261u;
    for (int round = 0; round < 8; round++)
        for (long i = 0; i < n; i++) { h ^= buf[i]; h *= 16777619u; }
    long primes = 0;
    for (long i = 2; i <= n; i++) {
        if (sieve[i]) continue;
        primes++;
        for (long j = i * 2; j <= n; j += i) sieve[j] = 1;
    }
    printf("fnv %08x primes %ld\n", h, primes);
    return 0;
}
