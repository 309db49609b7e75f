/* dot4_avx512.c — multi-token AVX-512 dot kernels: one weight row against four activation
 * rows in one pass, for batched products (prefill, experts with several tokens). The weight
 * side of each block (loads, |w|, sign masks, f16 scales) is done once for the four rows; the
 * per-row arithmetic is instruction for instruction that of the single-row kernel of the same
 * variant (dot_avx512.c), so each result is bit-identical to cpu_dot_*_avx512 on that row:
 * batching never changes a logit. Compiled with the Makefile's ISA_avx512 flags. */
#include "kernels/cpu/cpu_dot.h"

#include "kernels/cpu/simd_avx512.h"

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
        const __m256 dw = q8_0_scales8(bw + b);
        __m512i aw[4];
        __mmask64 neg[4];
        for (int p = 0; p < 4; p++) {
            __m512i qw = load_2x256(bw[b + 2 * p].qs, bw[b + 2 * p + 1].qs);
            aw[p] = _mm512_abs_epi8(qw);
            neg[p] = _mm512_movepi8_mask(qw);
        }
        for (int k = 0; k < 4; k++) {
            const quant_block_q8_0 *xk = bx[k] + b;
            __m512 d = _mm512_castps256_ps512(_mm256_mul_ps(dw, q8_0_scales8(xk)));
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
            out[k] += q8_0_odd_block(bw + b, bx[k] + b);
    }
}
