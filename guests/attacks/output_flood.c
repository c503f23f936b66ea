// Attack (ours: output): write MAX_MIB (default 4096) to stdout or stderr in 64 KiB
// chunks, for at most SECONDS (default 60).
// usage: output_flood [stdout|stderr] [MAX_MIB] [SECONDS]
#include <unistd.h>
#include "common.h"

static char chunk[1 << 16];

int main(int argc, char **argv) {
    int fd = strcmp(arg_str(argc, argv, 1, "stdout"), "stderr") == 0 ? 2 : 1;
    long long chunks = arg_num(argc, argv, 2, 4096) * 16;
    budget_t b = budget_start((double)arg_num(argc, argv, 3, 60), 16);
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (i % 64 == 63) ? '\n' : 'A' + (char)(i % 26);
    long long written = 0;
    while (written < chunks && budget_left(&b)) {
        if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) return 1;
        written++;
    }
    return 0;
}
