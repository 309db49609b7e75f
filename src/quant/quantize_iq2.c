/* quantize_iq2.c — the IQ2_XXS weight quantizer. Each group of 8 weights becomes one of the
 * 256 grid rows of magnitudes {8, 25, 43}, signs taken from the data with even parity enforced
 * by flipping the sign of the group's smallest |x|; each 32-weight sub-block has a 4-bit scale
 * s and the block an f16 d, w = d*(0.5+s)/4 * grid * sign. Search: per sub-block a few
 * candidate scales, each with the exact nearest grid row per group (costs split into two
 * halves of 4 elements, 81 patterns each) and a least-squares refit; then a handful of global
 * d around the largest sub-block scale, each sub-block taking the better of its two nearest
 * integer s. Deterministic; NaN reads as 0, magnitudes are capped at 1e18, so any input gives
 * a valid block. Implements ds4-architecture.md §1.5 (IQ2_XXS). */
#include <math.h>
#include <string.h>

#include "quant/quant.h"

#define INPUT_CAP 1e18f
#define F16_MAX 65504.0f

static const float level_val[3] = { 8.0f, 25.0f, 43.0f };

/* The grid decoded for the search: per row the level (0..2) of each element, the base-3
 * pattern numbers of its two halves, and its squared norm. */
typedef struct {
    uint8_t lev[256][8];
    uint8_t half_lo[256], half_hi[256];
    float gg[256];
    int16_t row_of[81 * 81]; /* pattern lo + 81*hi -> its grid row, or -1 */
} grid_info;

static void grid_decode(grid_info *gi)
{
    memset(gi->row_of, 0xff, sizeof gi->row_of);
    for (int r = 0; r < 256; r++) {
        int lo = 0, hi = 0, p = 1;
        float gg = 0.0f;
        for (int j = 0; j < 8; j++) {
            const unsigned byte = (unsigned)(quant_iq2xxs_grid[r] >> (8 * j)) & 0xFF;
            const int l = byte == 0x08 ? 0 : byte == 0x19 ? 1 : 2;
            gi->lev[r][j] = (uint8_t)l;
            gg += level_val[l] * level_val[l];
            if (j < 4)
                lo += l * p;
            else
                hi += l * p;
            p = j == 3 ? 1 : p * 3;
        }
        gi->half_lo[r] = (uint8_t)lo;
        gi->half_hi[r] = (uint8_t)hi;
        gi->gg[r] = gg;
        gi->row_of[lo + 81 * hi] = (int16_t)r;
    }
}

/* ---- one group of 8 -------------------------------------------------------------------- */

/* Costs of the 81 level patterns of 4 elements: c[j][l] summed over j. */
static void half_costs(const float c[4][3], float out[81])
{
    int k = 0;
    for (int l3 = 0; l3 < 3; l3++)
        for (int l2 = 0; l2 < 3; l2++) {
            const float c32 = c[3][l3] + c[2][l2];
            for (int l1 = 0; l1 < 3; l1++) {
                const float c321 = c32 + c[1][l1];
                for (int l0 = 0; l0 < 3; l0++)
                    out[k++] = c321 + c[0][l0];
            }
        }
}

/* The grid row nearest to db*row ~ t (t: sign-aligned targets), exact over all 256 rows. */
static int best_row(const grid_info *gi, const float t[8], float db)
{
    float c[8][3], lo[81], hi[81];
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 3; l++) {
            const float v = db * level_val[l];
            c[j][l] = v * (v - 2.0f * t[j]); /* (v - t)^2 - t^2 */
        }
    /* fast path: the per-element nearest levels form a grid row */
    int pl = 0, ph = 0;
    for (int j = 7; j >= 0; j--) {
        const int l = c[j][1] < c[j][0] ? (c[j][2] < c[j][1] ? 2 : 1) : (c[j][2] < c[j][0] ? 2 : 0);
        if (j >= 4)
            ph = 3 * ph + l;
        else
            pl = 3 * pl + l;
    }
    if (gi->row_of[pl + 81 * ph] >= 0)
        return gi->row_of[pl + 81 * ph];
    half_costs((const float (*)[3])c, lo);
    half_costs((const float (*)[3])(c + 4), hi);
    /* the first row of least cost; eight running minima keep the loop free of a serial
     * dependency, then a second pass finds the first row that reaches the minimum */
    float cost[256], m8[8];
    for (int k = 0; k < 8; k++)
        m8[k] = INFINITY;
    for (int r = 0; r < 256; r += 8)
        for (int k = 0; k < 8; k++) {
            const float cr = lo[gi->half_lo[r + k]] + hi[gi->half_hi[r + k]];
            cost[r + k] = cr;
            m8[k] = cr < m8[k] ? cr : m8[k];
        }
    float m = m8[0];
    for (int k = 1; k < 8; k++)
        m = m8[k] < m ? m8[k] : m;
    int best = 0;
    while (best < 255 && cost[best] != m)
        best++;
    return best;
}

/* ---- one sub-block of 32 --------------------------------------------------------------- */

typedef struct {
    float t[32]; /* sign-aligned targets: |x|, or -|x| for the parity-flipped element */
    float tt;    /* sum of t^2 */
    uint8_t sign_idx[4];
} sub_block;

/* Signs from the data with even parity per group of 8 (flip the smallest |x|). */
static void sub_prepare(const float *x, sub_block *sb)
{
    sb->tt = 0.0f;
    for (int g = 0; g < 4; g++) {
        unsigned mask = 0;
        int smallest = 0;
        for (int j = 0; j < 8; j++) {
            const float v = x[8 * g + j];
            sb->t[8 * g + j] = fabsf(v);
            if (v < 0.0f)
                mask |= 1u << j;
            if (fabsf(v) < fabsf(x[8 * g + smallest]))
                smallest = j;
        }
        if (__builtin_popcount(mask) & 1) {
            mask ^= 1u << smallest;
            sb->t[8 * g + smallest] = -sb->t[8 * g + smallest];
        }
        sb->sign_idx[g] = (uint8_t)(mask & 0x7F);
        for (int j = 0; j < 8; j++)
            sb->tt += sb->t[8 * g + j] * sb->t[8 * g + j];
    }
}

/* Picks the rows for scale db; returns sum g.t and sum g.g over the sub-block. */
static void sub_rows(const grid_info *gi, const sub_block *sb, float db, uint8_t rows[4],
                     float *gt_out, float *gg_out)
{
    float gt = 0.0f, gg = 0.0f;
    for (int g = 0; g < 4; g++) {
        const int r = best_row(gi, sb->t + 8 * g, db);
        rows[g] = (uint8_t)r;
        for (int j = 0; j < 8; j++)
            gt += level_val[gi->lev[r][j]] * sb->t[8 * g + j];
        gg += gi->gg[r];
    }
    *gt_out = gt;
    *gg_out = gg;
}

/* The best free (continuous) scale of a sub-block: a few starting scales, each refit by
 * least squares once. */
static float sub_free_scale(const grid_info *gi, const sub_block *sb)
{
    float amax = 0.0f;
    for (int i = 0; i < 32; i++)
        amax = sb->t[i] > amax ? sb->t[i] : amax;
    if (amax == 0.0f)
        return 0.0f;
    static const float start[5] = { 0.55f, 0.7f, 0.85f, 1.0f, 1.2f };
    float best_db = amax / 43.0f, best_err = INFINITY;
    for (int k = 0; k < 5; k++) {
        uint8_t rows[4];
        float gt, gg;
        sub_rows(gi, sb, amax / 43.0f * start[k], rows, &gt, &gg);
        if (!(gt > 0.0f && gg > 0.0f))
            continue;
        const float err = sb->tt - gt * gt / gg; /* error at the refit db = gt/gg */
        if (err < best_err) {
            best_err = err;
            best_db = gt / gg;
        }
    }
    return best_db;
}

/* db exactly as the dequantizer computes it from d and s. */
static float sub_db(float d, int s)
{
    return d * (0.5f + (float)s) * 0.25f;
}

/* Squared error of the sub-block at scale s of d, with its rows. */
static float sub_eval(const grid_info *gi, const sub_block *sb, float d, int s, uint8_t rows[4])
{
    float gt, gg;
    const float db = sub_db(d, s);
    sub_rows(gi, sb, db, rows, &gt, &gg);
    return sb->tt - 2.0f * db * gt + db * db * gg;
}

/* ---- the block ------------------------------------------------------------------------- */

static void encode(quant_block_iq2_xxs *b, const sub_block *sb, const uint8_t rows[8][4],
                   const int s[8])
{
    uint8_t *q = (uint8_t *)b->qs;
    for (int ib = 0; ib < 8; ib++) {
        uint32_t aux[2] = { 0, (uint32_t)s[ib] << 28 };
        for (int l = 0; l < 4; l++) {
            aux[0] |= (uint32_t)rows[ib][l] << (8 * l);
            aux[1] |= (uint32_t)sb[ib].sign_idx[l] << (7 * l);
        }
        memcpy(q + 8 * ib, aux, sizeof aux);
    }
}

static void quant_block(const grid_info *gi, const float *src, quant_block_iq2_xxs *b)
{
    float x[QUANT_QK_K], dbf[8], dmax = 0.0f;
    sub_block sb[8];
    for (int i = 0; i < QUANT_QK_K; i++) {
        const float v = src[i];
        x[i] = !(v == v) ? 0.0f : v > INPUT_CAP ? INPUT_CAP : v < -INPUT_CAP ? -INPUT_CAP : v;
    }
    for (int ib = 0; ib < 8; ib++) {
        sub_prepare(x + 32 * ib, &sb[ib]);
        dbf[ib] = sub_free_scale(gi, &sb[ib]);
        dmax = dbf[ib] > dmax ? dbf[ib] : dmax;
    }
    memset(b, 0, sizeof *b);
    if (!(dmax > 0.0f))
        return; /* all zero: d = 0 */

    /* global d: the largest sub-block scale maps to s = 15, or a little below */
    static const float shrink[4] = { 1.0f, 0.96f, 0.92f, 0.88f };
    float best_err = INFINITY;
    for (int k = 0; k < 4; k++) {
        float dk = dmax * (8.0f / 31.0f) * shrink[k];
        const quant_f16 dh = quant_f32_to_f16(dk > F16_MAX ? F16_MAX : dk);
        const float d = quant_f16_to_f32(dh);
        if (!(d > 0.0f))
            continue;
        uint8_t rows[8][4];
        int s[8];
        float err = 0.0f;
        for (int ib = 0; ib < 8; ib++) {
            /* the two integer s around the free scale: db = d*(2s+1)/8 */
            const float sf = (dbf[ib] * 4.0f / d - 0.5f);
            int s0 = sf <= 0.0f ? 0 : sf >= 15.0f ? 15 : (int)sf;
            int s1 = s0 < 15 ? s0 + 1 : 15;
            uint8_t r0[4], r1[4];
            const float e0 = sub_eval(gi, &sb[ib], d, s0, r0);
            const float e1 = s1 != s0 ? sub_eval(gi, &sb[ib], d, s1, r1) : INFINITY;
            if (e1 < e0) {
                s[ib] = s1;
                memcpy(rows[ib], r1, 4);
                err += e1;
            } else {
                s[ib] = s0;
                memcpy(rows[ib], r0, 4);
                err += e0;
            }
        }
        if (err < best_err) {
            best_err = err;
            b->d = dh;
            encode(b, sb, (const uint8_t (*)[4])rows, s);
        }
    }
}

void quant_quant_row_iq2_xxs(const float *src, void *dst, int64_t n)
{
    grid_info gi;
    grid_decode(&gi);
    quant_block_iq2_xxs *b = dst;
    for (int64_t i = 0; i < n / QUANT_QK_K; i++)
        quant_block(&gi, src + i * QUANT_QK_K, b + i);
}
