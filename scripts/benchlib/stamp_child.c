/* Benchmark child: append "<pid> <CLOCK_MONOTONIC ns>" to $CHILD_LOG at its first
 * instruction, then wait forever. Built static so every supervisor starts the same tiny thing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    struct timespec now;
    char line[64];
    const char *path = getenv("CHILD_LOG");
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
        int n = snprintf(line, sizeof line, "%d %lld\n", (int)getpid(),
                         (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        if (fd >= 0) {
            write(fd, line, n);
            close(fd);
        }
    }
    for (;;)
        pause();
}
