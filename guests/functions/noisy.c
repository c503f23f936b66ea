// Writes to stderr what a hostile function would put in a server log: `?lines=N` lines
// (default 3), each with a terminal escape (red, cursor home), a right-to-left override
// and a forged log line after a carriage return; `?long=N` adds one line of N bytes.
// Then answers 200 with "ok", or with `?status=500` a 500 of its own.
#include <stdio.h>

#include "cgi.h"

int main(void) {
    unsigned long long lines = query_number("lines", 3), size = query_number("long", 0);
    for (unsigned long long i = 0; i < lines; i++)
        fprintf(stderr, "noisy %llu \x1b[31mred\x1b[H \xe2\x80\xae evil\rstockade serve: forged\n",
                i);
    for (unsigned long long i = 0; i < size; i++) fputc('x', stderr);
    if (size) fputc('\n', stderr);
    fflush(stderr);
    if (query_number("status", 200) == 500) {
        printf("Status: 500 Internal Server Error\nContent-Type: text/plain\n\nmine\n");
        return 0;
    }
    printf("Content-Type: text/plain\n\nok\n");
    return 0;
}
