/* qat.c — the numeric simulations that are part of the DS4 graph: FP8 E4M3FN rounding of KV
 * rows (blocks of 64 with a power-of-two scale), the indexer's orthonormal Walsh-Hadamard
 * transform and FP4 E2M1 rounding (blocks of 32), and F16 storage rounding of cached rows.
 * Owns no policy: forward passes decide when to call these (env DS4_NO_QAT_SIM=1 turns them
 * all off, see state.c). Rounding is to nearest, ties to the even code, in the default FP
 * rounding mode. Implements ds4-architecture.md §3.8. */
#include <float.h>
#include <math.h>

#include "model/ops.h"
#include "quant/quant.h"

float qat_e4m3(float x)
{
    float a = fabsf(x);
    if (!(a > 0.0f)) /* zero (sign kept) or NaN */
        return x;
    if (a >= QAT_FP8_MAX)
        return copysignf(QAT_FP8_MAX, x);
    int e;
    frexpf(a, &e); /* a = f * 2^e, f in [0.5, 1): floor(log2 a) = e - 1 */
    int ex = e - 1;
    if (ex < -6) /* subnormals: e = 0 -> m * 2^-9 */
        ex = -6;
    const float quantum = ldexpf(1.0f, ex - 3); /* 3 mantissa bits */
    float r = rintf(a / quantum) * quantum;     /* exact scaling; rint: ties to even */
    if (r > QAT_FP8_MAX)
        r = QAT_FP8_MAX;
    return copysignf(r, x);
}

static const float e2m1_values[8] = { 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f };

float qat_e2m1(float x)
{
    float a = fabsf(x);
    if (a != a)
        return x;
    int best = 0;
    float bd = a;
    for (int i = 1; i < 8; i++) {
        float d = fabsf(a - e2m1_values[i]);
        if (d < bd || (d == bd && i % 2 == 0)) {
            best = i;
            bd = d;
        }
    }
    return copysignf(e2m1_values[best], x);
}

void qat_fp8_sim(float *x, uint32_t n)
{
    for (uint32_t b = 0; b < n; b += QAT_FP8_BLOCK) {
        uint32_t len = n - b < QAT_FP8_BLOCK ? n - b : QAT_FP8_BLOCK;
        float amax = 1e-4f;
        for (uint32_t i = 0; i < len; i++)
            amax = fmaxf(amax, fabsf(x[b + i]));
        const float scale = exp2f(ceilf(log2f(amax / QAT_FP8_MAX)));
        for (uint32_t i = 0; i < len; i++) {
            float v = x[b + i] / scale;
            v = fminf(fmaxf(v, -QAT_FP8_MAX), QAT_FP8_MAX);
            x[b + i] = qat_e4m3(v) * scale;
        }
    }
}

void qat_hadamard(float *x, uint32_t n)
{
    for (uint32_t h = 1; h < n; h *= 2)
        for (uint32_t i = 0; i < n; i += 2 * h)
            for (uint32_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    const float s = (float)(1.0 / sqrt((double)n));
    for (uint32_t i = 0; i < n; i++)
        x[i] *= s;
}

void qat_fp4_sim(float *x, uint32_t n)
{
    for (uint32_t b = 0; b < n; b += QAT_FP4_BLOCK) {
        uint32_t len = n - b < QAT_FP4_BLOCK ? n - b : QAT_FP4_BLOCK;
        float amax = QAT_FP4_MAX * FLT_MIN; /* keeps amax / 6 a normal float */
        for (uint32_t i = 0; i < len; i++)
            amax = fmaxf(amax, fabsf(x[b + i]));
        const float scale = exp2f(ceilf(log2f(amax / QAT_FP4_MAX)));
        for (uint32_t i = 0; i < len; i++)
            x[b + i] = qat_e2m1(x[b + i] / scale) * scale;
    }
}

void qat_f16_round(float *x, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        x[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
}

void qat_kv_row(const model_hparams *hp, bool on, float *row)
{
    if (!on)
        return;
    qat_fp8_sim(row, hp->head_dim - hp->n_rot);
    qat_f16_round(row, hp->head_dim);
}

void qat_index_row(const model_hparams *hp, bool on, float *row)
{
    const uint32_t n = hp->indexer_head_dim;
    if (!on)
        return;
    qat_hadamard(row, n);
    qat_fp4_sim(row, n);
    qat_f16_round(row, n);
}
