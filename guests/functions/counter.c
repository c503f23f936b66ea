// Would keep state if instances were reused: a global counter and a static buffer,
// both reported; a fresh instance per request always answers count=1 seen=0.
#include <stdio.h>
#include <string.h>

static int count;
static char seen[16];

int main(void) {
    count++;
    int before = seen[0] == 's';
    memcpy(seen, "seen", 5);
    printf("Content-Type: text/plain\n\ncount=%d seen=%d\n", count, before);
    return 0;
}
