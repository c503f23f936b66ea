// Attack (paper: inode exhaustion): create up to MAX_FILES (default 200000) empty
// files in DIR (default /scratch), or until SECONDS (default 60) pass.
// usage: inode_flood [MAX_FILES] [DIR] [SECONDS]
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    attack_init();
    long long max_files = arg_num(argc, argv, 1, 200000);
    const char *dir = arg_str(argc, argv, 2, "/scratch");
    budget_t b = budget_start((double)arg_num(argc, argv, 3, 60), 256);
    long long made = 0;
    char path[512];
    while (made < max_files && budget_left(&b)) {
        snprintf(path, sizeof path, "%s/f%07lld", dir, made);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) {
            printf("inode_flood: create failed after %lld files: %s\n", made, strerror(errno));
            return 1;
        }
        close(fd);
        made++;
    }
    printf("inode_flood: created %lld files\n", made);
    return 0;
}
