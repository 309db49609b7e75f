/* quantize_k.c — weight quantizers for the two K-quant types ds4 uses, Q2_K and Q4_K.
 * Both fit every sub-block with w = scale*q - min (q in 0..nmax, min >= 0) by a small search:
 * several candidate step sizes each give codes q, a least-squares refit of (scale, min) to
 * those codes, and the best squared error wins. The super-block then stores d and dmin (f16)
 * and per-sub-block integer scales/mins (4 bits for Q2_K, 6 for Q4_K); each sub-block finally
 * tries the integer neighbours of its scale and min with the real f16 factors and keeps the
 * best. Deterministic, no tables, no threads. Inputs: NaN is read as 0 and magnitudes are
 * capped at 1e18 (far beyond what f16 factors can represent), so any input gives a valid
 * block. Owns no dequantization (dequant_ref.c). Implements ds4-architecture.md §1.5. */
#include <math.h>
#include <string.h>

#include "quant/quant.h"

#define MAX_SUB 32      /* largest sub-block (Q4_K) */
#define F16_MAX 65504.0f
#define INPUT_CAP 1e18f /* squares of capped values stay finite in f32 */

/* ---- sub-block fit --------------------------------------------------------------------- */

/* Copies a block with NaN -> 0 and magnitudes capped, so the search below is plain math. */
static void sanitize(const float *src, float *x, int n)
{
    for (int i = 0; i < n; i++) {
        const float v = src[i];
        x[i] = !(v == v) ? 0.0f : v > INPUT_CAP ? INPUT_CAP : v < -INPUT_CAP ? -INPUT_CAP : v;
    }
}

/* Nearest code for v, clamped to [0, nmax] (v is finite or +-inf, never NaN here). */
static int code(float v, int nmax)
{
    if (!(v > 0.0f))
        return 0;
    if (v >= (float)nmax)
        return nmax;
    return (int)(v + 0.5f);
}

/* Squared error of x against scale*L - min for the codes L it implies. */
static float sub_error(const float *x, int n, int nmax, float scale, float min)
{
    float err = 0.0f;
    const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    for (int i = 0; i < n; i++) {
        const int l = code((x[i] + min) * inv, nmax);
        const float diff = scale * (float)l - min - x[i];
        err += diff * diff;
    }
    return err;
}

/* Fits x[0..n) with scale*L - min, L in 0..nmax, scale >= 0, min >= 0. */
static void fit_affine(const float *x, int n, int nmax, float *scale_out, float *min_out)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (lo > 0.0f)
        lo = 0.0f;
    if (hi <= lo) { /* constant block (all <= 0 and equal): the min alone is exact */
        *scale_out = 0.0f;
        *min_out = -lo;
        return;
    }
    float best_scale = (hi - lo) / (float)nmax, best_min = -lo;
    float best_err = sub_error(x, n, nmax, best_scale, best_min);
    /* candidate inverse steps between (nmax-1)/range and (nmax+1)/range */
    for (int step = -4; step <= 6; step++) {
        const float iscale = ((float)nmax + 0.2f * (float)step) / (hi - lo);
        float sl = 0, sll = 0, sx = 0, sxl = 0;
        int lv[MAX_SUB];
        for (int i = 0; i < n; i++) {
            const int l = code(iscale * (x[i] - lo), nmax);
            lv[i] = l;
            sl += (float)l;
            sll += (float)(l * l);
            sx += x[i];
            sxl += x[i] * (float)l;
        }
        /* least squares x ~ a*L + b with b <= 0 */
        const float det = (float)n * sll - sl * sl;
        if (!(det > 0.0f))
            continue;
        float a = ((float)n * sxl - sl * sx) / det;
        float b = (sll * sx - sl * sxl) / det;
        if (b > 0.0f) {
            b = 0.0f;
            a = sxl / sll;
        }
        if (!(a > 0.0f))
            continue;
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            const float diff = a * (float)lv[i] + b - x[i];
            err += diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = a;
            best_min = -b;
        }
    }
    *scale_out = best_scale;
    *min_out = best_min;
}

/* The f16 super-block factor that maps the largest of v[0..n) onto imax, never inf. */
static quant_f16 super_factor(const float *v, int n, int imax)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    float d = m / (float)imax;
    return quant_f32_to_f16(d > F16_MAX ? F16_MAX : d);
}

/* Mean of scale*L - x over the codes L that (scale, min) give: the best min for those codes. */
static float refit_min(const float *x, int n, int nmax, float scale, float min)
{
    const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += scale * (float)code((x[i] + min) * inv, nmax) - x[i];
    return s / (float)n;
}

/* Integer scale/min of one sub-block given the real factors d, dmin: starts from the
 * rounded ratios; for each neighbouring scale tries the neighbouring mins and the min refit
 * to that scale's codes (which matters when d or dmin underflowed f16), judged by real error.
 * Writes the codes L for the winner. */
static void pick_sub(const float *x, int n, int nmax, int imax, float d, float dmin,
                     float scale, float min, int *sc_out, int *m_out, uint8_t *L)
{
    const int sc0 = d > 0.0f ? code(scale / d, imax) : 0;
    const int m0 = dmin > 0.0f ? code(min / dmin, imax) : 0;
    int best_sc = sc0, best_m = m0;
    float best_err = INFINITY;
    for (int sc = sc0 - 1; sc <= sc0 + 1; sc++) {
        if (sc < 0 || sc > imax)
            continue;
        const float mr = refit_min(x, n, nmax, d * (float)sc, dmin * (float)m0);
        const int cand[4] = { m0 - 1, m0, m0 + 1, dmin > 0.0f ? code(mr / dmin, imax) : 0 };
        for (int k = 0; k < 4; k++) {
            const int m = cand[k];
            if (m < 0 || m > imax)
                continue;
            const float err = sub_error(x, n, nmax, d * (float)sc, dmin * (float)m);
            if (err < best_err) {
                best_err = err;
                best_sc = sc;
                best_m = m;
            }
        }
    }
    const float dl = d * (float)best_sc, ml = dmin * (float)best_m;
    const float inv = dl > 0.0f ? 1.0f / dl : 0.0f;
    for (int i = 0; i < n; i++)
        L[i] = (uint8_t)code((x[i] + ml) * inv, nmax);
    *sc_out = best_sc;
    *m_out = best_m;
}

/* ---- Q2_K: 16 sub-blocks of 16, 4-bit scale and min, 2-bit codes ------------------------ */

void quant_quant_row_q2_k(const float *src, void *dst, int64_t n)
{
    quant_block_q2_k *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++, src += QUANT_QK_K) {
        float x[QUANT_QK_K], scale[16], min[16];
        uint8_t L[QUANT_QK_K];
        sanitize(src, x, QUANT_QK_K);
        for (int s = 0; s < 16; s++)
            fit_affine(x + 16 * s, 16, 3, &scale[s], &min[s]);
        b->d = super_factor(scale, 16, 15);
        b->dmin = super_factor(min, 16, 15);
        const float d = quant_f16_to_f32(b->d), dmin = quant_f16_to_f32(b->dmin);
        for (int s = 0; s < 16; s++) {
            int sc, m;
            pick_sub(x + 16 * s, 16, 3, 15, d, dmin, scale[s], min[s], &sc, &m, L + 16 * s);
            b->scales[s] = (uint8_t)(sc | (m << 4));
        }
        /* half h uses qs[32h..]; bit pair k holds elements 128h + 32k + l */
        memset(b->qs, 0, sizeof b->qs);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++)
                    b->qs[32 * h + l] |= (uint8_t)(L[128 * h + 32 * k + l] << (2 * k));
    }
}

/* ---- Q4_K: 8 sub-blocks of 32, 6-bit scale and min, 4-bit codes ------------------------- */

/* Packs eight 6-bit scale/min pairs the way quant_q4_k_scale_min unpacks them. */
static void pack_q4_k_scales(const int sc[8], const int m[8], uint8_t out[12])
{
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        out[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        out[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
    }
}

void quant_quant_row_q4_k(const float *src, void *dst, int64_t n)
{
    quant_block_q4_k *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++, b++, src += QUANT_QK_K) {
        float x[QUANT_QK_K], scale[8], min[8];
        uint8_t L[QUANT_QK_K];
        int sc[8], m[8];
        sanitize(src, x, QUANT_QK_K);
        for (int s = 0; s < 8; s++)
            fit_affine(x + 32 * s, 32, 15, &scale[s], &min[s]);
        b->d = super_factor(scale, 8, 63);
        b->dmin = super_factor(min, 8, 63);
        const float d = quant_f16_to_f32(b->d), dmin = quant_f16_to_f32(b->dmin);
        for (int s = 0; s < 8; s++)
            pick_sub(x + 32 * s, 32, 15, 63, d, dmin, scale[s], min[s], &sc[s], &m[s],
                     L + 32 * s);
        pack_q4_k_scales(sc, m, b->scales);
        /* chunk c uses qs[32c..]: low nibble element 64c+l, high nibble 64c+32+l */
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}
