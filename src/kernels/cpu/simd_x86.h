/* simd_x86.h — private to the x86 kernel files (dot_avx2.c, dot_avx512.c, dot4_avx512.c,
 * moe_*_avx512.c): the helpers every variant uses the same way, written with AVX2/F16C
 * instructions only so that each ISA's file can include them: one f16 scale as f32, the
 * software prefetch of the weight stream, the horizontal sum of 8 floats, the unpacking
 * of the Q4_K six-bit scales and mins, and the expansion of the IQ2_XXS sign words. AVX-512-only helpers are in simd_avx512.h. Include
 * after the file's target flags (or pragma). Owns no kernel. */
#ifndef DS4_KERNELS_CPU_SIMD_X86_H
#define DS4_KERNELS_CPU_SIMD_X86_H

#include <immintrin.h>
#include <stdint.h>

#include "quant/quant.h"

static inline float f16(quant_f16 h) { return _cvtsh_ss(h); }

/* Software prefetch of the weight stream, PF_DIST bytes ahead of the block being read: the
 * hardware prefetchers alone leave the compute and the DRAM latency serialized on one core
 * (measured in bench/kernels, 545 MB matrices: AVX2 q8_0 7.4 -> 11.8 GB/s with 1 thread, q2_K
 * 5.9 -> 10.6; AVX-512 q8_0 9.2 -> 12.8 GB/s with 1 thread, 17.9 -> 25 GB/s with 2; 4-8 KiB
 * ahead was best). Prefetches never fault, so running past the end of the row is harmless. */
#define PF_DIST 8192

/* Prefetches the cache lines of [p + PF_DIST, p + PF_DIST + bytes) (prefetcht0). Written
 * with __builtin_prefetch: GCC 12 drops _mm_prefetch from this loop once it is inlined into
 * an always_inline caller (moe_k_avx512.c's shared loops lost every prefetch that way). */
static inline void prefetch_ahead(const void *p, int bytes)
{
    for (int o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char *)p + PF_DIST + o, 0, 3);
}

/* The sum of the 8 lanes (a fixed order: halves, then pairs, then the last two). */
static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 8 six-bit scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K block, unpacked in
 * one xmm: with dwords a, b, c of scales[12], sub-blocks 0..3 keep 6 bits (a: scales,
 * b: mins); 4..7 take 4 bits from c (low nibbles: scales, high: mins) and 2 from the tops of
 * a and b. Reads 16 bytes: the 4 after scales[12] are qs, inside the block. */
static inline __m128i q4_k_scales_mins(const uint8_t *scales)
{
    __m128i v = _mm_loadu_si128((const __m128i *)scales);
    __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x3f)); /* dwords: sc 0-3, m 0-3 */
    __m128i c = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2)),
                               _mm_setr_epi32(0, 4, 0, 0));
    __m128i hi = _mm_or_si128(_mm_and_si128(c, _mm_set1_epi8(0x0f)),
                              _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi8(0x30)));
    return _mm_unpacklo_epi32(lo, hi); /* sc 0-3, sc 4-7, m 0-3, m 4-7 */
}

/* The 8 IQ2_XXS sign words of a block (one per sub-block, in dword lanes) expanded to 32
 * sign bits each: field g (bits 7g..7g+6) moves to byte g (shift left by g, keep 7 bits),
 * then each byte gets the parity of its 7 bits as bit 7 (the ksigns_iq2xs rule; bit 7 is
 * clear, so no byte leaks into another's bit 0 while folding). */
static inline __m256i iq2_xxs_signs(__m256i sw)
{
    __m256i g = _mm256_or_si256(
        _mm256_or_si256(_mm256_and_si256(sw, _mm256_set1_epi32(0x0000007f)),
                        _mm256_and_si256(_mm256_slli_epi32(sw, 1), _mm256_set1_epi32(0x00007f00))),
        _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(sw, 2), _mm256_set1_epi32(0x007f0000)),
                        _mm256_and_si256(_mm256_slli_epi32(sw, 3), _mm256_set1_epi32(0x7f000000))));
    __m256i par = _mm256_xor_si256(g, _mm256_srli_epi32(g, 4));
    par = _mm256_xor_si256(par, _mm256_srli_epi32(par, 2));
    par = _mm256_xor_si256(par, _mm256_srli_epi32(par, 1));
    return _mm256_or_si256(g, _mm256_slli_epi32(_mm256_and_si256(par, _mm256_set1_epi8(1)), 7));
}

#endif
