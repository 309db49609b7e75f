/* sample.h — choosing the next token from logits (ds4-architecture.md §6.1): temperature,
 * top_k, top_p, min_p, greedy at temperature <= 0, and the xorshift64* generator with 24-bit
 * uniforms, so a given seed always gives the same tokens. Owns no model state.
 * Invariant: the result depends only on the logits, the parameters and the generator state. */
#ifndef DS4_SAMPLE_H
#define DS4_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "ds4.h"

typedef struct sample_params {
    float temp;    /* <= 0: greedy (argmax, lowest id on ties) */
    float top_p;   /* (0, 1]: keep the smallest head of the sorted distribution whose mass
                      reaches top_p; 1 disables */
    float min_p;   /* [0, 1]: drop tokens whose probability is below min_p x the top one */
    int32_t top_k; /* >= 0: keep at most the top_k most likely tokens; 0 disables */
} sample_params;

/* The §6.1 defaults: temperature 1, top_p 1, min_p 0.05, top_k off. */
#define SAMPLE_PARAMS_DEFAULT ((sample_params){1.0f, 1.0f, 0.05f, 0})

/* 0 if p is usable, else DS4_E_ARG naming the bad field (NaN, top_p outside (0, 1], min_p
 * outside [0, 1], top_k < 0). */
int sample_params_check(const sample_params *p, ds4_error *err);

/* xorshift64*: x ^= x >> 12; x ^= x << 25; x ^= x >> 27; output x * 0x2545F4914F6CDD1D. */
typedef struct sample_rng {
    uint64_t s;
} sample_rng;

void sample_rng_seed(sample_rng *r, uint64_t seed);  /* any seed, 0 included */
uint64_t sample_rng_next(sample_rng *r);
float sample_rng_uniform(sample_rng *r);  /* in [0, 1), 24 random bits */

/* A sampler: parameters, generator and the scratch for n_vocab candidates. */
typedef struct sampler sampler;

/* Returns 0, DS4_E_ARG (bad parameters, n_vocab 0) or DS4_E_NOMEM; *out NULL on failure. */
int sample_new(sampler **out, uint32_t n_vocab, const sample_params *p, uint64_t seed,
               ds4_error *err);
void sample_free(sampler *s);  /* NULL is a no-op */

/* The next token for logits[0..n_vocab). NaN logits never win; if every logit is NaN or
 * -inf the result is token 0. Advances the generator once per sampled (non-greedy) token. */
int32_t sample_next(sampler *s, const float *logits);

/* Index of the largest logit (lowest index on ties; NaN ignored; 0 if none is a number). */
int32_t sample_argmax(const float *logits, uint32_t n);

#endif
