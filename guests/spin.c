// CPU spin: loops forever (or N iterations with an argument), never calling the host.
#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    unsigned long long limit = argc > 1 ? strtoull(argv[1], 0, 10) : 0;
    volatile unsigned long long x = 0;
    for (unsigned long long i = 0; limit == 0 || i < limit; i++) x += i * 2654435761u;
    printf("%llu\n", (unsigned long long)x);
    return 0;
}
