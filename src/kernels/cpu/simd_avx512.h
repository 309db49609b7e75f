/* simd_avx512.h — private to the AVX-512 kernel files (dot_avx512.c, dot4_avx512.c,
 * moe_*_avx512.c): simd_x86.h plus what needs AVX-512 (F/BW/VL/DQ + VNNI): 64 bytes from two
 * 32-byte runs, int16 lane selectors, and the pieces of the Q8_0 x Q8_0 kernel that the
 * one-row and four-row variants share so that their results stay bit-identical (the gathered
 * block scales, an odd trailing block). Include after the file's target flags. */
#ifndef DS4_KERNELS_CPU_SIMD_AVX512_H
#define DS4_KERNELS_CPU_SIMD_AVX512_H

#include "kernels/cpu/simd_x86.h"

/* 64 bytes from two 32-byte runs: a in the low half, b in the high half. */
static inline __m512i load_2x256(const void *a, const void *b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* 32 int16 lane indices: lanes 0-7 -> a, 8-15 -> b, 16-23 -> c, 24-31 -> d. */
static inline __m512i idx16x4(short a, short b, short c, short d)
{
    __m256i lo = _mm256_setr_epi16(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
    __m256i hi = _mm256_setr_epi16(c, c, c, c, c, c, c, c, d, d, d, d, d, d, d, d);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* f16 scales of 8 consecutive Q8_0 blocks as f32: they sit 34 bytes apart, so one gather of
 * the dword at each block start (d plus two qs bytes) and a truncation to 16 bits. */
static inline __m256 q8_0_scales8(const quant_block_q8_0 *b)
{
    const __m256i off = _mm256_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238);
    return _mm256_cvtph_ps(
        _mm256_cvtepi32_epi16(_mm256_i32gather_epi32((const int *)(const void *)b, off, 1)));
}

/* d_w d_x sum(w x) of one (odd trailing) Q8_0 block: |w| as u8 times x carrying w's sign. */
static inline float q8_0_odd_block(const quant_block_q8_0 *w, const quant_block_q8_0 *x)
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

#endif
