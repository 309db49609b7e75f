/* dot4_avx512.c — multi-token AVX-512 dot kernels: one weight row against four activation
 * rows in one pass, for batched products (prefill, experts with several tokens). The weight
 * side of each block (loads, |w|, sign masks, f16 scales) is done once for the four rows; the
 * per-row arithmetic is instruction for instruction that of the single-row kernel of the same
 * variant (dot_avx512.c), so each result is bit-identical to cpu_dot_*_avx512 on that row:
 * batching never changes a logit. Compiled with the Makefile's ISA_avx512 flags. */
#include "kernels/cpu/cpu_dot.h"

#include <immintrin.h>

static inline float f16(quant_f16 h) { return _cvtsh_ss(h); }

#define PF_DIST 8192 /* as dot_avx512.c: prefetch the weight stream 8 KiB ahead */

static inline void prefetch_ahead(const void *p, int bytes)
{
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)p + PF_DIST + o, _MM_HINT_T0);
}

static inline __m512i load_2x256(const void *a, const void *b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* f16 scales of 8 consecutive Q8_0 blocks as f32 (a gather of the dword at each block). */
static inline __m256 scales8(const quant_block_q8_0 *b)
{
    const __m256i off = _mm256_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238);
    return _mm256_cvtph_ps(
        _mm256_cvtepi32_epi16(_mm256_i32gather_epi32((const int *)(const void *)b, off, 1)));
}

/* One odd trailing block, as the single-row kernel computes it. */
static inline float odd_block(const quant_block_q8_0 *w, const quant_block_q8_0 *x)
{
    __m256i qw = _mm256_loadu_si256((const __m256i *)w->qs);
    __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
    __m256i sx = _mm256_sign_epi8(qx, qw);
    __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(qw), sx);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    return f16(w->d) * f16(x->d) * (float)_mm_cvtsi128_si32(s4);
}

void cpu_dot4_q8_0_q8_0_avx512(int64_t n, const void *w, const void *const x[4], float out[4])
{
    const quant_block_q8_0 *bw = w;
    const quant_block_q8_0 *bx[4] = {x[0], x[1], x[2], x[3]};
    const int64_t nb = n / QUANT_QK8_0;
    __m512i sel[4];
    for (int p = 0; p < 4; p++)
        sel[p] = _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
    __m512 acc0[4], acc1[4];
    for (int k = 0; k < 4; k++)
        acc0[k] = acc1[k] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 7 < nb; b += 8) {
        prefetch_ahead(bw + b, 8 * (int)sizeof *bw);
        const __m256 dw = scales8(bw + b);
        __m512i aw[4];
        __mmask64 neg[4];
        for (int p = 0; p < 4; p++) {
            __m512i qw = load_2x256(bw[b + 2 * p].qs, bw[b + 2 * p + 1].qs);
            aw[p] = _mm512_abs_epi8(qw);
            neg[p] = _mm512_movepi8_mask(qw);
        }
        for (int k = 0; k < 4; k++) {
            const quant_block_q8_0 *xk = bx[k] + b;
            __m512 d = _mm512_castps256_ps512(_mm256_mul_ps(dw, scales8(xk)));
            for (int p = 0; p < 4; p++) {
                __m512i qx = load_2x256(xk[2 * p].qs, xk[2 * p + 1].qs);
                __m512i sx = _mm512_mask_sub_epi8(qx, neg[p], _mm512_setzero_si512(), qx);
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw[p], sx);
                __m512 *acc = p & 1 ? &acc1[k] : &acc0[k];
                *acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(sel[p], d), _mm512_cvtepi32_ps(s),
                                       *acc);
            }
        }
    }
    for (; b + 1 < nb; b += 2) { /* short rows: one pair at a time */
        __m512i qw = load_2x256(bw[b].qs, bw[b + 1].qs);
        __m512i aw = _mm512_abs_epi8(qw);
        __mmask64 neg = _mm512_movepi8_mask(qw);
        for (int k = 0; k < 4; k++) {
            const quant_block_q8_0 *xk = bx[k] + b;
            __m512 d = _mm512_insertf32x8(_mm512_set1_ps(f16(bw[b].d) * f16(xk[0].d)),
                                          _mm256_set1_ps(f16(bw[b + 1].d) * f16(xk[1].d)), 1);
            __m512i qx = load_2x256(xk[0].qs, xk[1].qs);
            __m512i sx = _mm512_mask_sub_epi8(qx, neg, _mm512_setzero_si512(), qx);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
            acc0[k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc0[k]);
        }
    }
    for (int k = 0; k < 4; k++) {
        out[k] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[k], acc1[k]));
        if (b < nb)
            out[k] += odd_block(bw + b, bx[k] + b);
    }
}
