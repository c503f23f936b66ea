// The example guest: greets, echoes its arguments and standard input.
// native: yes
#include <stdio.h>

int main(int argc, char **argv) {
    printf("Hello from a Stockade sandbox!\n");
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
    return 0;
}
