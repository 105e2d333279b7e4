/*
 * whcpair: the uncontended lock+unlock pairs of bench/whbench.c measured in
 * C, with no Lua in the way, so the table can say what each mechanism costs
 * below the Lua call floor. Also the OFD pair while other OFD locks are held
 * on the same inode (DESIGN.md: its cost grows with them).
 *
 *     whcpair DIR ITERATIONS ROUNDS   ->   lines "name nanoseconds-per-pair"
 *
 * Each figure is the median over ROUNDS interleaved rounds of CPU time.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 101

static _Atomic uint32_t word;
static int flock_fd, ofd_fd, ofd256_fd, ofd4096_fd;

static int ofd(int fd, int cmd, short type, off_t start)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = 1};
    return fcntl(fd, cmd, &fl);
}

static void cas_pair(void)
{
    uint32_t free_word = 0;
    if (!atomic_compare_exchange_strong(&word, &free_word, 1))
        abort();
    atomic_store(&word, 0);
}

static void flock_pair(void)
{
    if (flock(flock_fd, LOCK_EX | LOCK_NB) != 0 || flock(flock_fd, LOCK_UN) != 0)
        abort();
}

static void ofd_pair_on(int fd)
{
    if (ofd(fd, F_OFD_SETLK, F_WRLCK, 0) != 0 || ofd(fd, F_OFD_SETLK, F_UNLCK, 0) != 0)
        abort();
}

static void ofd_pair(void) { ofd_pair_on(ofd_fd); }
static void ofd256_pair(void) { ofd_pair_on(ofd256_fd); }
static void ofd4096_pair(void) { ofd_pair_on(ofd4096_fd); }

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A file with `held` other OFD locks on it (every other byte, so that they never merge),
 * held through a second descriptor; returns a descriptor for the measured pair. */
static int open_with_locks(const char *dir, const char *name, int held)
{
    char path[4096];
    int fd, other;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    other = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 || other < 0) {
        perror(path);
        exit(1);
    }
    for (int i = 1; i <= held; i++)
        if (ofd(other, F_OFD_SETLK, F_WRLCK, 2 * i) != 0) {
            perror("F_OFD_SETLK");
            exit(1);
        }
    return fd; /* `other` stays open: its locks live as long as the process */
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*pair)(void);
        long divisor; /* fewer iterations for the slow cases, so that a round stays short */
    } cases[] = {
        {"cas", cas_pair, 1},          {"flock", flock_pair, 4},         {"ofd", ofd_pair, 4},
        {"ofd_256", ofd256_pair, 64}, {"ofd_4096", ofd4096_pair, 1024},
    };
    enum { NCASES = sizeof cases / sizeof cases[0] };
    static double samples[NCASES][MAX_ROUNDS];
    long n;
    int rounds;

    if (argc != 4 || (n = atol(argv[2])) < 1 || (rounds = atoi(argv[3])) < 1 ||
        rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: whcpair DIR ITERATIONS ROUNDS (1 to %d rounds)\n", MAX_ROUNDS);
        return 2;
    }
    flock_fd = open_with_locks(argv[1], "c-flock", 0);
    ofd_fd = open_with_locks(argv[1], "c-ofd", 0);
    ofd256_fd = open_with_locks(argv[1], "c-ofd-256", 256);
    ofd4096_fd = open_with_locks(argv[1], "c-ofd-4096", 4096);
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < NCASES; c++) {
            long m = n / cases[c].divisor + 1;
            double t = cpu_ns();
            for (long i = 0; i < m; i++)
                cases[c].pair();
            samples[c][r] = (cpu_ns() - t) / (double)m;
        }
    for (int c = 0; c < NCASES; c++) {
        qsort(samples[c], (size_t)rounds, sizeof samples[c][0], cmp);
        printf("%s %.2f\n", cases[c].name, samples[c][rounds / 2]);
    }
    return 0;
}
