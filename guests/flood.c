// Output flood: writes 64 KiB chunks to stdout (or stderr with argument "stderr") forever.
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = (argc > 1 && strcmp(argv[1], "stderr") == 0) ? 2 : 1;
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    for (;;) {
        if (write(fd, chunk, sizeof chunk) < 0) return 3;
    }
}
