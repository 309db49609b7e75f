/* indexer.c — the lightning indexer of ratio-4 layers: per query, indexer heads from the
 * Q low-rank (RoPE'd at the query position with the compressed-layer rope, then Hadamard +
 * FP4 when simulating QAT), per-head weights from the sublayer input, ReLU dot-product
 * scores against the cached indexer rows, and the top-k selection (repeated arg-max, lowest
 * index first on ties). Does not own the indexer compressor (compressor.c) nor when the
 * indexer runs (forward: only when more than top_k compressed rows are visible).
 * Implements ds4-architecture.md §3.6. */
#include <math.h>

#include "model/ops.h"

void indexer_query(const model_hparams *hp, const model_layer *L, const rope_cfg *rc,
                   const float *qn, const float *h, int64_t pos, bool qat, float *qi, float *wi)
{
    model_matvec(L->indexer_attn_q_b, 0, qn, qi);
    model_matvec(L->indexer_proj, 0, h, wi);
    indexer_query_finish(hp, rc, pos, qat, qi, wi);
}

void indexer_query_finish(const model_hparams *hp, const rope_cfg *rc, int64_t pos, bool qat,
                          float *qi, float *wi)
{
    const uint32_t nh = hp->n_indexer_head, dh = hp->indexer_head_dim;
    /* 1. queries (q_b . qn given): RoPE on each head's tail, Hadamard + FP4 */
    for (uint32_t i = 0; i < nh; i++) {
        rope_apply(rc, qi + (uint64_t)i * dh, dh, pos, false);
        if (qat) {
            qat_hadamard(qi + (uint64_t)i * dh, dh);
            qat_fp4_sim(qi + (uint64_t)i * dh, dh);
        }
    }
    /* 2. head weights (indexer_proj . h given), scaled by 1/sqrt(head_dim * n_head) */
    const double s = 1.0 / sqrt((double)dh * (double)nh);
    for (uint32_t i = 0; i < nh; i++)
        wi[i] = (float)(wi[i] * s);
}

void indexer_scores(const model_hparams *hp, const float *qi, const float *wi,
                    const float *rows, uint32_t n_rows, float *score)
{
    const uint32_t nh = hp->n_indexer_head, dh = hp->indexer_head_dim;
    /* 3. score_c = sum_h wi_h * relu(qi_h . K_c) */
    for (uint32_t c = 0; c < n_rows; c++) {
        double acc = 0.0;
        for (uint32_t i = 0; i < nh; i++) {
            double d = model_dot(qi + (uint64_t)i * dh, rows + (uint64_t)c * dh, dh);
            if (d > 0)
                acc += (double)wi[i] * d;
        }
        score[c] = (float)acc;
    }
}

void indexer_top_k(float *score, uint32_t n, uint32_t k, uint32_t *sel)
{
    /* 4. repeated arg-max, lowest index first on ties; a NaN score counts as -inf and a
     * picked entry is marked NaN */
    for (uint32_t c = 0; c < n; c++)
        if (score[c] != score[c])
            score[c] = -INFINITY;
    for (uint32_t got = 0; got < k; got++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t c = 0; c < n; c++)
            if (score[c] == score[c] && (best == UINT32_MAX || score[c] > score[best]))
                best = c;
        sel[got] = best;
        score[best] = NAN;
    }
    /* ascending order for the attention (the result does not depend on it) */
    for (uint32_t i = 1; i < k; i++)
        for (uint32_t j = i; j > 0 && sel[j - 1] > sel[j]; j--) {
            uint32_t t = sel[j];
            sel[j] = sel[j - 1];
            sel[j - 1] = t;
        }
}
