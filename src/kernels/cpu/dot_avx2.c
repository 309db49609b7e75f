/* dot_avx2.c — the AVX2 + FMA + F16C variants of the CPU dot kernels (cpu_dot.h), for CPUs
 * without AVX-512. Each computes the same integer sub-block sums as dot_ref.c with
 * u8 x s8 multiply-adds (vpmaddubsw) and 16-bit scale multiply-adds (vpmaddwd); only the
 * float accumulation across blocks is reordered. Signed x signed products use |w| * sign(w)x,
 * exact because activations stay in [-127, 127]. Compiled with -mavx2 -mfma -mf16c whatever
 * the build's -march says; dispatch.c calls it only where cpu_isa_supported(CPU_ISA_AVX2). */
#include "kernels/cpu/cpu_dot.h"

#include <string.h>

#include "kernels/cpu/simd_x86.h"

/* ======== helpers ===================================================================== */

/* 32 bytes at a pair of 16-bit lanes (b, 0): a shuffle control that broadcasts byte b of each
 * 128-bit lane as an int16 into every 16-bit lane (the zero byte comes from the 0x80 index). */
static inline __m256i bcast16_ctl(int lo_byte, int hi_byte)
{
    return _mm256_setr_epi8(
        (char)lo_byte, -128, (char)lo_byte, -128, (char)lo_byte, -128, (char)lo_byte, -128,
        (char)lo_byte, -128, (char)lo_byte, -128, (char)lo_byte, -128, (char)lo_byte, -128,
        (char)hi_byte, -128, (char)hi_byte, -128, (char)hi_byte, -128, (char)hi_byte, -128,
        (char)hi_byte, -128, (char)hi_byte, -128, (char)hi_byte, -128, (char)hi_byte, -128);
}

/* ======== Q8_0 x Q8_0 ================================================================= */

/* 8 int32 partial sums of one block: |w| (u8, 128 is fine) times x with w's sign. */
static inline __m256i q8_0_block(const quant_block_q8_0 *w, const quant_block_q8_0 *x)
{
    __m256i qw = _mm256_loadu_si256((const __m256i *)w->qs);
    __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(qw), _mm256_sign_epi8(qx, qw));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

float cpu_dot_q8_0_q8_0_avx2(int64_t n, const void *w, const void *x)
{
    const quant_block_q8_0 *bw = w;
    const quant_block_q8_0 *bx = x;
    const int64_t nb = n / QUANT_QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        prefetch_ahead(bw + b, 2 * (int)sizeof *bw);
        __m256i s0 = q8_0_block(&bw[b], &bx[b]);
        __m256i s1 = q8_0_block(&bw[b + 1], &bx[b + 1]);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(bw[b].d) * f16(bx[b].d)),
                               _mm256_cvtepi32_ps(s0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16(bw[b + 1].d) * f16(bx[b + 1].d)),
                               _mm256_cvtepi32_ps(s1), acc1);
    }
    if (b < nb)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(bw[b].d) * f16(bx[b].d)),
                               _mm256_cvtepi32_ps(q8_0_block(&bw[b], &bx[b])), acc0);
    return hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* ======== Q2_K x Q8_K ================================================================= */

float cpu_dot_q2_k_q8_k_avx2(int64_t n, const void *w, const void *x)
{
    const quant_block_q2_k *bw = w;
    const quant_block_q8_k *bx = x;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(15);
    /* ctl[p]: sub-block 2p's scale in the low 128 bits (elements l < 16 of a 32-run), 2p+1's
     * in the high 128 bits. */
    __m256i ctl[8];
    for (int p = 0; p < 8; p++)
        ctl[p] = bcast16_ctl(2 * p, 2 * p + 1);
    __m256 accq = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        const uint8_t *q2 = bw[b].qs;
        const int8_t *q8 = bx[b].qs;
        __m128i raw = _mm_loadu_si128((const __m128i *)bw[b].scales);
        __m256i sc = _mm256_broadcastsi128_si256(_mm_and_si128(raw, m4));
        __m128i mins = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
        __m256i msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins),
                                         _mm256_loadu_si256((const __m256i *)bx[b].bsums));
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q2 + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * k), m3);
                __m256i y = _mm256_loadu_si256((const __m256i *)(q8 + 128 * h + 32 * k));
                __m256i p = _mm256_maddubs_epi16(q, y);
                __m256i s = _mm256_shuffle_epi8(sc, ctl[4 * h + k]);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, s));
            }
        }
        accq = _mm256_fmadd_ps(_mm256_set1_ps(bx[b].d * f16(bw[b].d)), _mm256_cvtepi32_ps(isum),
                               accq);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(bx[b].d * f16(bw[b].dmin)),
                               _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum_ps(_mm256_sub_ps(accq, accm));
}

/* ======== Q4_K x Q8_K ================================================================= */

float cpu_dot_q4_k_q8_k_avx2(int64_t n, const void *w, const void *x)
{
    const quant_block_q4_k *bw = w;
    const quant_block_q8_k *bx = x;
    const __m256i m4 = _mm256_set1_epi8(15);
    /* min j as an int16 pair (m_j, m_j) facing bsums[2j], bsums[2j+1] */
    const __m128i mins_ctl = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14,
                                           15, 15);
    __m256i ctl[8];
    for (int j = 0; j < 8; j++)
        ctl[j] = bcast16_ctl(j, j);
    __m256 accq = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        const uint8_t *q4 = bw[b].qs;
        const int8_t *q8 = bx[b].qs;
        __m128i scm = q4_k_scales_mins(bw[b].scales);
        __m256i msum = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, mins_ctl)),
                                         _mm256_loadu_si256((const __m256i *)bx[b].bsums));
        __m256i sc = _mm256_broadcastsi128_si256(scm);
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(q4 + 32 * c));
            __m256i lo = _mm256_and_si256(v, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            __m256i ylo = _mm256_loadu_si256((const __m256i *)(q8 + 64 * c));
            __m256i yhi = _mm256_loadu_si256((const __m256i *)(q8 + 64 * c + 32));
            __m256i plo = _mm256_maddubs_epi16(lo, ylo);
            __m256i phi = _mm256_maddubs_epi16(hi, yhi);
            plo = _mm256_madd_epi16(plo, _mm256_shuffle_epi8(sc, ctl[2 * c]));
            phi = _mm256_madd_epi16(phi, _mm256_shuffle_epi8(sc, ctl[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(plo, phi));
        }
        accq = _mm256_fmadd_ps(_mm256_set1_ps(bx[b].d * f16(bw[b].d)), _mm256_cvtepi32_ps(isum),
                               accq);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(bx[b].d * f16(bw[b].dmin)),
                               _mm256_cvtepi32_ps(msum), accm);
    }
    return hsum_ps(_mm256_sub_ps(accq, accm));
}

/* ======== IQ2_XXS x Q8_K ============================================================== */

/* Per-block constants: the byte broadcast for sign expansion and the bit of each byte. */
typedef struct {
    __m256i rep;  /* sign byte g of a dword -> bytes 8g..8g+7 (two per 128-bit lane) */
    __m256i bits; /* 1, 2, 4, ..., 128 repeated */
    __m256i one8; /* 0x01 in every byte */
} iq2_consts;

static inline iq2_consts iq2_consts_make(void)
{
    iq2_consts k;
    k.rep = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
                             2, 3, 3, 3, 3, 3, 3, 3, 3);
    k.bits = _mm256_set1_epi64x(0x8040201008040201ll);
    k.one8 = _mm256_set1_epi8(1);
    return k;
}

/* Integer sum over one block: sum_s (2s+1) * sum(grid * sign * q8), as 8 int32 lanes.
 * The 8 sign words are expanded in one go: four 7-bit fields to four bytes, each byte then
 * gets its even-parity bit 7 (the ksigns_iq2xs rule), giving 32 sign bits per sub-block. */
static inline __m256i iq2_xxs_block(const quant_block_iq2_xxs *bw, const int8_t *q8,
                                    const iq2_consts *k)
{
    const uint8_t *q = (const uint8_t *)bw->qs;
    __m256 lo = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)q));
    __m256 hi = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)(q + 32)));
    /* dwords 1,3,5,7 of each half are the sign words: order them as sub-blocks 0..7 */
    __m256i sw = _mm256_castps_si256(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
    sw = _mm256_permute4x64_epi64(sw, _MM_SHUFFLE(3, 1, 2, 0));
    __m256i signs = iq2_xxs_signs(sw);
    /* scales 2s+1 as an int16 pair in each dword */
    __m256i ls = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(sw, 28), 1),
                                 _mm256_set1_epi32(1));
    ls = _mm256_or_si256(ls, _mm256_slli_epi32(ls, 16));

    /* per sub-block broadcasts come from memory (a load uop) rather than vpermd (a shuffle) */
    uint32_t sg[8], lsm[8];
    _mm256_storeu_si256((__m256i *)sg, signs);
    _mm256_storeu_si256((__m256i *)lsm, ls);
    __asm__ volatile("" ::: "memory"); /* keep the compiler from forwarding the stores */
    __m256i isum = _mm256_setzero_si256();
    for (int s = 0; s < 8; s++) {
        const uint8_t *idx = q + 8 * s;
        __m256i grid = _mm256_setr_epi64x(
            (long long)quant_iq2xxs_grid[idx[0]], (long long)quant_iq2xxs_grid[idx[1]],
            (long long)quant_iq2xxs_grid[idx[2]], (long long)quant_iq2xxs_grid[idx[3]]);
        __m256i sb = _mm256_shuffle_epi8(_mm256_broadcastd_epi32(_mm_loadu_si32(sg + s)), k->rep);
        __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(sb, k->bits), k->bits);
        __m256i y = _mm256_loadu_si256((const __m256i *)(q8 + 32 * s));
        y = _mm256_sign_epi8(y, _mm256_or_si256(neg, k->one8));
        __m256i p = _mm256_maddubs_epi16(grid, y);
        isum = _mm256_add_epi32(
            isum, _mm256_madd_epi16(p, _mm256_broadcastd_epi32(_mm_loadu_si32(lsm + s))));
    }
    return isum;
}

float cpu_dot_iq2_xxs_q8_k_avx2(int64_t n, const void *w, const void *x)
{
    const quant_block_iq2_xxs *bw = w;
    const quant_block_q8_k *bx = x;
    const iq2_consts k = iq2_consts_make();
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(bw + b, (int)sizeof *bw);
        __m256i isum = iq2_xxs_block(&bw[b], bx[b].qs, &k);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(bw[b].d) * bx[b].d), _mm256_cvtepi32_ps(isum),
                              acc);
    }
    return 0.125f * hsum_ps(acc);
}

void cpu_dot2_iq2_xxs_q8_k_avx2(int64_t n, const void *w0, const void *w1, const void *x,
                                float out[2])
{
    const quant_block_iq2_xxs *b0 = w0;
    const quant_block_iq2_xxs *b1 = w1;
    const quant_block_q8_k *bx = x;
    const iq2_consts k = iq2_consts_make();
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        prefetch_ahead(b0 + b, (int)sizeof *b0);
        prefetch_ahead(b1 + b, (int)sizeof *b1);
        __m256i s0 = iq2_xxs_block(&b0[b], bx[b].qs, &k);
        __m256i s1 = iq2_xxs_block(&b1[b], bx[b].qs, &k);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16(b0[b].d) * bx[b].d), _mm256_cvtepi32_ps(s0),
                               acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16(b1[b].d) * bx[b].d), _mm256_cvtepi32_ps(s1),
                               acc1);
    }
    out[0] = 0.125f * hsum_ps(acc0);
    out[1] = 0.125f * hsum_ps(acc1);
}

/* ======== F16 / F32 x F32 ============================================================= */

float cpu_dot_f16_f32_avx2(int64_t n, const void *w, const void *x)
{
    const quant_f16 *hw = w;
    const float *fx = x;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(hw + i, 64);
#define F16_STEP(acc, o)                                                                     \
    acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(hw + i + o))),   \
                          _mm256_loadu_ps(fx + i + o), acc)
        F16_STEP(a0, 0);
        F16_STEP(a1, 8);
        F16_STEP(a2, 16);
        F16_STEP(a3, 24);
    }
    for (; i + 8 <= n; i += 8)
        F16_STEP(a0, 0);
#undef F16_STEP
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++)
        sum += f16(hw[i]) * fx[i];
    return sum;
}

float cpu_dot_f32_f32_avx2(int64_t n, const void *w, const void *x)
{
    const float *fw = w;
    const float *fx = x;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(fw + i, 128);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(fw + i), _mm256_loadu_ps(fx + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(fw + i + 8), _mm256_loadu_ps(fx + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(fw + i + 16), _mm256_loadu_ps(fx + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(fw + i + 24), _mm256_loadu_ps(fx + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(fw + i), _mm256_loadu_ps(fx + i), a0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++)
        sum += fw[i] * fx[i];
    return sum;
}
