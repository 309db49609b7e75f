/* sample.c — the token sampler of ds4-architecture.md §6.1. p_i = exp((l_i - max) / T), so
 * the top token has p = 1. With top_p = 1 and no top_k: keep p_i >= min_p and draw in id
 * order. Otherwise: keep p_i >= min_p, sort by p (descending, ids ascending on ties), cut to
 * top_k, then stop after the token that brings the normalised mass to top_p, and draw in that
 * order. One 24-bit uniform per draw. Owns no model state (sample.h). */
#include <math.h>
#include <stdlib.h>

#include "sample/sample.h"

typedef struct cand {
    float p;
    int32_t id;
} cand;

struct sampler {
    sample_params p;
    sample_rng rng;
    uint32_t n_vocab;
    cand *c;  /* [n_vocab] */
};

int sample_params_check(const sample_params *p, ds4_error *err)
{
    if (isnan(p->temp))
        return ds4_error_set(err, DS4_E_ARG, "temperature is not a number");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ds4_error_set(err, DS4_E_ARG, "top_p %g is outside (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return ds4_error_set(err, DS4_E_ARG, "min_p %g is outside [0, 1]", (double)p->min_p);
    if (p->top_k < 0)
        return ds4_error_set(err, DS4_E_ARG, "top_k %d is negative", (int)p->top_k);
    return 0;
}

void sample_rng_seed(sample_rng *r, uint64_t seed)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull; /* splitmix64 step: never a zero state */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t sample_rng_next(sample_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float sample_rng_uniform(sample_rng *r)
{
    return (float)(sample_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

int sample_new(sampler **out, uint32_t n_vocab, const sample_params *p, uint64_t seed,
               ds4_error *err)
{
    *out = NULL;
    int rc = sample_params_check(p, err);
    if (rc)
        return rc;
    if (n_vocab == 0)
        return ds4_error_set(err, DS4_E_ARG, "sampler: empty vocabulary");
    sampler *s = calloc(1, sizeof *s);
    cand *c = malloc((size_t)n_vocab * sizeof *c);
    if (!s || !c) {
        free(s);
        free(c);
        return ds4_error_set(err, DS4_E_NOMEM, "sampler: out of memory");
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = c;
    sample_rng_seed(&s->rng, seed);
    *out = s;
    return 0;
}

void sample_free(sampler *s)
{
    if (s) {
        free(s->c);
        free(s);
    }
}

int32_t sample_argmax(const float *logits, uint32_t n)
{
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (!isnan(logits[i]) && (best < 0 || logits[i] > logits[best]))
            best = (int32_t)i;
    return best < 0 ? 0 : best;
}

static int by_p_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Draws one of c[0..n) with weights p (n >= 1). */
static int32_t draw(sampler *s, const cand *c, size_t n)
{
    double total = 0;
    for (size_t i = 0; i < n; i++)
        total += c[i].p;
    double r = (double)sample_rng_uniform(&s->rng) * total, acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += c[i].p;
        if (r < acc)
            return c[i].id;
    }
    return c[n - 1].id;
}

int32_t sample_next(sampler *s, const float *logits)
{
    const sample_params *p = &s->p;
    int32_t top = sample_argmax(logits, s->n_vocab);
    float max = logits[top];
    if (p->temp <= 0.0f || isnan(max) || max == -INFINITY)
        return top;
    const float inv_t = 1.0f / p->temp;
    double z = 0;
    size_t n = 0;
    for (uint32_t i = 0; i < s->n_vocab; i++) {
        float l = logits[i];
        if (isnan(l))
            continue;
        float e = expf((l - max) * inv_t);
        z += e;
        if (e >= p->min_p && e > 0.0f)
            s->c[n++] = (cand){e, (int32_t)i};
    }
    if (n == 0)  /* min_p above 1 cannot happen (checked); keep the top token */
        return top;
    if (p->top_p >= 1.0f && p->top_k == 0)
        return draw(s, s->c, n);
    qsort(s->c, n, sizeof *s->c, by_p_desc);
    if (p->top_k > 0 && (size_t)p->top_k < n)
        n = (size_t)p->top_k;
    if (p->top_p < 1.0f) {
        double cum = 0;
        size_t k = 0;
        while (k < n) {
            cum += s->c[k++].p / z;
            if (cum >= p->top_p)
                break;
        }
        n = k;
    }
    return draw(s, s->c, n);
}
