/* test_matmul.c — threaded weight x activation products (src/kernels/cpu/matmul.c). For every
 * weight type with a dot kernel x n_tok in {1, 2, 3, 8, 17} x threads in {1, 2, 3}:
 * (a) cpu_matmul against a float64 reference (dequantized weights x quantized-then-
 * dequantized activations), error relative to sum |w x| per output; (b) bit-identical output
 * across thread counts and to the plain single-row kernel loop (the split never changes a
 * result). Then the variants: row ranges, expert slices, grouped input, token subsets,
 * several products in one dispatch, token tiling, parallel activation quantization, and the
 * argument errors. Usage: test_matmul [case-substring]; DS4_TEST_SEED reruns with a seed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/matmul.h"
#include "test_util.h"

/* (a) cpu_matmul vs float64: the kernel's integer block sums are exact; what remains is f32
 * rounding of block terms and of the running sum, the same bound as the dot tests
 * (DOT_REF_TOL in dot_test_common.h: (blocks + 2) * 2^-24 worst case, here <= 34 blocks). */
#define MM_REF_TOL 1e-5
/* (b) across thread counts, splits and against the kernel loop: the same kernel call on the
 * same bytes for every output element, so exactly equal */
#define MM_EXACT_TOL 0.0

#define NE0 1024  /* input width: 4 K-blocks, 32 Q8_0 blocks */
#define NE1 300   /* rows: enough weight bytes that 3 threads get pieces of every type */
#define MAX_TOK 17

static const char *filter;
static uint64_t seed;

static bool want(const char *name)
{
    return !filter || strstr(name, filter);
}

static const ds4_type wtypes[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K,
                                  DS4_TYPE_IQ2_XXS, DS4_TYPE_F16, DS4_TYPE_F32};
#define N_WTYPES (int)(sizeof wtypes / sizeof wtypes[0])

/* ---- data ------------------------------------------------------------------------------- */

/* Gaussian values with a per-256 block scale between 2^-4 and 2^4. */
static void gauss(t_rng *r, float *v, int64_t n)
{
    double s = 1.0;
    for (int64_t i = 0; i < n; i++) {
        if (i % 256 == 0)
            s = ldexp(1.0, (int)(t_next(r) % 9) - 4);
        v[i] = (float)(s * t_normal(r));
    }
}

/* A weight matrix of rows x ne0 of type t from Gaussian rows through the reference quantizer;
 * rows beyond 32 repeat earlier rows at shifted offsets (the IQ2 search is slow) but every
 * row differs. Returns malloc'd bytes. */
static uint8_t *gen_weights(ds4_type t, int64_t ne0, int64_t rows, t_rng *r)
{
    size_t rb = quant_row_bytes(t, ne0);
    uint8_t *w = malloc(rb * (size_t)rows);
    float *v = malloc((size_t)(ne0 + 32 * 256) * sizeof *v);
    gauss(r, v, ne0 + 32 * 256);
    for (int64_t i = 0; i < rows; i++)
        quant_get_traits(t)->quant_row(v + (i % 32) * 256 + (i / 32) % 7, w + (size_t)i * rb, ne0);
    free(v);
    return w;
}

/* Row r of a weight matrix, dequantized into double. */
static void deq_row(ds4_type t, const uint8_t *w, size_t rb, int64_t r, int64_t n, double *out)
{
    float *f = malloc((size_t)n * sizeof *f);
    quant_get_traits(t)->dequant_row(w + (size_t)r * rb, f, n);
    for (int64_t i = 0; i < n; i++)
        out[i] = f[i];
    free(f);
}

/* Reference of one product: y[t][r] = sum_i W[r][i] * xq[t][i] in double, where xq is x
 * quantized to the activation type and dequantized back. Also returns sum |w x| per output
 * in mag. */
static void reference(ds4_type t, const uint8_t *w, int64_t ne0, int64_t rows, const float *x,
                      int n_tok, int64_t ldx, double *y, double *mag)
{
    ds4_type xt = cpu_act_type(t);
    size_t xb = quant_row_bytes(xt, ne0), rb = quant_row_bytes(t, ne0);
    void *q = malloc(xb);
    float *xf = malloc((size_t)ne0 * sizeof *xf);
    double *xd = malloc((size_t)n_tok * (size_t)ne0 * sizeof *xd);
    double *wd = malloc((size_t)ne0 * sizeof *wd);
    for (int k = 0; k < n_tok; k++) {
        quant_get_traits(xt)->quant_row(x + k * ldx, q, ne0);
        quant_get_traits(xt)->dequant_row(q, xf, ne0);
        for (int64_t i = 0; i < ne0; i++)
            xd[k * ne0 + i] = xf[i];
    }
    for (int64_t r = 0; r < rows; r++) {
        deq_row(t, w, rb, r, ne0, wd);
        for (int k = 0; k < n_tok; k++) {
            double s = 0, m = 0;
            for (int64_t i = 0; i < ne0; i++) {
                s += wd[i] * xd[k * ne0 + i];
                m += fabs(wd[i] * xd[k * ne0 + i]);
            }
            y[k * rows + r] = s;
            mag[k * rows + r] = m;
        }
    }
    free(q);
    free(xf);
    free(xd);
    free(wd);
}

/* max over outputs of |y - ref| / sum|w x| (NaN-safe: a NaN gives +inf) */
static double rel_err(const float *y, const double *ref, const double *mag, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)y[i] - ref[i]) / (mag[i] > 0 ? mag[i] : 1);
        e = d == d ? fmax(e, d) : INFINITY;
    }
    return e;
}

/* The plain kernel loop: y[t][r] = dot(W row r, quantized x row t), one call each. */
static void kernel_loop(ds4_type t, const uint8_t *w, int64_t ne0, int64_t rows, const float *x,
                        int n_tok, float *y)
{
    ds4_type xt = cpu_act_type(t);
    size_t xb = quant_row_bytes(xt, ne0), rb = quant_row_bytes(t, ne0);
    void *q = malloc(xb);
    cpu_dot_fn dot = cpu_get_dot(t, cpu_matmul_isa());
    for (int k = 0; k < n_tok; k++) {
        quant_get_traits(xt)->quant_row(x + k * ne0, q, ne0);
        for (int64_t r = 0; r < rows; r++)
            y[k * rows + r] = dot(ne0, w + (size_t)r * rb, q);
    }
    free(q);
}

/* Number of outputs whose bits differ. */
static int64_t n_diff(const float *a, const float *b, int64_t n)
{
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++)
        d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

/* ---- (a) + (b): every type x n_tok x threads -------------------------------------------- */

static cpu_pool *pools[4]; /* pools[n] has n threads, n = 1..3 */

static void case_types(void)
{
    static const int toks[] = {1, 2, 3, 8, 17};
    for (int ti = 0; ti < N_WTYPES; ti++) {
        ds4_type t = wtypes[ti];
        const char *tn = quant_get_traits(t)->name;
        t_rng r = {seed ^ (uint64_t)t * 0x9e3779b97f4a7c15ull};
        uint8_t *w = gen_weights(t, NE0, NE1, &r);
        float *x = malloc((size_t)MAX_TOK * NE0 * sizeof *x);
        gauss(&r, x, (int64_t)MAX_TOK * NE0);
        float *y = malloc((size_t)MAX_TOK * NE1 * sizeof *y);
        float *y1 = malloc((size_t)MAX_TOK * NE1 * sizeof *y1);
        float *yk = malloc((size_t)MAX_TOK * NE1 * sizeof *yk);
        double *ref = malloc((size_t)MAX_TOK * NE1 * sizeof *ref);
        double *mag = malloc((size_t)MAX_TOK * NE1 * sizeof *mag);
        cpu_weight cw;
        cpu_weight_init(&cw, t, NE0, NE1, w, NULL);
        cpu_act scratch = {0};
        for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
            int nt = toks[k];
            char name[96];
            snprintf(name, sizeof name, "matmul %s %dx%d n_tok=%d", tn, NE1, NE0, nt);
            if (!want(name))
                continue;
            reference(t, w, NE0, NE1, x, nt, NE0, ref, mag);
            kernel_loop(t, w, NE0, NE1, x, nt, yk);
            for (int th = 1; th <= 3; th++) {
                memset(y, 0xff, (size_t)nt * NE1 * sizeof *y); /* NaN: unwritten shows */
                int rc = cpu_matmul(pools[th], &cw, x, nt, y, &scratch, NULL);
                double e = rel_err(y, ref, mag, (int64_t)nt * NE1);
                if (!t_case(rc == 0 && e <= MM_REF_TOL, e, MM_REF_TOL, "%s threads=%d vs f64", name,
                            th))
                    printf("#   rerun: DS4_TEST_SEED=%llu test_matmul '%s'\n",
                           (unsigned long long)seed, name);
                if (th == 1) {
                    memcpy(y1, y, (size_t)nt * NE1 * sizeof *y);
                    int64_t d = n_diff(y, yk, (int64_t)nt * NE1);
                    t_case(d == 0, (double)d, MM_EXACT_TOL,
                           "%s threads=1 == kernel loop (outputs differing)", name);
                } else {
                    int64_t d = n_diff(y, y1, (int64_t)nt * NE1);
                    t_case(d == 0, (double)d, MM_EXACT_TOL,
                           "%s threads=%d == threads=1 (outputs differing)", name, th);
                }
            }
        }
        cpu_act_free(&scratch);
        free(w);
        free(x);
        free(y);
        free(y1);
        free(yk);
        free(ref);
        free(mag);
    }
}

/* ---- variants ------------------------------------------------------------------------------ */

/* Kernel loop over rows [r0, r0+rows) of a matrix against activation rows tok[k] (or k),
 * elements x_off.. of x rows of width ldx: out[k * ldy + r]. */
static void kernel_loop_sub(ds4_type t, const uint8_t *w, int64_t ne0, int64_t r0, int64_t rows,
                            const float *x, int64_t ldx, int64_t x_off, const int32_t *tok,
                            int n_tok, float *out, int64_t ldy)
{
    ds4_type xt = cpu_act_type(t);
    size_t rb = quant_row_bytes(t, ne0);
    void *q = malloc(quant_row_bytes(xt, ne0));
    cpu_dot_fn dot = cpu_get_dot(t, cpu_matmul_isa());
    for (int k = 0; k < n_tok; k++) {
        quant_get_traits(xt)->quant_row(x + (tok ? tok[k] : k) * ldx + x_off, q, ne0);
        for (int64_t r = 0; r < rows; r++)
            out[k * ldy + r] = dot(ne0, w + (size_t)(r0 + r) * rb, q);
    }
    free(q);
}

static void case_slices(void)
{
    static const ds4_type ts[] = {DS4_TYPE_Q8_0, DS4_TYPE_IQ2_XXS, DS4_TYPE_F16};
    enum { ROWS = 100, NEXP = 3, NT = 6 };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        ds4_type t = ts[i];
        char name[96];
        snprintf(name, sizeof name, "slices %s", quant_get_traits(t)->name);
        if (!want(name))
            continue;
        t_rng r = {seed + 17 * (uint64_t)t};
        uint8_t *w = gen_weights(t, NE0, ROWS * NEXP, &r);
        float x[NT * NE0];
        gauss(&r, x, NT * NE0);
        cpu_weight all;
        cpu_weight_init(&all, t, NE0, ROWS, w, NULL); /* expert 0 of [NE0, ROWS, NEXP] */
        float y[NT * ROWS], yk[NT * ROWS];
        cpu_act a = {0};
        for (int th = 1; th <= 3; th += 2) {
            /* expert 1, then rows 17..66 of expert 2 */
            cpu_weight e1 = cpu_weight_expert(&all, 1);
            cpu_matmul(pools[th], &e1, x, NT, y, &a, NULL);
            kernel_loop_sub(t, w, NE0, ROWS, ROWS, x, NE0, 0, NULL, NT, yk, ROWS);
            int64_t d = n_diff(y, yk, NT * ROWS);
            t_case(d == 0, (double)d, MM_EXACT_TOL, "%s expert 1 threads=%d", name, th);
            cpu_weight e2 = cpu_weight_expert(&all, 2);
            cpu_weight sub = cpu_weight_rows(&e2, 17, 50);
            cpu_matmul(pools[th], &sub, x, NT, y, &a, NULL);
            kernel_loop_sub(t, w, NE0, 2 * ROWS + 17, 50, x, NE0, 0, NULL, NT, yk, 50);
            d = n_diff(y, yk, NT * 50);
            t_case(d == 0, (double)d, MM_EXACT_TOL, "%s expert 2 rows 17..66 threads=%d", name,
                   th);
            /* token subsets of the same activations, two experts in one dispatch */
            ds4_type xt = cpu_act_type(t);
            cpu_act xa = {0};
            cpu_act_quantize(pools[th], &xa, xt, x, NE0, NT, NE0, NULL);
            static const int32_t tok0[] = {2, 0, 5}, tok2[] = {1, 5};
            float ya[3 * ROWS], yb[2 * ROWS], ka[3 * ROWS], kb[2 * ROWS];
            cpu_mm mm[2] = {
                {cpu_weight_expert(&all, 0), &xa, 0, tok0, 3, ya, ROWS},
                {cpu_weight_expert(&all, 2), &xa, 0, tok2, 2, yb, ROWS},
            };
            cpu_matmul_many(pools[th], mm, 2);
            kernel_loop_sub(t, w, NE0, 0, ROWS, x, NE0, 0, tok0, 3, ka, ROWS);
            kernel_loop_sub(t, w, NE0, 2 * ROWS, ROWS, x, NE0, 0, tok2, 2, kb, ROWS);
            d = n_diff(ya, ka, 3 * ROWS) + n_diff(yb, kb, 2 * ROWS);
            t_case(d == 0, (double)d, MM_EXACT_TOL, "%s token subsets, 2 experts, threads=%d",
                   name, th);
            cpu_act_free(&xa);
        }
        cpu_act_free(&a);
        free(w);
    }
}

static void case_grouped(void)
{
    static const ds4_type ts[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_F32};
    enum { GNE0 = 512, NG = 8, GROWS = 48, NT = 3 };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        ds4_type t = ts[i];
        char name[96];
        snprintf(name, sizeof name, "grouped %s %d groups", quant_get_traits(t)->name, NG);
        if (!want(name))
            continue;
        t_rng r = {seed + 31 * (uint64_t)t};
        uint8_t *w = gen_weights(t, GNE0, NG * GROWS, &r);
        float *x = malloc(sizeof(float) * NT * NG * GNE0);
        gauss(&r, x, NT * NG * GNE0);
        cpu_weight cw;
        cpu_weight_init(&cw, t, GNE0, NG * GROWS, w, NULL);
        float y[NT * NG * GROWS], yk[NT * NG * GROWS];
        double ref[NT * GROWS], mag[NT * GROWS];
        /* each group against its own slice, quantized on its own */
        double err = 0;
        for (int g = 0; g < NG; g++) {
            kernel_loop_sub(t, w, GNE0, g * GROWS, GROWS, x, NG * GNE0, g * GNE0, NULL, NT,
                            yk + g * GROWS, NG * GROWS);
        }
        cpu_act a = {0};
        for (int th = 1; th <= 3; th++) {
            int rc = cpu_matmul_grouped(pools[th], &cw, NG, x, NT, y, &a, NULL);
            int64_t d = n_diff(y, yk, NT * NG * GROWS);
            t_case(rc == 0 && d == 0, (double)d, MM_EXACT_TOL,
                   "%s threads=%d == per-group kernel loop", name, th);
        }
        for (int g = 0; g < NG; g++) { /* f64 reference of group g */
            float xg[NT * GNE0], yg[NT * GROWS];
            for (int k = 0; k < NT; k++)
                memcpy(xg + k * GNE0, x + k * NG * GNE0 + g * GNE0, sizeof(float) * GNE0);
            reference(t, w + (size_t)g * GROWS * cw.row_bytes, GNE0, GROWS, xg, NT, GNE0, ref, mag);
            for (int k = 0; k < NT; k++)
                memcpy(yg + k * GROWS, y + k * NG * GROWS + g * GROWS, sizeof(float) * GROWS);
            err = fmax(err, rel_err(yg, ref, mag, NT * GROWS));
        }
        t_case(err <= MM_REF_TOL, err, MM_REF_TOL, "%s vs f64", name);
        cpu_act_free(&a);
        free(w);
        free(x);
    }
}

/* Enough tokens of a wide row that the activations are split into several L2 tiles. */
static void case_tiling(void)
{
    if (!want("tiling"))
        return;
    enum { TNE0 = 8192, TROWS = 64, NT = 70 };
    t_rng r = {seed + 99};
    uint8_t *w = gen_weights(DS4_TYPE_Q8_0, TNE0, TROWS, &r);
    float *x = malloc(sizeof(float) * NT * TNE0);
    gauss(&r, x, NT * TNE0);
    float *y = malloc(sizeof(float) * NT * TROWS), *yk = malloc(sizeof(float) * NT * TROWS);
    cpu_weight cw;
    cpu_weight_init(&cw, DS4_TYPE_Q8_0, TNE0, TROWS, w, NULL);
    kernel_loop(DS4_TYPE_Q8_0, w, TNE0, TROWS, x, NT, yk);
    cpu_act a = {0};
    for (int th = 1; th <= 3; th += 2) {
        cpu_matmul(pools[th], &cw, x, NT, y, &a, NULL);
        int64_t d = n_diff(y, yk, NT * TROWS);
        t_case(d == 0, (double)d, MM_EXACT_TOL,
               "tiling q8_0 %dx%d n_tok=%d threads=%d == kernel loop", TROWS, TNE0, NT, th);
    }
    cpu_act_free(&a);
    free(w);
    free(x);
    free(y);
    free(yk);
}

/* Parallel activation quantization == the reference quantizer row by row. */
static void case_quantize(void)
{
    static const ds4_type xts[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q8_K, DS4_TYPE_F32};
    static const int64_t ns[] = {256, 4096, 12288 + 256};
    for (size_t i = 0; i < sizeof xts / sizeof xts[0]; i++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            ds4_type xt = xts[i];
            int64_t n = ns[k];
            char name[96];
            snprintf(name, sizeof name, "act quantize %s n=%lld n_tok=5",
                     quant_get_traits(xt)->name, (long long)n);
            if (!want(name))
                continue;
            t_rng r = {seed + (uint64_t)n};
            float *x = malloc(sizeof(float) * 5 * (size_t)(n + 3));
            gauss(&r, x, 5 * (n + 3));
            size_t rb = quant_row_bytes(xt, n);
            uint8_t *q = malloc(rb);
            cpu_act a = {0};
            int bad = 0;
            for (int th = 1; th <= 3; th++) {
                bad |= cpu_act_quantize(pools[th], &a, xt, x, n, 5, n + 3, NULL) != 0;
                for (int t = 0; t < 5 && !bad; t++) {
                    quant_get_traits(xt)->quant_row(x + t * (n + 3), q, n);
                    bad |= memcmp((uint8_t *)a.data + (size_t)t * a.stride, q, rb) != 0;
                }
                bad |= a.stride % 64 != 0 || a.n_tok != 5 || a.n != n || a.type != xt;
            }
            t_check(!bad, "%s, 1-3 threads == reference quantizer", name);
            cpu_act_free(&a);
            free(x);
            free(q);
        }
}

static void case_errors(void)
{
    if (!want("errors"))
        return;
    cpu_weight w;
    ds4_error err;
    static const uint8_t buf[4096];
    t_check(cpu_weight_init(&w, DS4_TYPE_BF16, 256, 4, buf, &err) == DS4_E_TYPE,
            "bf16 weights -> DS4_E_TYPE (no CPU dot kernel)");
    t_check(cpu_weight_init(&w, DS4_TYPE_Q4_K, 100, 4, buf, &err) == DS4_E_RANGE,
            "q4_K rows of 100 -> DS4_E_RANGE");
    t_check(cpu_weight_init(&w, DS4_TYPE_Q8_0, 64, 6, buf, &err) == 0 && w.row_bytes == 68,
            "q8_0 64 -> row_bytes 68");
    float x[64] = {0}, y[6];
    t_check(cpu_matmul_grouped(NULL, &w, 4, x, 1, y, NULL, &err) == DS4_E_ARG,
            "grouped: 6 rows in 4 groups -> DS4_E_ARG");
    cpu_act a = {0};
    t_check(cpu_act_quantize(NULL, &a, DS4_TYPE_Q2_K, x, 64, 1, 64, &err) == DS4_E_ARG,
            "quantize to q2_K -> DS4_E_ARG");
    t_check(cpu_act_quantize(NULL, &a, DS4_TYPE_Q8_K, x, 64, 1, 64, &err) == DS4_E_ARG,
            "quantize 64 to q8_K -> DS4_E_ARG");
    t_check(cpu_act_type(DS4_TYPE_IQ2_XXS) == DS4_TYPE_Q8_K &&
                cpu_act_type(DS4_TYPE_Q8_0) == DS4_TYPE_Q8_0 &&
                cpu_act_type(DS4_TYPE_F16) == DS4_TYPE_F32 &&
                cpu_act_type(DS4_TYPE_BF16) == DS4_TYPE_NONE,
            "activation types");
    memset(y, 0x7f, sizeof y);
    t_check(cpu_matmul(pools[3], &w, x, 0, y, &a, &err) == 0 && y[0] != 0,
            "n_tok=0 writes nothing");
    cpu_matmul_many(pools[3], NULL, 0);
    cpu_act_free(&a);
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    seed = t_seed(0x6d61746d756cull);
    printf("# kernels: %s\n", cpu_isa_name(cpu_matmul_isa()));
    for (int n = 1; n <= 3; n++)
        if (cpu_pool_new(&pools[n], n, NULL) != 0) {
            t_check(false, "pool of %d threads", n);
            return t_summary();
        }
    case_types();
    case_slices();
    case_grouped();
    case_tiling();
    case_quantize();
    case_errors();
    for (int n = 1; n <= 3; n++)
        cpu_pool_free(pools[n]);
    return t_summary();
}
