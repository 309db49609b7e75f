/* dequant_ref.c — reference row dequantizers: storage format -> f32 for every type ds4
 * computes with, plus the Q4_K scale/min unpacking they share with the kernels.
 * Bit-exact with gguf.quants.dequantize (ggml's reference): each value is produced by the
 * same f32 operations in the same order, one rounding per operation, e.g. Q2_K is
 * (d*sc)*q - dmin*m. Every product that feeds a later add is its own statement, so no
 * compiler may contract it into an FMA (clang contracts within one expression by default).
 * Owns no quantization and no dot products. Implements ds4-architecture.md §1.5. */
#include <string.h>

#include "quant/quant.h"

/* ---- plain scalar types ---------------------------------------------------------------- */

void quant_dequant_row_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_dequant_row_f16(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        quant_f16 h;
        memcpy(&h, p + 2 * i, sizeof h);
        dst[i] = quant_f16_to_f32(h);
    }
}

void quant_dequant_row_bf16(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        quant_bf16 h;
        memcpy(&h, p + 2 * i, sizeof h);
        dst[i] = quant_bf16_to_f32(h);
    }
}

void quant_dequant_row_i32(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, p + 4 * i, sizeof v);
        dst[i] = (float)v; /* round to nearest even above 2^24, like numpy astype */
    }
}

/* ---- 8-bit blocks ---------------------------------------------------------------------- */

void quant_dequant_row_q8_0(const void *src, float *dst, int64_t n)
{
    const quant_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QUANT_QK8_0; i++, b++) {
        const float d = quant_f16_to_f32(b->d);
        for (int j = 0; j < QUANT_QK8_0; j++)
            *dst++ = (float)b->qs[j] * d;
    }
}

void quant_dequant_row_q8_k(const void *src, float *dst, int64_t n)
{
    const quant_block_q8_k *b = src;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++)
        for (int j = 0; j < QUANT_QK_K; j++)
            *dst++ = b->d * (float)b->qs[j];
}

/* ---- K-quants -------------------------------------------------------------------------- */

void quant_dequant_row_q2_k(const void *src, float *dst, int64_t n)
{
    const quant_block_q2_k *b = src;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++) {
        const float d = quant_f16_to_f32(b->d);
        const float dmin = quant_f16_to_f32(b->dmin);
        float dl[16], ml[16];
        for (int s = 0; s < 16; s++) {
            dl[s] = d * (float)(b->scales[s] & 0xF);
            ml[s] = dmin * (float)(b->scales[s] >> 4);
        }
        /* half h (128 elements) uses qs[32h..32h+31]; bit pair k gives elements 32k+l */
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    const int s = 8 * h + 2 * k + (l >= 16);
                    const int q = (b->qs[32 * h + l] >> (2 * k)) & 3;
                    const float t = dl[s] * (float)q;
                    dst[128 * h + 32 * k + l] = t - ml[s];
                }
        dst += QUANT_QK_K;
    }
}

void quant_q4_k_scale_min(const uint8_t scales[12], int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
        *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

void quant_dequant_row_q4_k(const void *src, float *dst, int64_t n)
{
    const quant_block_q4_k *b = src;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++) {
        const float d = quant_f16_to_f32(b->d);
        const float dmin = quant_f16_to_f32(b->dmin);
        /* chunk c (64 elements) uses qs[32c..]: low nibbles sub-block 2c, high 2c+1 */
        for (int c = 0; c < 4; c++)
            for (int half = 0; half < 2; half++) {
                uint8_t sc, m;
                quant_q4_k_scale_min(b->scales, 2 * c + half, &sc, &m);
                const float dl = d * (float)sc;
                const float ml = dmin * (float)m;
                for (int l = 0; l < 32; l++) {
                    const int q = (b->qs[32 * c + l] >> (4 * half)) & 0xF;
                    const float t = dl * (float)q;
                    dst[64 * c + 32 * half + l] = t - ml;
                }
            }
        dst += QUANT_QK_K;
    }
}

/* ---- IQ2_XXS --------------------------------------------------------------------------- */

void quant_dequant_row_iq2_xxs(const void *src, float *dst, int64_t n)
{
    const quant_block_iq2_xxs *b = src;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++) {
        const float d = quant_f16_to_f32(b->d);
        const uint8_t *q = (const uint8_t *)b->qs;
        for (int ib = 0; ib < 8; ib++) {
            uint32_t aux[2]; /* [0]: four grid indices, [1]: four sign indices + scale */
            memcpy(aux, q + 8 * ib, sizeof aux);
            const float db = d * (0.5f + (float)(aux[1] >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++) {
                const uint64_t row = quant_iq2xxs_grid[(aux[0] >> (8 * l)) & 0xFF];
                const uint8_t signs = quant_ksigns_iq2xs[(aux[1] >> (7 * l)) & 0x7F];
                for (int j = 0; j < 8; j++) {
                    const float v = db * (float)((row >> (8 * j)) & 0xFF);
                    *dst++ = (signs >> j) & 1 ? -v : v;
                }
            }
        }
    }
}
