/* test_cuda_forward.c — the whole forward with the routed experts on the CUDA backend
 * (backend.h, src/backend/cuda/cuda.cu, placed by model/offload.h) against the forward on the
 * CPU: generated DS4-layout models (presets tiny and small, q2 and q4 mixes: IQ2_XXS/Q2_K and
 * Q4_K experts) written to a temp file and loaded as a user's would be; a prefill longer than
 * one CUDA launch (64 tokens), then decode steps one token at a time; the experts of every
 * layer on the GPU (--n-cpu-moe 0), a split (--n-cpu-moe 1), the default placement by memory.
 * Two measures, because the forward re-quantizes its activations some 30 times and so turns
 * any difference, even an f32 summation order, into rounding flips that cascade (measured by
 * tests/test_backend.c "noise"):
 *  1. every MoE call of the run, GPU against the CPU backend on the very same inputs (a
 *     checking backend wraps the CUDA one): rel L2 per call < GPU_MOE_TOL, all finite;
 *  2. the logits against the CPU run: rel L2 < GPU_LOGITS_TOL, argmax equal on most tokens.
 * Skips every case (exit 0) without a CUDA device. The device: DS4_CUDA_DEVICE (default 0).
 * Usage: test_cuda_forward [case-substring]. Spec: §3.9 step 6, §4.1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/mkmodel.h"
#include "model/offload.h"
#include "model_test_util.h"
#include "test_util.h"

/* One MoE call on identical inputs: the GPU computes the CPU's formula (same Q8_K
 * activations, integer block sums) up to f32 summation order and the rare mid element whose
 * Q8_K rounding flips (tests/cuda/test_cuda_moe.c GPU_TOL); a wrong expert, row or scale is
 * O(1). */
#define GPU_MOE_TOL 1e-3
/* Logits after the whole forward: GPU_LOGITS_TOL and GPU_ARGMAX_AGREE, with their reasons, in
 * tests/model_test_util.h (tests/test_backend.c "noise" checks them). */

#define N_PREFILL 80 /* > CUDA_MOE_MAX_TOK (64): the CUDA call splits its launches */
#define N_DECODE 4
#define N_TOK (N_PREFILL + N_DECODE)

static const char *filter;

static bool want(const char *name) { return !filter || strstr(name, filter); }

/* A model of preset/quant in a temp file, loaded; noflip: every layer hash-routed and an
 * indexer top-k above any visible count, so no near-tie can turn a tiny difference into a
 * different expert or row (the comparison then measures the backend alone). */
static int make_model(const char *preset, const char *quant, model **out, ds4_error *err)
{
    model_mk_opts o;
    int rc = mt_opts(&o, preset, quant, 7, err);
    if (rc)
        return rc;
    if (!strcmp(preset, "small"))
        model_mk_set_layers(&o, 4); /* 4 of its 8 layers: every layer kind, half the time */
    mt_noflip(&o, N_TOK);
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/ds4_cuda_forward_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return ds4_error_set(err, DS4_E_IO, "%s: cannot make a temp file", path);
    close(fd);
    rc = model_mk_write(&o, path, NULL, err);
    if (rc == 0)
        rc = model_load(out, path, err); /* mapped: the file may go now */
    unlink(path);
    return rc;
}

/* ======== a checking backend: the CUDA backend, each call also run on the CPU ============= */

typedef struct pair_w {
    backend_moe_weights *g, *c;
} pair_w;

typedef struct checker {
    ds4_backend *gpu, *cpu;
    float *ycpu;           /* [n_tok][n_embd] the CPU's output of the pending call */
    size_t cap;
    float *y;              /* the pending call's output rows */
    int64_t ldy, d;
    int n_tok, layer;
    bool pending;
    int calls;
    double max_rel;        /* over calls: rel L2 of the call's rows */
    int worst_layer;
    bool finite;
} checker;

static int k_memory(ds4_backend *b, uint64_t *fr, uint64_t *tot, ds4_error *err)
{
    checker *k = b->ctx;
    return k->gpu->memory(k->gpu, fr, tot, err);
}

static bool k_supports(const ds4_backend *b, backend_op op, ds4_type type)
{
    const checker *k = b->ctx;
    return k->gpu->supports(k->gpu, op, type);
}

static uint64_t k_moe_bytes(const ds4_backend *b, const backend_moe_layer *w)
{
    const checker *k = b->ctx;
    return k->gpu->moe_bytes(k->gpu, w);
}

static int k_upload(ds4_backend *b, const backend_moe_layer *w, backend_moe_weights **out,
                    ds4_error *err)
{
    checker *k = b->ctx;
    pair_w *p = calloc(1, sizeof *p);
    if (p == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "checker: out of memory");
    int rc = k->gpu->moe_upload(k->gpu, w, &p->g, err);
    if (rc == 0)
        rc = k->cpu->moe_upload(k->cpu, w, &p->c, err);
    if (rc) {
        k->gpu->moe_release(k->gpu, p->g);
        free(p);
        return rc;
    }
    *out = (backend_moe_weights *)p;
    return 0;
}

static void k_release(ds4_backend *b, backend_moe_weights *w)
{
    checker *k = b->ctx;
    pair_w *p = (pair_w *)w;
    if (p == NULL)
        return;
    k->gpu->moe_release(k->gpu, p->g);
    k->cpu->moe_release(k->cpu, p->c);
    free(p);
}

static int k_sync(ds4_backend *b, ds4_error *err)
{
    checker *k = b->ctx;
    int rc = k->gpu->sync(k->gpu, err);
    if (rc || !k->pending)
        return rc;
    k->pending = false;
    double num = 0, den = 0;
    for (int t = 0; t < k->n_tok; t++)
        for (int64_t i = 0; i < k->d; i++) {
            const double g = k->y[t * k->ldy + i], c = k->ycpu[t * k->d + i];
            k->finite &= isfinite(g);
            num += (g - c) * (g - c);
            den += c * c;
        }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= k->max_rel)) {
        k->max_rel = rel == rel ? rel : INFINITY;
        k->worst_layer = k->layer;
    }
    k->calls++;
    return 0;
}

static int k_run(ds4_backend *b, const backend_moe_args *a, ds4_error *err)
{
    checker *k = b->ctx;
    int rc = k_sync(b, err);
    if (rc)
        return rc;
    const pair_w *p = (const pair_w *)a->w;
    const int64_t d = a->ldh < a->ldy ? a->ldh : a->ldy; /* the forward passes n_embd for both */
    const size_t need = (size_t)a->n_tok * (size_t)d;
    if (need > k->cap) {
        free(k->ycpu);
        if ((k->ycpu = malloc(need * sizeof *k->ycpu)) == NULL)
            return ds4_error_set(err, DS4_E_NOMEM, "checker: out of memory");
        k->cap = need;
    }
    if (a->accumulate)
        for (int t = 0; t < a->n_tok; t++)
            memcpy(k->ycpu + t * d, a->y + t * a->ldy, (size_t)d * sizeof(float));
    backend_moe_args ag = *a, ac = *a;
    ag.w = p->g;
    ac.w = p->c;
    ac.y = k->ycpu;
    ac.ldy = d;
    if ((rc = k->gpu->moe_run(k->gpu, &ag, err)) != 0)
        return rc;
    if ((rc = k->cpu->moe_run(k->cpu, &ac, err)) != 0 ||
        (rc = k->cpu->sync(k->cpu, err)) != 0) {
        k->gpu->sync(k->gpu, NULL);
        return rc;
    }
    k->pending = true;
    k->y = a->y, k->ldy = a->ldy, k->d = d, k->n_tok = a->n_tok, k->layer = a->layer_index;
    return 0;
}

static void k_free(ds4_backend *b)
{
    checker *k = b->ctx;
    backend_free(k->gpu);
    backend_free(k->cpu);
    free(k->ycpu);
    free(k);
    free(b);
}

/* The CUDA backend on DS4_CUDA_DEVICE (default 0) behind a checker; NULL with err set. */
static ds4_backend *checker_new(checker **state, ds4_error *err)
{
    const char *env = getenv("DS4_CUDA_DEVICE");
    ds4_backend *b = calloc(1, sizeof *b);
    checker *k = calloc(1, sizeof *k);
    if (!b || !k) {
        free(b);
        free(k);
        ds4_error_set(err, DS4_E_NOMEM, "checker: out of memory");
        return NULL;
    }
    int rc = backend_cuda_new(&k->gpu, env ? atoi(env) : 0, err);
    if (rc == 0)
        rc = backend_cpu_new(&k->cpu, err);
    if (rc) {
        backend_free(k->gpu);
        free(k);
        free(b);
        return NULL;
    }
    k->finite = true;
    b->name = "checker";
    snprintf(b->desc, sizeof b->desc, "%s", k->gpu->desc);
    b->host = false;
    b->ctx = k;
    b->memory = k_memory;
    b->supports = k_supports;
    b->moe_bytes = k_moe_bytes;
    b->moe_upload = k_upload;
    b->moe_release = k_release;
    b->moe_run = k_run;
    b->sync = k_sync;
    b->free = k_free;
    *state = k;
    return b;
}

/* ======== cases ========================================================================== */

/* One placement: the GPU run (through the checker unless n_cpu < 0: the plain backend as
 * the tools make it), its calls and its logits against the CPU's. */
static void gpu_case(const char *name, const model *m, int n_cpu, cpu_pool *pool,
                     const int32_t *tok, const float *ref, float *got)
{
    ds4_error err = { 0 };
    model_offload *off = NULL;
    checker *k = NULL;
    int rc;
    if (n_cpu >= 0) {
        ds4_backend *b = checker_new(&k, &err);
        rc = b ? model_offload_new_on(&off, b, m, n_cpu, &err) : err.code;
    } else {
        const model_offload_opts go = { "cuda", -1, -1 };
        rc = model_offload_new(&off, m, &go, &err);
    }
    if (rc) {
        t_check(false, "%s: %s", name, err.msg);
        return;
    }
    printf("      %s: %s\n", name, off->desc);
    const uint32_t on = n_cpu < 0 ? m->hp.n_layer : m->hp.n_layer - (uint32_t)n_cpu;
    if (!t_check(off->n_on == on, "%s: %u of %u layers on the GPU (want %u)", name, off->n_on,
                 m->hp.n_layer, on)) {
    } else if (mt_run(pool, off, m, tok, N_PREFILL, N_TOK, got, &err) != 0) {
        t_check(false, "%s: %s", name, err.msg);
    } else {
        const size_t V = m->hp.n_vocab, n = (size_t)N_TOK * V;
        if (k)
            t_case(k->finite && k->calls > 0 && k->max_rel < GPU_MOE_TOL, k->max_rel,
                   GPU_MOE_TOL, "%s: %d MoE calls vs CPU on the same inputs (max: layer %d)",
                   name, k->calls, k->worst_layer);
        const double e = mt_rel_l2(got, ref, n);
        const int am = mt_argmax_diff(got, ref, N_TOK, V);
        const int agree_min = (int)ceil(GPU_ARGMAX_AGREE * N_TOK);
        t_case(e < GPU_LOGITS_TOL && N_TOK - am >= agree_min, e, GPU_LOGITS_TOL,
               "%s: logits (argmax agrees on %d of %d, want >= %d)", name, N_TOK - am, N_TOK,
               agree_min);
    }
    model_offload_free(off);
}

static void model_cases(const char *preset, const char *quant, cpu_pool *pool)
{
    const int n_cpu[3] = { 0, 1, -1 };
    const char *what[3] = { "all layers", "n-cpu-moe 1", "default placement" };
    char name[3][128];
    bool any = false;
    for (int c = 0; c < 3; c++) {
        snprintf(name[c], sizeof name[c], "%s %s %s", preset, quant, what[c]);
        any |= want(name[c]);
    }
    if (!any)
        return;
    if (backend_cuda_device_count() == 0) {
        for (int c = 0; c < 3; c++)
            if (want(name[c]))
                t_skip("no CUDA device", "%s", name[c]);
        return;
    }
    ds4_error err = { 0 };
    model *m = NULL;
    model_offload *cpu = NULL;
    float *ref = NULL, *got = NULL;
    int32_t tok[N_TOK];
    int rc = make_model(preset, quant, &m, &err);
    const model_offload_opts co = { "cpu", -1, -1 };
    if (rc == 0)
        rc = model_offload_new(&cpu, m, &co, &err);
    const size_t n = rc == 0 ? (size_t)N_TOK * m->hp.n_vocab : 1;
    if (rc == 0 && (!(ref = malloc(n * sizeof *ref)) || !(got = malloc(n * sizeof *got))))
        rc = ds4_error_set(&err, DS4_E_NOMEM, "out of memory");
    if (rc == 0) {
        mt_tokens(tok, N_TOK, m->hp.n_vocab, 99);
        rc = mt_run(pool, cpu, m, tok, N_PREFILL, N_TOK, ref, &err);
    }
    if (rc)
        t_check(false, "%s %s: CPU reference: %s", preset, quant, err.msg);
    for (int c = 0; rc == 0 && c < 3; c++)
        if (want(name[c]))
            gpu_case(name[c], m, n_cpu[c], pool, tok, ref, got);
    free(ref);
    free(got);
    model_offload_free(cpu);
    model_free(m);
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    cpu_pool *pool = NULL;
    ds4_error err;
    if (cpu_pool_new(&pool, 0, &err)) {
        printf("FAIL  pool: %s\n", err.msg);
        return 1;
    }
    printf("CUDA devices: %d; DS4_CUDA_DEVICE=%s\n", backend_cuda_device_count(),
           getenv("DS4_CUDA_DEVICE") ? getenv("DS4_CUDA_DEVICE") : "(unset: 0)");
    const char *presets[2] = { "tiny", "small" }, *quants[2] = { "q2", "q4" };
    for (int p = 0; p < 2; p++)
        for (int q = 0; q < 2; q++)
            model_cases(presets[p], quants[q], pool);
    if (want("bad device")) {
        if (backend_cuda_device_count() == 0) {
            t_skip("no CUDA device", "bad device");
        } else {
            ds4_backend *b = NULL;
            int rc = backend_cuda_new(&b, backend_cuda_device_count(), &err);
            t_check(rc == DS4_E_ARG && b == NULL, "bad device: %s", rc ? err.msg : "accepted");
            backend_free(b);
        }
    }
    cpu_pool_free(pool);
    return t_summary();
}
