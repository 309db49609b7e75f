/* test_backend.c — the backend interface (src/backend/backend.h) and the placement of the
 * routed experts (src/model/offload.h) on the CPU, no GPU needed:
 *  1. the forward with the CPU backend holding the experts of every layer, or of layers
 *     2.. (--n-cpu-moe 2), gives logits bit-identical to the forward without a backend
 *     (q2, q4; f16 experts, which the CPU backend declines, stay on the forward's products);
 *  2. placement by memory on a pretend device (the CPU backend's ops behind host = false and
 *     a chosen free/total): the last layers that fit in free minus the reserve, the line that
 *     says so, bit-identical logits; an explicit --n-cpu-moe that does not fit fails clearly;
 *  3. the logits tolerance of tests/cuda/test_cuda_forward.c is sound: MoE outputs perturbed
 *     by f32-rounding-sized noise (what a GPU's summation order gives) stay inside half of it.
 *     They do not stay near 1e-3: the forward re-quantizes its activations (Q8_0, Q8_K, FP8)
 *     some 30 times, each flipped rounding moves a value by a whole step, and the flips
 *     cascade (1e-7 noise: ~1% rel L2 of the logits), hence that test's per-call check;
 *  4. errors: unknown backend, cuda in a build without it, a bad DS4_CUDA_DEVICE, an offload
 *     of another model. Usage: test_backend [case-substring]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/offload.h"
#include "model_test_util.h"
#include "test_util.h"

/* GPU_LOGITS_TOL and GPU_ARGMAX_AGREE (tests/model_test_util.h, what
 * tests/cuda/test_cuda_forward.c applies) are checked here against pretend GPU noise
 * (measured: 1.0-1.5% rel L2, 0-3 of 64 argmax changes). */
/* relative noise on each MoE output element: a few f32 ulps, a different summation order */
#define F32_ORDER_NOISE 1e-6
#define GIB (1ull << 30)

#define MODEL_SEED 5 /* the generated models' weights */
#define TOKEN_SEED 17
#define N_PREFILL 60
#define N_DECODE 4
#define N_TOK (N_PREFILL + N_DECODE)

static const char *filter;
static cpu_pool *pool;

static bool want(const char *name) { return !filter || strstr(name, filter); }

/* The tiny preset (noflip: hash routing everywhere, the indexer never selecting); a failure
 * reported as a failed case of name (nonzero: nothing to free). */
static int load_tiny(mt_loaded *L, const char *quant, bool noflip, const char *name)
{
    return mt_load_tiny(L, quant, MODEL_SEED, noflip, N_TOK, name);
}

/* Prefill then single decode steps of the same random tokens; logits [N_TOK][n_vocab]. */
static int run(const model *m, const model_offload *off, float *logits, ds4_error *err)
{
    int32_t tok[N_TOK];
    mt_tokens(tok, N_TOK, m->hp.n_vocab, TOKEN_SEED);
    return mt_run(pool, off, m, tok, N_PREFILL, N_TOK, logits, err);
}

/* load_tiny, and the logits without a backend (*ref, [N_TOK][n_vocab], to free); a failure
 * reported as a failed case of name (nonzero: nothing to free). */
static int load_with_ref(mt_loaded *L, const char *quant, bool noflip, const char *name,
                         float **ref)
{
    ds4_error err = { 0 };
    if (load_tiny(L, quant, noflip, name) != 0)
        return -1;
    *ref = malloc((size_t)N_TOK * L->m->hp.n_vocab * sizeof **ref);
    if (*ref != NULL && run(L->m, NULL, *ref, &err) == 0)
        return 0;
    t_check(false, "%s: forward without a backend: %s", name, *ref ? err.msg : "nomem");
    free(*ref);
    mt_unload(L);
    return -1;
}

/* ======== a pretend device: the CPU backend's ops, its own memory figures ================ */

typedef struct pretend {
    ds4_backend *cpu;
    uint64_t free_bytes, total_bytes, layer_bytes;
    double noise; /* relative noise added to every MoE output element */
    t_rng rng;
} pretend;

static int p_memory(ds4_backend *b, uint64_t *fr, uint64_t *tot, ds4_error *err)
{
    (void)err;
    pretend *p = b->ctx;
    *fr = p->free_bytes, *tot = p->total_bytes;
    return 0;
}

static bool p_supports(const ds4_backend *b, backend_op op, ds4_type type)
{
    const pretend *p = b->ctx;
    return p->cpu->supports(p->cpu, op, type);
}

static uint64_t p_moe_bytes(const ds4_backend *b, const backend_moe_layer *w)
{
    (void)w;
    return ((const pretend *)b->ctx)->layer_bytes;
}

static int p_upload(ds4_backend *b, const backend_moe_layer *w, backend_moe_weights **out,
                    ds4_error *err)
{
    pretend *p = b->ctx;
    return p->cpu->moe_upload(p->cpu, w, out, err);
}

static void p_release(ds4_backend *b, backend_moe_weights *w)
{
    pretend *p = b->ctx;
    p->cpu->moe_release(p->cpu, w);
}

static int p_run(ds4_backend *b, const backend_moe_args *a, ds4_error *err)
{
    pretend *p = b->ctx;
    int rc = p->cpu->moe_run(p->cpu, a, err);
    const int64_t d = a->w ? a->ldy : 0;
    for (int t = 0; rc == 0 && p->noise > 0 && t < a->n_tok; t++)
        for (int64_t i = 0; i < d && i < a->ldh; i++) {
            const double u = (double)(t_next(&p->rng) >> 11) / 9007199254740992.0 * 2 - 1;
            a->y[t * a->ldy + i] *= (float)(1 + p->noise * u);
        }
    return rc;
}

static int p_sync(ds4_backend *b, ds4_error *err)
{
    pretend *p = b->ctx;
    return p->cpu->sync(p->cpu, err);
}

static void p_free(ds4_backend *b)
{
    pretend *p = b->ctx;
    backend_free(p->cpu);
    free(p);
    free(b);
}

static ds4_backend *pretend_new(uint64_t free_bytes, uint64_t total, uint64_t layer_bytes,
                                double noise)
{
    ds4_backend *b = calloc(1, sizeof *b);
    pretend *p = calloc(1, sizeof *p);
    if (!b || !p || backend_cpu_new(&p->cpu, NULL) != 0) {
        free(b);
        free(p);
        return NULL;
    }
    *p = (pretend){ p->cpu, free_bytes, total, layer_bytes, noise, { 3 } };
    b->name = "pretend";
    snprintf(b->desc, sizeof b->desc, "PRETEND0");
    b->host = false;
    b->ctx = p;
    b->memory = p_memory;
    b->supports = p_supports;
    b->moe_bytes = p_moe_bytes;
    b->moe_upload = p_upload;
    b->moe_release = p_release;
    b->moe_run = p_run;
    b->sync = p_sync;
    b->free = p_free;
    return b;
}

/* ======== cases ========================================================================== */

/* Logits with the offload against logits without, bit for bit. */
static void same_bits(const char *name, const mt_loaded *L, const model_offload *off,
                      const float *ref)
{
    const size_t n = (size_t)N_TOK * L->m->hp.n_vocab;
    float *got = malloc(n * sizeof *got);
    ds4_error err = { 0 };
    if (got == NULL || run(L->m, off, got, &err) != 0) {
        t_check(false, "%s: %s", name, got ? err.msg : "out of memory");
    } else {
        const size_t d = mt_n_diff(got, ref, n);
        t_case(d == 0, (double)d, 0, "%s (floats differing)", name);
    }
    free(got);
}

static void cpu_cases(const char *quant)
{
    char name[128];
    snprintf(name, sizeof name, "cpu backend %s", quant);
    if (!want(name))
        return;
    ds4_error err = { 0 };
    mt_loaded L;
    float *ref;
    if (load_with_ref(&L, quant, false, name, &ref) != 0)
        return;
    const ds4_type et = L.m->w.layers[0].ffn_gate_exps->type;
    for (int n_cpu = -1; n_cpu <= 2; n_cpu += 3) {
        model_offload *off = NULL;
        const model_offload_opts o = { "cpu", -1, n_cpu };
        if (model_offload_new(&off, L.m, &o, &err) != 0) {
            t_check(false, "%s: %s", name, err.msg);
            continue;
        }
        const bool takes = off->be->supports(off->be, BACKEND_OP_MOE, et);
        const uint32_t on = !takes ? 0 : L.m->hp.n_layer - (n_cpu < 0 ? 0 : (uint32_t)n_cpu);
        t_check(off->n_on == on && off->bytes == 0, "%s n-cpu-moe %d: %u layers on it (want "
                "%u): %s", name, n_cpu, off->n_on, on, off->desc);
        char nm[200];
        snprintf(nm, sizeof nm, "%s n-cpu-moe %d: logits bit-identical", name, n_cpu);
        same_bits(nm, &L, off, ref);
        model_offload_free(off);
    }
    free(ref);
    mt_unload(&L);
}

/* Placement by memory on the pretend device, an explicit split that does not fit. */
static void placement_cases(void)
{
    if (!want("placement"))
        return;
    ds4_error err = { 0 };
    mt_loaded L;
    float *ref;
    if (load_with_ref(&L, "q2", false, "placement", &ref) != 0)
        return;
    /* 10 GiB device: reserve 1 GiB; 4.5 GiB free, 1 GiB a layer: the last 3 layers fit */
    model_offload *off = NULL;
    ds4_backend *be = pretend_new(9 * GIB / 2, 10 * GIB, GIB, 0);
    int rc = be ? model_offload_new_on(&off, be, L.m, -1, &err) : DS4_E_NOMEM;
    if (t_check(rc == 0, "placement by memory: %s", rc ? err.msg : off->desc)) {
        bool last3 = off->n_on == 3 && off->bytes == 3 * GIB && off->reserve == GIB;
        for (uint32_t il = 0; il < L.m->hp.n_layer; il++)
            last3 &= (off->w[il] != NULL) == (il >= 3);
        t_check(last3, "placement by memory: layers 3..5 on the device, reserve 1 GiB");
        t_check(strstr(off->desc, "layers 3..5 on PRETEND0") && strstr(off->desc, "0..2 on CPU"),
                "placement line names both ranges");
        same_bits("placement by memory: logits bit-identical", &L, off, ref);
    }
    model_offload_free(off);
    /* --n-cpu-moe 1: 5 GiB of layers into 4.5 GiB free */
    off = NULL;
    be = pretend_new(9 * GIB / 2, 10 * GIB, GIB, 0);
    rc = be ? model_offload_new_on(&off, be, L.m, 1, &err) : DS4_E_NOMEM;
    t_check(rc == DS4_E_NOMEM && off == NULL && strstr(err.msg, "--n-cpu-moe") &&
            strstr(err.msg, "1..5"), "n-cpu-moe 1 does not fit: %s", rc ? err.msg : "placed");
    /* --n-cpu-moe 2 fits: layers 2..5 */
    be = pretend_new(9 * GIB / 2, 10 * GIB, GIB, 0);
    rc = be ? model_offload_new_on(&off, be, L.m, 2, &err) : DS4_E_NOMEM;
    if (t_check(rc == 0 && off->n_on == 4, "n-cpu-moe 2: %s", rc ? err.msg : off->desc))
        same_bits("n-cpu-moe 2 on the device: logits bit-identical", &L, off, ref);
    model_offload_free(off);
    t_check(model_offload_reserve(8 * GIB) == GIB && model_offload_reserve(140 * GIB) == 7 * GIB,
            "reserve: max(1 GiB, 5%% of VRAM)");
    free(ref);
    mt_unload(&L);
}

/* GPU-sized noise on every MoE output through the whole forward, against half of
 * GPU_LOGITS_TOL and GPU_ARGMAX_AGREE. */
static void noise_cases(const char *quant)
{
    char name[128];
    snprintf(name, sizeof name, "noise %s", quant);
    if (!want(name))
        return;
    ds4_error err = { 0 };
    mt_loaded L;
    float *ref;
    if (load_with_ref(&L, quant, true, name, &ref) != 0)
        return;
    const size_t n = (size_t)N_TOK * L.m->hp.n_vocab;
    float *got = malloc(n * sizeof *got);
    model_offload *off = NULL;
    ds4_backend *be = pretend_new(80 * GIB, 80 * GIB, 1, F32_ORDER_NOISE);
    int rc = DS4_E_NOMEM;
    if (got && be)
        rc = model_offload_new_on(&off, be, L.m, 0, &err);
    else
        backend_free(be);
    if (rc == 0)
        rc = run(L.m, off, got, &err);
    if (rc) {
        t_check(false, "%s: %s", name, err.msg);
    } else {
        const double e = mt_rel_l2(got, ref, n);
        const int am = mt_argmax_diff(got, ref, N_TOK, L.m->hp.n_vocab);
        const int agree_min = (int)ceil(GPU_ARGMAX_AGREE * N_TOK);
        t_case(e < GPU_LOGITS_TOL / 2 && N_TOK - am >= agree_min, e, GPU_LOGITS_TOL / 2,
               "%s: MoE outputs x (1 +- %.0e): logits (argmax agrees on %d of %d)", name,
               F32_ORDER_NOISE, N_TOK - am, N_TOK);
    }
    model_offload_free(off);
    free(ref);
    free(got);
    mt_unload(&L);
}

static void error_cases(void)
{
    if (!want("errors"))
        return;
    ds4_error err = { 0 };
    mt_loaded L, M;
    if (load_tiny(&L, "q2", false, "errors") != 0)
        return;
    if (load_tiny(&M, "q4", false, "errors") != 0) {
        mt_unload(&L);
        return;
    }
    model_offload *off = NULL;
    model_offload_opts o = { "metal", -1, -1 };
    int rc = model_offload_new(&off, L.m, &o, &err);
    t_check(rc == DS4_E_ARG && off == NULL, "errors: unknown backend: %s", err.msg);
    o.backend = "cuda";
    if (!backend_cuda_built()) {
        rc = model_offload_new(&off, L.m, &o, &err);
        t_check(rc == DS4_E_ARG && off == NULL && strstr(err.msg, "built without CUDA") &&
                strstr(err.msg, "make cuda"), "errors: cuda in a CPU build: %s", err.msg);
    } else {
        t_skip("this build has CUDA", "errors: cuda in a CPU build");
    }
    setenv("DS4_CUDA_DEVICE", "x1", 1);
    rc = model_offload_new(&off, L.m, &o, &err);
    t_check(rc == DS4_E_ARG && off == NULL && strstr(err.msg, "DS4_CUDA_DEVICE"),
            "errors: bad DS4_CUDA_DEVICE: %s", err.msg);
    unsetenv("DS4_CUDA_DEVICE");
    o.backend = "cpu";
    rc = model_offload_new(&off, L.m, &o, &err);
    if (t_check(rc == 0, "errors: cpu offload")) {
        model_state *s = NULL;
        int32_t t = 1;
        rc = model_state_new(&s, M.m, 8, &err);
        if (rc == 0)
            rc = model_forward_offload(pool, off, M.m, s, &t, 1, NULL, &err);
        t_check(rc == DS4_E_ARG, "errors: offload of another model: %s", err.msg);
        model_state_free(s);
    }
    model_offload_free(off);
    mt_unload(&L);
    mt_unload(&M);
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    ds4_error err;
    if (cpu_pool_new(&pool, 0, &err)) {
        printf("FAIL  pool: %s\n", err.msg);
        return 1;
    }
    cpu_cases("q2");
    cpu_cases("q4");
    cpu_cases("f16");
    placement_cases();
    noise_cases("q2");
    noise_cases("q4");
    error_cases();
    cpu_pool_free(pool);
    return t_summary();
}
