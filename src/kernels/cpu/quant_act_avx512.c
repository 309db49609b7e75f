/* quant_act_avx512.c — AVX-512 activation quantizers, byte-identical to the references of
 * quantize_act.c: the block maximum ignores NaN as the reference's `a > amax` does (max_ps
 * keeps its second operand when the first is NaN), NaN products become 0 and the rest are
 * clamped before conversion, Q8_0 rounds half away from zero (truncate, then step by the sign
 * when the exact remainder is at least one half), Q8_K rounds to nearest even (the default
 * MXCSR mode, as lrintf), and Q8_K's scale is the first element of largest magnitude.
 * Scales go through the reference f16 conversion. Compiled with the ISA_avx512 flags. */
#include "kernels/cpu/quant_act.h"

#include <immintrin.h>
#include <string.h>

/* |v| with NaN lanes replaced by 0, for a NaN-ignoring maximum. */
static inline __m512 abs_or_zero(__m512 v)
{
    __m512 a = _mm512_abs_ps(v);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a);
}

/* v with NaN -> 0, then clamped to [lo, hi]. */
static inline __m512 clamp_nan0(__m512 v, float lo, float hi)
{
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    return _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
}

/* roundf of 16 values with |v| <= 127: half away from zero. */
static inline __m512i round_away(__m512 v)
{
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 frac = _mm512_sub_ps(v, t); /* exact: t and v share the exponent range */
    __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(frac), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f),
                              _mm512_and_ps(v, _mm512_set1_ps(-0.0f))); /* +-1 with v's sign */
    return _mm512_cvtps_epi32(_mm512_mask_add_ps(t, up, t, one));
}

void cpu_quant_row_q8_0_avx512(const float *src, void *dst, int64_t n)
{
    quant_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK8_0; i++, b++, src += QUANT_QK8_0) {
        __m512 v0 = _mm512_loadu_ps(src), v1 = _mm512_loadu_ps(src + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(abs_or_zero(v0), abs_or_zero(v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = quant_f32_to_f16(d);
        const __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = round_away(clamp_nan0(_mm512_mul_ps(v0, vid), -127.0f, 127.0f));
        __m512i q1 = round_away(clamp_nan0(_mm512_mul_ps(v1, vid), -127.0f, 127.0f));
        _mm_storeu_si128((__m128i *)b->qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(b->qs + 16), _mm512_cvtepi32_epi8(q1));
    }
}

void cpu_quant_row_q8_k_avx512(const float *src, void *dst, int64_t n)
{
    quant_block_q8_k *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++, src += QUANT_QK_K) {
        __m512 v[16], m = _mm512_setzero_ps();
        for (int j = 0; j < 16; j++) {
            v[j] = _mm512_loadu_ps(src + 16 * j);
            m = _mm512_max_ps(abs_or_zero(v[j]), m);
        }
        const float amax = _mm512_reduce_max_ps(m);
        if (amax == 0.0f) {
            memset(b, 0, sizeof *b);
            continue;
        }
        /* the first element whose |x| is the maximum, with its sign */
        float max = 0.0f;
        const __m512 va = _mm512_set1_ps(amax);
        for (int j = 0; j < 16; j++) {
            __mmask16 eq = _mm512_cmp_ps_mask(_mm512_abs_ps(v[j]), va, _CMP_EQ_OQ);
            if (eq) {
                max = src[16 * j + __builtin_ctz((unsigned)eq)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        for (int j = 0; j < 16; j++) {
            __m512i q = _mm512_cvtps_epi32(clamp_nan0(_mm512_mul_ps(v[j], vs), -128.0f, 127.0f));
            _mm_storeu_si128((__m128i *)(b->qs + 16 * j), _mm512_cvtepi32_epi8(q));
            b->bsums[j] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        b->d = 1.0f / iscale;
    }
}
