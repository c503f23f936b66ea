// Attack (paper: network floods, WASI preview 1 only): guess descriptors 0..MAXFD-1
// and try sock_accept, sock_send and sock_recv on each, in a loop for SECONDS
// (default 10). Any call that succeeds is a breach ("BREACH" line).
// usage: net_preview1 [SECONDS] [MAXFD]
#include <wasi/api.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    budget_t b = budget_start((double)arg_num(argc, argv, 1, 10), 16);
    int maxfd = (int)arg_num(argc, argv, 2, 64);
    char payload[512];
    memset(payload, 'p', sizeof payload);
    __wasi_ciovec_t out = {(const uint8_t *)payload, sizeof payload};
    char inbuf[512];
    __wasi_iovec_t in = {(uint8_t *)inbuf, sizeof inbuf};
    long long attempts = 0, breaches = 0;
    while (budget_left(&b) && breaches < 16) {
        for (int fd = 0; fd < maxfd; fd++) {
            __wasi_fd_t conn;
            __wasi_size_t n;
            __wasi_roflags_t flags;
            if (__wasi_sock_accept(fd, 0, &conn) == 0) {
                printf("BREACH sock_accept on fd %d gave fd %u\n", fd, (unsigned)conn);
                breaches++;
            }
            if (fd > 2 && __wasi_sock_send(fd, &out, 1, 0, &n) == 0) {
                printf("BREACH sock_send on fd %d sent %lu bytes\n", fd, (unsigned long)n);
                breaches++;
            }
            if (fd > 2 && __wasi_sock_recv(fd, &in, 1, 0, &n, &flags) == 0) {
                printf("BREACH sock_recv on fd %d got %lu bytes\n", fd, (unsigned long)n);
                breaches++;
            }
            attempts += 3;
        }
    }
    printf("net_preview1: %lld socket calls, %lld succeeded\n", attempts, breaches);
    return 0;
}
