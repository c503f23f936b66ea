// Hostile iovec lists: one host call whose iovecs ask the host for far more work or
// memory than the guest owns. "same" passes COUNT iovecs (default 128) that all point
// at one SIZE MiB buffer (default 8): gathered, 128 x 8 MiB = 1 GiB of host memory
// from a 16 MiB guest. "zero" passes COUNT zero-length iovecs (default 15000000) and
// then one byte: a host that walks them all is busy for seconds. TARGET is stdout,
// file (/out/bomb.bin, needs --dir X:/out:rw) or stdin (fd_read). The call is repeated
// up to 4 times while it succeeds; each result goes to stderr as
// "iovec_bomb: call N errno E bytes B".
// usage: iovec_bomb same|zero stdout|file|stdin [COUNT] [SIZE_MIB]
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wasi/api.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "same";
    const char *target = argc > 2 ? argv[2] : "stdout";
    int zero = strcmp(mode, "zero") == 0;
    long long count = argc > 3 ? atoll(argv[3]) : (zero ? 15000000 : 128);
    long long size = (argc > 4 ? atoll(argv[4]) : (zero ? 0 : 8)) << 20;
    if (zero) size = 1;
    uint8_t *buffer = malloc((size_t)size);
    __wasi_iovec_t *iovs = malloc(sizeof *iovs * (size_t)(count + 1));
    if (!buffer || !iovs) {
        fprintf(stderr, "iovec_bomb: out of memory\n");
        return 2;
    }
    memset(buffer, 'x', (size_t)size);
    for (long long i = 0; i < count; i++) {
        iovs[i].buf = buffer;
        iovs[i].buf_len = zero ? 0 : (size_t)size;
    }
    size_t n = (size_t)count;
    if (zero) {  // the one byte that makes the call worth walking to the end
        iovs[n].buf = buffer;
        iovs[n].buf_len = 1;
        n++;
    }
    int fd = strcmp(target, "stdin") == 0 ? 0 : 1;
    if (strcmp(target, "file") == 0) {
        fd = open("/out/bomb.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            fprintf(stderr, "iovec_bomb: cannot open /out/bomb.bin\n");
            return 2;
        }
    }
    for (int call = 1; call <= 4; call++) {
        __wasi_size_t done = 0;
        __wasi_errno_t err = fd == 0
            ? __wasi_fd_read(0, (const __wasi_iovec_t *)iovs, n, &done)
            : __wasi_fd_write(fd, (const __wasi_ciovec_t *)iovs, n, &done);
        fprintf(stderr, "iovec_bomb: call %d errno %d bytes %u\n", call, err, done);
        if (err != 0 || done == 0) break;
    }
    return 0;
}
