/* dot_ref.c — the scalar reference dot products every other variant is tested against:
 * q8_0·q8_0, q2_K·q8_K, q4_K·q8_K, iq2_xxs·q8_K (single and paired), f16·f32, f32·f32.
 * Plain readable C following ds4-architecture.md §1.5 and §4.1: exact integer sums per
 * sub-block, then one float scaling per block, accumulated in block order in f32.
 * Does not own block layouts (quant/blocks.h), f16 conversion or the IQ2 tables (quant/). */
#include "kernels/cpu/cpu_dot.h"

/* ======== Q8_0 x Q8_0 ================================================================= */

float cpu_dot_q8_0_q8_0_ref(int64_t n, const void *w, const void *x)
{
    const quant_block_q8_0 *bw = w;
    const quant_block_q8_0 *bx = x;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUANT_QK8_0; b++) {
        int32_t isum = 0;
        for (int i = 0; i < QUANT_QK8_0; i++)
            isum += (int32_t)bw[b].qs[i] * bx[b].qs[i];
        sum += quant_f16_to_f32(bw[b].d) * quant_f16_to_f32(bx[b].d) * (float)isum;
    }
    return sum;
}

/* ======== K-quants x Q8_K ============================================================= */

/* Q2_K: sub-block j (16 elements) has w = d*scale_j*q - dmin*min_j, so one block gives
 * d_x*d*sum_j scale_j*sum(q*q8) - d_x*dmin*sum_j min_j*bsums[j]. Element order: half h
 * (128 elements) reads qs[32h + l] and shift 2k yields element 128h + 32k + l (l < 32),
 * which belongs to sub-block 8h + 2k + l/16. */
float cpu_dot_q2_k_q8_k_ref(int64_t n, const void *w, const void *x)
{
    const quant_block_q2_k *bw = w;
    const quant_block_q8_k *bx = x;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        int32_t qsum = 0, msum = 0;
        for (int j = 0; j < 16; j++)
            msum += (bw[b].scales[j] >> 4) * bx[b].bsums[j];
        for (int h = 0; h < 2; h++) {
            for (int k = 0; k < 4; k++) {
                for (int half = 0; half < 2; half++) {
                    int32_t sub = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        int q = (bw[b].qs[32 * h + l] >> (2 * k)) & 3;
                        sub += q * bx[b].qs[128 * h + 32 * k + l];
                    }
                    qsum += (bw[b].scales[8 * h + 2 * k + half] & 15) * sub;
                }
            }
        }
        float d = bx[b].d * quant_f16_to_f32(bw[b].d);
        float dmin = bx[b].d * quant_f16_to_f32(bw[b].dmin);
        sum += d * (float)qsum - dmin * (float)msum;
    }
    return sum;
}

/* Q4_K: sub-block j (32 elements) has w = d*sc_j*q - dmin*m_j; chunk c = j/2 reads
 * qs[32c + l], low nibble for even j (element 64c + l), high nibble for odd j
 * (element 64c + 32 + l). The min term uses bsums[2j] + bsums[2j+1]. */
float cpu_dot_q4_k_q8_k_ref(int64_t n, const void *w, const void *x)
{
    const quant_block_q4_k *bw = w;
    const quant_block_q8_k *bx = x;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUANT_QK_K; b++) {
        int32_t qsum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            quant_q4_k_scale_min(bw[b].scales, j, &sc, &m);
            const uint8_t *qs = bw[b].qs + 32 * (j / 2);
            const int8_t *q8 = bx[b].qs + 32 * j;
            int shift = 4 * (j % 2);
            int32_t sub = 0;
            for (int l = 0; l < 32; l++)
                sub += ((qs[l] >> shift) & 15) * q8[l];
            qsum += sc * sub;
            msum += m * (bx[b].bsums[2 * j] + bx[b].bsums[2 * j + 1]);
        }
        float d = bx[b].d * quant_f16_to_f32(bw[b].d);
        float dmin = bx[b].d * quant_f16_to_f32(bw[b].dmin);
        sum += d * (float)qsum - dmin * (float)msum;
    }
    return sum;
}

/* ======== IQ2_XXS x Q8_K ============================================================== */

/* One IQ2_XXS block against one Q8_K block, as the integer sum_s (2s+1) * sum(grid*sign*q8)
 * over the 8 sub-blocks of 32; the caller scales it by d_w * d_x / 8. Sub-block s reads
 * qs[4s..4s+3] as two u32: four grid indices, then four 7-bit sign indices + a 4-bit scale. */
static int32_t iq2_xxs_block(const quant_block_iq2_xxs *bw, const quant_block_q8_k *bx)
{
    int32_t bsum = 0;
    for (int s = 0; s < 8; s++) {
        const uint16_t *q = bw->qs + 4 * s;
        uint32_t idx = (uint32_t)q[0] | (uint32_t)q[1] << 16;
        uint32_t sgn = (uint32_t)q[2] | (uint32_t)q[3] << 16;
        const int8_t *q8 = bx->qs + 32 * s;
        int32_t sub = 0;
        for (int g = 0; g < 4; g++) {
            uint64_t grid = quant_iq2xxs_grid[(idx >> (8 * g)) & 255];
            uint8_t signs = quant_ksigns_iq2xs[(sgn >> (7 * g)) & 127];
            for (int i = 0; i < 8; i++) {
                int v = (int)((grid >> (8 * i)) & 255) * q8[8 * g + i];
                sub += (signs >> i) & 1 ? -v : v;
            }
        }
        bsum += (int32_t)(2 * (sgn >> 28) + 1) * sub;
    }
    return bsum;
}

float cpu_dot_iq2_xxs_q8_k_ref(int64_t n, const void *w, const void *x)
{
    const quant_block_iq2_xxs *bw = w;
    const quant_block_q8_k *bx = x;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QUANT_QK_K; b++)
        sum += quant_f16_to_f32(bw[b].d) * bx[b].d * (float)iq2_xxs_block(&bw[b], &bx[b]);
    return 0.125f * sum;
}

void cpu_dot2_iq2_xxs_q8_k_ref(int64_t n, const void *w0, const void *w1, const void *x,
                               float out[2])
{
    out[0] = cpu_dot_iq2_xxs_q8_k_ref(n, w0, x);
    out[1] = cpu_dot_iq2_xxs_q8_k_ref(n, w1, x);
}

/* ======== F16 / F32 x F32 ============================================================= */

float cpu_dot_f16_f32_ref(int64_t n, const void *w, const void *x)
{
    const quant_f16 *hw = w;
    const float *fx = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += quant_f16_to_f32(hw[i]) * fx[i];
    return sum;
}

float cpu_dot_f32_f32_ref(int64_t n, const void *w, const void *x)
{
    const float *fw = w;
    const float *fx = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += fw[i] * fx[i];
    return sum;
}
