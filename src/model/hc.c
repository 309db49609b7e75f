/* hc.c — manifold-constrained hyper-connections: HC pre (mixer projection, pre/post gates,
 * combine matrix made doubly stochastic by Sinkhorn, weighted collapse of the streams),
 * HC post (the residual connection: post-gated sublayer output plus mixed streams) and the
 * final HC head collapse. Owns no weights layout (model.h) and no norm after the head.
 * Invariant: the state X is stream-major, element (i, d) at i*n_embd + d; the streams fed to
 * the collapse are the un-normalised ones. Implements ds4-architecture.md §3.2 and §3.10. */
#include <math.h>

#include "model/ops.h"

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

void hc_sinkhorn(float *comb, uint32_t n_hc, uint32_t iters, float eps)
{
    /* At least the first column normalisation, as transformers does for any iters. */
    for (uint32_t it = 0; it < (iters ? iters : 1); it++) {
        if (it > 0) { /* row normalisation (skipped in the first round) */
            for (uint32_t i = 0; i < n_hc; i++) {
                double s = 0.0;
                for (uint32_t j = 0; j < n_hc; j++)
                    s += comb[i * n_hc + j];
                for (uint32_t j = 0; j < n_hc; j++)
                    comb[i * n_hc + j] = (float)(comb[i * n_hc + j] / (s + eps));
            }
        }
        for (uint32_t j = 0; j < n_hc; j++) { /* column normalisation */
            double s = 0.0;
            for (uint32_t i = 0; i < n_hc; i++)
                s += comb[i * n_hc + j];
            for (uint32_t i = 0; i < n_hc; i++)
                comb[i * n_hc + j] = (float)(comb[i * n_hc + j] / (s + eps));
        }
    }
}

/* m = fn . RMSNorm(flat X) (no weight, eps = rms_eps): n_out mixer values. */
static void hc_mix(const model_hparams *hp, const gguf_tensor *fn, const float *X, float *m,
                   float *scratch)
{
    const uint32_t n = hp->n_hc * hp->n_embd;
    model_rmsnorm(X, n, hp->rms_eps, NULL, scratch);
    model_matvec(fn, 0, scratch, m);
}

void hc_pre(const model_hparams *hp, const gguf_tensor *fn, const gguf_tensor *scale,
            const gguf_tensor *base, const float *X, float *x, float *post, float *comb,
            float *scratch)
{
    float m[(2 + HC_MAX_STREAMS) * HC_MAX_STREAMS];
    hc_mix(hp, fn, X, m, scratch);
    hc_pre_finish(hp, scale, base, m, X, x, post, comb);
}

void hc_pre_finish(const model_hparams *hp, const gguf_tensor *scale, const gguf_tensor *base,
                   const float *m, const float *X, float *x, float *post, float *comb)
{
    const uint32_t nh = hp->n_hc, d = hp->n_embd;
    const double s0 = model_elem(scale, 0), s1 = model_elem(scale, 1), s2 = model_elem(scale, 2);

    /* pre weights and post gates */
    float pre[HC_MAX_STREAMS];
    for (uint32_t i = 0; i < nh; i++) {
        pre[i] = (float)(sigmoid(m[i] * s0 + model_elem(base, i)) + hp->hc_eps);
        post[i] = (float)(2.0 * sigmoid(m[nh + i] * s1 + model_elem(base, nh + i)));
    }
    /* combine: row softmax + eps, then Sinkhorn */
    for (uint32_t i = 0; i < nh; i++) {
        double z[HC_MAX_STREAMS], mx = -INFINITY, sum = 0.0;
        for (uint32_t j = 0; j < nh; j++) {
            uint32_t k = 2 * nh + i * nh + j;
            z[j] = m[k] * s2 + model_elem(base, k);
            if (z[j] > mx)
                mx = z[j];
        }
        for (uint32_t j = 0; j < nh; j++)
            sum += (z[j] = exp(z[j] - mx));
        for (uint32_t j = 0; j < nh; j++)
            comb[i * nh + j] = (float)(z[j] / sum + hp->hc_eps);
    }
    hc_sinkhorn(comb, nh, hp->hc_sinkhorn_iters, hp->hc_eps);

    /* collapse: x = sum_i pre_i X_i */
    for (uint32_t e = 0; e < d; e++) {
        double acc = 0.0;
        for (uint32_t i = 0; i < nh; i++)
            acc += (double)pre[i] * X[i * d + e];
        x[e] = (float)acc;
    }
}

void hc_post(uint32_t n_hc, uint32_t n_embd, float *X, const float *y, const float *post,
             const float *comb, float *scratch)
{
    for (uint32_t j = 0; j < n_hc; j++)
        for (uint32_t e = 0; e < n_embd; e++) {
            double acc = (double)post[j] * y[e];
            for (uint32_t i = 0; i < n_hc; i++)
                acc += (double)comb[i * n_hc + j] * X[i * n_embd + e];
            scratch[j * n_embd + e] = (float)acc;
        }
    for (uint32_t k = 0; k < n_hc * n_embd; k++)
        X[k] = scratch[k];
}

void hc_head(const model_hparams *hp, const gguf_tensor *fn, const gguf_tensor *scale,
             const gguf_tensor *base, const float *X, float *y, float *scratch)
{
    float a[HC_MAX_STREAMS];
    hc_mix(hp, fn, X, a, scratch);
    hc_head_finish(hp, scale, base, a, X, y);
}

void hc_head_finish(const model_hparams *hp, const gguf_tensor *scale, const gguf_tensor *base,
                    const float *a, const float *X, float *y)
{
    const uint32_t nh = hp->n_hc, d = hp->n_embd;
    float w[HC_MAX_STREAMS];
    const double s0 = model_elem(scale, 0);
    for (uint32_t i = 0; i < nh; i++)
        w[i] = (float)(sigmoid(a[i] * s0 + model_elem(base, i)) + hp->hc_eps);
    for (uint32_t e = 0; e < d; e++) {
        double acc = 0.0;
        for (uint32_t i = 0; i < nh; i++)
            acc += (double)w[i] * X[i * d + e];
        y[e] = (float)acc;
    }
}
