/* moe.h — the routed-expert FFN of one layer on the CPU (ds4-architecture.md §3.9 step 6,
 * activations per §4.1), for decode and small batches: per token, n_used experts chosen from
 * n_expert; gate and up on the token's Q8_K activation, clamped SwiGLU times the route weight,
 * the mid quantized to Q8_K, down, summed over the token's experts into its output row.
 * Two paths behind this one call: GEMV (each (token, expert) pair on its own, gate and up rows
 * in one pass over the activation) and mini-GEMM (tokens grouped by expert, each weight block
 * decoded once for every token of the group, SwiGLU fused, down accumulated straight into the
 * output rows). DS4_DECODE_MOE_MINIGEMM=0|1 forces a path, DS4_MOE_STAGE_PROFILE=1 prints
 * stage times. Owns no thread pool (threadpool.h) and no routing (src/model/moe.c).
 * Invariant: both paths and every ISA variant give bit-identical outputs: each (row, token)
 * dot product is the exact integer sum per 256-block combined in f32 in block order, the same
 * float as cpu_dot_*_ref; experts are added per token in (expert id, k) order; any thread
 * count and any split of the rows give the same bits. */
#ifndef DS4_KERNELS_CPU_MOE_H
#define DS4_KERNELS_CPU_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "kernels/cpu/threadpool.h"
#include "quant/quant.h"

/* One 3-D expert tensor: n_expert matrices of n_out rows of n_in elements. */
typedef struct cpu_moe_tensor {
    ds4_type type;       /* IQ2_XXS, Q2_K or Q4_K */
    int64_t n_in;        /* elements per row (a positive multiple of 256) */
    int64_t n_out;       /* rows per expert */
    const void *data;    /* expert 0, row 0 */
    size_t row_bytes;    /* bytes from one row to the next (>= quant_row_bytes(type, n_in)) */
    size_t expert_bytes; /* bytes from one expert to the next (>= n_out * row_bytes) */
} cpu_moe_tensor;

/* The routed experts of one layer. gate and up: n_in = n_embd, n_out = n_ff, same type;
 * down: n_in = n_ff, n_out = n_embd. */
typedef struct cpu_moe_layer {
    cpu_moe_tensor gate, up, down;
    int n_expert; /* experts in each tensor: valid ids are 0..n_expert-1 */
    float clamp;  /* SwiGLU clamp: gate <= clamp, |up| <= clamp; <= 0 means none */
} cpu_moe_layer;

typedef enum {
    CPU_MOE_AUTO = -1,    /* DS4_DECODE_MOE_MINIGEMM if set, else the measured table */
    CPU_MOE_GEMV = 0,
    CPU_MOE_MINIGEMM = 1,
} cpu_moe_path;

/* One call: n_tok tokens, each with n_used (expert id, route weight) choices. */
typedef struct cpu_moe_args {
    const cpu_moe_layer *layer;
    int n_tok;
    int n_used;
    const int32_t *ids;    /* [n_tok][n_used] expert ids (a token may repeat an id) */
    const float *weights;  /* [n_tok][n_used] route weights (multiply the SwiGLU output) */
    const float *h;        /* [n_tok] rows of n_embd floats, ldh apart: the FFN input */
    int64_t ldh;
    float *y;              /* [n_tok] rows of n_embd floats, ldy apart: the output */
    int64_t ldy;
    bool accumulate;       /* y += routed sum (added once, after the sum); else y = it */
    cpu_moe_path path;     /* CPU_MOE_AUTO, or a path to force (wins over the env) */
    int layer_index;       /* printed by the stage profile; -1 if unknown */
} cpu_moe_args;

/* Scratch reused across calls (quantized activations, mids, grouping). */
typedef struct cpu_moe_ctx cpu_moe_ctx;

/* Returns 0 and a new context in *out, or DS4_E_NOMEM. */
int cpu_moe_ctx_new(cpu_moe_ctx **out, ds4_error *err);

/* Frees a context; NULL is a no-op. */
void cpu_moe_ctx_free(cpu_moe_ctx *c);

/* Runs the routed experts for a->n_tok tokens on the pool (NULL: the caller alone). Writes
 * (or adds into) every y row; h and y may not overlap. n_tok == 0 does nothing. Returns 0, or
 * DS4_E_TYPE (a type without a kernel, gate/up types differ), DS4_E_RANGE (inconsistent
 * dimensions, an expert id out of range), DS4_E_ARG (bad counts or strides), DS4_E_NOMEM,
 * with a message in err. Not reentrant on one ctx. */
int cpu_moe_run(cpu_moe_ctx *c, cpu_pool *p, const cpu_moe_args *a, ds4_error *err);

/* Whether cpu_moe_run has kernels for gate/up weights of type gate_type, down weights of
 * type down_type and rows of n_embd / n_ff elements (IQ2_XXS, Q2_K, Q4_K; multiples of 256,
 * at most 16384). A caller falls back to its own products otherwise. */
bool cpu_moe_supported(ds4_type gate_type, ds4_type down_type, int64_t n_embd, int64_t n_ff);

/* The path cpu_moe_run takes when asked for CPU_MOE_AUTO, for a batch of n_tok tokens with
 * gate/up weights of type gate_type whose choices fall on experts shared by `share` slots
 * each on average (n_tok * n_used / distinct experts; 1: no sharing): DS4_DECODE_MOE_MINIGEMM
 * =0|1 if set, else the mini-GEMM where the table of measured crossovers in moe.c says it
 * wins (enough tokens, and enough of them on common experts), the GEMV otherwise. */
cpu_moe_path cpu_moe_auto_path(ds4_type gate_type, int n_tok, double share);

/* "gemv" or "minigemm". */
const char *cpu_moe_path_name(cpu_moe_path path);

/* Whether cpu_moe_run computes with vector kernels here (false: the plain-C reference, which
 * a caller with faster products of its own should not prefer). */
bool cpu_moe_vectorized(void);

/* The kernel variant cpu_moe_run computes with (DS4_CPU_ISA as cpu_matmul_isa; the AVX-512
 * variant also needs AVX-512 VBMI and GFNI, else the reference runs). */
const char *cpu_moe_isa_name(void);

#endif
