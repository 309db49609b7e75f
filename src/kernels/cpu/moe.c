/* moe.c — cpu_moe_run (moe.h): argument checks, the choice of path (argument, then
 * DS4_DECODE_MOE_MINIGEMM, then the measured table below) and of kernel variant, the grouping
 * of (token, k) choices into slots sorted by expert, and the four stages with their profile:
 * quantize activation, gate+up+SwiGLU, quantize mid, down+sum. The two paths' stage bodies
 * live in moe_gemv.c and moe_minigemm.c, the kernels in moe_ref.c / moe_*_avx512.c.
 * Invariant: every stage splits rows (or tokens, slots) into pieces that write disjoint
 * outputs in a fixed order, so the result does not depend on threads or piece sizes. */
#include "kernels/cpu/moe_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ======== path and variant choice ======================================================= */

/* Automatic path: GEMV up to max_gemv_tok tokens, mini-GEMM above, unless the tokens hardly
 * share experts (fewer than MIN_SHARE slots per distinct expert: a tile of one token decodes
 * as much as the GEMV and does a little more). Measured with bench/moe_bench (docs/perf.md,
 * "CPU decode MoE"), 2 threads, cold and warm regimes; the command:
 *   make bench && build/bench/moe_bench --csv moe.csv
 * mini-GEMM / GEMV time at batch 1, 2, 4, 8, 16 (medians of 4 runs at commit 4582169, tokens
 * sharing the call's 6 experts, experts from DRAM): q2 1.16 0.71 0.51 0.36 0.26, q4 1.09 0.72
 * 0.56 0.39 0.29 (the same from cache); independent tokens (6 experts each, share ~1):
 * 1.07-1.16 at batch 2..16. */
#define MIN_SHARE 1.5
static const struct {
    ds4_type gate_type;
    int max_gemv_tok;
} auto_table[] = {
    {DS4_TYPE_IQ2_XXS, 1},
    {DS4_TYPE_Q4_K, 1},
    {DS4_TYPE_Q2_K, 1},
};

const char *cpu_moe_path_name(cpu_moe_path path)
{
    return path == CPU_MOE_MINIGEMM ? "minigemm" : path == CPU_MOE_GEMV ? "gemv" : "auto";
}

cpu_moe_path cpu_moe_auto_path(ds4_type gate_type, int n_tok, double share)
{
    const char *env = getenv("DS4_DECODE_MOE_MINIGEMM");
    if (env && strcmp(env, "0") == 0)
        return CPU_MOE_GEMV;
    if (env && strcmp(env, "1") == 0)
        return CPU_MOE_MINIGEMM;
    int max_gemv = 1;
    for (size_t i = 0; i < sizeof auto_table / sizeof auto_table[0]; i++)
        if (auto_table[i].gate_type == gate_type)
            max_gemv = auto_table[i].max_gemv_tok;
    return n_tok > max_gemv && share >= MIN_SHARE ? CPU_MOE_MINIGEMM : CPU_MOE_GEMV;
}

static pthread_once_t ops_once = PTHREAD_ONCE_INIT;
static const cpu_moe_ops *ops_selected = &cpu_moe_ops_ref;

static void ops_init(void)
{
    if (cpu_matmul_isa() == CPU_ISA_AVX512 && cpu_moe_avx512_supported())
        ops_selected = &cpu_moe_ops_avx512;
}

static const cpu_moe_ops *default_ops(void)
{
    pthread_once(&ops_once, ops_init);
    return ops_selected;
}

const char *cpu_moe_isa_name(void)
{
    return default_ops()->name;
}

bool cpu_moe_vectorized(void)
{
    return default_ops() != &cpu_moe_ops_ref;
}

bool cpu_moe_supported(ds4_type gate_type, ds4_type down_type, int64_t n_embd, int64_t n_ff)
{
    const int64_t max = MOE_MAX_NB * QUANT_QK_K;
    return cpu_moe_kern_for(&cpu_moe_ops_ref, gate_type) &&
           cpu_moe_kern_for(&cpu_moe_ops_ref, down_type) && n_embd > 0 && n_ff > 0 &&
           n_embd % QUANT_QK_K == 0 && n_ff % QUANT_QK_K == 0 && n_embd <= max && n_ff <= max;
}

/* ======== context ======================================================================= */

int cpu_moe_ctx_new(cpu_moe_ctx **out, ds4_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return ds4_error_set(err, DS4_E_NOMEM, "moe: out of memory for a context");
    return DS4_OK;
}

void cpu_moe_ctx_free(cpu_moe_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < MOE_BUF_COUNT; i++)
        free(c->buf[i].p);
    free(c);
}

void cpu_moe_ctx_set_ops(cpu_moe_ctx *c, const cpu_moe_ops *ops)
{
    c->ops = ops;
}

/* Grows buffer i to at least need bytes (64-byte aligned, contents not kept). */
static void *grow(cpu_moe_ctx *c, int i, size_t need)
{
    if (need == 0)
        need = 64;
    if (c->buf[i].cap < need) {
        free(c->buf[i].p);
        size_t cap = (need + need / 4 + 63) & ~(size_t)63;
        c->buf[i].p = aligned_alloc(64, cap);
        c->buf[i].cap = c->buf[i].p ? cap : 0;
    }
    return c->buf[i].p;
}

/* ======== checks ======================================================================== */

static int check_type(const cpu_moe_tensor *t, const char *name, const cpu_moe_ops *ops,
                      ds4_error *err)
{
    if (!cpu_moe_kern_for(ops, t->type))
        return ds4_error_set(err, DS4_E_TYPE, "moe: %s: no expert kernel for type %s", name,
                             quant_get_traits(t->type) ? quant_get_traits(t->type)->name : "?");
    return DS4_OK;
}

static int check_shape(const cpu_moe_tensor *t, const char *name, ds4_error *err)
{
    if (t->n_in <= 0 || t->n_in % QUANT_QK_K || t->n_in > MOE_MAX_NB * QUANT_QK_K || t->n_out <= 0)
        return ds4_error_set(err, DS4_E_RANGE, "moe: %s: rows of %lld x %lld elements", name,
                             (long long)t->n_out, (long long)t->n_in);
    return DS4_OK;
}

static int check_strides(const cpu_moe_tensor *t, const char *name, ds4_error *err)
{
    if (!t->data || t->row_bytes < quant_row_bytes(t->type, t->n_in) ||
        t->expert_bytes < (size_t)t->n_out * t->row_bytes)
        return ds4_error_set(err, DS4_E_ARG, "moe: %s: data, row or expert stride too small",
                             name);
    return DS4_OK;
}

static int check_args(const cpu_moe_args *a, const cpu_moe_ops *ops, ds4_error *err)
{
    const cpu_moe_layer *L = a->layer;
    int rc;
    if (!L)
        return ds4_error_set(err, DS4_E_ARG, "moe: no layer");
    if ((rc = check_type(&L->gate, "gate", ops, err)) || (rc = check_type(&L->up, "up", ops, err)) ||
        (rc = check_type(&L->down, "down", ops, err)))
        return rc;
    if (L->gate.type != L->up.type)
        return ds4_error_set(err, DS4_E_TYPE, "moe: gate (%s) and up (%s) types differ",
                             quant_get_traits(L->gate.type)->name,
                             quant_get_traits(L->up.type)->name);
    if ((rc = check_shape(&L->gate, "gate", err)) || (rc = check_shape(&L->up, "up", err)) ||
        (rc = check_shape(&L->down, "down", err)))
        return rc;
    if (L->up.n_in != L->gate.n_in || L->down.n_out != L->gate.n_in ||
        L->up.n_out != L->gate.n_out || L->down.n_in != L->gate.n_out)
        return ds4_error_set(err, DS4_E_RANGE, "moe: gate [%lld->%lld], up [%lld->%lld], "
                             "down [%lld->%lld] do not chain", (long long)L->gate.n_in,
                             (long long)L->gate.n_out, (long long)L->up.n_in,
                             (long long)L->up.n_out, (long long)L->down.n_in,
                             (long long)L->down.n_out);
    if ((rc = check_strides(&L->gate, "gate", err)) || (rc = check_strides(&L->up, "up", err)) ||
        (rc = check_strides(&L->down, "down", err)))
        return rc;
    if (a->n_tok < 0 || a->n_used < 1 || L->n_expert < 1)
        return ds4_error_set(err, DS4_E_ARG, "moe: %d tokens, %d experts used of %d",
                             a->n_tok, a->n_used, L->n_expert);
    if (a->n_tok > 0 && (!a->ids || !a->weights || !a->h || !a->y || a->ldh < L->gate.n_in ||
                         a->ldy < L->gate.n_in))
        return ds4_error_set(err, DS4_E_ARG, "moe: missing arrays or row strides too small");
    for (int64_t i = 0; i < (int64_t)a->n_tok * a->n_used; i++)
        if (a->ids[i] < 0 || a->ids[i] >= L->n_expert)
            return ds4_error_set(err, DS4_E_RANGE, "moe: token %lld choice %lld: expert %d of %d",
                                 (long long)(i / a->n_used), (long long)(i % a->n_used),
                                 (int)a->ids[i], L->n_expert);
    return DS4_OK;
}

/* ======== grouping ====================================================================== */

/* Slots sorted by (expert, token, k); groups of equal expert in increasing id; each token's
 * slots in (expert, k) order, the order its experts are summed in. */
static int group_slots(cpu_moe_ctx *c, const cpu_moe_args *a, moe_run *r)
{
    const int E = a->layer->n_expert, K = a->n_used, P = a->n_tok * K;
    int32_t *count = grow(c, MOE_BUF_COUNT_E, (size_t)(E + 1) * sizeof(int32_t));
    int32_t *ints = grow(c, MOE_BUF_SLOTS, (size_t)(4 * P + 2 * (E + 1)) * sizeof(int32_t));
    float *sw = grow(c, MOE_BUF_SLOT_W, (size_t)P * sizeof(float));
    if (!count || !ints || !sw)
        return DS4_E_NOMEM;
    r->slot_tok = ints;
    r->slot_exp = ints + P;
    r->tok_slots = ints + 2 * P;
    int32_t *fill = ints + 3 * P;
    r->grp_exp = ints + 4 * P;
    r->grp_off = r->grp_exp + (E + 1);
    r->slot_w = sw;
    memset(count, 0, (size_t)(E + 1) * sizeof *count);
    for (int i = 0; i < P; i++)
        count[a->ids[i]]++;
    r->n_grp = 0;
    int off = 0;
    for (int e = 0; e < E; e++) {
        if (!count[e])
            continue;
        r->grp_exp[r->n_grp] = e;
        r->grp_off[r->n_grp++] = off;
        int n = count[e];
        count[e] = off;
        off += n;
    }
    r->grp_off[r->n_grp] = off;
    for (int i = 0; i < P; i++) { /* (t, k) order within an expert */
        const int s = count[a->ids[i]]++;
        r->slot_tok[s] = i / K;
        r->slot_exp[s] = a->ids[i];
        r->slot_w[s] = a->weights[i];
    }
    memset(fill, 0, (size_t)a->n_tok * sizeof *fill);
    for (int s = 0; s < P; s++) { /* slots are in expert order already */
        const int t = r->slot_tok[s];
        r->tok_slots[t * K + fill[t]++] = s;
    }
    return DS4_OK;
}

/* ======== the activation stages ========================================================= */

/* Stage 1: token t's h quantized (Q8_K) and prepared for the gate/up kernels. */
static void job_quant_act(void *ctx, int ith, int nth)
{
    moe_run *r = ctx;
    const int64_t nb = r->nb_in;
    for (int t = ith; t < r->n_tok; t += nth) {
        quant_block_q8_k *q = r->xq + (size_t)t * nb;
        r->ops->quant_q8_k(r->h + (size_t)t * r->ldh, q, nb * QUANT_QK_K);
        if (r->prep_act)
            r->prep_act(q, r->xg + (size_t)t * nb, nb);
    }
}

/* Stage 3: slot s's mid quantized (Q8_K) and prepared for the down kernels. */
static void job_quant_mid(void *ctx, int ith, int nth)
{
    moe_run *r = ctx;
    const int64_t nb = r->nb_ff;
    for (int s = ith; s < r->n_slot; s += nth) {
        quant_block_q8_k *q = r->mq + (size_t)s * nb;
        r->ops->quant_q8_k(r->mid + (size_t)s * r->n_ff, q, nb * QUANT_QK_K);
        if (r->prep_mid)
            r->prep_mid(q, r->md + (size_t)s * nb, nb);
    }
}

/* Stage 4 epilogue of the accumulate mode: y += the routed sum. */
static void job_add(void *ctx, int ith, int nth)
{
    moe_run *r = ctx;
    for (int t = ith; t < r->n_tok; t += nth) {
        float *y = r->y + (size_t)t * r->ldy;
        const float *s = r->acc + (size_t)t * r->ld_acc;
        for (int64_t i = 0; i < r->n_embd; i++)
            y[i] += s[i];
    }
}

/* Runs fn over pieces: min(items, threads * 8) of them but at least min_pieces, on the
 * caller alone when that is one piece. */
static void run_pieces(cpu_pool *p, int items, int min_pieces, cpu_pool_fn fn, void *ctx)
{
    const int nth = cpu_pool_threads(p);
    int pieces = items < 8 * nth ? items : 8 * nth;
    if (pieces < min_pieces)
        pieces = min_pieces;
    if (pieces <= 1)
        fn(ctx, 0, 1);
    else
        cpu_pool_run_n(p, pieces, fn, ctx);
}

/* The pieces of a stage over n rows: items of MOE_ROWS_MIN rows, none over MOE_ROWS_MAX. */
static void run_rows(cpu_pool *p, int64_t n, cpu_pool_fn fn, void *ctx)
{
    run_pieces(p, (int)((n + MOE_ROWS_MIN - 1) / MOE_ROWS_MIN),
               (int)((n + MOE_ROWS_MAX - MOE_ROWS_MIN) / (MOE_ROWS_MAX - MOE_ROWS_MIN)), fn, ctx);
}

/* ======== profile ======================================================================= */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

static void print_stage(const moe_run *r, const cpu_moe_args *a, const char *stage, double us)
{
    fprintf(stderr, "ds4: moe layer=%d tokens=%d pairs=%d experts=%d gate=%s down=%s "
            "path=%s isa=%s stage=%s us=%.1f\n", a->layer_index, r->n_tok, r->n_slot,
            r->n_grp, quant_get_traits(a->layer->gate.type)->name,
            quant_get_traits(a->layer->down.type)->name, cpu_moe_path_name(r->path),
            r->ops->name, stage, us);
}

/* ======== the call ====================================================================== */

int cpu_moe_run(cpu_moe_ctx *c, cpu_pool *p, const cpu_moe_args *a, ds4_error *err)
{
    const cpu_moe_ops *ops = c->ops ? c->ops : default_ops();
    int rc = check_args(a, ops, err);
    if (rc || a->n_tok == 0)
        return rc;
    const cpu_moe_layer *L = a->layer;
    moe_run r = {0};
    r.ops = ops;
    r.L = L;
    r.n_tok = a->n_tok;
    r.n_used = a->n_used;
    r.n_slot = a->n_tok * a->n_used;
    r.n_embd = L->gate.n_in;
    r.n_ff = L->gate.n_out;
    r.nb_in = r.n_embd / QUANT_QK_K;
    r.nb_ff = r.n_ff / QUANT_QK_K;
    r.h = a->h;
    r.ldh = a->ldh;
    r.y = a->y;
    r.ldy = a->ldy;
    if (group_slots(c, a, &r))
        return ds4_error_set(err, DS4_E_NOMEM, "moe: out of memory for %d tokens' slots",
                             a->n_tok);
    r.path = a->path != CPU_MOE_AUTO ? a->path
                                     : cpu_moe_auto_path(L->gate.type, a->n_tok,
                                                         (double)r.n_slot / r.n_grp);
    r.kg = cpu_moe_kern_for(ops, L->gate.type);
    r.kd = cpu_moe_kern_for(ops, L->down.type);
    const bool gemm = r.path == CPU_MOE_MINIGEMM;
    r.prep_act = gemm ? r.kg->prep_gemm : r.kg->prep_gemv;
    r.prep_mid = gemm ? r.kd->prep_gemm : r.kd->prep_gemv;

    const size_t qb = sizeof(quant_block_q8_k);
    r.xq = grow(c, MOE_BUF_XQ, (size_t)r.n_tok * r.nb_in * qb);
    r.xg = r.prep_act ? grow(c, MOE_BUF_XG, (size_t)r.n_tok * r.nb_in * qb) : r.xq;
    r.mid = grow(c, MOE_BUF_MID, (size_t)r.n_slot * r.n_ff * sizeof(float));
    r.mq = grow(c, MOE_BUF_MQ, (size_t)r.n_slot * r.nb_ff * qb);
    r.md = r.prep_mid ? grow(c, MOE_BUF_MD, (size_t)r.n_slot * r.nb_ff * qb) : r.mq;
    if (a->accumulate) {
        r.acc = grow(c, MOE_BUF_ACC, (size_t)r.n_tok * r.n_embd * sizeof(float));
        r.ld_acc = r.n_embd;
    } else {
        r.acc = a->y;
        r.ld_acc = a->ldy;
    }
    if (!r.xq || !r.xg || !r.mid || !r.mq || !r.md || !r.acc)
        return ds4_error_set(err, DS4_E_NOMEM, "moe: out of memory for %d tokens' scratch",
                             a->n_tok);

    const char *pe = getenv("DS4_MOE_STAGE_PROFILE");
    const bool prof = pe && *pe && strcmp(pe, "0") != 0;
    double t0 = prof ? now_us() : 0, t1;

    run_pieces(p, r.n_tok, 1, job_quant_act, &r);
    if (prof) {
        print_stage(&r, a, "quant_act", (t1 = now_us()) - t0);
        t0 = t1;
    }
    run_rows(p, r.n_ff, gemm ? cpu_moe_minigemm_gate_up : cpu_moe_gemv_gate_up, &r);
    if (prof) {
        print_stage(&r, a, "gate_up", (t1 = now_us()) - t0);
        t0 = t1;
    }
    run_pieces(p, r.n_slot, 1, job_quant_mid, &r);
    if (prof) {
        print_stage(&r, a, "quant_mid", (t1 = now_us()) - t0);
        t0 = t1;
    }
    run_rows(p, r.n_embd, gemm ? cpu_moe_minigemm_down : cpu_moe_gemv_down, &r);
    if (a->accumulate)
        run_pieces(p, r.n_tok, 1, job_add, &r);
    if (prof)
        print_stage(&r, a, "down", now_us() - t0);
    return DS4_OK;
}
