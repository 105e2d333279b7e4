/*
 * A tiny TAP harness for the C tests.
 *
 *   CHECK(cond, fmt, ...)   records a failure with file:line (and goes on);
 *                           evaluates to cond, so `if (!CHECK(...)) return;` bails out
 *   RUN(fn)                 runs `static void fn(void)` as one test: "ok N - fn" / "not ok N - fn"
 *   th_done()               prints the plan "1..N"; returns the exit status (1 if any failed)
 *   th_note(fmt, ...)       a "# ..." diagnostic line
 *
 * Diagnostics go to stdout before the test's result line, as TAP allows. Only the first few
 * failures of one test are printed, so a failing loop cannot flood the output. The counts are
 * static: a test program's tests and its main (RUN, th_done) share one file; fixtures linked
 * beside it report through return values.
 */
#ifndef WH_TEST_HARNESS_H
#define WH_TEST_HARNESS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define TH_MAX_REPORTS 12

static int th_tests, th_failed_tests, th_fails; /* th_fails: failures of the running test */

static void th_note(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void th_note(const char *fmt, ...)
{
    va_list ap;
    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static int th_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6), unused));
static int th_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
{
    va_list ap;
    if (ok)
        return 1;
    if (th_fails++ < TH_MAX_REPORTS) {
        printf("# %s:%d: CHECK(%s) failed: ", file, line, expr);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
    } else if (th_fails == TH_MAX_REPORTS + 1) {
        printf("# (further failures of this test are not shown)\n");
    }
    fflush(stdout);
    return 0;
}

#define CHECK(cond, ...) th_check((cond) ? 1 : 0, __FILE__, __LINE__, #cond, __VA_ARGS__)

static void th_run(const char *name, void (*fn)(void)) __attribute__((unused));
static void th_run(const char *name, void (*fn)(void))
{
    th_fails = 0;
    fn();
    th_tests++;
    if (th_fails != 0)
        th_failed_tests++;
    printf("%s %d - %s\n", th_fails == 0 ? "ok" : "not ok", th_tests, name);
    fflush(stdout);
}

#define RUN(fn) th_run(#fn, fn)

static int th_done(void) __attribute__((unused));
static int th_done(void)
{
    printf("1..%d\n", th_tests);
    if (th_failed_tests != 0)
        printf("# %d of %d tests failed\n", th_failed_tests, th_tests);
    fflush(stdout);
    return th_failed_tests != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
