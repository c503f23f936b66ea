// Answers with its command line: one argument per line, argv[0] first (manifest `argv`).
#include <stdio.h>

int main(int argc, char **argv) {
    printf("Content-Type: text/plain\n\n");
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    return 0;
}
