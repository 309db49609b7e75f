/* model_test_util.h — the generated DS4-layout models of the forward tests (tests/test_forward.c,
 * tests/test_backend.c, tests/cuda/test_cuda_forward.c) and the comparisons of their outputs
 * (also tests/test_moe.c's): model_mk options for a preset in a type mix with random valid
 * blocks, "noflip" (nothing discrete can flip), the tiny preset made and loaded in memory, a
 * prompt of random tokens, a prefill then decode steps through an offload; rel L2, floats whose
 * bits differ, tokens whose argmax differ; the GPU logits tolerance that test_cuda_forward
 * applies and test_backend checks. Header-only, static (mt_). Deterministic per seed. Does not
 * own what the models hold (src/model/mkmodel.c) nor the other tests' tolerances. */
#ifndef DS4_TESTS_MODEL_TEST_UTIL_H
#define DS4_TESTS_MODEL_TEST_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/mkmodel.h"
#include "model/offload.h"
#include "test_util.h"

/* The logits of a forward with its routed experts on a GPU against the CPU's
 * (tests/cuda/test_cuda_forward.c; tests/test_backend.c "noise" checks them against pretend GPU
 * noise). Relative noise of 1e-7..1e-4 on the MoE outputs alone gives 0.7-2.7% rel L2 of the
 * logits (tiny and small presets), because each flipped Q8_0/Q8_K/FP8 rounding moves an
 * activation by a whole step; a wrong expert or row anywhere is O(1) (~100%). Argmax: those
 * runs changed up to 4 of 64 tokens' argmax (near ties of random logits), so most, not all,
 * must agree. */
#define GPU_LOGITS_TOL 5e-2
#define GPU_ARGMAX_AGREE 0.85

/* ======== generated models ================================================================ */

/* A model in memory: the GGUF bytes it is mapped from, and the model. */
typedef struct mt_loaded {
    void *buf;
    model *m;
} mt_loaded;

/* Fills o with preset in the type mix quant ("q2" "q4" "f16" "f32"), random valid blocks
 * (quick to make), seed; 0 or the preset's error. */
__attribute__((unused))
static int mt_opts(model_mk_opts *o, const char *preset, const char *quant, uint64_t seed,
                   ds4_error *err)
{
    int rc = model_mk_preset(o, preset, err);
    if (rc)
        return rc;
    o->quant = (model_mk_quant)model_mk_quant_from_name(quant);
    o->fill = MODEL_MK_FILL_RANDOM;
    o->seed = seed;
    return 0;
}

/* Every layer hash-routed and an indexer top-k above any visible count of a run of n_tok
 * tokens, so no near-tie can turn a tiny difference into a different expert or row. After
 * any change of the layer count. */
__attribute__((unused))
static void mt_noflip(model_mk_opts *o, int n_tok)
{
    o->hp.n_hash_layer = o->hp.n_layer;
    o->hp.indexer_top_k = 4 * (uint32_t)n_tok;
}

/* The tiny preset in the type mix quant, made in memory and loaded (noflip: mt_noflip for
 * n_tok tokens). Returns 0, or nonzero with nothing to free and the failure reported as a
 * failed case of name. */
__attribute__((unused))
static int mt_load_tiny(mt_loaded *L, const char *quant, uint64_t seed, bool noflip, int n_tok,
                        const char *name)
{
    model_mk_opts o;
    ds4_error err = { 0 };
    memset(L, 0, sizeof *L);
    int rc = mt_opts(&o, "tiny", quant, seed, &err);
    if (rc == 0) {
        o.n_threads = 2;
        if (noflip)
            mt_noflip(&o, n_tok);
        size_t size;
        gguf_file *f;
        if ((rc = model_mk_write_memory(&o, &L->buf, &size, &err)) == 0 &&
            (rc = gguf_open_memory(&f, L->buf, size, &err)) == 0)
            rc = model_load_file(&L->m, f, &err);
    }
    if (rc) {
        t_check(false, "%s: make/load the model: %s", name, err.msg);
        free(L->buf);
        L->buf = NULL;
    }
    return rc;
}

__attribute__((unused))
static void mt_unload(mt_loaded *L)
{
    model_free(L->m);
    free(L->buf);
}

/* ======== running them ==================================================================== */

/* n random token ids below n_vocab, from seed. */
__attribute__((unused))
static void mt_tokens(int32_t *tok, int n, uint32_t n_vocab, uint64_t seed)
{
    t_rng r = { seed };
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)(t_next(&r) % n_vocab);
}

/* tok[0..n_prefill) in one call, then tok[n_prefill..n_tok) one decode step each, through off
 * (NULL: no backend) on a fresh state of n_tok + 4 positions; logits [n_tok][n_vocab]. */
__attribute__((unused))
static int mt_run(cpu_pool *pool, const model_offload *off, const model *m, const int32_t *tok,
                  int n_prefill, int n_tok, float *logits, ds4_error *err)
{
    model_state *s;
    int rc = model_state_new(&s, m, (uint32_t)n_tok + 4, err);
    if (rc)
        return rc;
    const size_t V = m->hp.n_vocab;
    rc = model_forward_offload(pool, off, m, s, tok, (uint32_t)n_prefill, logits, err);
    for (int i = n_prefill; rc == 0 && i < n_tok; i++)
        rc = model_forward_offload(pool, off, m, s, tok + i, 1, logits + (size_t)i * V, err);
    model_state_free(s);
    return rc;
}

/* ======== comparisons ===================================================================== */

/* ||a - b|| / ||b|| (||a - b|| where b is zero); INFINITY for a NaN. */
__attribute__((unused))
static double mt_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    double r = den > 0 ? sqrt(num / den) : sqrt(num);
    return r == r ? r : INFINITY;
}

/* Number of floats whose bits differ. */
__attribute__((unused))
static size_t mt_n_diff(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

/* The first index of the largest of x[0..n). */
__attribute__((unused))
static size_t mt_argmax(const float *x, size_t n)
{
    size_t k = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[k])
            k = i;
    return k;
}

/* Of n_tok rows of V logits, the number whose argmax differ. */
__attribute__((unused))
static int mt_argmax_diff(const float *a, const float *b, int n_tok, size_t V)
{
    int d = 0;
    for (int t = 0; t < n_tok; t++)
        d += mt_argmax(a + (size_t)t * V, V) != mt_argmax(b + (size_t)t * V, V);
    return d;
}

#endif
