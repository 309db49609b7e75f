/* moe_ref.c — the reference variant of the routed-expert kernels (moe_kern.h): plain C on
 * plain Q8_K activations. Every dot product is the cpu_dot_*_ref kernel itself, so the
 * canonical formula of moe_kern.h is this file by definition; the mini-GEMM kernels loop the
 * tokens over the same call (no decoding to share in scalar code). Runs on any CPU and is
 * what the AVX-512 variant is tested against, bit for bit. */
#include "kernels/cpu/moe_kern.h"

/* ======== dot kernels ================================================================== */

typedef struct ref_tile {
    int n;
    const quant_block_q8_k *x[MOE_TILE_TOK];
} ref_tile;

static void tile(void *t, const quant_block_q8_k *const *x, int n, int64_t nb)
{
    ref_tile *T = t;
    (void)nb;
    T->n = n;
    for (int i = 0; i < n; i++)
        T->x[i] = x[i];
}

#define REF_KERNELS(T, dotfn)                                                                 \
    static float gemv_##T(const void *w, const quant_block_q8_k *x, int64_t nb)              \
    {                                                                                         \
        return dotfn(nb * QUANT_QK_K, w, x);                                                  \
    }                                                                                         \
    static void gemv2_##T(const void *w0, const void *w1, const quant_block_q8_k *x,         \
                          int64_t nb, float out[2])                                           \
    {                                                                                         \
        out[0] = dotfn(nb * QUANT_QK_K, w0, x);                                               \
        out[1] = dotfn(nb * QUANT_QK_K, w1, x);                                               \
    }                                                                                         \
    static void gemm_##T(const void *w, size_t rb, int nr, const void *t, int64_t nb,        \
                         float *out)                                                          \
    {                                                                                         \
        const ref_tile *T = t;                                                                \
        for (int i = 0; i < T->n; i++)                                                        \
            for (int r = 0; r < nr; r++)                                                      \
                out[i * MOE_TILE_ROWS + r] =                                                  \
                    dotfn(nb * QUANT_QK_K, (const uint8_t *)w + (size_t)r * rb, T->x[i]);     \
    }                                                                                         \
    static void gemm2_##T(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,    \
                          const void *t, int64_t nb, float *out0, float *out1)                \
    {                                                                                         \
        gemm_##T(w0, rb0, nr, t, nb, out0);                                                   \
        gemm_##T(w1, rb1, nr, t, nb, out1);                                                   \
    }                                                                                         \
    static const cpu_moe_kern kern_##T = {NULL,      NULL,     gemv_##T, gemv2_##T,           \
                                          tile,      gemm_##T, gemm2_##T};

REF_KERNELS(iq2_xxs, cpu_dot_iq2_xxs_q8_k_ref)
REF_KERNELS(q2_k, cpu_dot_q2_k_q8_k_ref)
REF_KERNELS(q4_k, cpu_dot_q4_k_q8_k_ref)

/* ======== activation quantizer, SwiGLU ================================================= */

static void quant_q8_k(const float *x, quant_block_q8_k *out, int64_t n)
{
    quant_quant_row_q8_k(x, out, n);
}

static void swiglu(const float *g, const float *u, const float *w, int w_stride, int64_t n,
                   float clamp, float *m)
{
    for (int64_t i = 0; i < n; i++)
        m[i] = moe_swiglu1(g[i], u[i], clamp, w[i * w_stride]);
}

const cpu_moe_ops cpu_moe_ops_ref = {"ref", quant_q8_k, swiglu, &kern_iq2_xxs, &kern_q2_k,
                                     &kern_q4_k};
