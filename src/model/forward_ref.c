/* forward_ref.c — the DS4 forward pass in spec order: f32, scalar, single-threaded, never
 * optimized. The oracle for every faster path and itself checked against transformers
 * (tests/reference/test_hf_convert.py). Two drivers over the same per-token steps:
 * model_forward_ref (decode order: one token through all layers, then the next) and
 * model_prefill_ref (layer-major: a chunk of tokens through layer 0, then layer 1, ...,
 * with the visibility of §3.11, so both give bit-identical logits and state).
 * Owns the order of the steps and the QAT call sites; the math lives in the components
 * (ops.h), the caches in state.c. Implements ds4-architecture.md §3 (§3.1-§3.11). */
#include <stdlib.h>
#include <string.h>

#include "model/forward_ref.h"
#include "model/ops.h"

/* ======================================================================================
 * Scratch: every buffer one call needs, sized from the hyperparameters.
 * ====================================================================================== */

typedef struct ref_buf {
    rope_cfg *rope;        /* [n_layer] RoPE parameters per layer */
    float *hc;             /* [n_hc*n_embd] HC scratch */
    float *x;              /* [n_embd] collapsed sublayer input */
    float *h;              /* [n_embd] FFN input after ffn_norm */
    float *qa;             /* [q_lora_rank] */
    float *o;              /* [n_head*head_dim] attention output */
    float *mid;            /* [n_out_group*o_lora_rank] */
    float *y;              /* [n_embd] sublayer output */
    float *post, *comb;    /* FFN HC gates [n_hc], [n_hc*n_hc] */
    float *crow, *irow;    /* [head_dim], [indexer_head_dim] compressed rows */
    float *qi, *wi;        /* [n_indexer_head*indexer_head_dim], [n_indexer_head] */
    float *iscore;         /* [max comp_cap] indexer scores */
    uint32_t *sel;         /* [indexer_top_k] selected compressed rows */
    const float **rows;    /* [raw_cap + max comp_cap] rows one query sees */
    double *scores;        /* [raw_cap + max comp_cap] */
    float *prob, *eweight; /* [n_expert], [n_expert_used] */
    int32_t *esel;         /* [n_expert_used] */
    float *ffn;            /* 3 * max(expert, shared width) + n_embd */
    /* per token of a batch of nb tokens */
    float *X;              /* [nb][n_hc*n_embd] residual streams */
    float *H;              /* [nb][n_embd] attention input after attn_norm */
    float *QN;             /* [nb][q_lora_rank] normalised Q low-rank (indexer input) */
    float *Q;              /* [nb][n_head*head_dim] queries */
    float *POST, *COMB;    /* [nb][n_hc], [nb][n_hc*n_hc] attention HC gates */
    float *RAW;            /* [raw_cap-1+nb][head_dim] raw rows of the batch (prefill) */
} ref_buf;

static void buf_free(ref_buf *b)
{
    void *p[] = { b->rope, b->hc, b->x, b->h, b->qa, b->o, b->mid, b->y, b->post, b->comb,
                  b->crow, b->irow, b->qi, b->wi, b->iscore, b->sel, (void *)b->rows,
                  b->scores, b->prob, b->eweight, b->esel, b->ffn, b->X, b->H, b->QN, b->Q,
                  b->POST, b->COMB, b->RAW };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
}

static int buf_new(ref_buf *b, const model *m, const model_state *s, uint32_t nb, bool raw,
                   ds4_error *err)
{
    const model_hparams *hp = &m->hp;
    const uint64_t d = hp->n_embd, nh = hp->n_hc, hd = (uint64_t)hp->n_head * hp->head_dim;
    uint64_t cap = 1, wmax = 1;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->w.layers[il];
        if (s->layers[il].comp_cap > cap)
            cap = s->layers[il].comp_cap;
        if ((uint64_t)L->ffn_gate_exps->ne[1] > wmax)
            wmax = (uint64_t)L->ffn_gate_exps->ne[1];
        if ((uint64_t)L->ffn_gate_shexp->ne[1] > wmax)
            wmax = (uint64_t)L->ffn_gate_shexp->ne[1];
    }
    const uint64_t nrows = s->raw_cap + cap, top_k = hp->indexer_top_k ? hp->indexer_top_k : 1;
#define ALLOC(f, n) (b->f = calloc((size_t)(n), sizeof *b->f))
    memset(b, 0, sizeof *b);
    if (!ALLOC(rope, hp->n_layer) || !ALLOC(hc, nh * d) || !ALLOC(x, d) || !ALLOC(h, d) ||
        !ALLOC(qa, hp->q_lora_rank) || !ALLOC(o, hd) ||
        !ALLOC(mid, (uint64_t)hp->n_out_group * hp->o_lora_rank) || !ALLOC(y, d) ||
        !ALLOC(post, nh) || !ALLOC(comb, nh * nh) || !ALLOC(crow, hp->head_dim) ||
        !ALLOC(irow, hp->indexer_head_dim + 1) ||
        !ALLOC(qi, (uint64_t)hp->n_indexer_head * hp->indexer_head_dim + 1) ||
        !ALLOC(wi, hp->n_indexer_head + 1) || !ALLOC(iscore, cap) || !ALLOC(sel, top_k) ||
        !ALLOC(rows, nrows) || !ALLOC(scores, nrows) || !ALLOC(prob, hp->n_expert) ||
        !ALLOC(eweight, hp->n_expert_used) || !ALLOC(esel, hp->n_expert_used) ||
        !ALLOC(ffn, 3 * wmax + d) || !ALLOC(X, nb * nh * d) || !ALLOC(H, nb * d) ||
        !ALLOC(QN, nb * hp->q_lora_rank) || !ALLOC(Q, nb * hd) || !ALLOC(POST, nb * nh) ||
        !ALLOC(COMB, nb * nh * nh) ||
        (raw && !ALLOC(RAW, (s->raw_cap - 1 + nb) * hp->head_dim))) {
        buf_free(b);
        return ds4_error_set(err, DS4_E_NOMEM, "forward: out of memory for scratch");
    }
#undef ALLOC
    for (uint32_t il = 0; il < hp->n_layer; il++)
        rope_layer_cfg(hp, il, &b->rope[il]);
    return 0;
}

/* ======================================================================================
 * The steps of one token, in spec order.
 * ====================================================================================== */

/* §3.1 embedding: every HC stream starts as the token's embedding row. */
static void embed(const model *m, int32_t token, float *X)
{
    const uint32_t d = m->hp.n_embd;
    model_row_f32(m->w.token_embd, 0, (uint32_t)token, X);
    for (uint32_t i = 1; i < m->hp.n_hc; i++)
        memcpy(X + (uint64_t)i * d, X, d * sizeof(float));
}

/* §3.3 steps 1-4: HC pre, attn_norm, the Q path (qn kept for the indexer) and the KV row. */
static void attn_input(const model *m, const model_state *s, uint32_t il, const float *X,
                       uint32_t pos, ref_buf *b, float *h, float *qn, float *q, float *post,
                       float *comb, float *kv)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->w.layers[il];
    const rope_cfg *rc = &b->rope[il];
    const uint32_t D = hp->head_dim;
    /* 1. HC pre (§3.2) */
    hc_pre(hp, L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, X, b->x, post, comb, b->hc);
    /* 2. h = RMSNorm(x) * attn_norm */
    model_rmsnorm(b->x, hp->n_embd, hp->rms_eps, L->attn_norm, h);
    /* 3. Q path: q_a, q_a_norm, q_b, per-head unweighted RMSNorm, RoPE at pos (§3.4) */
    model_matvec(L->attn_q_a, 0, h, b->qa);
    model_rmsnorm(b->qa, hp->q_lora_rank, hp->rms_eps, L->attn_q_a_norm, qn);
    model_matvec(L->attn_q_b, 0, qn, q);
    for (uint32_t i = 0; i < hp->n_head; i++) {
        model_rmsnorm(q + (uint64_t)i * D, D, hp->rms_eps, NULL, q + (uint64_t)i * D);
        rope_apply(rc, q + (uint64_t)i * D, D, pos, false);
    }
    /* 4. KV path: RMSNorm(attn_kv h) * kv_norm, RoPE at pos, FP8 + F16 (§3.8) */
    model_matvec(L->attn_kv, 0, h, kv);
    model_rmsnorm(kv, D, hp->rms_eps, L->attn_kv_a_norm, kv);
    rope_apply(rc, kv, D, pos, false);
    qat_kv_row(&s->m->hp, s->qat, kv);
}

/* §3.3 step 5 / §3.5: the compressors of layer il take the token's h; emitted rows get
 * their QAT and are appended to the layer's caches. */
static void compress(const model *m, model_state *s, uint32_t il, const float *h, uint32_t pos,
                     ref_buf *b)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->w.layers[il];
    model_layer_state *ls = &s->layers[il];
    if (ls->ratio == 0)
        return;
    const compressor_w aw = { L->attn_compressor_ape, L->attn_compressor_kv,
                              L->attn_compressor_gate, L->attn_compressor_norm };
    if (compressor_push(hp, &aw, &b->rope[il], &ls->attn_cmp, h, pos, b->crow)) {
        qat_kv_row(&s->m->hp, s->qat, b->crow);
        memcpy(ls->comp + (uint64_t)ls->n_comp++ * hp->head_dim, b->crow,
               hp->head_dim * sizeof(float));
    }
    if (ls->index == NULL)
        return;
    const compressor_w iw = { L->indexer_compressor_ape, L->indexer_compressor_kv,
                              L->indexer_compressor_gate, L->indexer_compressor_norm };
    if (compressor_push(hp, &iw, &b->rope[il], &ls->index_cmp, h, pos, b->irow)) {
        qat_index_row(&s->m->hp, s->qat, b->irow);
        memcpy(ls->index + (uint64_t)ls->n_index++ * hp->indexer_head_dim, b->irow,
               hp->indexer_head_dim * sizeof(float));
    }
}

/* Where the raw rows live: a ring (decode: row of p at p % ring) or a batch buffer whose
 * row 0 is position first (prefill: ring = 0). */
typedef struct raw_src {
    const float *base;
    uint32_t first, ring;
} raw_src;

static const float *raw_row(const raw_src *r, uint32_t p, uint32_t D)
{
    return r->base + (uint64_t)(r->ring ? p % r->ring : p - r->first) * D;
}

/* §3.3 steps 6-7 and §3.11: the rows query pos sees, in a fixed order: raw positions
 * max(0, pos-n_swa+1) .. pos, then compressed rows c < (pos+1)/R (all of them, or the
 * indexer's top_k when more than top_k are visible, §3.6). Returns their count. */
static uint32_t visible_rows(const model *m, const model_state *s, uint32_t il, uint32_t pos,
                             const raw_src *raw, const float *h, const float *qn, ref_buf *b)
{
    const model_hparams *hp = &m->hp;
    const model_layer_state *ls = &s->layers[il];
    const uint32_t D = hp->head_dim, w = s->raw_cap;
    uint32_t n = 0;
    for (uint32_t p = pos + 1 >= w ? pos + 1 - w : 0; p <= pos; p++)
        b->rows[n++] = raw_row(raw, p, D);
    if (ls->ratio == 0)
        return n;
    const uint32_t n_vis = (pos + 1) / ls->ratio;
    if (ls->index != NULL && n_vis > hp->indexer_top_k) {
        /* 6. lightning indexer: queries, scores against the visible indexer rows, top_k */
        indexer_query(hp, &m->w.layers[il], &b->rope[il], qn, h, pos, s->qat, b->qi, b->wi);
        indexer_scores(hp, b->qi, b->wi, ls->index, n_vis, b->iscore);
        indexer_top_k(b->iscore, n_vis, hp->indexer_top_k, b->sel);
        for (uint32_t k = 0; k < hp->indexer_top_k; k++)
            b->rows[n++] = ls->comp + (uint64_t)b->sel[k] * D;
    } else {
        for (uint32_t c = 0; c < n_vis; c++)
            b->rows[n++] = ls->comp + (uint64_t)c * D;
    }
    return n;
}

/* §3.3 steps 7-10: sink attention over the rows, inverse RoPE of each head's tail, grouped
 * output projection, HC post into the token's streams X. */
static void attn_out(const model *m, uint32_t il, const float *q, uint32_t n_rows,
                     uint32_t pos, float *X, const float *post, const float *comb, ref_buf *b)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->w.layers[il];
    /* 7. attention (§3.7) */
    attn_sink_heads(hp, L->attn_sinks, q, b->rows, n_rows, b->o, b->scores);
    /* 8. inverse RoPE at the query position */
    for (uint32_t i = 0; i < hp->n_head; i++)
        rope_apply(&b->rope[il], b->o + (uint64_t)i * hp->head_dim, hp->head_dim, pos, true);
    /* 9. grouped output projection */
    attn_output(hp, L, b->o, b->mid, b->y);
    /* 10. HC post */
    hc_post(hp->n_hc, hp->n_embd, X, b->y, post, comb, b->hc);
}

/* §3.9 FFN sublayer: HC pre, ffn_norm, routing, experts + shared expert, HC post. */
static void ffn(const model *m, uint32_t il, int32_t token, float *X, ref_buf *b)
{
    const model_hparams *hp = &m->hp;
    const model_layer *L = &m->w.layers[il];
    /* 1. HC pre */
    hc_pre(hp, L->hc_ffn_fn, L->hc_ffn_scale, L->hc_ffn_base, X, b->x, b->post, b->comb, b->hc);
    /* 2. h = RMSNorm(x) * ffn_norm */
    model_rmsnorm(b->x, hp->n_embd, hp->rms_eps, L->ffn_norm, b->h);
    /* 3-5. router, selection (hash or biased top-k), weights */
    moe_route(hp, L, il, b->h, token, b->esel, b->eweight, b->prob);
    /* 6-7. routed experts and the shared expert (clamped SwiGLU), 8. their sum */
    moe_ffn(hp, L, il, b->h, b->esel, b->eweight, b->y, b->ffn);
    /* 8. HC post */
    hc_post(hp->n_hc, hp->n_embd, X, b->y, b->post, b->comb, b->hc);
}

/* §3.10 output head: HC collapse, output_norm, output projection. */
static void head(const model *m, const float *X, float *logits, ref_buf *b)
{
    const model_hparams *hp = &m->hp;
    const model_weights *w = &m->w;
    hc_head(hp, w->output_hc_fn, w->output_hc_scale, w->output_hc_base, X, b->x, b->hc);
    model_rmsnorm(b->x, hp->n_embd, hp->rms_eps, w->output_norm, b->x);
    model_matvec(w->output, 0, b->x, logits);
}

/* ======================================================================================
 * Drivers.
 * ====================================================================================== */

static int check_call(const model *m, const model_state *s, const int32_t *tokens, uint32_t n,
                      ds4_error *err)
{
    if (s->m != m)
        return ds4_error_set(err, DS4_E_ARG, "forward: the state belongs to another model");
    int rc = model_state_check_room(s, n, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->hp.n_vocab)
            return ds4_error_set(err, DS4_E_ARG, "forward: token %u is %d, outside the "
                                 "vocabulary of %u", i, tokens[i], m->hp.n_vocab);
    return 0;
}

int model_forward_ref(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                      float *logits, ds4_error *err)
{
    ref_buf b;
    int rc = check_call(m, s, tokens, n, err);
    if (rc || (rc = buf_new(&b, m, s, 1, false, err)))
        return rc;
    const model_hparams *hp = &m->hp;
    for (uint32_t t = 0; t < n; t++) {
        const uint32_t pos = s->pos;
        embed(m, tokens[t], b.X);
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            model_layer_state *ls = &s->layers[il];
            /* §3.3: the new raw row goes straight into the ring (it replaces pos - w) */
            float *kv = ls->raw + (uint64_t)(pos % s->raw_cap) * hp->head_dim;
            attn_input(m, s, il, b.X, pos, &b, b.H, b.QN, b.Q, b.POST, b.COMB, kv);
            compress(m, s, il, b.H, pos, &b);
            const raw_src raw = { ls->raw, 0, s->raw_cap };
            uint32_t nr = visible_rows(m, s, il, pos, &raw, b.H, b.QN, &b);
            attn_out(m, il, b.Q, nr, pos, b.X, b.POST, b.COMB, &b);
            ffn(m, il, tokens[t], b.X, &b);
        }
        if (logits)
            head(m, b.X, logits + (uint64_t)t * hp->n_vocab, &b);
        s->pos++;
    }
    buf_free(&b);
    return 0;
}

int model_prefill_ref(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                      float *logits, ds4_error *err)
{
    ref_buf b;
    const uint32_t chunk = n < MODEL_REF_PREFILL_CHUNK ? n : MODEL_REF_PREFILL_CHUNK;
    int rc = check_call(m, s, tokens, n, err);
    if (rc || (rc = buf_new(&b, m, s, chunk ? chunk : 1, true, err)))
        return rc;
    const model_hparams *hp = &m->hp;
    const uint64_t D = hp->head_dim, sd = (uint64_t)hp->n_hc * hp->n_embd;
    const uint64_t hd = (uint64_t)hp->n_head * D, nh = hp->n_hc, w = s->raw_cap;
    for (uint32_t t0 = 0; t0 < n; t0 += chunk) {
        const uint32_t nc = n - t0 < chunk ? n - t0 : chunk, pos0 = s->pos;
        const int32_t *tok = tokens + t0;
        for (uint32_t t = 0; t < nc; t++)
            embed(m, tok[t], b.X + t * sd);
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            model_layer_state *ls = &s->layers[il];
            /* the raw rows this chunk can see: the ring's last w-1 positions, then its own */
            const uint32_t first = pos0 + 1 >= w ? pos0 + 1 - (uint32_t)w : 0;
            for (uint32_t p = first; p < pos0; p++)
                memcpy(b.RAW + (p - first) * D, ls->raw + (p % w) * D, D * sizeof(float));
            /* §3.3 steps 1-5 for every token: inputs, raw rows, compressor rows */
            for (uint32_t t = 0; t < nc; t++) {
                attn_input(m, s, il, b.X + t * sd, pos0 + t, &b, b.H + t * hp->n_embd,
                           b.QN + t * hp->q_lora_rank, b.Q + t * hd, b.POST + t * nh,
                           b.COMB + t * nh * nh, b.RAW + (pos0 + t - first) * D);
                compress(m, s, il, b.H + t * hp->n_embd, pos0 + t, &b);
            }
            /* §3.3 steps 6-10 for every token, each seeing only what decode would see */
            const raw_src raw = { b.RAW, first, 0 };
            for (uint32_t t = 0; t < nc; t++) {
                uint32_t nr = visible_rows(m, s, il, pos0 + t, &raw, b.H + t * hp->n_embd,
                                           b.QN + t * hp->q_lora_rank, &b);
                attn_out(m, il, b.Q + t * hd, nr, pos0 + t, b.X + t * sd, b.POST + t * nh,
                         b.COMB + t * nh * nh, &b);
            }
            /* the ring keeps the last w raw rows */
            for (uint32_t p = pos0 + nc > pos0 + w ? pos0 + nc - (uint32_t)w : pos0;
                 p < pos0 + nc; p++)
                memcpy(ls->raw + (p % w) * D, b.RAW + (p - first) * D, D * sizeof(float));
            /* §3.9 for every token */
            for (uint32_t t = 0; t < nc; t++)
                ffn(m, il, tok[t], b.X + t * sd, &b);
        }
        /* §3.10 */
        for (uint32_t t = 0; logits && t < nc; t++)
            head(m, b.X + t * sd, logits + (uint64_t)(t0 + t) * hp->n_vocab, &b);
        s->pos += nc;
    }
    buf_free(&b);
    return 0;
}
