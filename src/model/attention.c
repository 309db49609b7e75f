/* attention.c — the attention math of one query token: sink-aware softmax attention of every
 * query head over a given list of visible rows (one shared 512-d row is both key and value),
 * and the grouped low-rank output projection. Does not own which rows are visible (forward
 * passes build the list: raw window, then compressed rows) nor the inverse RoPE (rope.c).
 * Scores, softmax and the weighted sum in double.
 * Implements ds4-architecture.md §3.7 and §3.3 step 9. */
#include <math.h>

#include "model/ops.h"

void attn_sink_heads(const model_hparams *hp, const gguf_tensor *sinks, const float *q,
                     const float *const *rows, uint32_t n_rows, float *out, double *scores)
{
    attn_sink_heads_range(hp, sinks, q, rows, n_rows, 0, hp->n_head, out, scores);
}

void attn_sink_heads_range(const model_hparams *hp, const gguf_tensor *sinks, const float *q,
                           const float *const *rows, uint32_t n_rows, uint32_t h0, uint32_t h1,
                           float *out, double *scores)
{
    const uint32_t D = hp->head_dim;
    const double inv_sqrt_d = 1.0 / sqrt((double)D);
    for (uint32_t h = h0; h < h1; h++) {
        const float *qh = q + (uint64_t)h * D;
        float *oh = out + (uint64_t)h * D;
        const double sink = model_elem(sinks, h);
        double mx = sink;
        for (uint32_t r = 0; r < n_rows; r++) {
            scores[r] = model_dot(qh, rows[r], D) * inv_sqrt_d;
            if (scores[r] > mx)
                mx = scores[r];
        }
        double den = exp(sink - mx); /* the sink only adds to the denominator */
        for (uint32_t r = 0; r < n_rows; r++)
            den += (scores[r] = exp(scores[r] - mx));
        for (uint32_t e = 0; e < D; e++) {
            double acc = 0.0;
            for (uint32_t r = 0; r < n_rows; r++)
                acc += scores[r] * rows[r][e];
            oh[e] = (float)(acc / den);
        }
    }
}

void attn_output(const model_hparams *hp, const model_layer *L, const float *o, float *mid,
                 float *y)
{
    const uint32_t G = hp->n_out_group, rank = hp->o_lora_rank;
    const uint64_t group_width = (uint64_t)hp->n_head * hp->head_dim / G;
    /* group g: its heads' outputs times rows g*rank .. g*rank+rank-1 of attn_output_a */
    for (uint32_t g = 0; g < G; g++)
        model_matvec_rows(L->attn_output_a, 0, g * rank, rank, o + g * group_width,
                          mid + (uint64_t)g * rank);
    model_matvec(L->attn_output_b, 0, mid, y);
}
