/* threadpool.h — a persistent CPU thread pool: N-1 worker threads created once, plus the
 * calling thread, run one job `fn(ctx, ith, nth)` for ith = 0..nth-1 and the call returns
 * when every index is done. Built for the forward pass, which dispatches thousands of short
 * jobs per token: workers spin briefly on a generation counter, then park on a condition
 * variable; indices are claimed dynamically, so a late worker never delays a dispatch.
 * Owns threads only; the work split (rows, tokens) is the caller's.
 * Invariants: each index runs exactly once per dispatch, on some thread (which one is not
 * fixed: results must depend on ith only, never on the thread); a dispatch from inside a job,
 * or while another thread is dispatching on the same pool, runs all its indices serially on
 * the calling thread in index order (same results, no deadlock). */
#ifndef DS4_KERNELS_CPU_THREADPOOL_H
#define DS4_KERNELS_CPU_THREADPOOL_H

#include "ds4.h"

typedef struct cpu_pool cpu_pool;

/* A job body: index ith of nth (0 <= ith < nth). Must not assume which thread runs it. */
typedef void (*cpu_pool_fn)(void *ctx, int ith, int nth);

#define CPU_POOL_MAX_THREADS 512 /* sanity bound on the thread count */

/* The thread count to use when the user gave none: DS4_THREADS if it is set to a positive
 * integer (capped at CPU_POOL_MAX_THREADS), else the number of online CPUs (at least 1). */
int cpu_pool_default_threads(void);

/* Creates a pool of n_threads threads in all, the caller included (n_threads - 1 workers);
 * n_threads <= 0 means cpu_pool_default_threads(). Returns 0 and sets *out, or DS4_E_ARG
 * (more than CPU_POOL_MAX_THREADS) / DS4_E_NOMEM (allocation or thread creation failed) with
 * a message in err; *out is NULL on failure. */
int cpu_pool_new(cpu_pool **out, int n_threads, ds4_error *err);

/* Stops and joins the workers and frees the pool; NULL is a no-op. No dispatch may be in
 * flight. */
void cpu_pool_free(cpu_pool *p);

/* Threads in the pool, the caller included; 1 for a NULL pool. */
int cpu_pool_threads(const cpu_pool *p);

/* Runs fn(ctx, ith, nth) for ith = 0..nth-1 with nth = cpu_pool_threads(p), the caller taking
 * part; returns when all are done (their writes are visible to the caller). A NULL pool runs
 * fn(ctx, 0, 1). */
void cpu_pool_run(cpu_pool *p, cpu_pool_fn fn, void *ctx);

/* Same with nth indices (any count: more indices than threads balance uneven work); a NULL
 * or one-thread pool runs them in order on the caller. nth <= 0 is a no-op. */
void cpu_pool_run_n(cpu_pool *p, int nth, cpu_pool_fn fn, void *ctx);

#endif
