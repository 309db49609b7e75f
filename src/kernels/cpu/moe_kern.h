/* moe_kern.h — private to src/kernels/cpu/moe*.c: the per-ISA kernel tables of the routed
 * experts (row x token dot products for the GEMV and the mini-GEMM paths, per weight type),
 * the Q8_K activation quantizer and the SwiGLU they share, and the canonical scalar formulas
 * every variant reproduces bit for bit:
 *   - a row x token dot product is, per 256-block, the exact integer sum (iq2_xxs: I_b; q2_K /
 *     q4_K: the scaled sum Q_b and the min term M_b), combined in f32 in block order exactly as
 *     cpu_dot_*_ref does (iq2_xxs: 0.125 * sum (d_w d_x) I_b; K-quants: sum d_x d_w Q_b -
 *     d_x dmin M_b), never fused multiply-adds;
 *   - SwiGLU is moe_swiglu1 below (own exp polynomial, no libm), in f32;
 *   - the Q8_K quantizer is quant_quant_row_q8_k.
 * A variant may store activations permuted or offset (prep_*), never differently rounded. */
#ifndef DS4_KERNELS_CPU_MOE_KERN_H
#define DS4_KERNELS_CPU_MOE_KERN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_dot.h"
#include "quant/quant.h"

#define MOE_TILE_TOK 16  /* tokens of one mini-GEMM tile (a larger expert group is split) */
#define MOE_TILE_ROWS 16 /* weight rows of one mini-GEMM kernel call */
#define MOE_MAX_NB 64     /* blocks per row (n_in <= 16384): bounds the tile */
#define MOE_TILE_BYTES (8 << 10) /* a tile's bytes in any variant (64-byte aligned) */

/* Kernels of one weight type in one variant. Activations are Q8_K blocks; prep_gemv /
 * prep_gemm rewrite a token's nb blocks into the layout the gemv / gemm kernels read (same d
 * and bsums; qs permuted or offset by 128), NULL meaning the plain Q8_K blocks. */
typedef struct cpu_moe_kern {
    void (*prep_gemv)(const quant_block_q8_k *x, quant_block_q8_k *out, int64_t nb);
    void (*prep_gemm)(const quant_block_q8_k *x, quant_block_q8_k *out, int64_t nb);
    /* one row of nb blocks against one token */
    float (*gemv)(const void *w, const quant_block_q8_k *x, int64_t nb);
    /* two rows (gate, up) against one token: out[0] = w0.x, out[1] = w1.x */
    void (*gemv2)(const void *w0, const void *w1, const quant_block_q8_k *x, int64_t nb,
                  float out[2]);
    /* the token tile of the mini-GEMM: n <= MOE_TILE_TOK tokens' prepared activations
     * (nb blocks each) in whatever form the gemm kernels read, built once per token group
     * into MOE_TILE_BYTES at tile */
    void (*tile)(void *tile, const quant_block_q8_k *const *x, int n, int64_t nb);
    /* nr <= MOE_TILE_ROWS rows (row r at w + r * rb) against the tile's tokens, each block of
     * the rows decoded once for all of them: out[i * MOE_TILE_ROWS + r] = row r . x[i] */
    void (*gemm)(const void *w, size_t rb, int nr, const void *tile, int64_t nb, float *out);
    /* gate and up rows against the same tile */
    void (*gemm2)(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                  const void *tile, int64_t nb, float *out0, float *out1);
} cpu_moe_kern;

/* One variant: its name, the shared helpers, and a kernel row per weight type. */
typedef struct cpu_moe_ops {
    const char *name;
    /* quant_quant_row_q8_k, bit for bit */
    void (*quant_q8_k)(const float *x, quant_block_q8_k *out, int64_t n);
    /* m[i] = moe_swiglu1(g[i], u[i], clamp, w[i * w_stride]) for i < n */
    void (*swiglu)(const float *g, const float *u, const float *w, int w_stride, int64_t n,
                   float clamp, float *m);
    const cpu_moe_kern *iq2_xxs, *q2_k, *q4_k;
} cpu_moe_ops;

extern const cpu_moe_ops cpu_moe_ops_ref;
extern const cpu_moe_ops cpu_moe_ops_avx512;

/* Whether this CPU runs cpu_moe_ops_avx512 (AVX-512 F/BW/VL/DQ/VNNI + VBMI + GFNI). */
int cpu_moe_avx512_supported(void);

/* The kernel row of a weight type in a variant, or NULL if it has none. */
static inline const cpu_moe_kern *cpu_moe_kern_for(const cpu_moe_ops *o, ds4_type t)
{
    return t == DS4_TYPE_IQ2_XXS ? o->iq2_xxs : t == DS4_TYPE_Q2_K ? o->q2_k
                                              : t == DS4_TYPE_Q4_K ? o->q4_k : NULL;
}

/* ======== the canonical SwiGLU ========================================================= */

/* exp(x) in f32 with a fixed sequence of IEEE operations (Cody-Waite reduction by ln 2, a
 * degree-6 polynomial, scaling by 2^n through the exponent bits), so the vector variants can
 * repeat it exactly; relative error ~1e-7 on [-87, 88], the input clamped to that range. */
#define MOE_EXP_LO (-87.0f)
#define MOE_EXP_HI 88.0f
#define MOE_LOG2E 1.44269504088896341f
#define MOE_LN2_HI 0.693359375f
#define MOE_LN2_LO (-2.12194440e-4f)
#define MOE_EXP_P0 1.9875691500e-4f
#define MOE_EXP_P1 1.3981999507e-3f
#define MOE_EXP_P2 8.3334519073e-3f
#define MOE_EXP_P3 4.1665795894e-2f
#define MOE_EXP_P4 1.6666665459e-1f
#define MOE_EXP_P5 5.0000001201e-1f

static inline float moe_exp1(float x)
{
    x = x < MOE_EXP_LO ? MOE_EXP_LO : x > MOE_EXP_HI ? MOE_EXP_HI : x;
    const float n = nearbyintf(x * MOE_LOG2E);
    const float r = (x - n * MOE_LN2_HI) - n * MOE_LN2_LO;
    float p = MOE_EXP_P0;
    p = p * r + MOE_EXP_P1;
    p = p * r + MOE_EXP_P2;
    p = p * r + MOE_EXP_P3;
    p = p * r + MOE_EXP_P4;
    p = p * r + MOE_EXP_P5;
    p = (p * (r * r) + r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* The clamped, weighted SwiGLU of §3.9 step 6: g <- min(g, c), u <- clamp(u, -c, c) (c <= 0:
 * no clamp), m = (g / (1 + exp(-g)) * u) * w. */
static inline float moe_swiglu1(float g, float u, float c, float w)
{
    if (c > 0.0f) {
        g = g > c ? c : g;
        u = u > c ? c : u < -c ? -c : u;
    }
    const float s = g / (1.0f + moe_exp1(-g));
    return (s * u) * w;
}

#endif
