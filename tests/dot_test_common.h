/* dot_test_common.h — the shared body of the tests/test_*_dot.c programs: valid random rows
 * of one weight type and its activation type, and the two independent checks of every
 * length x data pattern: (a) the _ref kernel against a float64 sum over the reference
 * dequantizers of both rows, (b) every other variant (and the paired kernel where one exists)
 * against _ref. Errors are relative to sum|w_i x_i| in float64. Each (length, pattern) group
 * has its own seed, so `test_x_dot '<case name>'` reruns one case alone on the same data.
 * Header-only; each program includes it once and calls dot_test_main. */
#ifndef DS4_DOT_TEST_COMMON_H
#define DS4_DOT_TEST_COMMON_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_dot.h"
#include "quant/quant.h"
#include "test_util.h"

/* (a) _ref vs float64 of the dequantized rows. _ref's integer sums are exact; what remains
 * is f32 rounding: two per block term and one per accumulation step (worst case
 * (blocks + 2) * 2^-24 = 7.7e-6 for 128 blocks, all of one sign), plus one per dequantized
 * weight. f16/f32 rows have random signs, so their sequential error stays near 2^-24.
 * Measured <= 8.6e-7 (iq2_xxs extreme, one sign); a lost block or wrong scale is >= 5e-4. */
#define DOT_REF_TOL 1e-5
/* (b) a SIMD variant vs _ref: the same integer sums, only the f32 additions reassociated
 * (lanes, several accumulators, FMA); its own error is below _ref's, so the same bound holds.
 * Measured <= 1.2e-6. */
#define DOT_SIMD_TOL 1e-5
/* paired kernel vs the single-row kernel of the same variant: same operations, same order */
#define DOT_PAIR_TOL 0.0
/* four-token kernel vs the single-row kernel of the same variant, each of the four: the same
 * operations per row (batched products must not change a bit) */
#define DOT_QUAD_TOL 0.0

#define DOT_TRIALS 6 /* rows per case; the reported error is the worst one */

typedef enum { PAT_RANDOM, PAT_GAUSS, PAT_EXTREME, PAT_COUNT } dot_pattern;
static const char *const dot_pattern_names[PAT_COUNT] = {"random", "gauss", "extreme"};

static const char *dot_prog;   /* argv[0], for the rerun command */
static const char *dot_filter; /* argv[1]: run only cases whose name contains it */
static uint64_t dot_seed;

static uint64_t dot_mix(uint64_t a, uint64_t b)
{
    t_rng r = {a ^ (b * 0x9e3779b97f4a7c15ull)};
    return t_next(&r);
}

static int dot_rand_int(t_rng *r, int lo, int hi) /* uniform in [lo, hi] */
{
    return lo + (int)(t_next(r) % (uint64_t)(hi - lo + 1));
}

/* A sane f16 scale: magnitude in [2^-10, 2^-3], random sign if sign_ok. */
static quant_f16 dot_rand_scale(t_rng *r, int sign_ok)
{
    double v = ldexp(1.0 + t_uniform(r), -dot_rand_int(r, 3, 10));
    if (sign_ok && (t_next(r) & 1))
        v = -v;
    return quant_f32_to_f16((float)v);
}

static void dot_rand_bytes(t_rng *r, void *dst, size_t n)
{
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)t_next(r);
}

/* n Gaussian values, some blocks scaled up or down so per-block scales vary. */
static void dot_gauss(t_rng *r, float *v, int64_t n)
{
    double scale = 1.0;
    for (int64_t i = 0; i < n; i++) {
        if (i % 256 == 0)
            scale = ldexp(1.0, dot_rand_int(r, -4, 4));
        v[i] = (float)(scale * t_normal(r));
    }
}

/* A weight row of type t (n elements) following pattern p. */
static void dot_gen_weights(ds4_type t, int64_t n, dot_pattern p, t_rng *r, void *dst)
{
    const quant_traits *tr = quant_get_traits(t);
    size_t bytes = quant_row_bytes(t, n);
    if (p == PAT_GAUSS) {
        float *v = malloc((size_t)n * sizeof *v);
        dot_gauss(r, v, n);
        tr->quant_row(v, dst, n);
        free(v);
        return;
    }
    int64_t nb = n / tr->block_elems;
    if (p == PAT_EXTREME) { /* every code at its largest magnitude, unit scales */
        memset(dst, t == DS4_TYPE_Q8_0 ? 0x80 : 0xff, bytes);
        quant_f16 one = quant_f32_to_f16(1.0f);
        for (int64_t b = 0; b < nb; b++) {
            switch (t) {
            case DS4_TYPE_Q8_0: ((quant_block_q8_0 *)dst)[b].d = one; break;
            case DS4_TYPE_Q2_K:
                ((quant_block_q2_k *)dst)[b].d = one;
                ((quant_block_q2_k *)dst)[b].dmin = one;
                break;
            case DS4_TYPE_Q4_K:
                ((quant_block_q4_k *)dst)[b].d = one;
                ((quant_block_q4_k *)dst)[b].dmin = one;
                break;
            case DS4_TYPE_IQ2_XXS: ((quant_block_iq2_xxs *)dst)[b].d = one; break;
            case DS4_TYPE_F16:
                ((quant_f16 *)dst)[b] = quant_f32_to_f16(b & 1 ? -65504.0f : 65504.0f);
                break;
            case DS4_TYPE_F32: ((float *)dst)[b] = b & 1 ? -1e30f : 1e30f; break;
            default: break;
            }
        }
        return;
    }
    /* PAT_RANDOM: random bytes everywhere, then sane scales (or finite floats) */
    dot_rand_bytes(r, dst, bytes);
    for (int64_t b = 0; b < nb; b++) {
        switch (t) {
        case DS4_TYPE_Q8_0: ((quant_block_q8_0 *)dst)[b].d = dot_rand_scale(r, 1); break;
        case DS4_TYPE_Q2_K:
            ((quant_block_q2_k *)dst)[b].d = dot_rand_scale(r, 0);
            ((quant_block_q2_k *)dst)[b].dmin = dot_rand_scale(r, 0);
            break;
        case DS4_TYPE_Q4_K:
            ((quant_block_q4_k *)dst)[b].d = dot_rand_scale(r, 0);
            ((quant_block_q4_k *)dst)[b].dmin = dot_rand_scale(r, 0);
            break;
        case DS4_TYPE_IQ2_XXS: ((quant_block_iq2_xxs *)dst)[b].d = dot_rand_scale(r, 1); break;
        case DS4_TYPE_F16: { /* any finite f16: subnormals to 65504 */
            quant_f16 *h = (quant_f16 *)dst + b;
            if (((*h >> 10) & 31) == 31)
                *h &= (quant_f16)~0x4000u;
            break;
        }
        case DS4_TYPE_F32: /* random bits, exponent kept within 2^+-20 */
            ((float *)dst)[b] = (float)ldexp(t_uniform(r) * 2 - 1, dot_rand_int(r, -20, 20));
            break;
        default: break;
        }
    }
}

/* An activation of type xt (n elements) following pattern p; int8 codes in [-127, 127]. */
static void dot_gen_act(ds4_type xt, int64_t n, dot_pattern p, t_rng *r, void *dst)
{
    if (p == PAT_GAUSS || xt == DS4_TYPE_F32) {
        float *v = xt == DS4_TYPE_F32 ? dst : malloc((size_t)n * sizeof *v);
        dot_gauss(r, v, n);
        if (p == PAT_EXTREME)
            for (int64_t i = 0; i < n; i++)
                v[i] = i & 2 ? -1.0f : 1.0f;
        if (xt != DS4_TYPE_F32) {
            quant_get_traits(xt)->quant_row(v, dst, n);
            free(v);
        }
        return;
    }
    if (xt == DS4_TYPE_Q8_0) {
        quant_block_q8_0 *b = dst;
        for (int64_t i = 0; i < n / QUANT_QK8_0; i++) {
            b[i].d = p == PAT_EXTREME ? quant_f32_to_f16(1.0f) : dot_rand_scale(r, 0);
            for (int j = 0; j < QUANT_QK8_0; j++)
                b[i].qs[j] = (int8_t)(p == PAT_EXTREME ? -127 : dot_rand_int(r, -127, 127));
        }
        return;
    }
    quant_block_q8_k *b = dst; /* Q8_K, with consistent bsums */
    for (int64_t i = 0; i < n / QUANT_QK_K; i++) {
        b[i].d = p == PAT_EXTREME ? 1.0f
                                  : (float)ldexp(1.0 + t_uniform(r), -dot_rand_int(r, 5, 12));
        for (int j = 0; j < QUANT_QK_K; j++)
            b[i].qs[j] = (int8_t)(p == PAT_EXTREME ? 127 : dot_rand_int(r, -127, 127));
        for (int g = 0; g < QUANT_QK_K / 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += b[i].qs[16 * g + j];
            b[i].bsums[g] = (int16_t)s;
        }
    }
}

/* float64 sum of w*x and of |w*x| over the reference dequantizations of both rows. */
static void dot_exact(ds4_type wt, ds4_type xt, int64_t n, const void *w, const void *x,
                      double *sum, double *sum_abs)
{
    float *fw = malloc((size_t)n * sizeof *fw);
    float *fx = malloc((size_t)n * sizeof *fx);
    quant_get_traits(wt)->dequant_row(w, fw, n);
    quant_get_traits(xt)->dequant_row(x, fx, n);
    double s = 0, a = 0;
    for (int64_t i = 0; i < n; i++) {
        double p = (double)fw[i] * (double)fx[i];
        s += p;
        a += fabs(p);
    }
    free(fw);
    free(fx);
    *sum = s;
    *sum_abs = a;
}

static int dot_selected(const char *name)
{
    return !dot_filter || strstr(name, dot_filter) != NULL;
}

/* Reports one case; a failure prints the command that reruns it alone. */
static void dot_report(double err, double tol, const char *name)
{
    if (!t_case(err <= tol, err, tol, "%s", name))
        printf("      rerun: DS4_TEST_SEED=%llu %s '%s'\n", (unsigned long long)dot_seed,
               dot_prog, name);
}

/* Relative error of got against want, scaled by sum|w x| (0 when both are 0). */
static double dot_rel(double got, double want, double sum_abs)
{
    double d = fabs(got - want);
    if (d == 0)
        return 0;
    if (!(d == d)) /* NaN */
        return INFINITY;
    return d / (sum_abs > 0 ? sum_abs : 1e-300);
}

/* Runs every case of one weight type at one length and pattern. */
static void dot_test_group(ds4_type wt, int64_t n, dot_pattern p)
{
    int nk;
    const cpu_dot_kernel *all = cpu_dot_kernels(&nk);
    const cpu_dot_kernel *ref = cpu_find_dot(wt, CPU_ISA_REF);
    ds4_type xt = ref->xtype;
    const char *pn = dot_pattern_names[p];
    char name[CPU_ISA_COUNT * 3 + 1][160];
    int nn = 0;
    snprintf(name[nn++], sizeof name[0], "%s ref vs f64 n=%lld %s", ref->name, (long long)n, pn);
    for (int k = 0; k < nk; k++) {
        if (all[k].wtype != wt || all[k].isa == CPU_ISA_REF)
            continue;
        snprintf(name[nn++], sizeof name[0], "%s %s vs ref n=%lld %s", ref->name,
                 cpu_isa_name(all[k].isa), (long long)n, pn);
    }
    for (int k = 0; k < nk; k++)
        if (all[k].wtype == wt && all[k].dot2)
            snprintf(name[nn++], sizeof name[0], "%s dot2 %s vs dot n=%lld %s", ref->name,
                     cpu_isa_name(all[k].isa), (long long)n, pn);
    bool has_dot4 = false;
    for (int k = 0; k < nk; k++)
        if (all[k].wtype == wt && all[k].dot4) {
            has_dot4 = true;
            snprintf(name[nn++], sizeof name[0], "%s dot4 %s vs dot n=%lld %s", ref->name,
                     cpu_isa_name(all[k].isa), (long long)n, pn);
        }
    int any = 0;
    for (int i = 0; i < nn; i++)
        any |= dot_selected(name[i]);
    if (!any)
        return;

    t_rng rng = {dot_mix(dot_mix(dot_seed, (uint64_t)wt), dot_mix((uint64_t)n, (uint64_t)p))};
    size_t wbytes = quant_row_bytes(wt, n), xbytes = quant_row_bytes(xt, n);
    /* exact sizes, separate buffers: under ASan a kernel reading past its row fails */
    void *w0 = malloc(wbytes), *w1 = malloc(wbytes), *x = malloc(xbytes);
    void *xq[4] = {x, malloc(xbytes), malloc(xbytes), malloc(xbytes)}; /* dot4's rows */
    double err_ref = 0, err_var[CPU_ISA_COUNT] = {0}, err_pair[CPU_ISA_COUNT] = {0};
    double err_quad[CPU_ISA_COUNT] = {0};
    for (int trial = 0; trial < DOT_TRIALS; trial++) {
        dot_gen_weights(wt, n, p, &rng, w0);
        dot_gen_weights(wt, n, p, &rng, w1);
        dot_gen_act(xt, n, p, &rng, x);
        for (int j = 1; has_dot4 && j < 4; j++) /* drawn last: the other cases keep their data */
            dot_gen_act(xt, n, p, &rng, xq[j]);
        double exact, sabs, exact1, sabs1;
        dot_exact(wt, xt, n, w0, x, &exact, &sabs);
        dot_exact(wt, xt, n, w1, x, &exact1, &sabs1);
        float r = ref->dot(n, w0, x);
        err_ref = fmax(err_ref, dot_rel(r, exact, sabs));
        for (int k = 0; k < nk; k++) {
            const cpu_dot_kernel *kk = &all[k];
            if (kk->wtype != wt || !cpu_isa_supported(kk->isa))
                continue;
            float v0 = kk->dot(n, w0, x);
            if (kk->isa != CPU_ISA_REF)
                err_var[kk->isa] = fmax(err_var[kk->isa], dot_rel(v0, r, sabs));
            if (kk->dot2) {
                float out[2], v1 = kk->dot(n, w1, x);
                kk->dot2(n, w0, w1, x, out);
                double e = fmax(dot_rel(out[0], v0, sabs), dot_rel(out[1], v1, sabs1));
                err_pair[kk->isa] = fmax(err_pair[kk->isa], e);
            }
            if (kk->dot4) {
                float out[4];
                kk->dot4(n, w0, (const void *const *)xq, out);
                for (int j = 0; j < 4; j++) {
                    double ej, sj;
                    dot_exact(wt, xt, n, w0, xq[j], &ej, &sj);
                    err_quad[kk->isa] = fmax(err_quad[kk->isa],
                                             dot_rel(out[j], kk->dot(n, w0, xq[j]), sj));
                }
            }
        }
    }
    nn = 0;
    if (dot_selected(name[nn]))
        dot_report(err_ref, DOT_REF_TOL, name[nn]);
    nn++;
    for (int k = 0; k < nk; k++) {
        if (all[k].wtype != wt || all[k].isa == CPU_ISA_REF)
            continue;
        if (dot_selected(name[nn])) {
            if (cpu_isa_supported(all[k].isa))
                dot_report(err_var[all[k].isa], DOT_SIMD_TOL, name[nn]);
            else
                t_skip("this CPU lacks the ISA", "%s", name[nn]);
        }
        nn++;
    }
    for (int k = 0; k < nk; k++) {
        if (all[k].wtype != wt || !all[k].dot2)
            continue;
        if (dot_selected(name[nn])) {
            if (cpu_isa_supported(all[k].isa))
                dot_report(err_pair[all[k].isa], DOT_PAIR_TOL, name[nn]);
            else
                t_skip("this CPU lacks the ISA", "%s", name[nn]);
        }
        nn++;
    }
    for (int k = 0; k < nk; k++) {
        if (all[k].wtype != wt || !all[k].dot4)
            continue;
        if (dot_selected(name[nn])) {
            if (cpu_isa_supported(all[k].isa))
                dot_report(err_quad[all[k].isa], DOT_QUAD_TOL, name[nn]);
            else
                t_skip("this CPU lacks the ISA", "%s", name[nn]);
        }
        nn++;
    }
    free(w0);
    free(w1);
    for (int j = 0; j < 4; j++)
        free(xq[j]);
}

/* The whole program: every length x pattern for one weight type. */
static int dot_test_main(int argc, char **argv, ds4_type wt, const int64_t *lens, int nlens,
                         uint64_t default_seed)
{
    dot_prog = argv[0];
    dot_filter = argc > 1 ? argv[1] : NULL;
    dot_seed = t_seed(default_seed);
    printf("# best ISA on this CPU: %s\n", cpu_isa_name(cpu_best_isa()));
    for (int i = 0; i < nlens; i++)
        for (int p = 0; p < PAT_COUNT; p++)
            dot_test_group(wt, lens[i], (dot_pattern)p);
    return t_summary();
}

#endif
