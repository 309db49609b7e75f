/* moe.c — the FFN sublayer's mixture of experts for one token: routing (sqrt-softplus
 * scores; token-id hash table on the leading hash layers, biased top-k elsewhere; weights
 * from the unbiased scores, normalised and scaled), the routed experts' clamped SwiGLU and
 * down projections, and the always-on shared expert with the same clamp.
 * Does not own the expert weight layout (3-D tensors, linalg.c reads expert e's rows) nor
 * the activation quantization of the optimized paths. Implements ds4-architecture.md §3.9. */
#include <math.h>

#include "model/ops.h"

/* Smallest denominator of the routed-weight normalisation (the engine's F16 floor). */
#define MOE_WEIGHT_SUM_MIN 6.103515625e-5

static double softplus(double z)
{
    if (z > 20.0)
        return z;
    if (z < -20.0)
        return exp(z);
    return log1p(exp(z));
}

void moe_route(const model_hparams *hp, const model_layer *L, uint32_t il, const float *h,
               int32_t token, int32_t *sel, float *weight, float *prob)
{
    model_matvec(L->ffn_gate_inp, 0, h, prob);
    moe_select(hp, L, il, token, prob, sel, weight);
}

void moe_select(const model_hparams *hp, const model_layer *L, uint32_t il, int32_t token,
                float *prob, int32_t *sel, float *weight)
{
    const uint32_t E = hp->n_expert, K = hp->n_expert_used;
    /* 3. router scores prob_e = sqrt(softplus(z_e)) (z = ffn_gate_inp . h given) */
    for (uint32_t e = 0; e < E; e++)
        prob[e] = (float)sqrt(softplus(prob[e]));

    /* 4. selection */
    if (model_is_hash_layer(hp, il)) {
        const int32_t *tid2eid = (const int32_t *)L->ffn_gate_tid2eid->data;
        for (uint32_t k = 0; k < K; k++)
            sel[k] = tid2eid[(uint64_t)token * K + k];
    } else {
        /* top-K of prob + bias by repeated arg-max, lowest index on ties */
        for (uint32_t k = 0; k < K; k++) {
            int32_t best = -1;
            double bv = 0.0;
            for (uint32_t e = 0; e < E; e++) {
                bool taken = false;
                for (uint32_t j = 0; j < k; j++)
                    taken |= sel[j] == (int32_t)e;
                if (taken)
                    continue;
                double v = (double)prob[e] + (L->exp_probs_b ? model_elem(L->exp_probs_b, e) : 0.0);
                if (best < 0 || v > bv) {
                    best = (int32_t)e;
                    bv = v;
                }
            }
            sel[k] = best;
        }
    }

    /* 5. weights from the unbiased scores */
    double sum = 0.0;
    for (uint32_t k = 0; k < K; k++)
        sum += prob[sel[k]];
    if (sum < MOE_WEIGHT_SUM_MIN)
        sum = MOE_WEIGHT_SUM_MIN;
    for (uint32_t k = 0; k < K; k++) {
        double w = prob[sel[k]];
        if (hp->expert_weights_norm)
            w /= sum;
        weight[k] = (float)(w * hp->expert_weights_scale);
    }
}

void moe_swiglu(const float *g, const float *u, uint32_t n, float lim, float w, float *m)
{
    for (uint32_t i = 0; i < n; i++) {
        double gv = g[i], uv = u[i];
        if (lim > 0) {
            if (gv > lim)
                gv = lim;
            uv = uv > lim ? lim : uv < -lim ? -lim : uv;
        }
        m[i] = (float)(gv / (1.0 + exp(-gv)) * uv * w);
    }
}

void moe_ffn(const model_hparams *hp, const model_layer *L, uint32_t il, const float *h,
             const int32_t *sel, const float *weight, float *y, float *scratch)
{
    const uint32_t d = hp->n_embd;
    const float lim = hp->swiglu_clamp[il];
    const uint32_t n_ff = (uint32_t)L->ffn_gate_exps->ne[1];
    const uint32_t n_sh = (uint32_t)L->ffn_gate_shexp->ne[1];
    const uint32_t wmax = n_ff > n_sh ? n_ff : n_sh;
    float *g = scratch, *u = g + wmax, *m = u + wmax, *yd = m + wmax;

    /* 6. routed experts: m = silu(g) u w_k, then W_down m, summed over k */
    for (uint32_t i = 0; i < d; i++)
        y[i] = 0.0f;
    for (uint32_t k = 0; k < hp->n_expert_used; k++) {
        uint32_t e = (uint32_t)sel[k];
        model_matvec(L->ffn_gate_exps, e, h, g);
        model_matvec(L->ffn_up_exps, e, h, u);
        moe_swiglu(g, u, n_ff, lim, weight[k], m);
        model_matvec(L->ffn_down_exps, e, m, yd);
        for (uint32_t i = 0; i < d; i++)
            y[i] += yd[i];
    }

    /* 7. shared expert, same clamp, unweighted; 8. y = y_routed + y_shared */
    model_matvec(L->ffn_gate_shexp, 0, h, g);
    model_matvec(L->ffn_up_shexp, 0, h, u);
    moe_swiglu(g, u, n_sh, lim, 1.0f, m);
    model_matvec(L->ffn_down_shexp, 0, m, yd);
    for (uint32_t i = 0; i < d; i++)
        y[i] += yd[i];
}
