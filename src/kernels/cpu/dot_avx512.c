/* dot_avx512.c — the AVX-512 (F/BW/VL/DQ + VNNI) variants of the CPU dot kernels
 * (cpu_dot.h). Same integer sub-block sums as dot_ref.c, 64 elements per instruction:
 * u8 x s8 products with vpmaddubsw or vpdpbusd, per-sub-block scales with vpdpwssd (VNNI
 * int16 multiply-accumulate), signs applied through mask registers, IQ2_XXS grid rows fetched
 * with 64-bit gathers. Only the float accumulation across blocks is reordered. Compiled with
 * the Makefile's ISA_avx512 flags; dispatch.c calls it only where cpu_isa_supported says so. */
#include "kernels/cpu/cpu_dot.h"

#include <string.h>

#include "kernels/cpu/simd_avx512.h"

/* ======== helpers ===================================================================== */

/* accq += d_x d_w isum and accm += d_x dmin msum: the float part of one K-quant block. */
static inline void k_acc(__m512 *accq, __m256 *accm, __m512i isum, __m256i msum, float dx,
                         quant_f16 d, quant_f16 dmin)
{
    *accq = _mm512_fmadd_ps(_mm512_set1_ps(dx * f16(d)), _mm512_cvtepi32_ps(isum), *accq);
    *accm = _mm256_fmadd_ps(_mm256_set1_ps(dx * f16(dmin)), _mm256_cvtepi32_ps(msum), *accm);
}

/* A K-quant kernel's result: the 16 scaled-sum lanes folded to 8, minus the min terms. */
static inline float k_result(__m512 accq, __m256 accm)
{
    __m256 q = _mm256_add_ps(_mm512_castps512_ps256(accq), _mm512_extractf32x8_ps(accq, 1));
    return hsum_ps(_mm256_sub_ps(q, accm));
}

/* ======== Q8_0 x Q8_0 ================================================================= */

/* Blocks b and b+1: 16 int32 sums, 8 per block; |w| as u8 times x carrying w's sign. */
static inline __m512i q8_0_pair(const quant_block_q8_0 *w, const quant_block_q8_0 *x)
{
    __m512i qw = load_2x256(w[0].qs, w[1].qs);
    __m512i qx = load_2x256(x[0].qs, x[1].qs);
    __m512i sx = _mm512_mask_sub_epi8(qx, _mm512_movepi8_mask(qw), _mm512_setzero_si512(), qx);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(qw), sx);
}

float cpu_dot_q8_0_q8_0_avx512(int64_t n, const void *w, const void *x)
{
    const quant_block_q8_0 *bw = w;
    const quant_block_q8_0 *bx = x;
    const int64_t nb = n / QUANT_QK8_0;
    /* pair p of a group of 8 blocks: lanes 0-7 take scale 2p, lanes 8-15 scale 2p+1 */
    __m512i sel[4];
    for (int p = 0; p < 4; p++)
        sel[p] = _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 7 < nb; b += 8) {
        prefetch_ahead(bw + b, 8 * (int)sizeof *bw);
        __m512 d = _mm512_castps256_ps512(_mm256_mul_ps(q8_0_scales8(bw + b), q8_0_scales8(bx + b)));
        acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(sel[0], d),
                               _mm512_cvtepi32_ps(q8_0_pair(bw + b, bx + b)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(sel[1], d),
                               _mm512_cvtepi32_ps(q8_0_pair(bw + b + 2, bx + b + 2)), acc1);
        acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(sel[2], d),
                               _mm512_cvtepi32_ps(q8_0_pair(bw + b + 4, bx + b + 4)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(sel[3], d),
                               _mm512_cvtepi32_ps(q8_0_pair(bw + b + 6, bx + b + 6)), acc1);
    }
    for (; b + 1 < nb; b += 2) { /* short rows: scales one pair at a time */
        __m512 d = _mm512_insertf32x8(_mm512_set1_ps(f16(bw[b].d) * f16(bx[b].d)),
                                      _mm256_set1_ps(f16(bw[b + 1].d) * f16(bx[b + 1].d)), 1);
        acc0 = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q8_0_pair(bw + b, bx + b)), acc0);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (b < nb) /* odd block count: one 32-byte block */
        sum += q8_0_odd_block(bw + b, bx + b);
    return sum;
}

/* ======== Q2_K x Q8_K ================================================================= */

float cpu_dot_q2_k_q8_k_avx512(int64_t n, const void *w, const void *x)
{
    const quant_block_q2_k *bw = w;
    const quant_block_q8_k *bx = x;
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(15);
    /* q8 run j (elements 64j..64j+63) reads qs[32h..32h+31], h = j/2, shifted by 4(j%2) for
     * its first 32 elements and 4(j%2)+2 for the rest: the 32 qs bytes are broadcast to both
     * halves and shifted per half. Its 16-element sub-blocks are 4j..4j+3. */
    const __m512i sh_even = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    const __m512i sh_odd = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m512i sel[4];
    for (int j = 0; j < 4; j++)
        sel[j] = idx16x4((short)(4 * j), (short)(4 * j + 1), (short)(4 * j + 2),
                         (short)(4 * j + 3));
    __m512 accq = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        const int8_t *q8 = bx[b].qs;
        __m128i raw = _mm_loadu_si128((const __m128i *)bw[b].scales);
        __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
        __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        __m256i msum = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)bx[b].bsums));
        __m512i isum = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
            __m512i v = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(bw[b].qs + 32 * (j / 2))));
            __m512i q = _mm512_and_si512(_mm512_srlv_epi16(v, j % 2 ? sh_odd : sh_even), m3);
            __m512i p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(q8 + 64 * j));
            isum = _mm512_dpwssd_epi32(isum, p, _mm512_permutexvar_epi16(sel[j], sc));
        }
        k_acc(&accq, &accm, isum, msum, bx[b].d, bw[b].d, bw[b].dmin);
    }
    return k_result(accq, accm);
}

/* ======== Q4_K x Q8_K ================================================================= */

float cpu_dot_q4_k_q8_k_avx512(int64_t n, const void *w, const void *x)
{
    const quant_block_q4_k *bw = w;
    const quant_block_q8_k *bx = x;
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m128i mins_ctl = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
                                           15, 15);
    /* chunk c (qs[32c..32c+31]) is elements 64c..64c+63: low nibbles then high nibbles, so the
     * 32 bytes are broadcast to both halves and the high half shifted by 4. Sub-blocks 2c and
     * 2c+1 fill 16 int16 lanes each after vpmaddubsw. */
    const __m512i sh = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(4), 1);
    __m512i sel[4];
    for (int c = 0; c < 4; c++)
        sel[c] = idx16x4((short)(2 * c), (short)(2 * c), (short)(2 * c + 1), (short)(2 * c + 1));
    __m512 accq = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        const int8_t *q8 = bx[b].qs;
        __m128i scm = q4_k_scales_mins(bw[b].scales);
        __m256i msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, mins_ctl)),
                                         _mm256_loadu_si256((const __m256i *)bx[b].bsums));
        __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
        __m512i isum = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            __m512i v =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(bw[b].qs + 32 * c)));
            __m512i q = _mm512_and_si512(_mm512_srlv_epi16(v, sh), m4);
            __m512i p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(q8 + 64 * c));
            isum = _mm512_dpwssd_epi32(isum, p, _mm512_permutexvar_epi16(sel[c], sc));
        }
        k_acc(&accq, &accm, isum, msum, bx[b].d, bw[b].d, bw[b].dmin);
    }
    return k_result(accq, accm);
}

/* ======== IQ2_XXS x Q8_K ============================================================== */

/* Integer sum over one block, 16 int32 lanes: sum_s (2s+1) * sum(grid * sign * q8).
 * The 64 qs bytes are 8 sub-blocks of (u32 grid indices, u32 signs+scale). The sign words
 * expand to 256 sign bits (four 7-bit fields per word -> four bytes, bit 7 = even parity, the
 * ksigns_iq2xs rule), 64 of which negate q8 through a mask register per pair of sub-blocks. */
static inline __m512i iq2_xxs_block(const quant_block_iq2_xxs *bw, const int8_t *q8)
{
    /* dwords: signs of sub-blocks 0..7 in the low half, grid index words in the high half */
    const __m512i split = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14);
    __m512i raw = _mm512_permutexvar_epi32(split, _mm512_loadu_si512(bw->qs));
    __m256i sw = _mm512_castsi512_si256(raw);
    __m256i ix = _mm512_extracti64x4_epi64(raw, 1);

    __m256i signs = iq2_xxs_signs(sw);
    /* the masks go through memory: kmovq from memory is a load, while moving them out of a
     * vector register costs shuffle-port uops (measured 5% on the whole kernel) */
    __mmask64 sbits[4];
    _mm256_storeu_si256((__m256i *)sbits, signs);
    __asm__ volatile("" ::: "memory"); /* keep the compiler from forwarding the store */

    /* scales 2s+1 = (word >> 27) | 1 (bit 27 is the last sign bit), read by vpermw as the
     * low int16 of dword s */
    __m512i ls = _mm512_castsi256_si512(
        _mm256_or_si256(_mm256_srli_epi32(sw, 27), _mm256_set1_epi32(1)));

    /* grid indices as int32, 8 per pair of sub-blocks */
    __m512i ix01 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(ix));
    __m512i ix23 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(ix, 1));
    __m256i ixp[4] = {_mm512_castsi512_si256(ix01), _mm512_extracti64x4_epi64(ix01, 1),
                      _mm512_castsi512_si256(ix23), _mm512_extracti64x4_epi64(ix23, 1)};

    __m512i isum = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++) {
        __m512i grid = _mm512_i32gather_epi64(ixp[p], (const void *)quant_iq2xxs_grid, 8);
        __m512i y = _mm512_loadu_si512(q8 + 64 * p);
        __mmask64 neg = _load_mask64(&sbits[p]);
        y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
        __m512i prod = _mm512_maddubs_epi16(grid, y);
        __m512i sel = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * p)),
                                         _mm256_set1_epi16((short)(4 * p + 2)), 1);
        isum = _mm512_dpwssd_epi32(isum, prod, _mm512_permutexvar_epi16(sel, ls));
    }
    return isum;
}

float cpu_dot_iq2_xxs_q8_k_avx512(int64_t n, const void *w, const void *x)
{
    const quant_block_iq2_xxs *bw = w;
    const quant_block_q8_k *bx = x;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        __m512i isum = iq2_xxs_block(&bw[b], bx[b].qs);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(f16(bw[b].d) * bx[b].d), _mm512_cvtepi32_ps(isum),
                              acc);
    }
    return 0.125f * _mm512_reduce_add_ps(acc);
}

void cpu_dot2_iq2_xxs_q8_k_avx512(int64_t n, const void *w0, const void *w1, const void *x,
                                  float out[2])
{
    const quant_block_iq2_xxs *b0 = w0;
    const quant_block_iq2_xxs *b1 = w1;
    const quant_block_q8_k *bx = x;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(b0 + b, (int)sizeof *b0);
        prefetch_ahead(b1 + b, (int)sizeof *b1);
        __m512i s0 = iq2_xxs_block(&b0[b], bx[b].qs);
        __m512i s1 = iq2_xxs_block(&b1[b], bx[b].qs);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(f16(b0[b].d) * bx[b].d), _mm512_cvtepi32_ps(s0),
                               acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(f16(b1[b].d) * bx[b].d), _mm512_cvtepi32_ps(s1),
                               acc1);
    }
    out[0] = 0.125f * _mm512_reduce_add_ps(acc0);
    out[1] = 0.125f * _mm512_reduce_add_ps(acc1);
}

/* ======== F16 / F32 x F32 ============================================================= */

float cpu_dot_f16_f32_avx512(int64_t n, const void *w, const void *x)
{
    const quant_f16 *hw = w;
    const float *fx = x;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t i = 0;
#define F16_STEP(acc, o)                                                                     \
    acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(hw + i + o))), \
                          _mm512_loadu_ps(fx + i + o), acc)
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(hw + i, 128);
        F16_STEP(a0, 0);
        F16_STEP(a1, 16);
        F16_STEP(a2, 32);
        F16_STEP(a3, 48);
    }
    for (; i + 16 <= n; i += 16)
        F16_STEP(a0, 0);
#undef F16_STEP
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, hw + i));
        a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, fx + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

float cpu_dot_f32_f32_avx512(int64_t n, const void *w, const void *x)
{
    const float *fw = w;
    const float *fx = x;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(fw + i, 256);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(fw + i), _mm512_loadu_ps(fx + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(fw + i + 16), _mm512_loadu_ps(fx + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(fw + i + 32), _mm512_loadu_ps(fx + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(fw + i + 48), _mm512_loadu_ps(fx + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(fw + i), _mm512_loadu_ps(fx + i), a0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, fw + i), _mm512_maskz_loadu_ps(m, fx + i),
                             a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
