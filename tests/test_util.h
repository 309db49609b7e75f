/* test_util.h — the shared reporting of every C test program: one line per case
 * (`ok|FAIL|skip  <case>  <measured>  <tolerance>`), a seeded RNG, and the final
 * `N passed, N failed, N skipped` line whose counts decide the exit status. Header-only. */
#ifndef DS4_TEST_UTIL_H
#define DS4_TEST_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int t_passed, t_failed, t_skipped;

/* Counts a reported case as passed or failed; returns ok. */
static inline bool t_tally(bool ok)
{
    if (ok)
        t_passed++;
    else
        t_failed++;
    return ok;
}

/* Reports one case with its measured error and tolerance; returns ok. */
__attribute__((format(printf, 4, 5), unused))
static bool t_case(bool ok, double measured, double tol, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    printf("%-4s  %-56s  %.3g  %.3g\n", ok ? "ok" : "FAIL", name, measured, tol);
    return t_tally(ok);
}

/* Reports a pass/fail case with no numeric measure. */
__attribute__((format(printf, 2, 3), unused))
static bool t_check(bool ok, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    printf("%-4s  %s\n", ok ? "ok" : "FAIL", name);
    return t_tally(ok);
}

/* Reports a skipped case; why must say what is missing. */
__attribute__((format(printf, 2, 3), unused))
static void t_skip(const char *why, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    printf("skip  %-56s  (%s)\n", name, why);
    t_skipped++;
}

/* Prints the summary line; returns the process exit status. */
__attribute__((unused))
static int t_summary(void)
{
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}

/* splitmix64: small, seedable, good enough for test data. */
typedef struct { uint64_t s; } t_rng;

__attribute__((unused))
static uint64_t t_next(t_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
__attribute__((unused))
static double t_uniform(t_rng *r) { return (double)(t_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Standard normal (Box-Muller). */
__attribute__((unused))
static double t_normal(t_rng *r)
{
    double u1 = t_uniform(r), u2 = t_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return __builtin_sqrt(-2.0 * __builtin_log(u1)) * __builtin_cos(6.283185307179586 * u2);
}

/* Seed from DS4_TEST_SEED if set, else the given default; printed so a failure reruns. */
__attribute__((unused))
static uint64_t t_seed(uint64_t dflt)
{
    const char *s = getenv("DS4_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : dflt;
    printf("# seed %llu (rerun with DS4_TEST_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    return seed;
}

#endif
