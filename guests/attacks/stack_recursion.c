// Attack (ours: stack): recurse DEPTH times (default 1000000000) through an indirect
// call, so the compiler cannot turn it into a loop; each frame keeps live values on
// the wasm stack.
// usage: stack_recursion [DEPTH]
// build: -O1
#include "common.h"

static unsigned long long recurse(unsigned long long n);
static unsigned long long (*volatile self)(unsigned long long) = recurse;

static unsigned long long recurse(unsigned long long n) {
    if (n == 0) return 1;
    unsigned long long a = n * 3, b = n ^ 0x5555, c = n + 7;
    return self(n - 1) + a + b + c;
}

int main(int argc, char **argv) {
    attack_init();
    unsigned long long depth = (unsigned long long)arg_num(argc, argv, 1, 1000000000);
    printf("stack_recursion: %llu\n", self(depth));
    return 0;
}
