/* moe_bench.c — one routed-expert MoE layer (src/kernels/cpu/moe.h) at the published DS4
 * Flash dimensions (n_embd 4096, n_ff 2048, 256 experts, 6 per token) for the q2 mix
 * (IQ2_XXS gate/up, Q2_K down) and the q4 mix (Q4_K), batch 1, 2, 4, 8, 16, the GEMV and the
 * mini-GEMM path interleaved A/B in one run, in three regimes:
 *   cold: every call takes 6 experts not touched for the last ~40 calls (a shuffled walk over
 *         all 256), so the weights stream from DRAM; the batch's tokens share them (k order
 *         shuffled per token, own route weights): the speculative-verification case;
 *   warm: the same 6 experts every call (from cache: what operator benchmarks usually print);
 *   indep: every token takes its own 6 of the cold walk (independent requests: little
 *         sharing, up to 6 x batch experts per call).
 * Weights are random valid blocks written directly. Before timing, both paths are checked
 * bit-exact against the reference variant.
 * Prints median/min us per layer, weight GB/s (bytes of the distinct experts / median), % of the
 * read bandwidth measured here with the pool's threads, time / batch-1 time of the same path,
 * and the GEMV/mini-GEMM ratio (> 1: mini-GEMM faster); --csv writes the rows, and
 * bench/plot_moe.py draws them. Usage: moe_bench [--csv FILE] [--threads N] [--iters N]
 * Follows style.md §10; owns no kernels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/cpu/moe_impl.h"

#define N_EMBD 4096
#define N_FF 2048
#define N_EXPERT 256
#define N_USED 6
#define MAX_TOK 16

static const int batches[] = {1, 2, 4, 8, 16};
#define N_BATCH (int)(sizeof batches / sizeof batches[0])

typedef struct {
    const char *csv;
    int threads;
    int iters;
} options;

/* ======== random layers ================================================================= */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return *s = x;
}

/* A tensor of random valid blocks: random bytes, then every block's f16 scale(s) set to a
 * sane value (the other fields of these types are valid for any bits). */
static int make_tensor(cpu_moe_tensor *T, ds4_type type, int64_t n_in, int64_t n_out,
                       float scale, uint64_t seed)
{
    T->type = type;
    T->n_in = n_in;
    T->n_out = n_out;
    T->row_bytes = quant_row_bytes(type, n_in);
    T->expert_bytes = T->row_bytes * (size_t)n_out;
    const size_t bytes = T->expert_bytes * N_EXPERT, bb = quant_get_traits(type)->block_bytes;
    uint8_t *p = malloc(bytes);
    if (!p)
        return -1;
    uint64_t s = seed | 1;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = rng_next(&s);
        memcpy(p + i, &v, 8);
    }
    const quant_f16 d = quant_f32_to_f16(scale), dmin = quant_f32_to_f16(2.0f * scale);
    for (size_t b = 0; b < bytes / bb; b++) {
        uint8_t *blk = p + b * bb;
        if (type == DS4_TYPE_Q2_K) { /* d, dmin at the end */
            memcpy(blk + 80, &d, 2);
            memcpy(blk + 82, &dmin, 2);
        } else {
            memcpy(blk, &d, 2);
            if (type == DS4_TYPE_Q4_K)
                memcpy(blk + 2, &dmin, 2);
        }
    }
    T->data = p;
    return 0;
}

static int make_layer(cpu_moe_layer *L, int q2)
{
    const ds4_type gt = q2 ? DS4_TYPE_IQ2_XXS : DS4_TYPE_Q4_K, dt = q2 ? DS4_TYPE_Q2_K : DS4_TYPE_Q4_K;
    memset(L, 0, sizeof *L);
    L->n_expert = N_EXPERT;
    L->clamp = 10.0f;
    const float sg = q2 ? 1.5e-3f : 6e-4f, sd = q2 ? 2e-3f : 2e-4f;
    if (make_tensor(&L->gate, gt, N_EMBD, N_FF, sg, 11) || make_tensor(&L->up, gt, N_EMBD, N_FF, sg, 12) ||
        make_tensor(&L->down, dt, N_FF, N_EMBD, sd, 13))
        return -1;
    return 0;
}

static void free_layer(cpu_moe_layer *L)
{
    free((void *)L->gate.data), free((void *)L->up.data), free((void *)L->down.data);
}

static size_t expert_bytes(const cpu_moe_layer *L)
{
    return L->gate.expert_bytes + L->up.expert_bytes + L->down.expert_bytes;
}

/* ======== calls ========================================================================= */

typedef struct {
    float *h, *y;
    int32_t ids[MAX_TOK * N_USED];
    float w[MAX_TOK * N_USED];
    int perm[N_EXPERT]; /* the cold walk */
    int pos;
    uint64_t rng;
} state;

/* The next 6 experts: the warm set, or the next 6 of the shuffled walk (reshuffled at the
 * end, never repeating an expert of the last call). */
static void pick(state *S, int cold, int32_t set[N_USED])
{
    if (!cold) {
        for (int k = 0; k < N_USED; k++)
            set[k] = 17 + 37 * k;
        return;
    }
    if (S->pos + N_USED > N_EXPERT) {
        for (int i = N_EXPERT - 1; i > 0; i--) {
            int j = (int)(rng_next(&S->rng) % (uint64_t)(i + 1)), t = S->perm[i];
            S->perm[i] = S->perm[j], S->perm[j] = t;
        }
        S->pos = 0;
    }
    for (int k = 0; k < N_USED; k++)
        set[k] = S->perm[S->pos++];
}

/* Token t of the batch takes the set in its own order, with its own weights. */
static void assign(state *S, const int32_t set[N_USED], int n_tok)
{
    for (int t = 0; t < n_tok; t++) {
        int32_t *ids = S->ids + t * N_USED;
        memcpy(ids, set, sizeof(int32_t) * N_USED);
        for (int i = N_USED - 1; i > 0; i--) {
            int j = (int)(rng_next(&S->rng) % (uint64_t)(i + 1));
            int32_t tmp = ids[i];
            ids[i] = ids[j], ids[j] = tmp;
        }
        for (int k = 0; k < N_USED; k++)
            S->w[t * N_USED + k] = 0.1f + (float)(rng_next(&S->rng) % 1000) * 4e-4f;
    }
}

static int call(cpu_moe_ctx *c, cpu_pool *p, const cpu_moe_layer *L, state *S, int n_tok,
                cpu_moe_path path, float *y)
{
    cpu_moe_args a = {L, n_tok, N_USED, S->ids, S->w, S->h, N_EMBD, y, N_EMBD, false, path, -1};
    ds4_error err = {0};
    int rc = cpu_moe_run(c, p, &a, &err);
    if (rc)
        fprintf(stderr, "moe_bench: %s\n", err.msg);
    return rc;
}

/* Both paths against the reference variant, bit for bit, on one batch of 4 (cold set). */
static int check(cpu_moe_ctx *c, cpu_pool *p, const cpu_moe_layer *L, state *S)
{
    const int n = 4;
    float *ref = malloc(sizeof(float) * n * N_EMBD);
    int32_t set[N_USED];
    pick(S, 1, set);
    assign(S, set, n);
    cpu_moe_ctx_set_ops(c, &cpu_moe_ops_ref);
    int bad = call(c, p, L, S, n, CPU_MOE_GEMV, ref);
    cpu_moe_ctx_set_ops(c, NULL);
    for (int pi = 0; pi < 2 && !bad; pi++) {
        bad |= call(c, p, L, S, n, pi ? CPU_MOE_MINIGEMM : CPU_MOE_GEMV, S->y);
        bad |= memcmp(ref, S->y, sizeof(float) * n * N_EMBD) != 0;
    }
    free(ref);
    return bad;
}

/* ======== the table ===================================================================== */

typedef struct {
    double med, min;
} timing;

enum { COLD, WARM, INDEP };
static const char *const regime_names[] = {"cold", "warm", "indep"};

/* Ids and weights of one call; returns the number of distinct experts. */
static int setup_call(state *S, int regime, int n_tok)
{
    int32_t set[N_USED];
    if (regime != INDEP) {
        pick(S, regime == COLD, set);
        assign(S, set, n_tok);
        return N_USED;
    }
    unsigned char seen[N_EXPERT] = {0};
    int distinct = 0;
    for (int t = 0; t < n_tok; t++) {
        pick(S, 1, set);
        for (int k = 0; k < N_USED; k++) {
            S->ids[t * N_USED + k] = set[k];
            S->w[t * N_USED + k] = 0.1f + (float)(rng_next(&S->rng) % 1000) * 4e-4f;
            distinct += !seen[set[k]];
            seen[set[k]] = 1;
        }
    }
    return distinct;
}

/* Median/min us of each path; *experts gets the mean distinct experts per call. */
static void run_case(cpu_moe_ctx *c, cpu_pool *p, const cpu_moe_layer *L, state *S, int regime,
                     int n_tok, int iters, timing out[2], double *experts)
{
    double t[2][256];
    long distinct = 0;
    for (int it = -2; it < iters; it++) {
        for (int k = 0; k < 2; k++) {
            const int pi = (it + k) & 1; /* alternate which path goes first */
            /* a cold call never finds the other path's experts cached */
            const int d = setup_call(S, regime, n_tok);
            if (it >= 0)
                distinct += d;
            const double t0 = bench_now_s();
            call(c, p, L, S, n_tok, pi ? CPU_MOE_MINIGEMM : CPU_MOE_GEMV, S->y);
            if (it >= 0)
                t[pi][it] = 1e6 * (bench_now_s() - t0);
        }
    }
    *experts = (double)distinct / (2.0 * iters);
    for (int pi = 0; pi < 2; pi++) {
        double mn = t[pi][0];
        for (int i = 1; i < iters; i++)
            mn = t[pi][i] < mn ? t[pi][i] : mn;
        out[pi].min = mn;
        out[pi].med = bench_median(t[pi], iters);
    }
}

static void parse(int argc, char **argv, options *o)
{
    o->csv = NULL;
    o->threads = 0;
    o->iters = 15;
    const bench_opt opts[] = {{"--csv", 's', &o->csv},
                              {"--threads", 'i', &o->threads},
                              {"--iters", 'i', &o->iters}};
    if (bench_parse_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                         "moe_bench [--csv FILE] [--threads N] [--iters N]"))
        exit(2);
    if (o->iters < 3)
        o->iters = 3;
    if (o->iters > 256)
        o->iters = 256;
}

int main(int argc, char **argv)
{
    options o;
    parse(argc, argv, &o);
    const double t_start = bench_now_s();
    cpu_pool *p;
    cpu_moe_ctx *c;
    if (cpu_pool_new(&p, o.threads, NULL) || cpu_moe_ctx_new(&c, NULL))
        return 1;
    const int nth = cpu_pool_threads(p);
    bench_header("moe_bench: one routed-expert MoE layer, 4096/2048, 256 experts, 6 used",
                 cpu_moe_isa_name());
    double bw1, bw;
    if (bench_bandwidth(nth, &bw1, &bw))
        return 1;
    printf("# %d threads; %d timed calls per path and case (after 2), paths interleaved; "
           "ratio = gemv / minigemm; x b1 = time / batch-1 time of the same path (cold, warm: "
           "their own batch 1; indep: -)\n", nth, o.iters);
    FILE *csv;
    if (bench_csv_open("moe_bench", o.csv,
                       "mix,regime,batch,path,median_us,min_us,gbs,pct_bw,x_batch1,ratio,threads,"
                       "bw_gbs",
                       &csv))
        return 1;
    printf("%-3s %-5s %5s %-9s %10s %10s %7s %6s %6s %6s\n", "mix", "regime", "batch", "path",
           "median_us", "min_us", "GB/s", "%bw", "x b1", "ratio");
    state *S = calloc(1, sizeof *S);
    S->h = malloc(sizeof(float) * MAX_TOK * N_EMBD);
    S->y = malloc(sizeof(float) * MAX_TOK * N_EMBD);
    S->rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < MAX_TOK * N_EMBD; i++)
        S->h[i] = (float)((int)(rng_next(&S->rng) % 2001) - 1000) * 2e-3f;
    for (int i = 0; i < N_EXPERT; i++)
        S->perm[i] = i;
    S->pos = N_EXPERT;
    int failed = 0;
    for (int q2 = 1; q2 >= 0; q2--) {
        const char *mix = q2 ? "q2" : "q4";
        cpu_moe_layer L;
        if (make_layer(&L, q2)) {
            fprintf(stderr, "moe_bench: out of memory for the %s layer\n", mix);
            return 1;
        }
        if (check(c, p, &L, S)) {
            printf("# %s: FAILED: the paths differ from the reference variant\n", mix);
            failed = 1;
        } else
            printf("# %s: both paths == reference variant (batch 4, bit for bit)\n", mix);
        for (int regime = COLD; regime <= INDEP; regime++) {
            double b1[2] = {0, 0};
            for (int bi = regime == INDEP; bi < N_BATCH; bi++) {
                timing tm[2];
                double experts;
                run_case(c, p, &L, S, regime, batches[bi], o.iters, tm, &experts);
                const double gb = experts * (double)expert_bytes(&L) / 1e9;
                for (int pi = 0; pi < 2; pi++) {
                    if (bi == 0)
                        b1[pi] = tm[pi].med;
                    const double gbs = gb / (tm[pi].med * 1e-6), ratio = tm[0].med / tm[1].med;
                    const char *path = pi ? "minigemm" : "gemv";
                    const double xb1 = b1[pi] > 0 ? tm[pi].med / b1[pi] : NAN;
                    printf("%-3s %-5s %5d %-9s %10.0f %10.0f %7.2f %5.1f%% %6.2f %6.2f\n", mix,
                           regime_names[regime], batches[bi], path, tm[pi].med, tm[pi].min,
                           gbs, 100.0 * gbs / bw, xb1, ratio);
                    if (csv)
                        fprintf(csv, "%s,%s,%d,%s,%.1f,%.1f,%.3f,%.2f,%.3f,%.3f,%d,%.2f\n", mix,
                                regime_names[regime], batches[bi], path, tm[pi].med,
                                tm[pi].min, gbs, 100.0 * gbs / bw, xb1, ratio, nth, bw);
                }
                fflush(stdout);
            }
        }
        free_layer(&L);
    }
    printf("# auto path (DS4_DECODE_MOE_MINIGEMM unset), tokens sharing 6 experts: q2");
    for (int bi = 0; bi < N_BATCH; bi++)
        printf(" %d:%s", batches[bi],
               cpu_moe_path_name(cpu_moe_auto_path(DS4_TYPE_IQ2_XXS, batches[bi], batches[bi])));
    printf("; q4");
    for (int bi = 0; bi < N_BATCH; bi++)
        printf(" %d:%s", batches[bi],
               cpu_moe_path_name(cpu_moe_auto_path(DS4_TYPE_Q4_K, batches[bi], batches[bi])));
    printf("; independent tokens: %s", cpu_moe_path_name(cpu_moe_auto_path(DS4_TYPE_IQ2_XXS, 16, 1.0)));
    printf("\n# whole run: %.0f s\n", bench_now_s() - t_start);
    if (csv)
        fclose(csv);
    free(S->h), free(S->y), free(S);
    cpu_moe_ctx_free(c);
    cpu_pool_free(p);
    return failed;
}
