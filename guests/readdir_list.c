// Lists DIR (default /d) with readdir(3) (wasi-libc: fd_readdir with a 4 KiB buffer and
// the cookies it returns), printing each name on its own line and the count at the end.
#include <dirent.h>
#include <stdio.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/d";
    DIR *dir = opendir(path);
    if (!dir) {
        perror("opendir");
        return 1;
    }
    long count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL; count++)
        printf("%s\n", entry->d_name);
    closedir(dir);
    printf("count %ld\n", count);
    return 0;
}
