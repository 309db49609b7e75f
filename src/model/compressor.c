/* compressor.c — the time-axis KV compressors of compressed layers: per token, project the
 * sublayer input to values and scores (+ a learned per-slot bias) into a slot of the rolling
 * frontier; when a window of R tokens completes, pool every channel by a softmax over the
 * slots' scores, RMS-normalise, and RoPE the tail at the first position of the row's block.
 * Overlapped compressors (ratio 4: projections of 2*head_dim) pool 2R slots: the previous
 * window's first-half channels and the current window's second-half channels.
 * Owns the frontier arithmetic only: storage is state.c's, QAT of the rows forward's.
 * Implements ds4-architecture.md §3.5. */
#include <math.h>

#include "model/ops.h"
#include "quant/quant.h"

void compressor_reset(compressor_state *cs)
{
    const uint64_t n = (uint64_t)cs->n_slot * cs->width;
    for (uint64_t i = 0; i < n; i++) {
        cs->kv[i] = 0.0f;
        cs->score[i] = -INFINITY;
    }
}

/* dst += row r of the 2-D tensor t (ne[0] values). */
static void add_row(const gguf_tensor *t, uint32_t r, float *dst)
{
    const quant_traits *tr = quant_get_traits(t->type);
    const uint32_t n = (uint32_t)t->ne[0];
    const uint8_t *row = (const uint8_t *)t->data + (uint64_t)r * quant_row_bytes(t->type, n);
    float buf[MODEL_CHUNK];
    for (uint32_t c = 0; c < n; c += MODEL_CHUNK) {
        uint32_t len = n - c < MODEL_CHUNK ? n - c : MODEL_CHUNK;
        tr->dequant_row(row + quant_row_bytes(t->type, c), buf, len);
        for (uint32_t i = 0; i < len; i++)
            dst[c + i] += buf[i];
    }
}

/* This token's slot (values, scores) in the frontier. */
static uint32_t slot_of(const compressor_state *cs, uint32_t pos)
{
    return (cs->coff == 2 ? cs->ratio : 0) + pos % cs->ratio;
}

static bool commit(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                   compressor_state *cs, uint32_t pos, float *row);

bool compressor_push(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                     compressor_state *cs, const float *h, uint32_t pos, float *row)
{
    /* 1-2. values and scores into this token's slot */
    const uint64_t slot = slot_of(cs, pos);
    model_matvec(w->kv, 0, h, cs->kv + slot * cs->width);
    model_matvec(w->gate, 0, h, cs->score + slot * cs->width);
    return commit(hp, w, rc, cs, pos, row);
}

bool compressor_push_proj(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                          compressor_state *cs, const float *k, const float *s, uint32_t pos,
                          float *row)
{
    const uint64_t slot = slot_of(cs, pos);
    for (uint32_t i = 0; i < cs->width; i++) {
        cs->kv[slot * cs->width + i] = k[i];
        cs->score[slot * cs->width + i] = s[i];
    }
    return commit(hp, w, rc, cs, pos, row);
}

/* The token's slot holds its values and raw scores: add ape[pos mod R] to the scores, and
 * pool a row when the window completes. */
static bool commit(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                   compressor_state *cs, uint32_t pos, float *row)
{
    const uint32_t R = cs->ratio, W = cs->width, D = cs->head_dim;
    const bool overlapped = cs->coff == 2;
    add_row(w->ape, pos % R, cs->score + (uint64_t)slot_of(cs, pos) * W);
    if ((pos + 1) % R != 0)
        return false;

    /* 3. per channel j: softmax over the slots' scores, weighted mean of their values */
    for (uint32_t j = 0; j < D; j++) {
        double mx = -INFINITY;
        for (uint32_t sl = 0; sl < cs->n_slot; sl++) {
            uint32_t ch = (overlapped && sl >= R) ? D + j : j;
            double v = cs->score[(uint64_t)sl * W + ch];
            if (v > mx)
                mx = v;
        }
        if (mx == -INFINITY) { /* every slot empty */
            row[j] = 0.0f;
            continue;
        }
        double num = 0.0, den = 0.0;
        for (uint32_t sl = 0; sl < cs->n_slot; sl++) {
            uint32_t ch = (overlapped && sl >= R) ? D + j : j;
            double e = exp(cs->score[(uint64_t)sl * W + ch] - mx);
            den += e;
            num += e * cs->kv[(uint64_t)sl * W + ch];
        }
        row[j] = (float)(num / den);
    }
    model_rmsnorm(row, D, hp->rms_eps, w->norm, row);
    rope_apply(rc, row, D, (int64_t)pos + 1 - R, false);

    /* overlapped: the current window becomes the previous one */
    if (overlapped)
        for (uint64_t i = 0; i < (uint64_t)R * W; i++) {
            cs->kv[i] = cs->kv[(uint64_t)R * W + i];
            cs->score[i] = cs->score[(uint64_t)R * W + i];
        }
    return true;
}
