/* cuda_moe.cu — the decode-MoE dispatcher behind cuda_moe.h: host-side checks, scratch
 * (Q8_K activations, mids, tiles) grown on demand, the path choice (env, then tuning.cuh),
 * the launch sequence per path (quantize h; gate/up+SwiGLU; quantize mid; down+sum; the
 * mini-GEMM path adds the grouping kernel first; the GEMV path up to CUDA_FUSED_MAX_TOK tokens
 * on sm_90 is one fused launch instead, moe_fused.cu, unless DS4_CUDA_MOE_FUSED=0 (batches of 2+
 * only with DS4_CUDA_MOE_FUSED_BATCH=1, tuning.cuh); CUDA_MOE_AUTO
 * takes it up to CUDA_MOE_FUSED_AUTO_MAX_TOK(_IQ2) tokens), the CUDA-event stage profile,
 * and the random block filler for benchmarks. Holds no MoE kernels (moe_gemv.cu,
 * moe_minigemm.cu, moe_fused.cu). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/cuda/cuda_moe.h"
}
#include "backend/cuda/act_quant.cuh"
#include "backend/cuda/moe_fused.cuh"
#include "backend/cuda/moe_gemv.cuh"
#include "backend/cuda/moe_minigemm.cuh"

/* ======== context ====================================================================== */

enum { ST_XQ, ST_ROUTE, ST_GATEUP, ST_MIDQ, ST_DOWN, ST_END, N_EV };

struct cuda_moe_ctx {
    cudaStream_t stream;
    bool own_stream;
    uint64_t *grid;  /* IQ2 tables, device */
    uint8_t *signs;
    int *flag;       /* [0]: bad id seen, [1]: tile count, [2]: device path choice */
    cuda_moe_path last; /* the last call's path (BY_ROUTING: see flag[2]) */
    void *scratch;   /* xq | mid f32 | midq | tiles */
    size_t scratch_bytes;
    cudaEvent_t ev[N_EV];
    bool fused_hw;          /* sm_90+ with cooperative launches: the fused batch-1 kernel */
    int n_sm, smem_optin;
    int fused_smem[3][3][2]; /* the shared-memory limit set per (gate, down, batch) kernel */
    uint64_t *signmask;     /* IQ2_XXS sign bytes as 0x00/0xFF byte masks, device */
    unsigned long long *bar; /* the fused kernel's grid-barrier counter */
    unsigned long long *trace; /* the fused kernel's stamps (DS4_CUDA_MOE_FUSED_TRACE=1), device */
    int clock_khz;
};

static int cuda_fail(ds4_error *err, cudaError_t rc, const char *what)
{
    return ds4_error_set(err, rc == cudaErrorMemoryAllocation ? DS4_E_NOMEM : DS4_E_IO,
                         "cuda: %s: %s", what, cudaGetErrorString(rc));
}

#define CK(call, what)                                                                        \
    do {                                                                                      \
        cudaError_t rc_ = (call);                                                             \
        if (rc_ != cudaSuccess)                                                               \
            return cuda_fail(err, rc_, what);                                                 \
    } while (0)

extern "C" int cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        return 0;
    return n;
}

extern "C" void cuda_moe_ctx_free(cuda_moe_ctx *c)
{
    if (!c)
        return;
    cudaFree(c->grid);
    cudaFree(c->signs);
    cudaFree(c->flag);
    cudaFree(c->scratch);
    cudaFree(c->signmask);
    cudaFree(c->bar);
    cudaFree(c->trace);
    for (int i = 0; i < N_EV; i++)
        if (c->ev[i])
            cudaEventDestroy(c->ev[i]);
    if (c->own_stream && c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int cuda_moe_ctx_new(cuda_moe_ctx **out, void *stream, ds4_error *err)
{
    *out = NULL;
    cuda_moe_ctx *c = (cuda_moe_ctx *)calloc(1, sizeof *c);
    if (!c)
        return ds4_error_set(err, DS4_E_NOMEM, "cuda_moe_ctx_new: out of memory");
    int rc = 0;
    cudaError_t e;
    if (stream) {
        c->stream = (cudaStream_t)stream;
    } else if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = cuda_fail(err, e, "stream");
        goto fail;
    } else {
        c->own_stream = true;
    }
    if ((e = cudaMalloc((void **)&c->grid, sizeof quant_iq2xxs_grid)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->signs, sizeof quant_ksigns_iq2xs)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->flag, 3 * sizeof(int))) != cudaSuccess ||
        (e = cudaMemcpy(c->grid, quant_iq2xxs_grid, sizeof quant_iq2xxs_grid,
                        cudaMemcpyHostToDevice)) != cudaSuccess ||
        (e = cudaMemcpy(c->signs, quant_ksigns_iq2xs, sizeof quant_ksigns_iq2xs,
                        cudaMemcpyHostToDevice)) != cudaSuccess ||
        (e = cudaMemset(c->flag, 0, 3 * sizeof(int))) != cudaSuccess) {
        rc = cuda_fail(err, e, "context buffers");
        goto fail;
    }
    for (int i = 0; i < N_EV; i++)
        if ((e = cudaEventCreate(&c->ev[i])) != cudaSuccess) {
            rc = cuda_fail(err, e, "events");
            goto fail;
        }
    {
        uint64_t masks[128];
        for (int i = 0; i < 128; i++) {
            masks[i] = 0;
            for (int j = 0; j < 8; j++)
                if (quant_ksigns_iq2xs[i] >> j & 1)
                    masks[i] |= (uint64_t)0xFF << (8 * j);
        }
        int dev = 0, major = 0, coop = 0;
        if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&c->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&c->clock_khz, cudaDevAttrClockRate, dev)) != cudaSuccess ||
            (e = cudaMalloc((void **)&c->signmask, sizeof masks)) != cudaSuccess ||
            (e = cudaMemcpy(c->signmask, masks, sizeof masks, cudaMemcpyHostToDevice)) != cudaSuccess ||
            (e = cudaMalloc((void **)&c->bar, sizeof *c->bar)) != cudaSuccess ||
            (e = cudaMemset(c->bar, 0, sizeof *c->bar)) != cudaSuccess) {
            rc = cuda_fail(err, e, "fused kernel setup");
            goto fail;
        }
        c->fused_hw = major >= 9 && coop;
    }
    *out = c;
    return 0;
fail:
    cuda_moe_ctx_free(c);
    return rc;
}

extern "C" void *cuda_moe_stream(cuda_moe_ctx *c) { return c->stream; }

extern "C" int cuda_moe_sync(cuda_moe_ctx *c, ds4_error *err)
{
    int flag = 0;
    CK(cudaStreamSynchronize(c->stream), "sync");
    CK(cudaMemcpy(&flag, c->flag, sizeof flag, cudaMemcpyDeviceToHost), "flag read");
    if (flag) {
        CK(cudaMemset(c->flag, 0, sizeof(int)), "flag reset");
        return ds4_error_set(err, DS4_E_RANGE, "cuda_moe: an expert id out of range");
    }
    return 0;
}

extern "C" int cuda_moe_poison(cuda_moe_ctx *c, ds4_error *err)
{
    if (c->scratch)
        CK(cudaMemsetAsync(c->scratch, 0xff, c->scratch_bytes, c->stream), "poison");
    return 0;
}

/* ======== path choice ================================================================== */

extern "C" const char *cuda_moe_path_name(cuda_moe_path path)
{
    return path == CUDA_MOE_MINIGEMM ? "minigemm" : path == CUDA_MOE_BY_ROUTING ? "by-routing"
                                                                                : "gemv";
}

extern "C" cuda_moe_path cuda_moe_auto_path(ds4_type gate_type, int n_tok)
{
    (void)gate_type; /* the measured break-even is the same for both mixes (tuning.cuh) */
    const char *env = getenv("DS4_DECODE_MOE_MINIGEMM");
    if (env && (env[0] == '0' || env[0] == '1') && env[1] == '\0')
        return env[0] == '1' ? CUDA_MOE_MINIGEMM : CUDA_MOE_GEMV;
    return n_tok >= CUDA_MOE_MINIGEMM_FROM ? CUDA_MOE_BY_ROUTING : CUDA_MOE_GEMV;
}

extern "C" cuda_moe_path cuda_moe_last_path(cuda_moe_ctx *c)
{
    if (c->last != CUDA_MOE_BY_ROUTING)
        return c->last;
    int choice = 0;
    if (cudaStreamSynchronize(c->stream) != cudaSuccess ||
        cudaMemcpy(&choice, c->flag + 2, sizeof choice, cudaMemcpyDeviceToHost) != cudaSuccess)
        return CUDA_MOE_GEMV;
    return choice ? CUDA_MOE_MINIGEMM : CUDA_MOE_GEMV;
}

/* DS4_CUDA_MOE_FUSED: 0 off, 1 (unset) on; bench diagnostics (wrong results): 2 the fused
 * kernel's copies only, 3 its launch only, 4 on but launched without the cooperative flag */
static int fused_mode(void)
{
    const char *env = getenv("DS4_CUDA_MOE_FUSED");
    if (env && env[0] >= '0' && env[0] <= '4' && env[1] == '\0')
        return env[0] - '0';
    return 1;
}

/* DS4_CUDA_MOE_FUSED_BATCH=0|1: the fused kernel for batches of 2+ tokens (default
 * CUDA_MOE_FUSED_BATCH_DEFAULT, tuning.cuh: why it is off). */
static bool fused_batch(void)
{
    const char *env = getenv("DS4_CUDA_MOE_FUSED_BATCH");
    if (env && (env[0] == '0' || env[0] == '1') && env[1] == '\0')
        return env[0] == '1';
    return CUDA_MOE_FUSED_BATCH_DEFAULT != 0;
}

/* With the stage profile and DS4_CUDA_MOE_FUSED_TRACE=1: the fused kernel's per-block stamps,
 * as the median and max over blocks of the time from the block's entry to each point (µs at
 * the rated SM clock), and the spread of the block entries. */
static int fused_trace_print(cuda_moe_ctx *c, int n_blocks, ds4_error *err)
{
    const int nt = CUDA_FUSED_TRACE;
    unsigned long long *t = (unsigned long long *)malloc(sizeof *t * nt * n_blocks);
    double *v = (double *)malloc(sizeof *v * n_blocks);
    if (!t || !v) {
        free(t), free(v);
        return ds4_error_set(err, DS4_E_NOMEM, "cuda_moe: trace");
    }
    CK(cudaMemcpy(t, c->trace, sizeof *t * nt * n_blocks, cudaMemcpyDeviceToHost), "trace read");
    static const char *name[] = {"sync", "first-in", "gateup", "barrier", "midq", "down"};
    char line[512];
    int o = 0;
    unsigned long long g0 = t[0], g1 = t[0];
    for (int b = 1; b < n_blocks; b++)
        g0 = t[b * nt] < g0 ? t[b * nt] : g0, g1 = t[b * nt] > g1 ? t[b * nt] : g1;
    o += snprintf(line + o, sizeof line - o, "entry-spread=%.2f", (g1 - g0) * 1e-3);
    for (int k = 2; k < nt; k++) {
        for (int b = 0; b < n_blocks; b++)
            v[b] = (double)(t[b * nt + k] - t[b * nt + 1]) / c->clock_khz * 1e3;
        for (int i = 1; i < n_blocks; i++) /* insertion sort: a few hundred values */
            for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
                const double x = v[j];
                v[j] = v[j - 1], v[j - 1] = x;
            }
        o += snprintf(line + o, sizeof line - o, " %s=%.2f/%.2f", name[k - 2], v[n_blocks / 2],
                      v[n_blocks - 1]);
    }
    fprintf(stderr, "ds4: CUDA MoE fused trace (us from block entry, median/max): %s\n", line);
    free(t), free(v);
    return 0;
}

static bool stage_profile(void)
{
    const char *env = getenv("DS4_MOE_STAGE_PROFILE");
    return env && env[0] == '1';
}

/* ======== checks and scratch =========================================================== */

static int wt_type(ds4_type t)
{
    return t == DS4_TYPE_IQ2_XXS ? WT_IQ2_XXS : t == DS4_TYPE_Q2_K ? WT_Q2_K
                                              : t == DS4_TYPE_Q4_K ? WT_Q4_K : -1;
}

static int check_tensor(const cuda_moe_tensor *t, const char *name, int64_t n_in, int64_t n_out,
                        ds4_error *err)
{
    if (wt_type(t->type) < 0)
        return ds4_error_set(err, DS4_E_TYPE, "cuda_moe: %s: no CUDA kernel for type %d", name,
                             (int)t->type);
    if (t->n_in != n_in || t->n_out != n_out || n_in <= 0 || n_in % QUANT_QK_K || n_out % 16)
        return ds4_error_set(err, DS4_E_RANGE, "cuda_moe: %s: shape %lld x %lld", name,
                             (long long)t->n_in, (long long)t->n_out);
    if (!t->data || t->row_bytes < quant_row_bytes(t->type, n_in) || t->row_bytes % 4 ||
        t->expert_bytes < t->row_bytes * (size_t)n_out || t->expert_bytes % 4)
        return ds4_error_set(err, DS4_E_ARG, "cuda_moe: %s: bad data or strides", name);
    return 0;
}

static moe_wt to_wt(const cuda_moe_tensor *t)
{
    moe_wt w;
    w.data = (const uint8_t *)t->data;
    w.row_bytes = t->row_bytes;
    w.expert_bytes = t->expert_bytes;
    w.nb = (int)(t->n_in / QUANT_QK_K);
    w.n_out = (int)t->n_out;
    return w;
}

struct scratch_view {
    quant_block_q8_k *xq, *midq;
    float *mid;
    moe_tile *tiles;
};

static size_t al(size_t n) { return (n + 255) / 256 * 256; }

static int scratch(cuda_moe_ctx *c, int64_t n_embd, int64_t n_ff, int n_used, scratch_view *v,
                   ds4_error *err)
{
    const size_t pairs = (size_t)CUDA_MOE_MAX_TOK * n_used;
    const size_t xq = al(CUDA_MOE_MAX_TOK * (size_t)(n_embd / QUANT_QK_K) * sizeof(quant_block_q8_k));
    const size_t mid = al(pairs * (size_t)n_ff * sizeof(float));
    const size_t midq = al(pairs * (size_t)(n_ff / QUANT_QK_K) * sizeof(quant_block_q8_k));
    const size_t tiles = al(pairs * sizeof(moe_tile));
    const size_t need = xq + mid + midq + tiles;
    if (need > c->scratch_bytes) {
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        cudaStreamIsCapturing(c->stream, &cs);
        if (cs != cudaStreamCaptureStatusNone)
            return ds4_error_set(err, DS4_E_ARG, "cuda_moe: scratch must grow during a capture");
        CK(cudaStreamSynchronize(c->stream), "sync");
        cudaFree(c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        CK(cudaMalloc(&c->scratch, need), "scratch");
        c->scratch_bytes = need;
    }
    char *p = (char *)c->scratch;
    v->xq = (quant_block_q8_k *)p;
    v->mid = (float *)(p + xq);
    v->midq = (quant_block_q8_k *)(p + xq + mid);
    v->tiles = (moe_tile *)(p + xq + mid + midq);
    return 0;
}

/* ======== the call ===================================================================== */

extern "C" int cuda_moe_run(cuda_moe_ctx *c, const cuda_moe_args *a, ds4_error *err)
{
    const cuda_moe_layer *L = a->layer;
    if (!L || a->n_tok < 0 || a->n_used < 1 || a->n_used > CUDA_MOE_MAX_USED || L->n_expert < 1)
        return ds4_error_set(err, DS4_E_ARG, "cuda_moe: bad layer or counts");
    if (a->n_tok == 0)
        return 0;
    const int64_t n_embd = L->gate.n_in, n_ff = L->gate.n_out;
    int rc;
    if ((rc = check_tensor(&L->gate, "gate", n_embd, n_ff, err)) ||
        (rc = check_tensor(&L->up, "up", n_embd, n_ff, err)) ||
        (rc = check_tensor(&L->down, "down", n_ff, n_embd, err)))
        return rc;
    if (L->gate.type != L->up.type)
        return ds4_error_set(err, DS4_E_TYPE, "cuda_moe: gate and up types differ");
    if (!a->ids || !a->weights || !a->h || !a->y || a->ldh < n_embd || a->ldy < n_embd)
        return ds4_error_set(err, DS4_E_ARG, "cuda_moe: bad pointers or strides");
    scratch_view v = {NULL, NULL, NULL, NULL};
    if ((rc = scratch(c, n_embd, n_ff, a->n_used, &v, err)))
        return rc;
    const moe_wt gate = to_wt(&L->gate), up = to_wt(&L->up), down = to_wt(&L->down);
    const int tg = wt_type(L->gate.type), td = wt_type(L->down.type);
    const moe_iq2_tables tab = {c->grid, c->signs};
    cuda_moe_path path = a->path == CUDA_MOE_AUTO ? cuda_moe_auto_path(L->gate.type, a->n_tok)
                                                  : a->path;
    const bool prof = stage_profile();
    cudaStream_t s = c->stream;
    fused_plan fp;
    const bool fused_ok = a->n_tok <= CUDA_FUSED_MAX_TOK && (a->n_tok == 1 || fused_batch()) &&
                          c->fused_hw && fused_mode() &&
                          (uintptr_t)a->h % 16 == 0 && (a->n_tok == 1 || a->ldh % 4 == 0) &&
                          cuda_moe_fused_plan(&fp, tg, td, &gate, &up, &down, a->n_tok, a->n_used,
                                              c->n_sm, c->smem_optin);
    /* the automatic choice: the fused kernel where it runs, up to the measured batch */
    if (a->path == CUDA_MOE_AUTO && path == CUDA_MOE_BY_ROUTING && fused_ok &&
        a->n_tok <= (tg == WT_IQ2_XXS ? CUDA_MOE_FUSED_AUTO_MAX_TOK_IQ2 : CUDA_MOE_FUSED_AUTO_MAX_TOK))
        path = CUDA_MOE_GEMV;
    c->last = path;
    const int fmode = path == CUDA_MOE_GEMV && fused_ok ? fused_mode() : 0;
    if (fmode) {
        const int mb = a->n_tok > 1;
        if (fp.smem > c->fused_smem[tg][td][mb]) {
            CK(cuda_moe_fused_prepare(tg, td, mb != 0, fp.smem), "fused kernel shared memory");
            c->fused_smem[tg][td][mb] = fp.smem;
        }
        const char *tenv = getenv("DS4_CUDA_MOE_FUSED_TRACE");
        const bool trace = prof && tenv && tenv[0] == '1';
        if (trace && !c->trace)
            CK(cudaMalloc((void **)&c->trace, sizeof *c->trace * CUDA_FUSED_TRACE * 1024), "trace");
        if (prof)
            CK(cudaEventRecord(c->ev[ST_XQ], s), "event");
        CK(cuda_moe_fused_run(tg, td, &fp, &gate, &up, &down, c->grid, c->signmask, a->h, a->ldh,
                              a->ids, a->weights, a->n_tok, a->n_used, L->n_expert, L->clamp, v.mid,
                              a->y, a->ldy, a->accumulate, c->flag, c->bar,
                              trace && fp.n_blocks <= 1024 ? c->trace : NULL,
                              fmode == 2 ? 1 : fmode == 3 ? 2 : 0, fmode != 4, s), "fused moe");
        if (prof) {
            float ms;
            CK(cudaEventRecord(c->ev[ST_END], s), "event");
            CK(cudaEventSynchronize(c->ev[ST_END]), "event sync");
            CK(cudaEventElapsedTime(&ms, c->ev[ST_XQ], c->ev[ST_END]), "event time");
            fprintf(stderr,
                    "ds4: CUDA MoE stage layer=%d tokens=%d pairs=%d path=gemv-fused gate=%s down=%s "
                    "blocks=%d slots=%dx%d fused=%.4f total=%.4f ms\n",
                    a->layer_index, a->n_tok, a->n_tok * a->n_used, quant_get_traits(L->gate.type)->name,
                    quant_get_traits(L->down.type)->name, fp.n_blocks, fp.n_slots, fp.slot_bytes,
                    ms, ms);
            if (trace && fp.n_blocks <= 1024 && (rc = fused_trace_print(c, fp.n_blocks, err)))
                return rc;
        }
        return 0;
    }
    for (int t0 = 0; t0 < a->n_tok; t0 += CUDA_MOE_MAX_TOK) {
        const int nt = a->n_tok - t0 < CUDA_MOE_MAX_TOK ? a->n_tok - t0 : CUDA_MOE_MAX_TOK;
        const int np = nt * a->n_used;
        const int32_t *ids = a->ids + (int64_t)t0 * a->n_used;
        const float *wts = a->weights + (int64_t)t0 * a->n_used;
        float *y = a->y + t0 * a->ldy;
        if (prof)
            CK(cudaEventRecord(c->ev[ST_XQ], s), "event");
        CK(cuda_act_quant_q8_k(a->h + t0 * a->ldh, a->ldh, nt, n_embd, v.xq, s), "quantize h");
        if (prof)
            CK(cudaEventRecord(c->ev[ST_ROUTE], s), "event");
        const bool mg = path != CUDA_MOE_GEMV, gv = path != CUDA_MOE_MINIGEMM;
        const int cols = nt <= 8 ? 8 : 16;
        const moe_sel sel_g = {path == CUDA_MOE_BY_ROUTING ? c->flag + 2 : NULL, 0};
        const moe_sel sel_m = {path == CUDA_MOE_BY_ROUTING ? c->flag + 2 : NULL, 1};
        if (mg)
            CK(cuda_moe_route(ids, np, nt, L->n_expert, cols, v.tiles, c->flag + 1, c->flag,
                              path == CUDA_MOE_BY_ROUTING ? c->flag + 2 : NULL, s), "route");
        if (prof)
            CK(cudaEventRecord(c->ev[ST_GATEUP], s), "event");
        if (gv)
            CK(cuda_moe_gemv_gate_up(tg, &gate, &up, tab, v.xq, ids, wts, nt, a->n_used,
                                     L->n_expert, L->clamp, v.mid, c->flag, sel_g, s), "gemv gate/up");
        if (mg)
            CK(cuda_moe_mma_gate_up(tg, &gate, &up, tab, v.xq, v.tiles, c->flag + 1, np, cols, wts,
                                    a->n_used, L->clamp, v.mid, sel_m, s), "mma gate/up");
        if (prof)
            CK(cudaEventRecord(c->ev[ST_MIDQ], s), "event");
        CK(cuda_act_quant_q8_k(v.mid, n_ff, np, n_ff, v.midq, s), "quantize mid");
        if (prof)
            CK(cudaEventRecord(c->ev[ST_DOWN], s), "event");
        if (gv)
            CK(cuda_moe_gemv_down(td, &down, tab, v.midq, ids, nt, a->n_used, L->n_expert, y,
                                  a->ldy, a->accumulate, sel_g, s), "gemv down");
        if (mg)
            CK(cuda_moe_mma_down(td, &down, tab, v.midq, v.tiles, c->flag + 1, cols, nt, a->n_used,
                                 y, a->ldy, a->accumulate, sel_m, s), "mma down");
        if (prof) {
            CK(cudaEventRecord(c->ev[ST_END], s), "event");
            CK(cudaEventSynchronize(c->ev[ST_END]), "event sync");
            float ms[N_EV - 1];
            for (int i = 0; i < N_EV - 1; i++)
                CK(cudaEventElapsedTime(&ms[i], c->ev[i], c->ev[i + 1]), "event time");
            float tot = 0.0f;
            for (int i = 0; i < N_EV - 1; i++)
                tot += ms[i];
            fprintf(stderr,
                    "ds4: CUDA MoE stage layer=%d tokens=%d pairs=%d path=%s gate=%s down=%s "
                    "xq=%.4f route=%.4f gateup=%.4f midq=%.4f down=%.4f total=%.4f ms\n",
                    a->layer_index, nt, np, cuda_moe_path_name(cuda_moe_last_path(c)),
                    quant_get_traits(L->gate.type)->name, quant_get_traits(L->down.type)->name,
                    ms[ST_XQ], ms[ST_ROUTE], ms[ST_GATEUP], ms[ST_MIDQ], ms[ST_DOWN], tot);
        }
    }
    return 0;
}

/* ======== random blocks for benchmarks ================================================== */

__device__ __forceinline__ uint32_t hash32(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* One thread per block: random bytes, then valid scales and f16 d (as tests/test_moe.c). */
__global__ void k_fill(uint8_t *p, int type, size_t n_blocks, size_t bb, uint64_t seed, float rms)
{
    const size_t b = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (b >= n_blocks)
        return;
    uint8_t *q = p + b * bb;
    const uint64_t base = (seed << 40) ^ (b * 64);
    for (size_t i = 0; i < bb; i += 2) {
        const uint32_t r = hash32(base + i);
        q[i] = (uint8_t)r;
        if (i + 1 < bb)
            q[i + 1] = (uint8_t)(r >> 8);
    }
    const float u = 0.5f + (hash32(base + 63) & 0xffff) / 65536.0f;
    if (type == WT_IQ2_XXS) {
        const __half d = __float2half(rms / 67.0f * u);
        memcpy(q, &d, 2);
    } else if (type == WT_Q2_K) {
        for (int j = 0; j < 16; j++) {
            const unsigned sc = 1 + q[16 + j] % 15, m = (3 * sc + 1) / 2;
            q[j] = (uint8_t)(sc | (m > 15 ? 15 : m) << 4);
        }
        const __half d = __float2half(rms / 10.0f * u);
        memcpy(q + 80, &d, 2);
        memcpy(q + 82, &d, 2);
    } else {
        const float df = rms / 166.0f * u;
        const __half d = __float2half(df), dm = __float2half(7.5f * df);
        memcpy(q, &d, 2);
        memcpy(q + 2, &dm, 2);
    }
}

extern "C" int cuda_fill_random_blocks(void *dev, ds4_type type, size_t n_blocks, uint64_t seed,
                                       float rms, ds4_error *err)
{
    const int t = wt_type(type);
    if (t < 0)
        return ds4_error_set(err, DS4_E_TYPE, "cuda_fill_random_blocks: type %d", (int)type);
    const size_t bb = quant_get_traits(type)->block_bytes;
    k_fill<<<(unsigned)((n_blocks + 255) / 256), 256>>>((uint8_t *)dev, t, n_blocks, bb, seed, rms);
    CK(cudaGetLastError(), "fill");
    CK(cudaDeviceSynchronize(), "fill sync");
    return 0;
}
