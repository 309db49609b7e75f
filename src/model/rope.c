/* rope.c — DS4 rotary position embedding: partial (the last n_rot values of a vector rotate),
 * interleaved pairs (v[2k], v[2k+1]) in the tail, plain base-10000 frequencies on
 * uncompressed layers and YaRN-blended base-160000 frequencies on compressed layers (also
 * for their compressor rows and indexer queries), and the inverse rotation (-theta) applied
 * to attention outputs. Angles in double. No amplitude (mscale) scaling, ever.
 * Invariant: the YaRN cut-offs are computed from the rope width, never hard-coded.
 * Implements ds4-architecture.md §3.4 (and the inverse of §3.3 step 8). */
#include <math.h>

#include "model/ops.h"

void rope_yarn_range(uint32_t n_rot, double base, double orig_ctx, double beta_fast,
                     double beta_slow, double *lo, double *hi)
{
    const double two_pi = 2.0 * 3.14159265358979323846;
    double l = floor(n_rot * log(orig_ctx / (two_pi * beta_fast)) / (2.0 * log(base)));
    double h = ceil(n_rot * log(orig_ctx / (two_pi * beta_slow)) / (2.0 * log(base)));
    *lo = l < 0 ? 0 : l;
    *hi = h > n_rot - 1 ? n_rot - 1 : h;
}

void rope_layer_cfg(const model_hparams *hp, uint32_t il, rope_cfg *rc)
{
    const uint32_t n_pair = hp->n_rot / 2;
    const bool compressed = model_ratio(hp, il) != 0;
    const double base = compressed ? hp->rope_compress_freq_base : hp->rope_freq_base;
    rc->n_rot = hp->n_rot;
    rc->yarn = compressed;
    rc->yarn_lo = rc->yarn_hi = 0.0;
    if (compressed)
        rope_yarn_range(hp->n_rot, base, (double)hp->rope_orig_ctx, hp->rope_beta_fast,
                        hp->rope_beta_slow, &rc->yarn_lo, &rc->yarn_hi);
    double lo = rc->yarn_lo, hi = rc->yarn_hi;
    if (hi == lo)
        hi += 0.001; /* a zero-width ramp is a step at lo */
    const double factor = hp->rope_scaling_factor > 0 ? hp->rope_scaling_factor : 1.0;
    for (uint32_t k = 0; k < n_pair && k < ROPE_MAX_PAIRS; k++) {
        double ext = pow(base, -2.0 * k / (double)hp->n_rot);
        if (!compressed) {
            rc->inv_freq[k] = ext;
            continue;
        }
        /* ramp 0 below lo (extrapolated, unscaled), 1 above hi (interpolated by 1/factor) */
        double ramp = (k - lo) / (hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        rc->inv_freq[k] = ext / factor * ramp + ext * (1.0 - ramp);
    }
}

void rope_apply(const rope_cfg *rc, float *v, uint32_t width, int64_t pos, bool inverse)
{
    float *t = v + (width - rc->n_rot);
    for (uint32_t k = 0; k < rc->n_rot / 2; k++) {
        double th = (double)pos * rc->inv_freq[k];
        double c = cos(th), s = inverse ? -sin(th) : sin(th);
        double a = t[2 * k], b = t[2 * k + 1];
        t[2 * k] = (float)(a * c - b * s);
        t[2 * k + 1] = (float)(a * s + b * c);
    }
}
