/* fork_linux.c - the reference for bench/fork.sh: Linux fork() of a process with SIZE
 * bytes of anonymous memory touched, and the copy-on-write fault cost per page when the
 * child then writes one byte in each of its first FAULT_PAGES pages (default: every page).
 * Usage: fork_linux BYTES [FORKS [FAULT_PAGES]]   prints one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s BYTES [FORKS [FAULT_PAGES]]\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 0);
    int forks = argc > 2 ? atoi(argv[2]) : 9;
    if (forks < 1) forks = 1;
    long ps = sysconf(_SC_PAGESIZE);
    size_t pages = size / ps;
    size_t fault_pages = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    if (fault_pages == 0 || fault_pages > pages) fault_pages = pages;
    char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(m, size, MADV_NOHUGEPAGE); /* 4 KiB pages, as the page store has */
    for (size_t i = 0; i < pages; i++) m[i * ps] = (char)i;
    double *t = calloc(forks, sizeof *t);
    int fd[2];
    double fault_us = 0;
    for (int k = 0; k < forks; k++) {
        if (pipe(fd) != 0) { perror("pipe"); return 1; }
        double t0 = now();
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) {
            double per = 0;
            if (k == forks - 1) { /* the last child times its faults */
                double a = now();
                for (size_t i = 0; i < fault_pages; i++) m[i * ps] = 1;
                per = (now() - a) * 1e6 / fault_pages;
            }
            if (write(fd[1], &per, sizeof per) != sizeof per) _exit(1);
            _exit(0);
        }
        t[k] = now() - t0;
        double per = 0;
        if (read(fd[0], &per, sizeof per) == sizeof per && k == forks - 1) fault_us = per;
        waitpid(p, NULL, 0);
        close(fd[0]);
        close(fd[1]);
    }
    qsort(t, forks, sizeof *t, cmp);
    printf("{\"bytes\":%zu,\"pages\":%zu,\"fork_us\":%.3f,\"fault_pages\":%zu,"
           "\"fault_us_per_page\":%.3f}\n",
           size, pages, t[forks / 2] * 1e6, fault_pages, fault_us);
    return 0;
}
