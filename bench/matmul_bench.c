/* matmul_bench.c — the threaded CPU matmul (src/kernels/cpu/matmul.c) on ds4's shapes:
 * matvec (n_tok = 1) and small-batch matmul (n_tok 2, 4, 8, 16) for the attention-like Q8_0
 * 4096x4096, the shared-expert Q8_0 4096->2048, the router F16 4096->256 and the routed expert
 * types, with 1 thread and with the pool; plus the activation quantization alone and the pool's
 * dispatch overhead. Each timed call reads the next of several copies of the matrix (together
 * over 2x the LLC), so weights stream from DRAM as in a real forward pass. Prints median/min
 * us, GB/s of weight bytes, % of the read bandwidth measured here, and the speed-up over one
 * thread; each case's output is first checked bit-exact against the plain kernel loop.
 * Usage: matmul_bench [--csv FILE] [--threads N] [--budget SECONDS] [--only NAME]
 * Follows style.md §10; owns no kernels. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "quant/quant.h"

#define MAX_ITERS 200
#define MIN_ITERS 5
#define POOL_ROWS 64 /* distinct random rows, tiled over the matrix */
#define MAX_COPY_BYTES (1536.0 * (1 << 20)) /* cap on the rotating copies */

typedef struct {
    const char *csv;
    int threads;
    double budget_s;
    const char *only;
} options;

typedef struct {
    const char *name; /* what the shape is in ds4 */
    ds4_type type;
    int64_t ne0, ne1;
} shape;

static const shape shapes[] = {
    {"attn-like", DS4_TYPE_Q8_0, 4096, 4096},
    {"shexp gate", DS4_TYPE_Q8_0, 4096, 2048},
    {"router", DS4_TYPE_F16, 4096, 256},
    {"exp gate q2", DS4_TYPE_IQ2_XXS, 4096, 2048},
    {"exp down q2", DS4_TYPE_Q2_K, 2048, 4096},
    {"exp gate q4", DS4_TYPE_Q4_K, 4096, 2048},
};
static const int toks[] = {1, 2, 4, 8, 16};

typedef struct {
    FILE *csv;
    double bw_all;
    int failed;
} bench;

/* Fills one matrix with POOL_ROWS quantized pseudo-Gaussian rows, tiled. */
static void fill_matrix(const shape *s, uint8_t *w, size_t rb)
{
    float *v = malloc((size_t)s->ne0 * sizeof *v);
    uint64_t st = 0x5eedu + (uint64_t)s->type;
    for (int64_t r = 0; r < s->ne1; r++) {
        if (r >= POOL_ROWS) {
            memcpy(w + (size_t)r * rb, w + (size_t)(r % POOL_ROWS) * rb, rb);
            continue;
        }
        for (int64_t i = 0; i < s->ne0; i++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                acc += (double)(st >> 11) / 9007199254740992.0;
            }
            v[i] = (float)((acc - 2.0) * 1.7);
        }
        quant_get_traits(s->type)->quant_row(v, w + (size_t)r * rb, s->ne0);
    }
    free(v);
}

/* Output check: cpu_matmul on copy 0 == the plain kernel loop, bit for bit. */
static int check_case(cpu_pool *p, const cpu_weight *w, const float *x, int nt, float *y,
                      cpu_act *scratch)
{
    cpu_matmul(p, w, x, nt, y, scratch, NULL);
    ds4_type xt = cpu_act_type(w->type);
    void *q = malloc(quant_row_bytes(xt, w->ne0));
    cpu_dot_fn dot = cpu_get_dot(w->type, cpu_matmul_isa());
    int ok = 1;
    for (int t = 0; t < nt && ok; t++) {
        quant_get_traits(xt)->quant_row(x + t * w->ne0, q, w->ne0);
        for (int64_t r = 0; r < w->ne1; r++) {
            float k = dot(w->ne0, (const uint8_t *)w->data + (size_t)r * w->row_bytes, q);
            ok &= memcmp(&k, &y[t * w->ne1 + r], sizeof k) == 0;
        }
    }
    free(q);
    return ok;
}

static void emit(bench *b, const shape *s, int nt, int threads, double mb, double med_us,
                 double min_us, double quant_us, double x1, const char *check)
{
    double gbs = mb * 1e6 / (med_us * 1e-6) / 1e9;
    double pct = 100.0 * gbs / b->bw_all;
    char shp[32];
    snprintf(shp, sizeof shp, "%lldx%lld", (long long)s->ne1, (long long)s->ne0);
    printf("%-12s %-8s %10s %5d %3d %8.2f %10.1f %10.1f %8.1f %7.2f %6.1f%% %6.2f  %s\n", s->name,
           quant_get_traits(s->type)->name, shp, nt, threads, mb, med_us, min_us, quant_us, gbs,
           pct, x1, check);
    if (b->csv)
        fprintf(b->csv, "%s,%s,%lld,%lld,%d,%d,%.3f,%.1f,%.1f,%.1f,%.3f,%.2f,%.3f,%s\n", s->name,
                quant_get_traits(s->type)->name, (long long)s->ne1, (long long)s->ne0, nt,
                threads, mb, med_us, min_us, quant_us, gbs, pct, x1, check);
    fflush(stdout);
}

/* Times one shape at every n_tok, with 1 thread and with the pool (interleaved per n_tok). */
static void bench_shape(bench *b, const options *o, cpu_pool *pools[2], const shape *s)
{
    size_t rb = quant_row_bytes(s->type, s->ne0);
    size_t bytes = rb * (size_t)s->ne1;
    int copies = (int)ceil(2.0 * (double)bench_llc_bytes() / (double)bytes);
    if ((double)copies * (double)bytes > MAX_COPY_BYTES)
        copies = (int)(MAX_COPY_BYTES / (double)bytes);
    if (copies < 1)
        copies = 1;
    uint8_t *w = malloc(bytes * (size_t)copies);
    float *x = malloc(sizeof(float) * 16 * (size_t)s->ne0);
    float *y = malloc(sizeof(float) * 16 * (size_t)s->ne1);
    if (!w || !x || !y) {
        fprintf(stderr, "matmul_bench: cannot allocate %zu bytes\n", bytes * (size_t)copies);
        exit(1);
    }
    fill_matrix(s, w, rb);
    for (int c = 1; c < copies; c++)
        memcpy(w + (size_t)c * bytes, w, bytes);
    for (int64_t i = 0; i < 16 * s->ne0; i++)
        x[i] = (float)sin(0.37 * (double)i) * (1.0f + (float)(i % 7));
    cpu_weight cw[copies];
    for (int c = 0; c < copies; c++)
        cpu_weight_init(&cw[c], s->type, s->ne0, s->ne1, w + (size_t)c * bytes, NULL);
    cpu_act scratch = {0};
    for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
        int nt = toks[k];
        double med[2] = {0, 0}, mn[2] = {0, 0}, qus[2] = {0, 0};
        const char *check[2] = {"ok", "ok"};
        for (int pi = 0; pi < 2; pi++) {
            cpu_pool *p = pools[pi];
            if (pi == 1 && cpu_pool_threads(p) == 1)
                break;
            if (!check_case(p, &cw[0], x, nt, y, &scratch)) {
                check[pi] = "FAIL";
                b->failed = 1;
            }
            double t[MAX_ITERS], tq[MAX_ITERS], spent = 0;
            int it = 0;
            while (it < MAX_ITERS && (it < MIN_ITERS || spent < o->budget_s)) {
                double t0 = bench_now_s();
                cpu_matmul(p, &cw[it % copies], x, nt, y, &scratch, NULL);
                t[it] = bench_now_s() - t0;
                spent += t[it];
                t0 = bench_now_s();
                if (cpu_act_type(s->type) != DS4_TYPE_F32)
                    cpu_act_quantize(p, &scratch, cpu_act_type(s->type), x, s->ne0, nt, s->ne0,
                                     NULL);
                tq[it++] = bench_now_s() - t0;
            }
            med[pi] = bench_median(t, it) * 1e6;
            mn[pi] = t[0] * 1e6;
            qus[pi] = bench_median(tq, it) * 1e6;
        }
        double mb = (double)bytes / 1e6;
        emit(b, s, nt, 1, mb, med[0], mn[0], qus[0], 1.0, check[0]);
        if (cpu_pool_threads(pools[1]) > 1)
            emit(b, s, nt, cpu_pool_threads(pools[1]), mb, med[1], mn[1], qus[1],
                 med[0] / med[1], check[1]);
    }
    cpu_act_free(&scratch);
    free(w);
    free(x);
    free(y);
}

/* ======== dispatch overhead ============================================================== */

static void empty_fn(void *ctx, int ith, int nth)
{
    (void)ctx;
    (void)ith;
    (void)nth;
}

/* Every index waits until all nth have started: one index per thread, so the time is the
 * full round trip of waking every worker and hearing back from it. */
static void rendezvous_fn(void *ctx, int ith, int nth)
{
    (void)ith;
    _Atomic int *arrived = ctx;
    atomic_fetch_add(arrived, 1);
    double t0 = bench_now_s();
    while (atomic_load(arrived) < nth && bench_now_s() - t0 < 0.1)
        ;
}

/* Median us per dispatch of batches of n back-to-back dispatches of fn. */
static double time_dispatches(cpu_pool *p, cpu_pool_fn fn, int rendezvous, double *min_us)
{
    enum { N = 20000, BATCH = 100 };
    double t[N / BATCH];
    _Atomic int arrived;
    for (int i = 0; i < N / BATCH; i++) {
        double t0 = bench_now_s();
        for (int k = 0; k < BATCH; k++) {
            atomic_store(&arrived, 0);
            cpu_pool_run(p, fn, rendezvous ? (void *)&arrived : NULL);
        }
        t[i] = (bench_now_s() - t0) / BATCH;
    }
    double med = bench_median(t, N / BATCH) * 1e6;
    *min_us = t[0] * 1e6;
    return med;
}

/* Dispatch overhead: empty jobs back to back (the caller may claim every index before a
 * worker does: what a tiny job costs), rendezvous jobs (every thread must take part: the
 * wake-up round trip with spinning workers), and one empty job after 5 ms idle (workers
 * parked on the condition variable). */
static void bench_dispatch(bench *b, cpu_pool *p)
{
    int nth = cpu_pool_threads(p);
    enum { N_COLD = 40 };
    for (int i = 0; i < 1000; i++)
        cpu_pool_run(p, empty_fn, NULL);
    double hot_min, rv_min;
    double hot = time_dispatches(p, empty_fn, 0, &hot_min);
    double rv = time_dispatches(p, rendezvous_fn, 1, &rv_min);
    double tc[N_COLD];
    for (int i = 0; i < N_COLD; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        double t0 = bench_now_s();
        cpu_pool_run(p, empty_fn, NULL);
        tc[i] = bench_now_s() - t0;
    }
    double cold = bench_median(tc, N_COLD) * 1e6, cold_min = tc[0] * 1e6;
    printf("# dispatch overhead, %d threads (median us, min): empty job %.2f (%.2f); every "
           "thread taking part %.2f (%.2f); empty job after 5 ms idle, workers parked %.2f "
           "(%.2f)\n",
           nth, hot, hot_min, rv, rv_min, cold, cold_min);
    if (b->csv)
        fprintf(b->csv, "dispatch empty,-,0,0,0,%d,0,%.2f,%.2f,0,0,0,0,ok\n"
                        "dispatch all threads,-,0,0,0,%d,0,%.2f,%.2f,0,0,0,0,ok\n"
                        "dispatch parked,-,0,0,0,%d,0,%.2f,%.2f,0,0,0,0,ok\n",
                nth, hot, hot_min, nth, rv, rv_min, nth, cold, cold_min);
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){NULL, 0, 0.25, NULL};
    const bench_opt opts[] = {{"--csv", 's', &o->csv},
                              {"--threads", 'i', &o->threads},
                              {"--budget", 'd', &o->budget_s},
                              {"--only", 's', &o->only}};
    return bench_parse_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                            "matmul_bench [--csv FILE] [--threads N] [--budget SECONDS] "
                            "[--only NAME]");
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    if (o.threads <= 0)
        o.threads = cpu_pool_default_threads();
    cpu_pool *pools[2];
    ds4_error err;
    if (cpu_pool_new(&pools[0], 1, &err) != 0 || cpu_pool_new(&pools[1], o.threads, &err) != 0) {
        fprintf(stderr, "matmul_bench: %s\n", err.msg);
        return 1;
    }
    bench_header("ds4 bench/matmul_bench — threaded CPU matmul (cpu_matmul) on ds4 shapes",
                 cpu_isa_name(cpu_matmul_isa()));
    bench b = {NULL, 0, 0};
    double bw1;
    if (bench_bandwidth(o.threads, &bw1, &b.bw_all) != 0) {
        fprintf(stderr, "matmul_bench: cannot allocate the bandwidth buffer\n");
        return 1;
    }
    if (bench_csv_open("matmul_bench", o.csv,
                       "case,type,rows,cols,n_tok,threads,weight_MB,median_us,min_us,quant_us,"
                       "GBps,pct_bw,x_1thread,check",
                       &b.csv))
        return 1;
    bench_dispatch(&b, pools[1]);
    printf("# each call reads the next of several matrix copies (> 2x LLC in all): weights come "
           "from DRAM\n# time includes the activation quantization (quant_us: it alone); %%bw: "
           "of the %d-thread bandwidth; x1t: speed-up over 1 thread\n",
           o.threads);
    printf("%-12s %-8s %10s %5s %3s %8s %10s %10s %8s %7s %7s %6s  %s\n", "case", "type",
           "rows x cols", "n_tok", "thr", "MB", "median_us", "min_us", "quant_us", "GB/s", "%bw",
           "x1t", "check");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!o.only || strstr(shapes[i].name, o.only))
            bench_shape(&b, &o, pools, &shapes[i]);
    if (b.csv)
        fclose(b.csv);
    cpu_pool_free(pools[0]);
    cpu_pool_free(pools[1]);
    if (b.failed)
        fprintf(stderr, "matmul_bench: some outputs differ from the kernel loop (check column)\n");
    return b.failed ? 1 : 0;
}
