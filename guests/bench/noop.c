// Start-up and per-call overhead: the smallest useful program (prints one line, exits).
// native: yes
// build: -O2
#include <stdio.h>

int main(void) {
    fputs("hello\n", stdout);
    return 0;
}
