/* test_forward.c — the optimized CPU forward pass (src/model/forward.c) on tiny DS4-layout
 * models generated in memory (model_mk, the `ds4-mkmodel --preset tiny` generator, made by
 * tests/model_test_util.h) in the q2, q4 and f16 type mixes: logits against the reference
 * forward (the only differences are the activation quantization and f32 accumulation), and
 * three invariants that must hold bit for bit: 1 thread == 2 == 3 threads, decode one token
 * at a time == one prefill call == prefill split over calls (logits and caches), QAT on and
 * off, the routed experts' GEMV and mini-GEMM paths (DS4_DECODE_MOE_MINIGEMM=0|1). Then
 * argument errors. The token count passes every feature: the raw window, ratio-4 and
 * ratio-128 rows, the indexer selecting. Usage: test_forward [case-substring].
 * Spec: §3, §3.11, §4.1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/forward_ref.h"
#include "model_test_util.h"
#include "test_util.h"

/* forward vs forward_ref where no discrete choice can flip (every layer hash-routed, the
 * indexer never selecting), rel L2 of each token's logits, max over tokens: Q8_0 / Q8_K
 * activation rounding is ~0.6% rel per quantized product (step amax/127 on Gaussian blocks),
 * about ten products in series per layer; measured 2.4% median, 4.3% max after 6 layers.
 * A wrong row, expert, position or mask moves logits by O(1). */
#define FWD_REF_TOL 6e-2
/* the same with every feature on (top-k routing, indexer selecting): a near-tie flipped by
 * the rounding changes one token's logits by O(1) (rare), so the median over tokens */
#define FWD_REF_MEDIAN_TOL 6e-2
/* F16/F32 weights, QAT off: nothing is quantized, only f32 instead of double accumulation
 * (measured 4.9e-7); the exact structural check of every step */
#define FWD_REF_F32_TOL 1e-5
/* the invariants: same kernels on the same bytes whatever the threads or the split */
#define FWD_EXACT_TOL 0.0

#define MODEL_SEED 42 /* the generated models' weights (the tokens: t_seed) */
#define N_TOK 140 /* > window 64, > 128 (first ratio-128 row), > 36 (indexer selecting) */
#define SPLIT_A 37
#define SPLIT_B 101

static const char *filter;
static cpu_pool *pools[4];

static bool want(const char *name)
{
    return !filter || strstr(name, filter);
}

/* Whether two states hold the same caches and frontiers bit for bit. */
static bool same_state(const model *m, const model_state *x, const model_state *y)
{
    bool same = x->pos == y->pos;
    for (uint32_t il = 0; same && il < m->hp.n_layer; il++) {
        const model_layer_state *a = &x->layers[il], *b = &y->layers[il];
        same &= a->n_comp == b->n_comp && a->n_index == b->n_index;
        same &= memcmp(a->raw, b->raw, (size_t)x->raw_cap * m->hp.head_dim * 4) == 0;
        if (a->comp)
            same &= memcmp(a->comp, b->comp, (size_t)a->n_comp * m->hp.head_dim * 4) == 0;
        if (a->index)
            same &= memcmp(a->index, b->index,
                           (size_t)a->n_index * m->hp.indexer_head_dim * 4) == 0;
        const compressor_state *c[2][2] = {{&a->attn_cmp, &b->attn_cmp},
                                            {&a->index_cmp, &b->index_cmp}};
        for (int k = 0; k < 2; k++)
            if (c[k][0]->kv) {
                size_t nb = (size_t)c[k][0]->n_slot * c[k][0]->width * 4;
                same &= memcmp(c[k][0]->kv, c[k][1]->kv, nb) == 0 &&
                        memcmp(c[k][0]->score, c[k][1]->score, nb) == 0;
            }
    }
    return same;
}

/* Runs tokens through a fresh state in calls of the given sizes (0-terminated list). */
static int run_split(cpu_pool *p, const model *m, bool qat, const int32_t *tok,
                     const uint32_t *calls, float *logits, model_state **out, ds4_error *err)
{
    model_state *s;
    int rc = model_state_new(&s, m, N_TOK + 4, err);
    if (rc)
        return rc;
    s->qat = qat;
    uint32_t done = 0;
    for (int i = 0; calls[i] && rc == 0; i++) {
        rc = model_forward_pool(p, m, s, tok + done, calls[i],
                                logits + (size_t)done * m->hp.n_vocab, err);
        done += calls[i];
    }
    *out = s;
    return rc;
}

/* The split of N_TOK tokens into calls of one token each (0-terminated). */
static void split_ones(uint32_t ones[N_TOK + 1])
{
    for (int i = 0; i < N_TOK; i++)
        ones[i] = 1;
    ones[N_TOK] = 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* forward (2 threads, one call) against model_prefill_ref: the max (or median) over tokens of
 * each token's logits rel L2. */
static void check_vs_ref(const char *quant, bool noflip, bool qat, bool median, double tol,
                         uint64_t seed)
{
    char name[96];
    snprintf(name, sizeof name, "tiny-%s%s qat=%d: forward vs forward_ref", quant,
             noflip ? " (no flips)" : "", qat);
    if (!want(name))
        return;
    ds4_error err = {0};
    mt_loaded L;
    if (mt_load_tiny(&L, quant, MODEL_SEED, noflip, N_TOK, name))
        return;
    const model *m = L.m;
    const uint32_t V = m->hp.n_vocab;
    int32_t tok[N_TOK];
    mt_tokens(tok, N_TOK, V, seed);
    float *ref = malloc((size_t)N_TOK * V * 4), *a = malloc((size_t)N_TOK * V * 4);
    model_state *sr = NULL, *s = NULL;
    const uint32_t whole[] = {N_TOK, 0};
    int rc = model_state_new(&sr, m, N_TOK + 4, &err);
    if (rc == 0) {
        sr->qat = qat;
        rc = model_prefill_ref(m, sr, tok, N_TOK, ref, &err);
    }
    rc = rc ? rc : run_split(pools[2], m, qat, tok, whole, a, &s, &err);
    if (rc)
        t_check(false, "%s: %s", name, err.msg);
    else {
        double e[N_TOK];
        for (int t = 0; t < N_TOK; t++)
            e[t] = mt_rel_l2(a + (size_t)t * V, ref + (size_t)t * V, V);
        qsort(e, N_TOK, sizeof e[0], cmp_double);
        double v = median ? e[N_TOK / 2] : e[N_TOK - 1];
        t_case(v <= tol, v, tol, "%s, %d tokens (%s rel L2 per token; max %.3g)", name, N_TOK,
               median ? "median" : "max", e[N_TOK - 1]);
    }
    model_state_free(sr);
    model_state_free(s);
    free(ref), free(a);
    mt_unload(&L);
}

/* The bit-exact invariants on the full tiny model: threads, and how tokens are split into
 * calls (logits and every cache). */
static void check_invariants(const char *quant, bool qat, uint64_t seed)
{
    char name[96];
    snprintf(name, sizeof name, "tiny-%s qat=%d", quant, qat);
    if (!want(name))
        return;
    ds4_error err = {0};
    mt_loaded L;
    if (mt_load_tiny(&L, quant, MODEL_SEED, false, N_TOK, name))
        return;
    const model *m = L.m;
    const uint32_t V = m->hp.n_vocab;
    const size_t nl = (size_t)N_TOK * V;
    int32_t tok[N_TOK];
    mt_tokens(tok, N_TOK, V, seed);
    float *a = malloc(nl * 4), *b = malloc(nl * 4);
    model_state *s1 = NULL, *s2 = NULL;
    const uint32_t whole[] = {N_TOK, 0};
    int rc = run_split(pools[2], m, qat, tok, whole, a, &s1, &err);
    if (rc)
        t_check(false, "%s: forward: %s", name, err.msg);
    for (int th = 1; rc == 0 && th <= 3; th += 2) {
        int rc2 = run_split(pools[th], m, qat, tok, whole, b, &s2, &err);
        size_t d = rc2 ? nl : mt_n_diff(a, b, nl);
        t_case(d == 0 && same_state(m, s1, s2), (double)d, FWD_EXACT_TOL,
               "%s: threads=%d == threads=2 (logits differing; state)", name, th);
        model_state_free(s2);
        s2 = NULL;
    }
    uint32_t ones[N_TOK + 1];
    split_ones(ones);
    const uint32_t three[] = {SPLIT_A, SPLIT_B - SPLIT_A, N_TOK - SPLIT_B, 0};
    const uint32_t *splits[] = {ones, three};
    const char *what[] = {"decode (1 token per call)", "prefill in calls 37+64+39"};
    for (int k = 0; rc == 0 && k < 2; k++) {
        int rc2 = run_split(pools[2], m, qat, tok, splits[k], b, &s2, &err);
        size_t d = rc2 ? nl : mt_n_diff(a, b, nl);
        t_case(d == 0 && same_state(m, s1, s2), (double)d, FWD_EXACT_TOL,
               "%s: %s == one prefill call (logits differing; state)", name, what[k]);
        model_state_free(s2);
        s2 = NULL;
    }
    if (rc == 0 && qat) { /* the default pool (DS4_THREADS / online CPUs) computes the same */
        model_state *s = NULL;
        rc = model_state_new(&s, m, N_TOK + 4, &err);
        rc = rc ? rc : model_forward(m, s, tok, N_TOK, b, &err);
        t_check(rc == 0 && mt_n_diff(a, b, nl) == 0, "%s: model_forward (default pool, %d "
                "threads) == pool of 2", name, cpu_pool_default_threads());
        model_state_free(s);
    }
    model_state_free(s1);
    free(a), free(b);
    mt_unload(&L);
}

/* The routed experts' two CPU paths (kernels/cpu/moe.h) give the same logits bit for bit:
 * DS4_DECODE_MOE_MINIGEMM=0 (GEMV) and =1 (mini-GEMM) forced, for one prefill call and for
 * decode calls of 1 and of 4 tokens (speculative verification), and equal to the automatic
 * choice. */
static void check_moe_paths(const char *quant, uint64_t seed)
{
    char name[96];
    snprintf(name, sizeof name, "tiny-%s: DS4_DECODE_MOE_MINIGEMM", quant);
    if (!want(name))
        return;
    ds4_error err = {0};
    mt_loaded L;
    if (mt_load_tiny(&L, quant, MODEL_SEED, false, N_TOK, name))
        return;
    const model *m = L.m;
    const uint32_t V = m->hp.n_vocab;
    const size_t nl = (size_t)N_TOK * V;
    int32_t tok[N_TOK];
    mt_tokens(tok, N_TOK, V, seed);
    float *a = malloc(nl * 4), *b = malloc(nl * 4);
    uint32_t fours[N_TOK / 4 + 2], ones[N_TOK + 1];
    int nf = 0;
    for (uint32_t done = 0; done < N_TOK; done += 4)
        fours[nf++] = N_TOK - done < 4 ? N_TOK - done : 4;
    fours[nf] = 0;
    split_ones(ones);
    const uint32_t whole[] = {N_TOK, 0};
    const uint32_t *splits[] = {whole, ones, fours};
    const char *what[] = {"one prefill call", "decode 1 token per call", "calls of 4 tokens"};
    model_state *s = NULL;
    int rc = run_split(pools[2], m, true, tok, whole, a, &s, &err); /* automatic choice */
    model_state_free(s);
    for (int k = 0; rc == 0 && k < 3; k++) {
        size_t d = 0;
        for (int path = 0; path < 2; path++) {
            setenv("DS4_DECODE_MOE_MINIGEMM", path ? "1" : "0", 1);
            int rc2 = run_split(pools[2], m, true, tok, splits[k], b, &s, &err);
            d += rc2 ? nl : mt_n_diff(a, b, nl);
            model_state_free(s);
            s = NULL;
        }
        unsetenv("DS4_DECODE_MOE_MINIGEMM");
        t_case(d == 0, (double)d, FWD_EXACT_TOL, "%s=0 == =1 == automatic, %s (logits "
               "differing)", name, what[k]);
    }
    if (rc)
        t_check(false, "%s: forward: %s", name, err.msg);
    free(a), free(b);
    mt_unload(&L);
}

static void check_errors(void)
{
    if (!want("errors"))
        return;
    ds4_error err = {0};
    mt_loaded L;
    if (mt_load_tiny(&L, "f16", MODEL_SEED, false, N_TOK, "errors"))
        return;
    const model *m = L.m;
    model_state *s = NULL;
    int32_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    float *lg = malloc((size_t)12 * m->hp.n_vocab * sizeof(float));
    int rc = model_state_new(&s, m, 10, &err);
    if (rc == 0) {
        rc = model_forward_pool(pools[2], m, s, tok, 11, lg, &err);
        t_check(rc == DS4_E_RANGE && s->pos == 0, "11 tokens in a context of 10: %s", err.msg);
        rc = model_forward_pool(pools[2], m, s, tok, 10, NULL, &err);
        t_check(rc == 0 && s->pos == 10, "10 tokens fit (logits skipped)");
        model_state_reset(s);
        tok[3] = (int32_t)m->hp.n_vocab;
        rc = model_forward_pool(pools[2], m, s, tok, 5, lg, &err);
        t_check(rc == DS4_E_ARG && s->pos == 0, "token outside the vocabulary: %s", err.msg);
        tok[3] = -1;
        rc = model_forward_pool(pools[2], m, s, tok, 5, lg, &err);
        t_check(rc == DS4_E_ARG && s->pos == 0, "negative token: %s", err.msg);
        rc = model_forward_pool(pools[2], m, s, tok, 0, lg, &err);
        t_check(rc == 0 && s->pos == 0, "zero tokens: nothing to do");
    } else
        t_check(false, "errors: state: %s", err.msg);
    model_state_free(s);
    free(lg);
    mt_unload(&L);
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    uint64_t seed = t_seed(20261125);
    for (int n = 1; n <= 3; n++)
        if (cpu_pool_new(&pools[n], n, NULL) != 0) {
            t_check(false, "pool of %d threads", n);
            return t_summary();
        }
    check_vs_ref("f16", false, false, false, FWD_REF_F32_TOL, seed);
    check_vs_ref("q2", true, true, false, FWD_REF_TOL, seed + 1);
    check_vs_ref("q4", true, false, false, FWD_REF_TOL, seed + 2);
    check_vs_ref("q2", false, true, true, FWD_REF_MEDIAN_TOL, seed + 3);
    check_invariants("q2", true, seed + 4);
    check_invariants("q2", false, seed + 5);
    check_invariants("q4", true, seed + 6);
    check_invariants("f16", true, seed + 7);
    check_moe_paths("q2", seed + 8);
    check_moe_paths("q4", seed + 9);
    check_errors();
    for (int n = 1; n <= 3; n++)
        cpu_pool_free(pools[n]);
    return t_summary();
}
