/* test_sample.c — the sampler (src/sample/sample.c, ds4-architecture.md §6.1): greedy at
 * temperature 0 (ties, NaN), the xorshift64* generator against hand-computed values, the
 * same tokens for the same seed, empirical frequencies against the softmax at several
 * temperatures, and the support that min_p, top_k and top_p leave. */
#include <math.h>
#include <string.h>

#include "sample/sample.h"
#include "test_util.h"

#define DRAWS 200000
#define FREQ_TOL 0.006 /* ~5 sigma of a frequency estimated from DRAWS draws */

static sampler *make(uint32_t n, sample_params p, uint64_t seed)
{
    sampler *s = NULL;
    ds4_error err;
    if (sample_new(&s, n, &p, seed, &err))
        printf("# sample_new: %s\n", err.msg);
    return s;
}

/* Max |empirical - expected| over tokens; counts[n] from DRAWS draws. */
static double freq_error(sampler *s, const float *logits, uint32_t n, const double *want,
                         int *seen)
{
    long *count = calloc(n, sizeof *count);
    for (int i = 0; i < DRAWS; i++)
        count[sample_next(s, logits)]++;
    double worst = 0;
    for (uint32_t i = 0; i < n; i++) {
        double d = fabs((double)count[i] / DRAWS - want[i]);
        worst = d > worst ? d : worst;
        if (seen)
            seen[i] = count[i] > 0;
    }
    free(count);
    return worst;
}

static void softmax(const float *l, uint32_t n, double t, double *p)
{
    double m = -INFINITY, z = 0;
    for (uint32_t i = 0; i < n; i++)
        m = l[i] > m ? l[i] : m;
    for (uint32_t i = 0; i < n; i++)
        z += p[i] = exp((l[i] - m) / t);
    for (uint32_t i = 0; i < n; i++)
        p[i] /= z;
}

int main(void)
{
    ds4_error err;
    /* greedy */
    float l1[] = {0.5f, 2.0f, NAN, 2.0f, -1.0f};
    sampler *g = make(5, (sample_params){0.0f, 1.0f, 0.05f, 0}, 1);
    t_check(sample_next(g, l1) == 1, "temperature 0: argmax, lowest id on ties, NaN ignored");
    float lnan[] = {NAN, NAN};
    t_check(sample_argmax(lnan, 2) == 0, "argmax of all-NaN logits is 0");
    sample_free(g);

    /* the generator: xorshift64* from a known state (values computed independently) */
    sample_rng r = {1};
    uint64_t a = sample_rng_next(&r), b = sample_rng_next(&r);
    t_check(a == 0x47E4CE4B896CDD1Dull && b == 0xABCFA6A8E079651Dull,
            "xorshift64* sequence from state 1 (%016llx %016llx)", (unsigned long long)a,
            (unsigned long long)b);
    sample_rng_seed(&r, 42);
    double mean = 0, lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        float u = sample_rng_uniform(&r);
        mean += u / 100000.0;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        if (u * 16777216.0f != floorf(u * 16777216.0f)) {
            lo = -1;
            break;
        }
    }
    t_case(fabs(mean - 0.5) < 0.005 && lo >= 0 && hi < 1, fabs(mean - 0.5), 0.005,
           "uniforms: 24-bit values in [0, 1), mean 0.5");

    /* determinism */
    enum { NV = 1000 };
    float *big = malloc(NV * sizeof *big);
    t_rng tr = {t_seed(11)};
    for (int i = 0; i < NV; i++)
        big[i] = (float)(3.0 * t_normal(&tr));
    sample_params dp = SAMPLE_PARAMS_DEFAULT;
    sampler *s1 = make(NV, dp, 1234), *s2 = make(NV, dp, 1234), *s3 = make(NV, dp, 1235);
    int same = 1, differ = 0;
    for (int i = 0; i < 500; i++) {
        int32_t x = sample_next(s1, big), y = sample_next(s2, big), z = sample_next(s3, big);
        same &= x == y;
        differ |= x != z;
    }
    t_check(same && differ, "same seed -> same tokens; another seed -> others");
    sample_free(s1);
    sample_free(s2);
    sample_free(s3);

    /* frequencies = softmax(l / T) with no truncation */
    float l2[] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -3.0f};
    double want[6];
    const double temps[] = {1.0, 0.5, 2.0};
    for (int k = 0; k < 3; k++) {
        softmax(l2, 6, temps[k], want);
        sampler *s = make(6, (sample_params){(float)temps[k], 1.0f, 0.0f, 0}, 5 + k);
        double e = freq_error(s, l2, 6, want, NULL);
        t_case(e < FREQ_TOL, e, FREQ_TOL, "frequencies = softmax at temperature %.1f", temps[k]);
        sample_free(s);
    }

    /* min_p: tokens below min_p x top never drawn; the rest renormalised */
    float l3[] = {0.0f, logf(0.5f), logf(0.2f), logf(0.04f)}; /* relative p 1, .5, .2, .04 */
    double w3[4] = {1 / 1.7, 0.5 / 1.7, 0.2 / 1.7, 0};
    int seen[4];
    sampler *sm = make(4, (sample_params){1.0f, 1.0f, 0.05f, 0}, 9);
    double e3 = freq_error(sm, l3, 4, w3, seen);
    t_case(e3 < FREQ_TOL && !seen[3], e3, FREQ_TOL, "min_p 0.05 drops p/p_max = 0.04");
    sample_free(sm);

    /* top_k */
    sampler *sk = make(4, (sample_params){1.0f, 1.0f, 0.0f, 2}, 10);
    double w4[4] = {1 / 1.5, 0.5 / 1.5, 0, 0};
    double e4 = freq_error(sk, l3, 4, w4, seen);
    t_case(e4 < FREQ_TOL && !seen[2] && !seen[3], e4, FREQ_TOL, "top_k 2 keeps the two best");
    sample_free(sk);

    /* top_p: masses .5 .3 .15 .05; 0.79 keeps two (the token reaching the mass is kept) */
    float l5[] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    sampler *sp = make(4, (sample_params){1.0f, 0.79f, 0.0f, 0}, 11);
    double w5[4] = {0, 0.5 / 0.8, 0, 0.3 / 0.8}; /* renormalised over the two */
    double e5 = freq_error(sp, l5, 4, w5, seen);
    t_case(e5 < FREQ_TOL && !seen[0] && !seen[2], e5, FREQ_TOL, "top_p 0.79 keeps .5 and .3");
    sample_free(sp);
    sp = make(4, (sample_params){1.0f, 0.81f, 0.0f, 0}, 12);
    double w6[4] = {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95};
    double e6 = freq_error(sp, l5, 4, w6, seen);
    t_case(e6 < FREQ_TOL && seen[0] && !seen[2], e6, FREQ_TOL, "top_p 0.81 keeps three");
    sample_free(sp);

    /* bad parameters */
    const sample_params bad[] = {{NAN, 1, 0, 0}, {1, 0, 0, 0}, {1, 1.5f, 0, 0},
                                 {1, 1, -0.1f, 0}, {1, 1, 2, 0}, {1, 1, 0, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sampler *s = NULL;
        int rc = sample_new(&s, 4, &bad[i], 1, &err);
        t_check(rc == DS4_E_ARG && s == NULL, "bad parameters %zu rejected (%s)", i,
                rc ? err.msg : "accepted");
    }
    sampler *s0 = NULL;
    t_check(sample_new(&s0, 0, &dp, 1, &err) == DS4_E_ARG, "empty vocabulary rejected");
    free(big);
    return t_summary();
}
