/* test_quant.c — the reference quantizers, looped over the traits table: round-trip error on
 * Gaussian rows at the lengths the model uses, determinism, zero blocks, extreme scales,
 * NaN/inf input (run under `make asan` for UB), Q8_K bsums and the §4.1 formula, Q8_0 and
 * Q8_K rounding of exact ties. Bit-exactness against the gguf package is checked in
 * tests/reference/ (this program's --quantize mode is its bridge: raw f32 on stdin, blocks
 * on stdout). Timing lives in bench/quant_bench.c, not here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "test_util.h"

/* Relative RMS error bounds of quantize -> dequantize on N(0,1) data, measured then set a
 * little above the measurement (measured values are printed by every run). */
typedef struct {
    ds4_type type;
    double tol;
    double lo_scale, hi_scale; /* data scales where the bound still holds */
    const char *why;
} rms_bound;

static const rms_bound rms_bounds[] = {
    { DS4_TYPE_F32, 0.0, 0, 0, "exact copy" },
    { DS4_TYPE_F16, 3.0e-4, 0, 0, "11-bit significand: <= 2^-12 relative per value" },
    { DS4_TYPE_BF16, 2.3e-3, 0, 0, "8-bit significand: <= 2^-9 relative per value" },
    { DS4_TYPE_Q8_0, 1.0e-2, 1e-3, 1e6, "8-bit codes on a per-32 absmax scale" },
    { DS4_TYPE_Q8_K, 1.0e-2, 1e-30, 1e30, "8-bit codes on a per-256 absmax scale" },
    { DS4_TYPE_Q4_K, 9.0e-2, 1e-3, 1e6, "4-bit codes, 6-bit sub-block scale/min" },
    { DS4_TYPE_Q2_K, 3.5e-1, 1e-3, 1e3, "2-bit codes, 4-bit sub-block scale/min" },
    { DS4_TYPE_IQ2_XXS, 4.0e-1, 1e-3, 1e6, "2.06 bpw: 256-row grid of 8, 4-bit scale" },
};

static const int64_t model_lengths[] = { 256, 2048, 4096 }; /* expert rows, m, n_embd */

static const rms_bound *bound_of(ds4_type t)
{
    for (size_t i = 0; i < sizeof rms_bounds / sizeof rms_bounds[0]; i++)
        if (rms_bounds[i].type == t)
            return &rms_bounds[i];
    return NULL;
}

static void fill_normal(t_rng *r, float *x, int64_t n, double scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(t_normal(r) * scale);
}

/* Quantizes then dequantizes n values; returns the relative RMS error (NaN if y has NaN). */
static double round_trip(const quant_traits *tr, const float *x, float *y, void *buf,
                         int64_t n)
{
    tr->quant_row(x, buf, n);
    tr->dequant_row(buf, y, n);
    double se = 0.0, sx = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)y[i] - (double)x[i];
        se += d * d;
        sx += (double)x[i] * (double)x[i];
    }
    return sx > 0.0 ? sqrt(se / sx) : sqrt(se);
}

/* ---- round-trip error, determinism, zero blocks, all types ----------------------------- */

static void test_round_trip(uint64_t seed)
{
    enum { TOTAL = 1 << 16 }; /* values per (type, length): enough for a stable RMS */
    float *x = malloc(TOTAL * sizeof *x), *y = malloc(TOTAL * sizeof *y);
    uint8_t *buf = malloc(TOTAL * 4), *buf2 = malloc(TOTAL * 4);
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const quant_traits *tr = quant_get_traits((ds4_type)t);
        if (!tr || !tr->quant_row || !tr->dequant_row)
            continue;
        const rms_bound *bd = bound_of((ds4_type)t);
        if (!t_check(bd != NULL, "%s has an RMS bound in this test", tr->name))
            continue;
        for (size_t li = 0; li < sizeof model_lengths / sizeof model_lengths[0]; li++) {
            const int64_t n = model_lengths[li];
            t_rng r = { seed + (uint64_t)t * 1000 + li };
            fill_normal(&r, x, TOTAL, 1.0);
            double se = 0.0;
            for (int64_t row = 0; row < TOTAL / n; row++) {
                const double e = round_trip(tr, x + row * n, y + row * n,
                                            buf + quant_row_bytes((ds4_type)t, row * n), n);
                se += e * e;
            }
            const double rms = sqrt(se / (double)(TOTAL / n));
            t_case(rms <= bd->tol, rms, bd->tol, "%s rel. RMS, N(0,1), n=%lld (%s)", tr->name,
                   (long long)n, bd->why);
        }
        /* deterministic: a second run over the same input gives the same bytes */
        const size_t bytes = quant_row_bytes((ds4_type)t, TOTAL);
        tr->quant_row(x, buf2, TOTAL);
        t_check(memcmp(buf, buf2, bytes) == 0, "%s quantizer is deterministic", tr->name);

        /* an all-zero input gives exact zeros back */
        memset(x, 0, TOTAL * sizeof *x);
        tr->quant_row(x, buf, 4096);
        tr->dequant_row(buf, y, 4096);
        int bad = 0;
        for (int i = 0; i < 4096; i++)
            bad += y[i] != 0.0f;
        t_check(bad == 0, "%s zero blocks dequantize to exact zeros (%d nonzero)", tr->name,
                bad);
    }
    free(x);
    free(y);
    free(buf);
    free(buf2);
}

/* ---- extreme scales and non-finite input ----------------------------------------------- */

/* Gaussian rows at scales from 1e-30 to 1e30. Inside a type's representable range (its f16
 * block factors bound it; Q8_K's factor is f32) the error stays at the N(0,1) bound; outside
 * it the result must still be defined (no UB: `make asan`) and never worse than all-zero
 * output for tiny input. */
static void test_extremes(uint64_t seed)
{
    enum { N = 4096 };
    static const double scales[] = { 1e-30, 1e-6, 1e-3, 1e-2, 1.0, 1e2, 1e3, 1e6, 1e30 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *buf = malloc(N * 4);
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const quant_traits *tr = quant_get_traits((ds4_type)t);
        const rms_bound *bd = bound_of((ds4_type)t);
        if (!tr || !tr->quant_row || !tr->dequant_row || !tr->is_quantized || !bd)
            continue;
        for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
            t_rng r = { seed + 77 * si };
            fill_normal(&r, x, N, scales[si]);
            const double e = round_trip(tr, x, y, buf, N);
            if (scales[si] >= bd->lo_scale && scales[si] <= bd->hi_scale)
                t_case(e <= bd->tol * 1.1, e, bd->tol * 1.1, "%s rel. RMS at scale %g",
                       tr->name, scales[si]);
            else if (scales[si] < bd->lo_scale)
                t_case(e <= 1.01, e, 1.01, "%s below its range, scale %g: no worse than zeros",
                       tr->name, scales[si]);
            else
                t_check(true, "%s above its range, scale %g: defined (rel. err %.3g)",
                        tr->name, scales[si], e);
        }
    }
    free(x);
    free(y);
    free(buf);
}

/* NaN and inf among normal values: the quantizers treat NaN as 0 (and Q8_0/Q8_K keep it out
 * of the scale), so the other values of the block keep their usual accuracy. */
static void test_non_finite(uint64_t seed)
{
    enum { N = 256 };
    float x[N], y[N];
    uint8_t buf[N * 4];
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const quant_traits *tr = quant_get_traits((ds4_type)t);
        const rms_bound *bd = bound_of((ds4_type)t);
        if (!tr || !tr->quant_row || !tr->dequant_row || !tr->is_quantized || !bd)
            continue;
        for (int kind = 0; kind < 3; kind++) {
            t_rng r = { seed + (uint64_t)kind };
            fill_normal(&r, x, N, 1.0);
            const float bad = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
            x[5] = bad;
            x[200] = bad;
            tr->quant_row(x, buf, N);
            tr->dequant_row(buf, y, N);
            if (kind == 0) { /* NaN: the rest of the row is quantized as usual */
                x[5] = x[200] = 0.0f;
                double se = 0, sx = 0;
                for (int i = 0; i < N; i++) {
                    se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                    sx += (double)x[i] * x[i];
                }
                const double e = sqrt(se / sx);
                t_case(e <= bd->tol * 1.5, e, bd->tol * 1.5, "%s with NaN input: rest intact",
                       tr->name);
            } else {
                t_check(true, "%s with %s input: defined", tr->name, kind == 1 ? "+inf" : "-inf");
            }
        }
    }
}

/* ---- Q8_K: the §4.1 formula ------------------------------------------------------------ */

static void test_q8_k(uint64_t seed)
{
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x);
    quant_block_q8_k *b = malloc(N / QUANT_QK_K * sizeof *b);
    t_rng r = { seed };
    fill_normal(&r, x, N, 3.0);
    quant_quant_row_q8_k(x, b, N);
    int bad_sums = 0, bad_max = 0, bad_d = 0, bad_range = 0;
    for (int i = 0; i < N / QUANT_QK_K; i++) {
        const float *xb = x + i * QUANT_QK_K;
        int imax = 0;
        for (int j = 1; j < QUANT_QK_K; j++)
            if (fabsf(xb[j]) > fabsf(xb[imax]))
                imax = j;
        bad_max += b[i].qs[imax] != -127; /* the signed max maps to -127: d < 0 for max > 0 */
        bad_d += b[i].d != 1.0f / (-127.0f / xb[imax]);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += b[i].qs[16 * g + j];
            bad_sums += s != b[i].bsums[g];
        }
        for (int j = 0; j < QUANT_QK_K; j++) {
            const long want = lrintf(-127.0f / xb[imax] * xb[j]);
            bad_range += b[i].qs[j] != want;
        }
    }
    t_check(bad_sums == 0, "q8_K bsums equal the sums of 16 qs (%d wrong)", bad_sums);
    t_check(bad_max == 0, "q8_K signed max element quantizes to -127 (%d wrong)", bad_max);
    t_check(bad_d == 0, "q8_K d == 1/iscale, iscale = -127/max (%d wrong)", bad_d);
    t_check(bad_range == 0, "q8_K qs == lrintf(iscale*x) (%d wrong)", bad_range);

    /* ties: max = -127 gives iscale = 1, so x = k + 0.5 must round to even */
    float tie[QUANT_QK_K] = { 0 };
    tie[0] = -127.0f;
    tie[1] = 2.5f;
    tie[2] = 3.5f;
    tie[3] = -2.5f;
    tie[4] = 0.5f;
    quant_quant_row_q8_k(tie, b, QUANT_QK_K);
    t_check(b[0].qs[0] == -127 && b[0].qs[1] == 2 && b[0].qs[2] == 4 && b[0].qs[3] == -2 &&
                b[0].qs[4] == 0 && b[0].d == 1.0f,
            "q8_K rounds ties to even (lrintf): 2.5->2 3.5->4 -2.5->-2 0.5->0");
    /* ties of |x|: the first element of largest |x| sets the sign */
    memset(tie, 0, sizeof tie);
    tie[7] = 2.0f;
    tie[9] = -2.0f;
    quant_quant_row_q8_k(tie, b, QUANT_QK_K);
    t_check(b[0].qs[7] == -127 && b[0].qs[9] == 127, "q8_K first max of equal |x| wins");
    /* zero block: everything zero, bsums included */
    memset(tie, 0, sizeof tie);
    memset(b, 0x5a, sizeof *b);
    quant_quant_row_q8_k(tie, b, QUANT_QK_K);
    quant_block_q8_k zero;
    memset(&zero, 0, sizeof zero);
    t_check(memcmp(&b[0], &zero, sizeof zero) == 0, "q8_K all-zero block is all zero bytes");
    free(x);
    free(b);
}

/* ---- Q8_0: ggml's reference rounding --------------------------------------------------- */

static void test_q8_0(void)
{
    float x[QUANT_QK8_0] = { 0 };
    quant_block_q8_0 b;
    x[0] = 127.0f; /* d = 1 exactly: x*id = x */
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -2.5f;
    x[4] = 0.5f;
    x[5] = -0.5f;
    quant_quant_row_q8_0(x, &b, QUANT_QK8_0);
    t_check(b.d == 0x3c00 && b.qs[0] == 127 && b.qs[1] == 3 && b.qs[2] == 4 && b.qs[3] == -3 &&
                b.qs[4] == 1 && b.qs[5] == -1,
            "q8_0 rounds ties away from zero (roundf, as ggml/gguf): 2.5->3 -0.5->-1");
    memset(x, 0, sizeof x);
    quant_quant_row_q8_0(x, &b, QUANT_QK8_0);
    int nz = b.d != 0;
    for (int j = 0; j < QUANT_QK8_0; j++)
        nz += b.qs[j] != 0;
    t_check(nz == 0, "q8_0 all-zero block is all zero bytes");
}

/* ---- bridge for tests/reference: raw rows through one table row ------------------------ */

/* Reads all of stdin into a malloc'd buffer; returns its size. */
static size_t read_all(uint8_t **out)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *p = malloc(cap);
    size_t got;
    while (p && (got = fread(p + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap)
            p = realloc(p, cap *= 2);
    }
    *out = p;
    return len;
}

/* `--quantize TYPE`: f32 in, blocks out. `--dequantize TYPE`: blocks in, f32 out. */
static int bridge(const char *mode, const char *name)
{
    const int t = quant_type_from_name(name);
    const quant_traits *tr = t >= 0 ? quant_get_traits((ds4_type)t) : NULL;
    const bool quant = strcmp(mode, "--quantize") == 0;
    if (!tr || !(quant ? (void *)tr->quant_row : (void *)tr->dequant_row)) {
        fprintf(stderr, "test_quant: no %s for type '%s'\n", mode + 2, name);
        return 2;
    }
    uint8_t *in;
    const size_t len = read_all(&in);
    const size_t unit = quant ? sizeof(float) * (size_t)tr->block_elems : tr->block_bytes;
    if (!in || len % unit != 0) {
        fprintf(stderr, "test_quant: input of %zu bytes is not whole blocks\n", len);
        return 2;
    }
    const int64_t n = (int64_t)(len / unit) * tr->block_elems;
    const size_t out_len = quant ? quant_row_bytes((ds4_type)t, n) : (size_t)n * sizeof(float);
    uint8_t *out = malloc(out_len ? out_len : 1);
    if (quant) {
        float *x = malloc(len ? len : 1); /* realign the f32 input */
        memcpy(x, in, len);
        tr->quant_row(x, out, n);
        free(x);
    } else {
        tr->dequant_row(in, (float *)out, n);
    }
    const int rc = fwrite(out, 1, out_len, stdout) == out_len ? 0 : 1;
    free(in);
    free(out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3)
        return bridge(argv[1], argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_quant [--quantize|--dequantize TYPE]\n");
        return 2;
    }
    const uint64_t seed = t_seed(0x5eed0001);
    test_round_trip(seed);
    test_extremes(seed);
    test_non_finite(seed);
    test_q8_k(seed);
    test_q8_0();
    return t_summary();
}
