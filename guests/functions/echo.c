// Echoes the request as the function sees it: every environment variable as a line
// NAME=VALUE, an empty line, then the request body from standard input.
#include <stdio.h>
#include <unistd.h>

extern char **environ;
static char buf[65536];  // static: the default wasm stack is only 64 KiB

int main(void) {
    printf("Content-Type: text/plain\nX-Echo-Method: %s\n\n", getenv("REQUEST_METHOD"));
    for (char **e = environ; *e; e++) printf("%s\n", *e);
    printf("\n");
    fflush(stdout);
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)n, stdout);
    return 0;
}
