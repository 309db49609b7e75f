/* threadpool.c — the persistent pool of threadpool.h. A dispatch writes the job (fn, ctx,
 * nth) into the slot of its generation (two slots, alternating) and publishes the generation
 * in one atomic word `state` = generation << 32 | next unclaimed index; the caller and every
 * awake worker claim indices by CAS on that word, run them and count them in `done`; the
 * caller returns when done == nth. A worker that is slow to wake (parked, or descheduled on a busy machine) therefore never delays a dispatch: others
 * take its indices. Workers spin on the generation for SPIN_NS, then park on a condition
 * variable; the dispatcher broadcasts only when someone is parked, and seq_cst ordering of the
 * state store against the parked count excludes lost wake-ups (see park()). */
#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* A worker spins this long for the next job before parking, and the caller this long on
 * stragglers before yielding; both are 0 when the pool has more threads than online CPUs
 * (a spinning thread would then keep the one it waits for off the CPU). */
#define SPIN_NS 1000000
#define WAIT_SPIN_NS 50000
#define CACHE_LINE 64

typedef struct worker {
    cpu_pool *pool;
    pthread_t tid;
} worker;

#define GEN_SHIFT 32
#define INDEX_MASK 0xffffffffull

struct cpu_pool {
    int n_threads;
    worker *workers;       /* [n_threads - 1] */
    uint64_t spin_ns;      /* SPIN_NS, or 0 when oversubscribed */
    uint64_t wait_spin_ns; /* WAIT_SPIN_NS, or 0 when oversubscribed */

    /* the job of generation g lives in job[g & 1], written by the dispatcher before it
     * publishes g; atomics because a late worker may read a slot while a later job is being
     * written there (it then fails its claim, see claim()) */
    struct {
        _Atomic(cpu_pool_fn) fn;
        _Atomic(void *) ctx;
        _Atomic int nth;
    } job[2];

    alignas(CACHE_LINE) _Atomic uint64_t state; /* generation << 32 | next unclaimed index */
    alignas(CACHE_LINE) _Atomic int done;       /* indices finished in this generation */
    alignas(CACHE_LINE) _Atomic int n_parked;   /* workers in (or entering) cond wait */
    _Atomic int stop;
    _Atomic int busy; /* a dispatch is in flight: nested/concurrent ones run inline */

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cpu_pool_default_threads(void)
{
    const char *env = getenv("DS4_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == 0 && v > 0)
            return v > CPU_POOL_MAX_THREADS ? CPU_POOL_MAX_THREADS : (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > CPU_POOL_MAX_THREADS ? CPU_POOL_MAX_THREADS : (int)n;
}

/* Claims and runs indices of generation gen until none is left (or the generation moved
 * on). A claim is a CAS on (gen, next): it succeeds only while gen is current and next < nth.
 * The job is read from slot gen & 1, which the dispatcher rewrites only for gen + 2, i.e.
 * after gen + 1 was published: so when a claim succeeds the slot still held gen's job when
 * it was read. (With one slot, a worker could read gen + 1's job, written while the state
 * still said gen, compare a finished gen's next against the new nth and claim an index of
 * the unpublished job.) */
static void claim(cpu_pool *p, uint32_t gen)
{
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    if ((uint32_t)(s >> GEN_SHIFT) != gen)
        return;
    cpu_pool_fn fn = atomic_load_explicit(&p->job[gen & 1].fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&p->job[gen & 1].ctx, memory_order_relaxed);
    int nth = atomic_load_explicit(&p->job[gen & 1].nth, memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(s >> GEN_SHIFT) != gen || (int)(s & INDEX_MASK) >= nth)
            return;
        if (atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            fn(ctx, (int)(s & INDEX_MASK), nth);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            s++;
        }
    }
}

/* Blocks until the generation differs from seen. Parking: n_parked is raised under the mutex
 * before the state is re-read (both seq_cst); the dispatcher stores the new state before
 * reading n_parked (seq_cst). So either it sees the parked worker and broadcasts under the
 * mutex, or the worker sees the new generation: no wake-up is lost. */
static uint32_t park(cpu_pool *p, uint32_t seen)
{
    uint32_t g;
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_parked, 1);
    while ((g = (uint32_t)(atomic_load(&p->state) >> GEN_SHIFT)) == seen)
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->n_parked, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

/* Spins for up to spin_ns for a generation other than seen, then parks. */
static uint32_t wait_gen(cpu_pool *p, uint32_t seen)
{
    uint64_t t0 = 0;
    for (unsigned it = 0;; it++) {
        uint32_t g =
            (uint32_t)(atomic_load_explicit(&p->state, memory_order_acquire) >> GEN_SHIFT);
        if (g != seen)
            return g;
        if (!p->spin_ns)
            return park(p, seen);
        cpu_relax();
        if ((it & 255) == 255) {
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > p->spin_ns)
                return park(p, seen);
        }
    }
}

static void *worker_main(void *arg)
{
    cpu_pool *p = ((worker *)arg)->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            break;
        claim(p, seen);
    }
    return NULL;
}

/* The generation the next dispatch will publish. Only the dispatcher (holding busy) or
 * cpu_pool_free writes the generation. */
static uint32_t next_gen(cpu_pool *p)
{
    return (uint32_t)(atomic_load_explicit(&p->state, memory_order_relaxed) >> GEN_SHIFT) + 1;
}

/* Writes the job of generation gen into its slot. */
static void set_job(cpu_pool *p, uint32_t gen, cpu_pool_fn fn, void *ctx, int nth)
{
    atomic_store_explicit(&p->job[gen & 1].fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->job[gen & 1].ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->job[gen & 1].nth, nth, memory_order_relaxed);
}

/* Publishes generation gen with index 0 unclaimed, and wakes parked workers. */
static uint32_t publish(cpu_pool *p, uint32_t gen)
{
    atomic_store(&p->state, (uint64_t)gen << GEN_SHIFT); /* seq_cst: before the n_parked read */
    if (atomic_load(&p->n_parked) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return gen;
}

int cpu_pool_new(cpu_pool **out, int n_threads, ds4_error *err)
{
    *out = NULL;
    if (n_threads <= 0)
        n_threads = cpu_pool_default_threads();
    if (n_threads > CPU_POOL_MAX_THREADS)
        return ds4_error_set(err, DS4_E_ARG, "thread pool: %d threads (at most %d)", n_threads,
                             CPU_POOL_MAX_THREADS);
    cpu_pool *p = aligned_alloc(CACHE_LINE, (sizeof *p + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
    if (!p)
        return ds4_error_set(err, DS4_E_NOMEM, "thread pool: out of memory");
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int over = n_threads > (ncpu > 0 ? ncpu : 1);
    p->spin_ns = over ? 0 : SPIN_NS;
    p->wait_spin_ns = over ? 0 : WAIT_SPIN_NS;
    for (int i = 0; i < 2; i++) {
        atomic_init(&p->job[i].fn, NULL);
        atomic_init(&p->job[i].ctx, NULL);
        atomic_init(&p->job[i].nth, 0);
    }
    atomic_init(&p->state, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->n_parked, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->busy, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        cpu_pool_free(p);
        return ds4_error_set(err, DS4_E_NOMEM, "thread pool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i - 1];
        w->pool = p;
        int rc = pthread_create(&w->tid, NULL, worker_main, w);
        if (rc != 0) {
            p->n_threads = i; /* join only the workers that exist */
            cpu_pool_free(p);
            return ds4_error_set(err, DS4_E_NOMEM, "thread pool: cannot create thread %d of %d: %s",
                                 i, n_threads, strerror(rc));
        }
    }
    *out = p;
    return DS4_OK;
}

void cpu_pool_free(cpu_pool *p)
{
    if (!p)
        return;
    if (p->workers && p->n_threads > 1) {
        const uint32_t gen = next_gen(p);
        set_job(p, gen, NULL, NULL, 0);
        atomic_store(&p->stop, 1);
        publish(p, gen);
        for (int i = 1; i < p->n_threads; i++)
            pthread_join(p->workers[i - 1].tid, NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int cpu_pool_threads(const cpu_pool *p)
{
    return p ? p->n_threads : 1;
}

void cpu_pool_run_n(cpu_pool *p, int nth, cpu_pool_fn fn, void *ctx)
{
    if (nth <= 0)
        return;
    if (!p || p->n_threads == 1 || nth == 1 ||
        atomic_exchange_explicit(&p->busy, 1, memory_order_acquire)) {
        for (int i = 0; i < nth; i++) /* serial: no pool, one index, or nested/concurrent */
            fn(ctx, i, nth);
        return;
    }
    const uint32_t gen = next_gen(p);
    set_job(p, gen, fn, ctx, nth);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    claim(p, publish(p, gen));
    /* wait for indices claimed by workers: spin, then yield (the machine may be busy) */
    uint64_t t0 = 0;
    for (unsigned it = 0; atomic_load_explicit(&p->done, memory_order_acquire) != nth; it++) {
        if (!p->wait_spin_ns) {
            sched_yield();
            continue;
        }
        cpu_relax();
        if ((it & 255) == 255) {
            uint64_t t = now_ns();
            if (!t0)
                t0 = t;
            else if (t - t0 > p->wait_spin_ns)
                sched_yield();
        }
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}

void cpu_pool_run(cpu_pool *p, cpu_pool_fn fn, void *ctx)
{
    cpu_pool_run_n(p, cpu_pool_threads(p), fn, ctx);
}
