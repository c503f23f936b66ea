// Compute kernels, one per run: `compute KERNEL SIZE` with KERNEL one of fnv, sha256, sieve,
// qsort. Several kernels because a single hash loop hides the differences between engines.
// Input data comes from a fixed-seed PRNG outside the timed loop; the report line carries
// the hot-loop time and a checksum every backend must agree on.
// native: yes
// build: -O2
#include <string.h>

#include "bench.h"

#define BLOCK (1u << 20)

// FNV-1a 64 over SIZE bytes: a 1 MiB block hashed repeatedly, the state carried over.
static uint64_t fnv(uint64_t size, uint64_t *hot) {
    uint8_t *buf = malloc(BLOCK);
    fill_random(buf, BLOCK, 1);
    uint64_t h = 0xcbf29ce484222325ull, start = now_ns();
    for (uint64_t done = 0; done < size; done += BLOCK) {
        uint64_t n = size - done < BLOCK ? size - done : BLOCK;
        for (uint64_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
    }
    *hot = now_ns() - start;
    free(buf);
    return h;
}

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t st[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6],
             h = st[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += h;
}

// SHA-256 of SIZE bytes (a multiple of 64): the 1 MiB block fed repeatedly, no padding.
static uint64_t sha256(uint64_t size, uint64_t *hot) {
    uint8_t *buf = malloc(BLOCK);
    fill_random(buf, BLOCK, 2);
    uint32_t st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint64_t start = now_ns();
    for (uint64_t done = 0; done + 64 <= size; done += 64) sha256_block(st, buf + done % BLOCK);
    *hot = now_ns() - start;
    free(buf);
    return (uint64_t)st[0] << 32 | st[7];
}

// Sieve of Eratosthenes up to SIZE: the checksum mixes the count and the sum of primes.
static uint64_t sieve(uint64_t size, uint64_t *hot) {
    uint8_t *composite = calloc(size + 1, 1);
    uint64_t count = 0, sum = 0, start = now_ns();
    for (uint64_t i = 2; i <= size; i++) {
        if (composite[i]) continue;
        count++;
        sum += i;
        for (uint64_t j = i * i; j <= size; j += i) composite[j] = 1;
    }
    *hot = now_ns() - start;
    free(composite);
    return count << 40 ^ sum;
}

static void quicksort(uint32_t *v, long lo, long hi) {
    while (lo < hi) {
        uint32_t pivot = v[lo + (hi - lo) / 2];
        long i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                uint32_t t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        // Recurse into the smaller half, loop on the larger: bounded stack depth.
        if (j - lo < hi - i) {
            quicksort(v, lo, j);
            lo = i;
        } else {
            quicksort(v, i, hi);
            hi = j;
        }
    }
}

// Quicksort of SIZE pseudo-random 32-bit keys (our own sort: libc qsort differs per libc).
static uint64_t qsort_kernel(uint64_t size, uint64_t *hot) {
    uint32_t *v = malloc(size * sizeof *v);
    uint64_t state = 3, h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < size; i++) v[i] = (uint32_t)(next_random(&state) >> 32);
    uint64_t start = now_ns();
    if (size > 1) quicksort(v, 0, (long)size - 1);
    *hot = now_ns() - start;
    for (uint64_t i = 0; i < size; i++) h = (h ^ v[i]) * 0x100000001b3ull;
    free(v);
    return h;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fputs("usage: compute fnv|sha256|sieve|qsort SIZE\n", stderr);
        return 2;
    }
    uint64_t size = parse_size(argv[2]), hot = 0, sum;
    if (strcmp(argv[1], "fnv") == 0) sum = fnv(size, &hot);
    else if (strcmp(argv[1], "sha256") == 0) sum = sha256(size, &hot);
    else if (strcmp(argv[1], "sieve") == 0) sum = sieve(size, &hot);
    else if (strcmp(argv[1], "qsort") == 0) sum = qsort_kernel(size, &hot);
    else {
        fprintf(stderr, "compute: unknown kernel %s\n", argv[1]);
        return 2;
    }
    report(stdout, argv[1], size, hot, sum);
    return 0;
}
