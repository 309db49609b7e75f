/* common.cuh — device helpers shared by the CUDA decode-MoE kernels: the weight types as
 * template tags, the integer view of a 32-element chunk of a 256-block (four int8 per word,
 * the per-chunk integer scale, the per-chunk min term), the f16 decode, the clamped SwiGLU of
 * §3.9 step 6, and the launch-check macro. Block layouts come from src/quant/blocks.h.
 * Invariant: for every type, a 256-block dot with a Q8_K block is
 *   d_x * (d_w * sum_j scale_j * sum_w dp4a(word_j,w, x_j,w) - dmin_w * sum_j min_j(bsums)),
 * which is the formula of cpu_dot_*_q8_k_ref (ds4-architecture.md §1.5) up to f32 order. */
#ifndef DS4_BACKEND_CUDA_COMMON_CUH
#define DS4_BACKEND_CUDA_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "quant/blocks.h"
}

enum { WT_IQ2_XXS = 0, WT_Q2_K = 1, WT_Q4_K = 2 };

/* One expert tensor as the kernels see it. */
struct moe_wt {
    const uint8_t *data;
    size_t row_bytes, expert_bytes;
    int nb;    /* 256-blocks per row */
    int n_out; /* rows per expert */
};

/* The IQ2_XXS tables (device copies of quant_iq2xxs_grid / quant_ksigns_iq2xs). */
struct moe_iq2_tables {
    const uint64_t *grid; /* 256 */
    const uint8_t *signs; /* 128 */
};

/* A kernel's gate on the device-side path choice: it runs only if flag is NULL or
 * *flag == want (the routing kernel writes *flag; see cuda_moe.cu, CUDA_MOE_AUTO). */
struct moe_sel {
    const int *flag;
    int want;
};

__device__ __forceinline__ bool sel_skip(moe_sel s) { return s.flag && *s.flag != s.want; }

template <int T> struct wt_block;
template <> struct wt_block<WT_IQ2_XXS> { typedef quant_block_iq2_xxs type; };
template <> struct wt_block<WT_Q2_K> { typedef quant_block_q2_k type; };
template <> struct wt_block<WT_Q4_K> { typedef quant_block_q4_k type; };

__device__ __forceinline__ float f16f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

/* 4 bits -> 4 bytes of 0x00 / 0xFF. */
__device__ __forceinline__ uint32_t sign_mask4(uint32_t bits)
{
    return ((bits * 0x00204081u) & 0x01010101u) * 0xFFu;
}

/* Word w (elements 4w..4w+3) of chunk j (elements 32j..32j+31) of block b, as four int8.
 * Q2_K words carry their 16-element sub-block scale already (scale*q <= 45). */
template <int T>
__device__ __forceinline__ int wq_word(const typename wt_block<T>::type *b, int j, int w,
                                       const uint64_t *grid, const uint8_t *signs)
{
    if constexpr (T == WT_IQ2_XXS) {
        const uint16_t *q = b->qs + 4 * j;
        const int g = w >> 1;
        const uint32_t idx = (q[g >> 1] >> (8 * (g & 1))) & 255u;
        const uint32_t sgn = (uint32_t)q[2] | (uint32_t)q[3] << 16;
        const uint64_t gv = grid[idx];
        const uint32_t v = (uint32_t)(gv >> (32 * (w & 1)));
        const uint32_t s = signs[(sgn >> (7 * g)) & 127u] >> (4 * (w & 1));
        const uint32_t m = sign_mask4(s & 15u);
        return (int)__vsub4(v ^ m, m);
    } else if constexpr (T == WT_Q2_K) {
        const int h = j >> 2, k = j & 3;
        const uint32_t v = *(const uint32_t *)(b->qs + 32 * h + 4 * w);
        const uint32_t sc = b->scales[8 * h + 2 * k + (w >> 2)] & 15u;
        return (int)(((v >> (2 * k)) & 0x03030303u) * sc);
    } else {
        const uint32_t v = *(const uint32_t *)(b->qs + 32 * (j >> 1) + 4 * w);
        return (int)((v >> (4 * (j & 1))) & 0x0F0F0F0Fu);
    }
}

__device__ __forceinline__ void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The integer scale of chunk j (Q2_K: 1, its scales are in the words). */
template <int T>
__device__ __forceinline__ int wq_scale(const typename wt_block<T>::type *b, int j)
{
    if constexpr (T == WT_IQ2_XXS) {
        return 2 * (int)(b->qs[4 * j + 3] >> 12) + 1;
    } else if constexpr (T == WT_Q2_K) {
        return 1;
    } else {
        int sc, m;
        q4k_scale_min(b->scales, j, &sc, &m);
        return sc;
    }
}

/* The min term of chunk j against the Q8_K bsums of the same block (IQ2_XXS: 0). */
template <int T>
__device__ __forceinline__ int wq_min(const typename wt_block<T>::type *b, int j, const int16_t *bs)
{
    if constexpr (T == WT_IQ2_XXS) {
        return 0;
    } else if constexpr (T == WT_Q2_K) {
        return (b->scales[2 * j] >> 4) * bs[2 * j] + (b->scales[2 * j + 1] >> 4) * bs[2 * j + 1];
    } else {
        int sc, m;
        q4k_scale_min(b->scales, j, &sc, &m);
        return m * (bs[2 * j] + bs[2 * j + 1]);
    }
}

/* d_w and dmin_w of a block (IQ2_XXS: d/8 and 0). */
template <int T>
__device__ __forceinline__ float2 wq_d(const typename wt_block<T>::type *b)
{
    if constexpr (T == WT_IQ2_XXS)
        return make_float2(0.125f * f16f(b->d), 0.0f);
    else
        return make_float2(f16f(b->d), f16f(b->dmin));
}

/* The clamped, weighted SwiGLU: g <- min(g, c), u <- clamp(u, -c, c) (c <= 0: none). */
__device__ __forceinline__ float moe_swiglu(float g, float u, float c, float w)
{
    if (c > 0.0f) {
        g = fminf(g, c);
        u = fmaxf(fminf(u, c), -c);
    }
    return (g / (1.0f + expf(-g)) * u) * w;
}

/* Starts pulling the 128-byte line of p into L2 (no register, no wait). */
__device__ __forceinline__ void prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* Prefetches the bytes [p, p + n) line by line, lanes of a warp taking turns. */
__device__ __forceinline__ void prefetch_span(const void *p, size_t n, int lane)
{
    const uintptr_t a0 = (uintptr_t)p & ~(uintptr_t)127, a1 = (uintptr_t)p + n;
    for (uintptr_t a = a0 + 128 * (uintptr_t)lane; a < a1; a += 128 * 32)
        prefetch_l2((const void *)a);
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
