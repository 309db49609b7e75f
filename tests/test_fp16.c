/* test_fp16.c — the scalar f16/bf16 <-> f32 conversions of quant/fp16.c against reference
 * formulas written independently in double arithmetic: all 65536 f16 and bf16 bit patterns
 * to f32, the 16->32->16 round trips, and f32 -> 16-bit rounding on every f16/bf16 value,
 * every midpoint between neighbours (the ties), their f32 neighbours, and a stride through
 * all 2^32 f32 patterns. NaN: f16 keeps its payload both ways (numpy's astype), bf16 forces
 * the quiet bit (gguf.quants BF16). */
#include <math.h>
#include <string.h>

#include "quant/quant.h"
#include "test_util.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- reference formulas ---------------------------------------------------------------- */

/* Value of an f16 pattern: (-1)^s * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 when e == 0. */
static double ref_f16_value(uint16_t h)
{
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Rounds a finite double to the nearest value with p significant bits, exponent >= emin
 * (below it: fixed spacing 2^(emin-p+1)), ties to even; returns +-inf at or above the
 * overflow threshold `top` (the midpoint between the largest finite value and the next). */
static double ref_round(double x, int p, int emin, double top)
{
    const double a = fabs(x);
    if (a >= top)
        return x < 0 ? -INFINITY : INFINITY;
    if (a == 0)
        return x;
    int e;
    frexp(a, &e); /* a = f * 2^e, f in [0.5, 1): leading bit 2^(e-1) */
    int lead = e - 1;
    if (lead < emin)
        lead = emin;
    const double ulp = ldexp(1.0, lead - (p - 1));
    const double r = nearbyint(a / ulp) * ulp; /* default rounding: to nearest even */
    return x < 0 ? -r : r;
}

static double ref_to_f16(float f) { return ref_round(f, 11, -14, 65520.0); }

static double ref_to_bf16(float f)
{
    return ref_round(f, 8, -126, ldexp(2.0 - ldexp(1.0, -8), 127));
}

/* The result of a rounding matches the reference value, sign of zero included. */
static bool same_value(double got, double want)
{
    return got == want && signbit(got) == signbit(want);
}

/* ---- f16 ------------------------------------------------------------------------------- */

static void test_f16_to_f32(void)
{
    int bad = 0, bad_nan = 0, bad_trip = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_f16_to_f32((quant_f16)h);
        const uint32_t u = bits_of(f);
        if (((h >> 10) & 31) == 31 && (h & 1023)) { /* NaN: payload kept, not quieted */
            bad_nan += !isnan(f) || (u >> 31) != (h >> 15) || ((u >> 13) & 1023) != (h & 1023) ||
                       (u & 0x1fff) != 0;
        } else if (((h >> 10) & 31) == 31) {
            bad += !isinf(f) || (signbit(f) != 0) != (h >> 15);
        } else {
            bad += !same_value(f, ref_f16_value((uint16_t)h));
        }
        bad_trip += quant_f32_to_f16(f) != h;
    }
    t_check(bad == 0, "f16->f32 equals (-1)^s 2^(e-15)(1+m/1024) on all finite/inf patterns "
                      "(%d wrong)", bad);
    t_check(bad_nan == 0, "f16->f32 keeps NaN sign and payload (%d wrong)", bad_nan);
    t_check(bad_trip == 0, "f16->f32->f16 is the identity on all 65536 patterns (%d wrong)",
            bad_trip);
}

/* Checks one f32 -> f16 rounding against the reference; returns 1 if wrong. */
static int f16_wrong(float f)
{
    const quant_f16 h = quant_f32_to_f16(f);
    if (isnan(f)) { /* numpy: sign kept, payload >> 13, forced non-zero */
        const uint32_t u = bits_of(f);
        uint16_t m = (uint16_t)((u & 0x7fffff) >> 13);
        return h != (uint16_t)(((u >> 16) & 0x8000) | 0x7c00 | (m ? m : 1));
    }
    return !same_value(quant_f16_to_f32(h), ref_to_f16(f));
}

static void test_f32_to_f16(void)
{
    int bad_mid = 0, bad_stride = 0;
    long n_mid = 0, n_stride = 0;
    /* every f16 value, every midpoint to its upper neighbour, and f32 neighbours of both */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int sgn = 0; sgn < 2; sgn++) {
            const double lo = ref_f16_value((uint16_t)h);
            const double hi = h + 1 < 0x7c00 ? ref_f16_value((uint16_t)(h + 1)) : 65536.0;
            const float pts[2] = { (float)lo, (float)((lo + hi) / 2) }; /* exact in f32 */
            for (int k = 0; k < 2; k++)
                for (int d = -2; d <= 2; d++) {
                    const uint32_t u = bits_of(pts[k]) + (uint32_t)d;
                    if (pts[k] == 0.0f && d < 0)
                        continue;
                    float f = float_of(u);
                    if (sgn)
                        f = -f;
                    bad_mid += f16_wrong(f);
                    n_mid++;
                }
        }
    }
    t_check(bad_mid == 0, "f32->f16 on %ld values at/around every f16 value and midpoint "
                          "(ties to even; %d wrong)", n_mid, bad_mid);
    /* a stride through all 2^32 patterns: inf, NaN payloads, huge and tiny values */
    for (uint64_t u = 0; u < (1ull << 32); u += 509) {
        bad_stride += f16_wrong(float_of((uint32_t)u));
        n_stride++;
    }
    t_check(bad_stride == 0, "f32->f16 on %ld patterns striding all of f32 (%d wrong)",
            n_stride, bad_stride);
    t_check(quant_f32_to_f16(65519.996f) == 0x7bff && quant_f32_to_f16(65520.0f) == 0x7c00 &&
                quant_f32_to_f16(-INFINITY) == 0xfc00 && quant_f32_to_f16(-0.0f) == 0x8000 &&
                quant_f32_to_f16(ldexpf(1, -25)) == 0 &&
                quant_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 1,
            "f32->f16 edges: 65520 -> inf, 2^-25 -> 0 (tie), just above -> 1 ulp, -0 kept");
}

/* ---- bf16 ------------------------------------------------------------------------------ */

static int bf16_wrong(float f)
{
    const quant_bf16 h = quant_f32_to_bf16(f);
    const uint32_t u = bits_of(f);
    if (isnan(f)) /* gguf: sign and top payload kept, quiet bit set */
        return h != (uint16_t)((u >> 16) | 0x0040);
    return !same_value(quant_bf16_to_f32(h), ref_to_bf16(f));
}

static void test_bf16(void)
{
    int bad = 0, bad_trip = 0, bad_round = 0;
    long n_round = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = quant_bf16_to_f32((quant_bf16)h);
        bad += bits_of(f) != h << 16;
        const quant_bf16 back = quant_f32_to_bf16(f);
        /* identity except signalling NaNs, which come back quiet */
        const bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        bad_trip += nan ? back != (h | 0x40) : back != h;
        /* the value, the midpoint to the next pattern, and f32 neighbours */
        for (uint32_t mid = 0; mid < 2; mid++)
            for (int d = -2; d <= 2; d++) {
                const uint32_t u = (h << 16) + mid * 0x8000 + (uint32_t)d;
                bad_round += bf16_wrong(float_of(u));
                n_round++;
            }
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 509, n_round++)
        bad_round += bf16_wrong(float_of((uint32_t)u));
    t_check(bad == 0, "bf16->f32 is the 16-bit shift on all 65536 patterns (%d wrong)", bad);
    t_check(bad_trip == 0, "bf16->f32->bf16 identity (signalling NaN comes back quiet; "
                           "%d wrong)", bad_trip);
    t_check(bad_round == 0, "f32->bf16 on %ld values around every bf16 value, midpoint and "
                            "an f32 stride (%d wrong)", n_round, bad_round);
}

int main(void)
{
    test_f16_to_f32();
    test_f32_to_f16();
    test_bf16();
    return t_summary();
}
