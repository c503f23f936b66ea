// I/O serialization overhead: copy stdin to stdout in 64 KiB blocks, then report on stderr
// how long the copy loop took (the payload itself is the checksum).
// native: yes
// build: -O2
#include <unistd.h>

#include "bench.h"

static char block[64 * 1024];

int main(void) {
    uint64_t total = 0, start = now_ns();
    ssize_t got;
    while ((got = read(0, block, sizeof block)) > 0) {
        ssize_t done = 0;
        while (done < got) {
            ssize_t put = write(1, block + done, (size_t)(got - done));
            if (put <= 0) return 1;
            done += put;
        }
        total += (uint64_t)got;
    }
    report(stderr, "echo", total, now_ns() - start, total);
    return got < 0 ? 1 : 0;
}
