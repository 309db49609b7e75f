/* test_threadpool.c — the persistent CPU thread pool (src/kernels/cpu/threadpool.c): every
 * index of every dispatch runs exactly once and its writes are visible on return, over many
 * back-to-back dispatches and for thread counts above the core count; nth below/above the
 * pool size; nested dispatch from inside a job and concurrent dispatch from two threads (both
 * run inline, no deadlock); every thread takes part; dispatch after the workers have parked;
 * create/free cycles; DS4_THREADS parsing. Usage: test_threadpool [case-substring]. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/threadpool.h"
#include "test_util.h"

#define MAX_NTH 64
#define N_DISPATCH 20000 /* back-to-back dispatches per pool in the stress case */

static const char *filter;

static bool want(const char *name)
{
    return !filter || strstr(name, filter);
}

/* ---- a job that counts, per index, how often it ran ------------------------------------- */

typedef struct {
    _Atomic int runs[MAX_NTH];
    _Atomic int bad_nth;
    int nth_expected;
    int plain[MAX_NTH]; /* non-atomic writes: visible to the caller after return */
    int round;
} count_job;

static void count_fn(void *ctx, int ith, int nth)
{
    count_job *j = ctx;
    if (nth != j->nth_expected || ith < 0 || ith >= nth)
        atomic_fetch_add(&j->bad_nth, 1);
    else {
        atomic_fetch_add(&j->runs[ith], 1);
        j->plain[ith] = j->round;
    }
}

/* Dispatches `rounds` times with nth indices (0: the pool size); returns the number of rounds
 * in which some index did not run exactly once or a plain write was not visible. */
static int stress(cpu_pool *p, int nth, int rounds)
{
    count_job j;
    int errors = 0;
    int n = nth ? nth : cpu_pool_threads(p);
    for (int r = 1; r <= rounds; r++) {
        memset(&j, 0, sizeof j);
        j.nth_expected = n;
        j.round = r;
        if (nth)
            cpu_pool_run_n(p, nth, count_fn, &j);
        else
            cpu_pool_run(p, count_fn, &j);
        int ok = atomic_load(&j.bad_nth) == 0;
        for (int i = 0; i < n; i++)
            ok &= atomic_load(&j.runs[i]) == 1 && j.plain[i] == r;
        errors += !ok;
    }
    return errors;
}

static void case_stress(void)
{
    static const int counts[] = {1, 2, 3, 4, 8};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        char name[64];
        snprintf(name, sizeof name, "stress threads=%d dispatches=%d", counts[c], N_DISPATCH);
        if (!want(name))
            continue;
        cpu_pool *p;
        ds4_error err;
        if (cpu_pool_new(&p, counts[c], &err) != 0) {
            t_check(false, "%s: %s", name, err.msg);
            continue;
        }
        t_check(cpu_pool_threads(p) == counts[c], "%s: cpu_pool_threads", name);
        t_case(stress(p, 0, N_DISPATCH) == 0, 0, 0, "%s", name);
        cpu_pool_free(p);
    }
}

/* Back-to-back dispatches whose index counts alternate small/large: a worker late on one job
 * must never claim an index of the next (each index of each job runs exactly once). */
static void case_alternating(void)
{
    for (int nt = 2; nt <= 3; nt++) {
        char name[64];
        snprintf(name, sizeof name, "alternating nth 2/17/3/64, threads=%d", nt);
        if (!want(name))
            continue;
        cpu_pool *p;
        if (cpu_pool_new(&p, nt, NULL) != 0) {
            t_check(false, "%s: pool", name);
            continue;
        }
        static const int nths[] = {2, 17, 3, MAX_NTH};
        int errors = 0;
        for (int r = 0; r < N_DISPATCH; r++)
            errors += stress(p, nths[r % 4], 1);
        t_case(errors == 0, errors, 0, "%s (%d dispatches)", name, N_DISPATCH);
        cpu_pool_free(p);
    }
}

static void case_nth(void)
{
    if (!want("nth"))
        return;
    cpu_pool *p;
    if (cpu_pool_new(&p, 3, NULL) != 0) {
        t_check(false, "nth: pool");
        return;
    }
    static const int nths[] = {1, 2, 3, 4, 5, 7, 17, MAX_NTH};
    for (size_t i = 0; i < sizeof nths / sizeof nths[0]; i++)
        t_check(stress(p, nths[i], 500) == 0, "nth=%d on a pool of 3 (each index once)", nths[i]);
    cpu_pool_run_n(p, 0, count_fn, NULL); /* no-op: must not call fn */
    cpu_pool_run_n(p, -3, count_fn, NULL);
    t_check(true, "nth<=0 is a no-op");
    cpu_pool_free(p);
}

/* ---- NULL pool ---------------------------------------------------------------------------- */

static void case_null(void)
{
    if (!want("null"))
        return;
    t_check(cpu_pool_threads(NULL) == 1, "null pool: 1 thread");
    t_check(stress(NULL, 0, 10) == 0, "null pool: run(fn) = fn(ctx, 0, 1)");
    t_check(stress(NULL, 5, 10) == 0, "null pool: run_n(5) runs 5 indices");
    cpu_pool_free(NULL);
}

/* ---- nested and concurrent dispatch ------------------------------------------------------- */

typedef struct {
    cpu_pool *pool;
    _Atomic int inner_errors;
    _Atomic int outer_runs;
} nest_job;

static void nest_fn(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    nest_job *j = ctx;
    atomic_fetch_add(&j->outer_runs, 1);
    atomic_fetch_add(&j->inner_errors, stress(j->pool, 0, 3) + stress(j->pool, 5, 3));
}

static void case_nested(void)
{
    if (!want("nested"))
        return;
    cpu_pool *p;
    if (cpu_pool_new(&p, 3, NULL) != 0) {
        t_check(false, "nested: pool");
        return;
    }
    int bad = 0;
    for (int r = 0; r < 200; r++) {
        nest_job j = {p, 0, 0};
        cpu_pool_run(p, nest_fn, &j);
        bad += atomic_load(&j.outer_runs) != 3 || atomic_load(&j.inner_errors) != 0;
    }
    t_check(bad == 0, "nested dispatch from inside a job (200 rounds, %d bad)", bad);
    t_check(stress(p, 0, 100) == 0, "pool usable after nested dispatches");
    cpu_pool_free(p);
}

typedef struct {
    cpu_pool *pool;
    int errors;
} conc_arg;

static void *conc_main(void *arg)
{
    conc_arg *a = arg;
    a->errors = stress(a->pool, 0, 3000) + stress(a->pool, 4, 1000);
    return NULL;
}

static void case_concurrent(void)
{
    if (!want("concurrent"))
        return;
    cpu_pool *p;
    if (cpu_pool_new(&p, 2, NULL) != 0) {
        t_check(false, "concurrent: pool");
        return;
    }
    conc_arg a[2] = {{p, 0}, {p, 0}};
    pthread_t th;
    pthread_create(&th, NULL, conc_main, &a[1]);
    conc_main(&a[0]);
    pthread_join(th, NULL);
    t_check(a[0].errors == 0 && a[1].errors == 0,
            "concurrent dispatch from two threads (one runs inline)");
    cpu_pool_free(p);
}

/* ---- the workers take part ---------------------------------------------------------------- */

typedef struct {
    pthread_t seen[MAX_NTH];
    _Atomic int n_seen;
    pthread_mutex_t mu;
} who_job;

static void who_fn(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    who_job *j = ctx;
    struct timespec ts = {0, 1000000}; /* 1 ms: long enough for every thread to claim one */
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&j->mu);
    int n = atomic_load(&j->n_seen), found = 0;
    for (int i = 0; i < n; i++)
        found |= pthread_equal(j->seen[i], pthread_self());
    if (!found && n < MAX_NTH)
        j->seen[n++] = pthread_self();
    atomic_store(&j->n_seen, n);
    pthread_mutex_unlock(&j->mu);
}

static void case_participation(void)
{
    if (!want("participation"))
        return;
    cpu_pool *p;
    if (cpu_pool_new(&p, 3, NULL) != 0) {
        t_check(false, "participation: pool");
        return;
    }
    who_job j = {.n_seen = 0};
    pthread_mutex_init(&j.mu, NULL);
    for (int r = 0; r < 20 && atomic_load(&j.n_seen) < 3; r++)
        cpu_pool_run_n(p, 12, who_fn, &j);
    t_check(atomic_load(&j.n_seen) == 3, "every thread of a pool of 3 runs indices (%d seen)",
            atomic_load(&j.n_seen));
    pthread_mutex_destroy(&j.mu);
    cpu_pool_free(p);
}

/* ---- parking, lifetime, defaults ---------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void case_park(void)
{
    if (!want("park"))
        return;
    cpu_pool *p;
    if (cpu_pool_new(&p, 3, NULL) != 0) {
        t_check(false, "park: pool");
        return;
    }
    int errors = 0;
    for (int r = 0; r < 5; r++) {
        sleep_ms(20); /* longer than the spin: the workers park on the condition variable */
        errors += stress(p, 0, 2);
    }
    t_check(errors == 0, "dispatch after the workers parked (5 x 20 ms idle)");
    sleep_ms(20);
    cpu_pool_free(p); /* shutdown of parked workers */
    t_check(true, "free with parked workers");
}

static void case_lifetime(void)
{
    if (!want("lifetime"))
        return;
    int errors = 0;
    for (int r = 0; r < 50; r++) {
        cpu_pool *p;
        if (cpu_pool_new(&p, 1 + r % 4, NULL) != 0) {
            errors++;
            continue;
        }
        if (r % 2)
            errors += stress(p, 0, 1 + r);
        cpu_pool_free(p); /* r even: free right after creation, workers still starting */
    }
    t_check(errors == 0, "50 create/dispatch/free cycles, 1-4 threads");
    cpu_pool *p = NULL;
    ds4_error err;
    int rc = cpu_pool_new(&p, CPU_POOL_MAX_THREADS + 1, &err);
    t_check(rc == DS4_E_ARG && p == NULL, "too many threads -> DS4_E_ARG");
}

static void case_default(void)
{
    if (!want("default"))
        return;
    const char *old = getenv("DS4_THREADS");
    char *saved = old ? strdup(old) : NULL;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    setenv("DS4_THREADS", "3", 1);
    t_check(cpu_pool_default_threads() == 3, "DS4_THREADS=3 -> 3");
    setenv("DS4_THREADS", "100000", 1);
    t_check(cpu_pool_default_threads() == CPU_POOL_MAX_THREADS, "DS4_THREADS=100000 -> cap");
    setenv("DS4_THREADS", "zero", 1);
    t_check(cpu_pool_default_threads() == (ncpu > 0 ? ncpu : 1), "DS4_THREADS=zero -> online CPUs");
    unsetenv("DS4_THREADS");
    t_check(cpu_pool_default_threads() == (ncpu > 0 ? ncpu : 1), "unset -> online CPUs (%ld)", ncpu);
    cpu_pool *p;
    if (cpu_pool_new(&p, 0, NULL) == 0) {
        t_check(cpu_pool_threads(p) == (ncpu > 0 ? ncpu : 1), "cpu_pool_new(0) -> default");
        cpu_pool_free(p);
    }
    if (saved) {
        setenv("DS4_THREADS", saved, 1);
        free(saved);
    }
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    case_null();
    case_stress();
    case_nth();
    case_alternating();
    case_nested();
    case_concurrent();
    case_participation();
    case_park();
    case_lifetime();
    case_default();
    return t_summary();
}
