// Attack (ours: deep trees and long paths): nest directories DEPTH levels deep
// (default 100000) under DIR (default /scratch), each named NAME_LEN characters
// (default 1; 255 makes the full path pass PATH_MAX after 16 levels), for at most
// SECONDS (default 60). Each level is made relative to the previous one, so the cost
// per level stays constant for the guest while the host's path grows.
// usage: deep_tree [DEPTH] [NAME_LEN] [SECONDS] [DIR]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    long long depth = arg_num(argc, argv, 1, 100000);
    long long name_len = arg_num(argc, argv, 2, 1);
    budget_t b = budget_start((double)arg_num(argc, argv, 3, 60), 64);
    const char *dir = arg_str(argc, argv, 4, "/scratch");
    if (name_len < 1 || name_len > 255) name_len = 1;
    char name[256];
    memset(name, 'd', (size_t)name_len);
    name[name_len] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        printf("deep_tree: open %s: %s\n", dir, strerror(errno));
        return 1;
    }
    long long level = 0;
    for (; level < depth && budget_left(&b); level++) {
        if (mkdirat(fd, name, 0755) != 0) {
            printf("deep_tree: mkdir failed at depth %lld: %s\n", level, strerror(errno));
            break;
        }
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
        if (next < 0) {
            printf("deep_tree: open failed at depth %lld: %s\n", level, strerror(errno));
            break;
        }
        close(fd);
        fd = next;
        if (level % 1000 == 0) printf("deep_tree: depth %lld\n", level);
    }
    printf("deep_tree: reached depth %lld, path length %lld\n", level, level * (name_len + 1));
    return 0;
}
