// Descriptor hoard: opens FILE (default /data) again and again without closing.
#include <fcntl.h>
#include <stdio.h>
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/data";
    for (long i = 0;; i++) {
        if (open(path, O_RDONLY) < 0) { printf("held %ld descriptors\n", i); return 1; }
    }
}
