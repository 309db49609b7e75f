/* cuda_moe.h — the routed-expert FFN of one layer on a CUDA GPU, the C interface (the CUDA
 * twin of src/kernels/cpu/moe.h; ds4-architecture.md §3.9 step 6, activations per §4.1).
 * Two paths behind one call: GEMV (each (token, expert) pair on its own, __dp4a row dots) and
 * mini-GEMM (pairs grouped by expert, int8 tensor-core tiles over all tokens of a group);
 * DS4_DECODE_MOE_MINIGEMM=0|1 forces a path, DS4_MOE_STAGE_PROFILE=1 times the stages with
 * CUDA events and prints them. At batch 1 on sm_90 the GEMV path is one fused cooperative launch
 * (DS4_CUDA_MOE_FUSED=0 turns it off). All pointers in cuda_moe_args and cuda_moe_tensor are device
 * pointers; calls are asynchronous on the context's stream (no host sync unless profiling).
 * Invariant: both paths compute the CPU formula (same Q8_K activations, integer sums per
 * block) up to f32 summation order: rel L2 to cpu_moe_run < 1e-3 (tests/cuda). */
#ifndef DS4_BACKEND_CUDA_CUDA_MOE_H
#define DS4_BACKEND_CUDA_CUDA_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ds4.h"
#include "quant/quant.h"

/* One 3-D expert tensor in device memory (same fields as cpu_moe_tensor). */
typedef struct cuda_moe_tensor {
    ds4_type type;       /* IQ2_XXS, Q2_K or Q4_K */
    int64_t n_in;        /* elements per row (a positive multiple of 256) */
    int64_t n_out;       /* rows per expert (a multiple of 16) */
    const void *data;    /* device: expert 0, row 0 */
    size_t row_bytes;    /* >= quant_row_bytes(type, n_in), a multiple of 4 */
    size_t expert_bytes; /* >= n_out * row_bytes, a multiple of 4 */
} cuda_moe_tensor;

typedef struct cuda_moe_layer {
    cuda_moe_tensor gate, up, down;
    int n_expert;
    float clamp; /* SwiGLU clamp; <= 0 means none */
} cuda_moe_layer;

typedef enum {
    CUDA_MOE_AUTO = -1,      /* DS4_DECODE_MOE_MINIGEMM if set, else cuda_moe_auto_path */
    CUDA_MOE_GEMV = 0,
    CUDA_MOE_MINIGEMM = 1,
    CUDA_MOE_BY_ROUTING = 2, /* decided on the device per call from the grouping: both paths
                                are enqueued, the kernels of the other one exit at once */
} cuda_moe_path;

typedef struct cuda_moe_args {
    const cuda_moe_layer *layer;
    int n_tok;
    int n_used;            /* 1..16 */
    const int32_t *ids;    /* device [n_tok][n_used] expert ids */
    const float *weights;  /* device [n_tok][n_used] route weights */
    const float *h;        /* device [n_tok] rows of n_embd floats, ldh apart */
    int64_t ldh;
    float *y;              /* device [n_tok] rows of n_embd floats, ldy apart */
    int64_t ldy;
    bool accumulate;       /* y += routed sum; else y = it */
    cuda_moe_path path;    /* CUDA_MOE_AUTO, or a path to force (wins over the env) */
    int layer_index;       /* printed by the stage profile; -1 if unknown */
} cuda_moe_args;

typedef struct cuda_moe_ctx cuda_moe_ctx;

/* Number of CUDA devices (0 when there is no driver or device). */
int cuda_device_count(void);

/* Returns 0 and a context in *out that launches on stream (a cudaStream_t; NULL: a new
 * non-blocking stream owned by the context), or DS4_E_NOMEM / DS4_E_IO (CUDA error). */
int cuda_moe_ctx_new(cuda_moe_ctx **out, void *stream, ds4_error *err);

/* Frees a context; NULL is a no-op. */
void cuda_moe_ctx_free(cuda_moe_ctx *c);

/* Enqueues the routed experts for a->n_tok tokens. Returns 0, or DS4_E_TYPE, DS4_E_RANGE,
 * DS4_E_ARG (checked on the host), DS4_E_NOMEM or DS4_E_IO (CUDA errors). Expert ids are
 * checked on the device: an id out of range is reported by the next cuda_moe_sync. Scratch
 * grows on the first call of a new size (not while a stream capture is active: size first). */
int cuda_moe_run(cuda_moe_ctx *c, const cuda_moe_args *a, ds4_error *err);

/* Waits for the context's stream; returns 0, DS4_E_RANGE if an expert id was out of range
 * since the last sync (the outputs of that call are undefined), or DS4_E_IO. */
int cuda_moe_sync(cuda_moe_ctx *c, ds4_error *err);

/* Fills the context's scratch (activations, mids) with NaN bytes, so a test catches any
 * element a kernel reads without writing. Returns 0 or DS4_E_IO. */
int cuda_moe_poison(cuda_moe_ctx *c, ds4_error *err);

/* The stream (cudaStream_t) the context launches on. */
void *cuda_moe_stream(cuda_moe_ctx *c);

/* The path CUDA_MOE_AUTO takes: DS4_DECODE_MOE_MINIGEMM=0|1 if set, else GEMV below
 * CUDA_MOE_MINIGEMM_FROM tokens and CUDA_MOE_BY_ROUTING from there (tuning.cuh: mini-GEMM
 * when the (expert, column-tile) groups are few per token, the measured break-even). */
cuda_moe_path cuda_moe_auto_path(ds4_type gate_type, int n_tok);

/* The path the last cuda_moe_run computed with (GEMV or MINIGEMM; waits for the stream when
 * it was decided on the device). */
cuda_moe_path cuda_moe_last_path(cuda_moe_ctx *c);

/* "gemv", "minigemm" or "by-routing". */
const char *cuda_moe_path_name(cuda_moe_path path);

/* Fills n_blocks blocks of type at dev (device memory) with seeded random valid blocks whose
 * elements have an RMS of about rms (benchmarks: a full layer without a host copy). Returns 0,
 * DS4_E_TYPE or DS4_E_IO. */
int cuda_fill_random_blocks(void *dev, ds4_type type, size_t n_blocks, uint64_t seed, float rms,
                            ds4_error *err);

#ifdef __cplusplus
}
#endif

#endif
