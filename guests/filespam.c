// File spam: creates empty files DIR/f0, DIR/f1, ... (default /out) until it fails.
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/out";
    char path[512];
    for (long i = 0;; i++) {
        snprintf(path, sizeof path, "%s/f%ld", dir, i);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0) { printf("created %ld files\n", i); return 1; }
        close(fd);
    }
}
