// Symlink fill: makes COUNT symlinks in /w whose targets are 4,000 bytes each (a name
// of segments, climbing nowhere): data on the disk that no write call carries.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    static char target[4000];
    memset(target, 'a', sizeof target - 1);
    for (size_t i = 1; i < sizeof target - 1; i += 200) target[i] = '/';
    int count = argc > 1 ? atoi(argv[1]) : 1000, made;
    char name[64];
    for (made = 0; made < count; made++) {
        snprintf(name, sizeof name, "/w/s%06d", made);
        if (symlink(target, name)) break;
    }
    printf("made %d symlinks (%s)\n", made, made == count ? "ok" : strerror(errno));
    return 0;
}
