// Helpers shared by the example CGI functions: query-string lookup.
#ifndef STOCKADE_CGI_H
#define STOCKADE_CGI_H
#include <stdlib.h>
#include <string.h>

// Copies the value of `key` in QUERY_STRING into `out` (at most size-1 bytes, not
// percent-decoded); returns 1 when found.
static int query_param(const char *key, char *out, size_t size) {
    const char *q = getenv("QUERY_STRING");
    size_t klen = strlen(key);
    while (q && *q) {
        if (strncmp(q, key, klen) == 0 && q[klen] == '=') {
            const char *v = q + klen + 1;
            size_t n = strcspn(v, "&");
            if (n >= size) n = size - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
        q = strchr(q, '&');
        if (q) q++;
    }
    return 0;
}

// The numeric value of `key`, or `fallback`.
static unsigned long long query_number(const char *key, unsigned long long fallback) {
    char buf[32];
    return query_param(key, buf, sizeof buf) ? strtoull(buf, 0, 10) : fallback;
}
#endif
