/* forward.c — the optimized CPU forward pass (forward.h): tokens in chunks, layer-major; per
 * layer the attention sublayer here and the FFN in forward_ffn.c. Every matrix product runs
 * batched over the chunk's tokens through cpu_matmul_many on the thread pool, its activations
 * quantized once per (input, type); per-token steps (norms, RoPE, HC, attention) run on the
 * pool over tokens (and heads); the compressor frontiers advance token by token in order.
 * The math of each step is the reference components' (ops.h): only the products differ
 * (quantized activations, f32 accumulation). Owns the step order, scratch and threading.
 * Implements ds4-architecture.md §3 (§3.1-§3.8, §3.10, §3.11) with §4.1 numerics. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward_impl.h"

/* ======================================================================================
 * Scratch, activations and loops shared with forward_ffn.c.
 * ====================================================================================== */

static void fwd_free(fwd *f)
{
    void *p[] = { f->rope, f->X, f->F, f->MIX, f->XS, f->H, f->POST, f->COMB, f->QA, f->QN,
                  f->Q, f->O, f->MID, f->Y, f->CK, f->CS, f->IK, f->IS, f->QI, f->WI, f->SEL,
                  f->ITOK, f->RAW, f->ROUT, f->ESEL, f->EW, f->SLOT, f->SLOT_TK, f->SLOT_TOK,
                  f->IDENT, f->ECOUNT, f->EOFF, f->G, f->U, f->M, f->DN, f->GS, f->US, f->MS,
                  f->YS, f->mm };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
    for (int i = 0; f->th && i < f->n_threads; i++) {
        free(f->th[i].f);
        free((void *)f->th[i].rows);
        free(f->th[i].scores);
        free(f->th[i].iscore);
    }
    free(f->th);
    cpu_moe_ctx_free(f->moe);
    for (int i = 0; i < FWD_ACTS; i++)
        cpu_act_free(&f->acts[i]);
    cpu_act_free(&f->grouped);
}

static uint32_t max_u32(uint32_t a, uint64_t b) { return b > a ? (uint32_t)b : a; }

static size_t nz(uint64_t n) { return n ? (size_t)n : 1; } /* calloc(0) may return NULL */

static int fwd_new(fwd *f, const model *m, model_state *s, cpu_pool *pool, uint32_t T,
                   ds4_error *err)
{
    const model_hparams *hp = &m->hp;
    memset(f, 0, sizeof *f);
    f->m = m, f->hp = hp, f->s = s, f->pool = pool, f->err = err;
    f->n_threads = cpu_pool_threads(pool);
    f->cap = 1, f->wmax = 1;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->w.layers[il];
        f->cap = max_u32(f->cap, s->layers[il].comp_cap);
        f->wmax = max_u32(max_u32(f->wmax, L->ffn_gate_exps->ne[1]), L->ffn_gate_shexp->ne[1]);
        if (L->attn_compressor_kv)
            f->cmp_w = max_u32(f->cmp_w, L->attn_compressor_kv->ne[1]);
        if (L->indexer_compressor_kv)
            f->idx_w = max_u32(f->idx_w, L->indexer_compressor_kv->ne[1]);
    }
    const uint64_t d = hp->n_embd, nh = hp->n_hc, sd = nh * d, D = hp->head_dim;
    const uint64_t HD = (uint64_t)hp->n_head * D, K = hp->n_expert_used, E = hp->n_expert;
    const uint64_t qi = (uint64_t)hp->n_indexer_head * hp->indexer_head_dim;
    const uint64_t mixw = (2 + nh) * nh, top_k = hp->indexer_top_k ? hp->indexer_top_k : 1;
    const uint64_t nrows = s->raw_cap + (uint64_t)f->cap, TK = (uint64_t)T * K;
    const uint64_t fs = sd > D + hp->indexer_head_dim ? sd : D + hp->indexer_head_dim;
#define ALLOC(p, n) ((p) = calloc(nz((uint64_t)(n)), sizeof *(p)))
    bool ok = ALLOC(f->rope, hp->n_layer) && ALLOC(f->th, f->n_threads) &&
              ALLOC(f->X, T * sd) && ALLOC(f->F, T * sd) && ALLOC(f->MIX, T * mixw) &&
              ALLOC(f->XS, T * d) && ALLOC(f->H, T * d) && ALLOC(f->POST, T * nh) &&
              ALLOC(f->COMB, T * nh * nh) && ALLOC(f->QA, T * hp->q_lora_rank) &&
              ALLOC(f->QN, T * hp->q_lora_rank) && ALLOC(f->Q, T * HD) && ALLOC(f->O, T * HD) &&
              ALLOC(f->MID, (uint64_t)T * hp->n_out_group * hp->o_lora_rank) &&
              ALLOC(f->Y, T * d) && ALLOC(f->CK, T * f->cmp_w) && ALLOC(f->CS, T * f->cmp_w) &&
              ALLOC(f->IK, T * f->idx_w) && ALLOC(f->IS, T * f->idx_w) &&
              ALLOC(f->QI, T * qi) && ALLOC(f->WI, (uint64_t)T * hp->n_indexer_head) &&
              ALLOC(f->SEL, T * top_k) && ALLOC(f->ITOK, T) && ALLOC(f->RAW, T * D) &&
              ALLOC(f->ROUT, T * E) && ALLOC(f->ESEL, TK) && ALLOC(f->EW, TK) &&
              ALLOC(f->SLOT, TK) && ALLOC(f->SLOT_TK, TK) && ALLOC(f->SLOT_TOK, TK) &&
              ALLOC(f->IDENT, TK) && ALLOC(f->ECOUNT, E) && ALLOC(f->EOFF, E + 1) &&
              ALLOC(f->G, TK * f->wmax) && ALLOC(f->U, TK * f->wmax) &&
              ALLOC(f->M, TK * f->wmax) && ALLOC(f->DN, TK * d) && ALLOC(f->GS, T * f->wmax) &&
              ALLOC(f->US, T * f->wmax) && ALLOC(f->MS, T * f->wmax) && ALLOC(f->YS, T * d) &&
              ALLOC(f->mm, 2 * E + 8) && cpu_moe_ctx_new(&f->moe, NULL) == 0;
    for (int i = 0; ok && i < f->n_threads; i++)
        ok = ALLOC(f->th[i].f, fs) && ALLOC(f->th[i].rows, nrows) &&
             ALLOC(f->th[i].scores, nrows) && ALLOC(f->th[i].iscore, f->cap);
#undef ALLOC
    if (!ok) {
        fwd_free(f);
        return ds4_error_set(err, DS4_E_NOMEM, "forward: out of memory for scratch");
    }
    for (uint64_t i = 0; i < TK; i++)
        f->IDENT[i] = (int32_t)i;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        rope_layer_cfg(hp, il, &f->rope[il]);
    return 0;
}

typedef struct {
    fwd *f;
    fwd_idx_fn fn;
    uint32_t count;
} loop_job;

/* Piece ith of nth runs indices ith, ith + nth, ... with thread scratch ith. */
static void loop_piece(void *ctx, int ith, int nth)
{
    const loop_job *j = ctx;
    for (uint32_t i = (uint32_t)ith; i < j->count; i += (uint32_t)nth)
        j->fn(j->f, i, &j->f->th[ith]);
}

void model_fwd_loop(fwd *f, uint32_t count, fwd_idx_fn fn)
{
    loop_job j = { f, fn, count };
    int nth = count < (uint32_t)f->n_threads ? (int)count : f->n_threads;
    if (nth <= 1)
        loop_piece(&j, 0, 1);
    else
        cpu_pool_run_n(f->pool, nth, loop_piece, &j);
}

cpu_weight model_fwd_weight(const gguf_tensor *t)
{
    cpu_weight w;
    cpu_weight_init(&w, t->type, t->ne[0], t->ne[1], t->data, NULL); /* types checked */
    return w;
}

const cpu_act *model_fwd_act(fwd *f, const float *x, int64_t n, uint32_t rows, int64_t ldx,
                             ds4_type wtype)
{
    const ds4_type xt = cpu_act_type(wtype);
    for (int i = 0; i < f->n_acts; i++)
        if (f->act_src[i] == x && f->acts_in[i]->type == xt && f->acts_in[i]->n == n &&
            f->acts_in[i]->n_tok == (int)rows)
            return f->acts_in[i];
    if (f->n_acts == FWD_ACTS) {
        ds4_error_set(f->err, DS4_E_RANGE, "forward: more than %d activations in one step",
                      FWD_ACTS);
        return NULL;
    }
    const int i = f->n_acts;
    if (xt == DS4_TYPE_F32) {
        f->views[i] = cpu_act_f32(x, n, (int)rows, ldx);
        f->acts_in[i] = &f->views[i];
    } else {
        if (cpu_act_quantize(f->pool, &f->acts[i], xt, x, n, (int)rows, ldx, f->err) != 0)
            return NULL;
        f->acts_in[i] = &f->acts[i];
    }
    f->act_src[i] = x;
    f->n_acts++;
    return f->acts_in[i];
}

/* HC mixer input of one token: RMSNorm over all streams, no weight. */
static void tok_hc_norm(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const uint64_t sd = (uint64_t)f->hp->n_hc * f->hp->n_embd;
    model_rmsnorm(f->X + t * sd, (uint32_t)sd, f->hp->rms_eps, NULL, f->F + t * sd);
}

int model_fwd_hc_mix(fwd *f, const gguf_tensor *fn)
{
    const uint64_t nh = f->hp->n_hc, sd = nh * f->hp->n_embd;
    model_fwd_loop(f, f->T, tok_hc_norm);
    f->n_acts = 0;
    const cpu_act *a = model_fwd_act(f, f->F, (int64_t)sd, f->T, (int64_t)sd, fn->type);
    if (!a)
        return f->err ? f->err->code : DS4_E_NOMEM;
    cpu_mm mm = { model_fwd_weight(fn), a, 0, NULL, (int)f->T, f->MIX, (int64_t)((2 + nh) * nh) };
    cpu_matmul_many(f->pool, &mm, 1);
    return 0;
}

/* ======================================================================================
 * §3.3 the attention sublayer of layer f->il for the chunk.
 * ====================================================================================== */

/* Steps 1-2: HC pre from the mixer output, h = RMSNorm(x) * attn_norm. */
static void tok_attn_pre(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const model_hparams *hp = f->hp;
    const model_layer *L = &f->m->w.layers[f->il];
    const uint64_t nh = hp->n_hc, d = hp->n_embd, mixw = (2 + nh) * nh;
    hc_pre_finish(hp, L->hc_attn_scale, L->hc_attn_base, f->MIX + t * mixw,
                  f->X + t * nh * d, f->XS + t * d, f->POST + t * nh, f->COMB + t * nh * nh);
    model_rmsnorm(f->XS + t * d, hp->n_embd, hp->rms_eps, L->attn_norm, f->H + t * d);
}

/* Steps 3-4 after the projections: qn = RMSNorm(qa) * q_a_norm; the KV row normalised,
 * RoPE'd at its position, FP8 + F16 (it is the token's raw row). */
static void tok_attn_qkv(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const model_hparams *hp = f->hp;
    const model_layer *L = &f->m->w.layers[f->il];
    const uint32_t D = hp->head_dim, r = hp->q_lora_rank;
    model_rmsnorm(f->QA + (uint64_t)t * r, r, hp->rms_eps, L->attn_q_a_norm,
                  f->QN + (uint64_t)t * r);
    float *kv = f->RAW + (uint64_t)t * D;
    model_rmsnorm(kv, D, hp->rms_eps, L->attn_kv_a_norm, kv);
    rope_apply(&f->rope[f->il], kv, D, f->pos0 + t, false);
    qat_kv_row(&f->s->m->hp, f->s->qat, kv);
}

/* Step 3: each query head RMS-normalised without weight, then RoPE'd at its position. */
static void tok_q_heads(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const uint32_t D = f->hp->head_dim;
    float *q = f->Q + (uint64_t)t * f->hp->n_head * D;
    for (uint32_t i = 0; i < f->hp->n_head; i++) {
        model_rmsnorm(q + (uint64_t)i * D, D, f->hp->rms_eps, NULL, q + (uint64_t)i * D);
        rope_apply(&f->rope[f->il], q + (uint64_t)i * D, D, f->pos0 + t, false);
    }
}

/* Step 6 (§3.6) for the i-th indexer token. Many tokens: one item per token (queries,
 * scores into the piece's scratch, top_k). Fewer tokens than threads (decode): the scores
 * of each token are split into row ranges over the threads first (idx_scores), token i's
 * scores kept in th[i].iscore, then one item per token finishes with top_k. */
static void idx_query(fwd *f, uint32_t i)
{
    const model_hparams *hp = f->hp;
    const uint32_t pos = f->pos0 + (uint32_t)f->ITOK[i];
    indexer_query_finish(hp, &f->rope[f->il], pos, f->s->qat,
                         f->QI + (uint64_t)i * hp->n_indexer_head * hp->indexer_head_dim,
                         f->WI + (uint64_t)i * hp->n_indexer_head);
}

static uint32_t idx_visible(const fwd *f, uint32_t i)
{
    return (f->pos0 + (uint32_t)f->ITOK[i] + 1) / f->s->layers[f->il].ratio;
}

/* Scores of rows [r0, r1) of indexer token i into dst. */
static void idx_score_rows(fwd *f, uint32_t i, uint32_t r0, uint32_t r1, float *dst)
{
    const model_hparams *hp = f->hp;
    indexer_scores(hp, f->QI + (uint64_t)i * hp->n_indexer_head * hp->indexer_head_dim,
                   f->WI + (uint64_t)i * hp->n_indexer_head,
                   f->s->layers[f->il].index + (uint64_t)r0 * hp->indexer_head_dim, r1 - r0,
                   dst + r0);
}

static void idx_top_k(fwd *f, uint32_t i, float *score)
{
    const uint32_t k = f->hp->indexer_top_k;
    indexer_top_k(score, idx_visible(f, i), k, f->SEL + (uint64_t)f->ITOK[i] * k);
}

static void idx_whole(fwd *f, uint32_t i, fwd_thread *th)
{
    idx_query(f, i);
    idx_score_rows(f, i, 0, idx_visible(f, i), th->iscore);
    idx_top_k(f, i, th->iscore);
}

static void idx_queries(fwd *f, uint32_t i, fwd_thread *th)
{
    (void)th;
    idx_query(f, i);
}

static void idx_scores(fwd *f, uint32_t item, fwd_thread *th)
{
    (void)th;
    const uint32_t i = item / f->idx_chunks, c = item % f->idx_chunks, n = idx_visible(f, i);
    idx_score_rows(f, i, (uint32_t)((uint64_t)n * c / f->idx_chunks),
                   (uint32_t)((uint64_t)n * (c + 1) / f->idx_chunks), f->th[i].iscore);
}

static void idx_finish(fwd *f, uint32_t i, fwd_thread *th)
{
    (void)th;
    idx_top_k(f, i, f->th[i].iscore);
}

static void idx_select(fwd *f)
{
    if (f->n_itok >= (uint32_t)f->n_threads || f->n_threads == 1) {
        model_fwd_loop(f, f->n_itok, idx_whole);
        return;
    }
    model_fwd_loop(f, f->n_itok, idx_queries);
    f->idx_chunks = 4 * (uint32_t)f->n_threads;
    model_fwd_loop(f, f->n_itok * f->idx_chunks, idx_scores);
    model_fwd_loop(f, f->n_itok, idx_finish); /* n_itok < threads: piece i is token i */
}

/* Attention work item: heads of one block of one token (blocks split decode over threads). */
static void attn_item(fwd *f, uint32_t item, fwd_thread *th)
{
    const model_hparams *hp = f->hp;
    const model_layer_state *ls = &f->s->layers[f->il];
    const uint32_t nhb = f->n_hblock, t = item / nhb, hb = item % nhb;
    const uint32_t h0 = hp->n_head * hb / nhb, h1 = hp->n_head * (hb + 1) / nhb;
    const uint32_t D = hp->head_dim, w = f->s->raw_cap, pos = f->pos0 + t;
    /* §3.3 step 7 / §3.11: raw positions max(0, pos-w+1)..pos (the ring holds those before
     * the chunk), then the visible compressed rows (all, or the indexer's choice) */
    uint32_t n = 0;
    for (uint32_t p = pos + 1 >= w ? pos + 1 - w : 0; p <= pos; p++)
        th->rows[n++] = p < f->pos0 ? ls->raw + (uint64_t)(p % w) * D
                                    : f->RAW + (uint64_t)(p - f->pos0) * D;
    if (ls->ratio) {
        const uint32_t n_vis = (pos + 1) / ls->ratio;
        if (ls->index != NULL && n_vis > hp->indexer_top_k) {
            const uint32_t *sel = f->SEL + (uint64_t)t * hp->indexer_top_k;
            for (uint32_t k = 0; k < hp->indexer_top_k; k++)
                th->rows[n++] = ls->comp + (uint64_t)sel[k] * D;
        } else {
            for (uint32_t c = 0; c < n_vis; c++)
                th->rows[n++] = ls->comp + (uint64_t)c * D;
        }
    }
    const uint64_t HD = (uint64_t)hp->n_head * D;
    float *o = f->O + t * HD;
    attn_sink_heads_range(hp, f->m->w.layers[f->il].attn_sinks, f->Q + t * HD, th->rows, n, h0,
                          h1, o, th->scores);
    /* step 8: inverse RoPE of each head's tail at the query position */
    for (uint32_t h = h0; h < h1; h++)
        rope_apply(&f->rope[f->il], o + (uint64_t)h * D, D, pos, true);
}

/* Step 10: HC post of the sublayer output Y into the token's streams. */
static void tok_hc_post(fwd *f, uint32_t t, fwd_thread *th)
{
    const uint64_t nh = f->hp->n_hc, d = f->hp->n_embd;
    hc_post((uint32_t)nh, (uint32_t)d, f->X + t * nh * d, f->Y + t * d, f->POST + t * nh,
            f->COMB + t * nh * nh, th->f);
}

void model_fwd_hc_post(fwd *f)
{
    model_fwd_loop(f, f->T, tok_hc_post);
}

#define ACT(x, n, rows, ldx, w)                                                                \
    const cpu_act *x##_a = model_fwd_act(f, x, n, rows, ldx, (w)->type);                      \
    if (!x##_a)                                                                                \
        return f->err ? f->err->code : DS4_E_NOMEM

static int attn_layer(fwd *f)
{
    const model_hparams *hp = f->hp;
    const uint32_t il = f->il, T = f->T, D = hp->head_dim, d = hp->n_embd;
    const model_layer *L = &f->m->w.layers[il];
    model_layer_state *ls = &f->s->layers[il];
    const uint64_t HD = (uint64_t)hp->n_head * D;
    int rc;

    /* 1-2. HC pre, attn_norm */
    if ((rc = model_fwd_hc_mix(f, L->hc_attn_fn)) != 0)
        return rc;
    model_fwd_loop(f, T, tok_attn_pre);

    /* which tokens run the indexer (§3.6): more than top_k compressed rows visible */
    f->n_itok = 0;
    for (uint32_t t = 0; ls->index && t < T; t++)
        if ((f->pos0 + t + 1) / ls->ratio > hp->indexer_top_k)
            f->ITOK[f->n_itok++] = (int32_t)t;

    /* 3-5. every projection of h in one dispatch: q_a, kv (straight into the raw rows),
     * the compressors' kv/gate, the indexer head weights */
    int n = 0;
    cpu_mm *mm = f->mm;
    f->n_acts = 0;
    const float *H = f->H;
    {
        ACT(H, d, T, d, L->attn_q_a);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->attn_q_a), H_a, 0, NULL, (int)T, f->QA,
                            hp->q_lora_rank };
    }
    {
        ACT(H, d, T, d, L->attn_kv);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->attn_kv), H_a, 0, NULL, (int)T, f->RAW, D };
    }
    const gguf_tensor *ws[5] = { L->attn_compressor_kv, L->attn_compressor_gate,
                                 L->indexer_compressor_kv, L->indexer_compressor_gate,
                                 L->indexer_proj };
    float *ys[5] = { f->CK, f->CS, f->IK, f->IS, f->WI };
    const int64_t ldy[5] = { f->cmp_w, f->cmp_w, f->idx_w, f->idx_w, hp->n_indexer_head };
    for (int i = 0; i < 5; i++) {
        if (ls->ratio == 0 || ws[i] == NULL || (i >= 2 && ls->index == NULL) ||
            (i == 4 && f->n_itok == 0))
            continue;
        ACT(H, d, T, d, ws[i]);
        mm[n++] = (cpu_mm){ model_fwd_weight(ws[i]), H_a, 0, i == 4 ? f->ITOK : NULL,
                            i == 4 ? (int)f->n_itok : (int)T, ys[i], ldy[i] };
    }
    cpu_matmul_many(f->pool, mm, n);
    model_fwd_loop(f, T, tok_attn_qkv);

    /* 3. q = q_b . qn (and the indexer queries from the same qn) */
    n = 0;
    f->n_acts = 0;
    const float *QN = f->QN;
    {
        ACT(QN, hp->q_lora_rank, T, hp->q_lora_rank, L->attn_q_b);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->attn_q_b), QN_a, 0, NULL, (int)T, f->Q,
                            (int64_t)HD };
    }
    if (f->n_itok) {
        ACT(QN, hp->q_lora_rank, T, hp->q_lora_rank, L->indexer_attn_q_b);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->indexer_attn_q_b), QN_a, 0, f->ITOK,
                            (int)f->n_itok, f->QI,
                            (int64_t)hp->n_indexer_head * hp->indexer_head_dim };
    }
    cpu_matmul_many(f->pool, mm, n);
    model_fwd_loop(f, T, tok_q_heads);

    /* 5. compressors, token by token in order (their frontier is sequential state) */
    const compressor_w aw = { L->attn_compressor_ape, L->attn_compressor_kv,
                              L->attn_compressor_gate, L->attn_compressor_norm };
    const compressor_w iw = { L->indexer_compressor_ape, L->indexer_compressor_kv,
                              L->indexer_compressor_gate, L->indexer_compressor_norm };
    float *row = f->th[0].f;
    for (uint32_t t = 0; ls->ratio && t < T; t++) {
        const uint32_t pos = f->pos0 + t;
        if (compressor_push_proj(hp, &aw, &f->rope[il], &ls->attn_cmp, f->CK + t * f->cmp_w,
                                 f->CS + t * f->cmp_w, pos, row)) {
            qat_kv_row(&f->s->m->hp, f->s->qat, row);
            memcpy(ls->comp + (uint64_t)ls->n_comp++ * D, row, D * sizeof(float));
        }
        if (ls->index && compressor_push_proj(hp, &iw, &f->rope[il], &ls->index_cmp,
                                              f->IK + t * f->idx_w, f->IS + t * f->idx_w, pos,
                                              row)) {
            qat_index_row(&f->s->m->hp, f->s->qat, row);
            memcpy(ls->index + (uint64_t)ls->n_index++ * hp->indexer_head_dim, row,
                   hp->indexer_head_dim * sizeof(float));
        }
    }

    /* 6. indexer selection, 7-8. attention and inverse RoPE, over tokens x head blocks */
    idx_select(f);
    f->n_hblock = 1;
    while (f->n_hblock * T < 2 * (uint32_t)f->n_threads && f->n_hblock < hp->n_head)
        f->n_hblock *= 2;
    if (f->n_hblock > hp->n_head)
        f->n_hblock = hp->n_head;
    model_fwd_loop(f, T * f->n_hblock, attn_item);

    /* the ring keeps the last w raw rows */
    const uint32_t w = f->s->raw_cap;
    for (uint32_t p = f->pos0 + T > f->pos0 + w ? f->pos0 + T - w : f->pos0; p < f->pos0 + T; p++)
        memcpy(ls->raw + (uint64_t)(p % w) * D, f->RAW + (uint64_t)(p - f->pos0) * D,
               D * sizeof(float));

    /* 9. grouped output projection, then attn_output_b */
    cpu_weight wa = model_fwd_weight(L->attn_output_a);
    if ((rc = cpu_matmul_grouped(f->pool, &wa, (int)hp->n_out_group, f->O, (int)T, f->MID,
                                 &f->grouped, f->err)) != 0)
        return rc;
    f->n_acts = 0;
    const float *MID = f->MID;
    const int64_t nmid = (int64_t)hp->n_out_group * hp->o_lora_rank;
    {
        ACT(MID, nmid, T, nmid, L->attn_output_b);
        mm[0] = (cpu_mm){ model_fwd_weight(L->attn_output_b), MID_a, 0, NULL, (int)T, f->Y, d };
    }
    cpu_matmul_many(f->pool, mm, 1);

    /* 10. HC post */
    model_fwd_hc_post(f);
    return 0;
}

/* ======================================================================================
 * §3.1 embedding, §3.10 output head, drivers.
 * ====================================================================================== */

static void tok_embed(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const uint64_t d = f->hp->n_embd;
    float *X = f->X + t * f->hp->n_hc * d;
    model_row_f32(f->m->w.token_embd, 0, (uint32_t)f->tok[t], X);
    for (uint32_t i = 1; i < f->hp->n_hc; i++)
        memcpy(X + i * d, X, d * sizeof(float));
}

static void tok_head(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const model_hparams *hp = f->hp;
    const model_weights *w = &f->m->w;
    const uint64_t nh = hp->n_hc, d = hp->n_embd;
    hc_head_finish(hp, w->output_hc_scale, w->output_hc_base, f->MIX + t * (2 + nh) * nh,
                   f->X + t * nh * d, f->XS + t * d);
    model_rmsnorm(f->XS + t * d, hp->n_embd, hp->rms_eps, w->output_norm, f->XS + t * d);
}

static int head(fwd *f, float *logits)
{
    int rc = model_fwd_hc_mix(f, f->m->w.output_hc_fn);
    if (rc)
        return rc;
    model_fwd_loop(f, f->T, tok_head);
    f->n_acts = 0;
    const float *XS = f->XS;
    const uint32_t d = f->hp->n_embd;
    ACT(XS, d, f->T, d, f->m->w.output);
    cpu_mm mm = { model_fwd_weight(f->m->w.output), XS_a, 0, NULL, (int)f->T, logits,
                  f->hp->n_vocab };
    cpu_matmul_many(f->pool, &mm, 1);
    return 0;
}

/* A matrix the forward multiplies (NULL: absent) has a CPU dot kernel. */
static int check_one(const gguf_tensor *t, ds4_error *err)
{
    cpu_weight cw;
    if (t && cpu_weight_init(&cw, t->type, t->ne[0], t->ne[1], t->data, NULL) != 0)
        return ds4_error_set(err, DS4_E_TYPE, "forward: %s: type %s has no CPU kernel", t->name,
                             quant_get_traits(t->type) ? quant_get_traits(t->type)->name : "?");
    return 0;
}

static int check_types(const model *m, ds4_error *err)
{
    const model_weights *w = &m->w;
    int rc = check_one(w->output_hc_fn, err);
    if (rc || (rc = check_one(w->output, err)))
        return rc;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &w->layers[il];
        const gguf_tensor *lt[] = {
            L->hc_attn_fn, L->attn_q_a, L->attn_q_b, L->attn_kv, L->attn_output_a,
            L->attn_output_b, L->attn_compressor_kv, L->attn_compressor_gate,
            L->indexer_attn_q_b, L->indexer_proj, L->indexer_compressor_kv,
            L->indexer_compressor_gate, L->hc_ffn_fn, L->ffn_gate_inp, L->ffn_gate_exps,
            L->ffn_up_exps, L->ffn_down_exps, L->ffn_gate_shexp, L->ffn_up_shexp,
            L->ffn_down_shexp,
        };
        for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++)
            if ((rc = check_one(lt[i], err)) != 0)
                return rc;
    }
    return 0;
}

int model_forward_offload(cpu_pool *pool, const model_offload *off, const model *m,
                          model_state *s, const int32_t *tokens, uint32_t n, float *logits,
                          ds4_error *err)
{
    if (s->m != m)
        return ds4_error_set(err, DS4_E_ARG, "forward: the state belongs to another model");
    if (off && off->m != m)
        return ds4_error_set(err, DS4_E_ARG, "forward: the offload was placed for another "
                             "model");
    int rc = model_state_check_room(s, n, err);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->hp.n_vocab)
            return ds4_error_set(err, DS4_E_ARG, "forward: token %u is %d, outside the "
                                 "vocabulary of %u", i, tokens[i], m->hp.n_vocab);
    if ((rc = check_types(m, err)) != 0)
        return rc;
    const uint32_t chunk = n < MODEL_PREFILL_CHUNK ? n : MODEL_PREFILL_CHUNK;
    fwd f;
    if ((rc = fwd_new(&f, m, s, pool, chunk ? chunk : 1, err)) != 0)
        return rc;
    f.off = off;
    for (uint32_t t0 = 0; t0 < n && rc == 0; t0 += chunk) {
        f.T = n - t0 < chunk ? n - t0 : chunk;
        f.pos0 = s->pos;
        f.tok = tokens + t0;
        model_fwd_loop(&f, f.T, tok_embed);
        for (uint32_t il = 0; il < m->hp.n_layer && rc == 0; il++) {
            f.il = il;
            rc = attn_layer(&f);
            if (rc == 0)
                rc = model_fwd_ffn(&f);
        }
        if (rc == 0 && logits)
            rc = head(&f, logits + (uint64_t)t0 * m->hp.n_vocab);
        s->pos += f.T;
    }
    fwd_free(&f);
    return rc;
}

int model_forward_pool(cpu_pool *pool, const model *m, model_state *s, const int32_t *tokens,
                       uint32_t n, float *logits, ds4_error *err)
{
    return model_forward_offload(pool, NULL, m, s, tokens, n, logits, err);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static cpu_pool *default_pool; /* NULL if it could not be made: one thread */

static void default_init(void)
{
    if (cpu_pool_new(&default_pool, 0, NULL) != 0)
        default_pool = NULL;
}

cpu_pool *model_forward_default_pool(void)
{
    pthread_once(&default_once, default_init);
    return default_pool;
}

int model_forward(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                  float *logits, ds4_error *err)
{
    return model_forward_pool(model_forward_default_pool(), m, s, tokens, n, logits, err);
}
