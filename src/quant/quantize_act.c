/* quantize_act.c — quantizers whose result is fixed by a formula, not a search: the plain
 * float types (F32, F16, BF16) and the 8-bit block types used for activations (Q8_0, Q8_K).
 * Q8_0 is bit-identical to gguf.quants.quantize / ggml's reference; Q8_K follows
 * ds4-architecture.md §4.1 exactly. Weight quantizers with a search live in quantize_k.c and
 * quantize_iq2.c. Invariant: any input, NaN and inf included, gives a defined block (no UB):
 * NaN never enters a scale and quantizes to 0; every float->int conversion is range-checked.
 * Implements ds4-architecture.md §1.5 and §4.1. */
#include <math.h>
#include <string.h>

#include "quant/quant.h"

/* ---- plain scalar types ---------------------------------------------------------------- */

void quant_quant_row_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_quant_row_f16(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const quant_f16 h = quant_f32_to_f16(src[i]);
        memcpy(p + 2 * i, &h, sizeof h);
    }
}

void quant_quant_row_bf16(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const quant_bf16 h = quant_f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, sizeof h);
    }
}

/* ---- 8-bit blocks ---------------------------------------------------------------------- */

/* Clamps v to [lo, hi] (NaN -> 0) so the following conversion to int is always defined. */
static float clampf(float v, float lo, float hi)
{
    if (!(v == v))
        return 0.0f;
    return v < lo ? lo : v > hi ? hi : v;
}

/* Q8_0, ggml's reference: d = amax/127 (f32, stored as f16), id = 1/d (from the f32 d),
 * q = round-half-away-from-zero(x*id). |x*id| <= 127 for finite input, so the clamp only
 * acts on degenerate input (inf, or amax < ~1e-37 where 1/d overflows). */
void quant_quant_row_q8_0(const float *src, void *dst, int64_t n)
{
    quant_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK8_0; i++, b++, src += QUANT_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QUANT_QK8_0; j++) {
            const float a = fabsf(src[j]);
            if (a > amax)
                amax = a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = quant_f32_to_f16(d);
        for (int j = 0; j < QUANT_QK8_0; j++)
            b->qs[j] = (int8_t)roundf(clampf(src[j] * id, -127.0f, 127.0f));
    }
}

/* Q8_K, ds4-architecture.md §4.1: max = the element of largest |x| (first one on ties) with
 * its sign; iscale = -127/max; q = lrintf(iscale*x) (nearest even) clamped to [-128, 127];
 * d = 1/iscale; bsums[j] = sum of qs[16j..16j+15]; an all-zero block is all zero. */
void quant_quant_row_q8_k(const float *src, void *dst, int64_t n)
{
    quant_block_q8_k *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++, src += QUANT_QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < QUANT_QK_K; j++) {
            const float a = fabsf(src[j]);
            if (a > amax) {
                amax = a;
                max = src[j];
            }
        }
        if (amax == 0.0f) {
            memset(b, 0, sizeof *b);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QUANT_QK_K; j++)
            b->qs[j] = (int8_t)lrintf(clampf(iscale * src[j], -128.0f, 127.0f));
        for (int g = 0; g < QUANT_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += b->qs[16 * g + j];
            b->bsums[g] = (int16_t)sum;
        }
        b->d = 1.0f / iscale;
    }
}
