// Stack recursion: recurses without end (the wasm stack limit must stop it).
#include <stdio.h>
__attribute__((noinline)) static unsigned long long down(unsigned long long n, volatile char *prev) {
    volatile char frame[256];
    frame[0] = (char)n;
    if (prev) frame[1] = prev[0];
    return down(n + 1, frame) + frame[1];
}
int main(void) {
    printf("%llu\n", down(0, 0));
    return 0;
}
