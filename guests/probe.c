// Environment and preopen probe: prints what it can see and do, one fact per line:
//   env NAME=VALUE        every variable visible
//   read PATH ok|denied   attempts to read each PATH argument
//   write PATH ok|denied  attempts to create each PATH given after "--write"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    for (char **e = environ; *e; e++) printf("env %s\n", *e);
    int writing = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--write") == 0) { writing = 1; continue; }
        int fd = writing ? open(argv[i], O_CREAT | O_WRONLY, 0644) : open(argv[i], O_RDONLY);
        if (fd >= 0 && writing) {
            ssize_t n = write(fd, "x", 1);
            if (n != 1) { close(fd); fd = -1; }
        }
        printf("%s %s %s\n", writing ? "write" : "read", argv[i], fd >= 0 ? "ok" : strerror(errno));
        if (fd >= 0) close(fd);
    }
    return 0;
}
