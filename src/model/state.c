/* state.c — allocation, reset and limits of the per-sequence forward state (state.h): per
 * layer a raw window of min(n_swa, n_ctx) rows, n_ctx/R + 2 compressed rows (and as many
 * indexer rows on indexer layers), and the compressor frontiers (overlapped: 2R slots of
 * 2*head_dim values and scores; otherwise R slots of head_dim). Whether a compressor is
 * overlapped is read from its projection's shape (2*head_dim outputs).
 * Implements the cache layout of ds4-architecture.md §6.2. */
#include <stdlib.h>
#include <string.h>

#include "model/state.h"

static float *alloc_f32(uint64_t n)
{
    return n ? calloc((size_t)n, sizeof(float)) : NULL;
}

/* Shapes a compressor frontier from its kv projection (ne = [n_embd, coff*head_dim]). */
static int cmp_init(compressor_state *cs, const gguf_tensor *kv, uint32_t R, uint32_t head_dim,
                    const char *what, uint32_t il, ds4_error *err)
{
    if (kv == NULL || head_dim == 0 || kv->ne[1] % head_dim != 0 ||
        (kv->ne[1] / head_dim != 1 && kv->ne[1] / head_dim != 2))
        return ds4_error_set(err, DS4_E_ARG, "state: layer %u %s compressor: projection width "
                             "is not 1 or 2 x head_dim %u", il, what, head_dim);
    cs->ratio = R;
    cs->head_dim = head_dim;
    cs->coff = (uint32_t)(kv->ne[1] / head_dim);
    cs->n_slot = cs->coff * R;
    cs->width = cs->coff * head_dim;
    cs->kv = alloc_f32((uint64_t)cs->n_slot * cs->width);
    cs->score = alloc_f32((uint64_t)cs->n_slot * cs->width);
    if (cs->kv == NULL || cs->score == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "state: out of memory (layer %u %s compressor)",
                             il, what);
    compressor_reset(cs);
    return 0;
}

int model_state_new(model_state **out, const model *m, uint32_t n_ctx, ds4_error *err)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    if (n_ctx == 0)
        return ds4_error_set(err, DS4_E_ARG, "state: context size must be at least 1");
    int rc = model_ref_check(m, err);
    if (rc)
        return rc;
    model_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "state: out of memory");
    s->m = m;
    s->n_ctx = n_ctx;
    s->raw_cap = hp->n_swa < n_ctx ? hp->n_swa : n_ctx;
    const char *env = getenv("DS4_NO_QAT_SIM");
    s->qat = !(env && env[0] && strcmp(env, "0") != 0);
    s->layers = calloc(hp->n_layer ? hp->n_layer : 1, sizeof *s->layers);
    rc = s->layers ? 0 : ds4_error_set(err, DS4_E_NOMEM, "state: out of memory");
    if (rc == 0 && s->raw_cap == 0)
        rc = ds4_error_set(err, DS4_E_ARG, "state: sliding window is 0");
    for (uint32_t il = 0; rc == 0 && il < hp->n_layer; il++) {
        model_layer_state *ls = &s->layers[il];
        const model_layer *L = &m->w.layers[il];
        const uint32_t R = model_ratio(hp, il);
        ls->ratio = R;
        ls->raw = alloc_f32((uint64_t)s->raw_cap * hp->head_dim);
        if (ls->raw == NULL) {
            rc = ds4_error_set(err, DS4_E_NOMEM, "state: out of memory (layer %u raw window)", il);
            break;
        }
        if (R == 0)
            continue;
        ls->comp_cap = n_ctx / R + 2;
        ls->comp = alloc_f32((uint64_t)ls->comp_cap * hp->head_dim);
        if (ls->comp == NULL) {
            rc = ds4_error_set(err, DS4_E_NOMEM, "state: out of memory (layer %u rows)", il);
            break;
        }
        rc = cmp_init(&ls->attn_cmp, L->attn_compressor_kv, R, hp->head_dim, "attention", il, err);
        if (rc == 0 && L->indexer_compressor_kv != NULL) {
            ls->index = alloc_f32((uint64_t)ls->comp_cap * hp->indexer_head_dim);
            rc = ls->index ? cmp_init(&ls->index_cmp, L->indexer_compressor_kv, R,
                                      hp->indexer_head_dim, "indexer", il, err)
                           : ds4_error_set(err, DS4_E_NOMEM,
                                           "state: out of memory (layer %u indexer rows)", il);
        }
    }
    if (rc) {
        model_state_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void model_state_free(model_state *s)
{
    if (s == NULL)
        return;
    for (uint32_t il = 0; s->layers && il < s->m->hp.n_layer; il++) {
        model_layer_state *ls = &s->layers[il];
        free(ls->raw);
        free(ls->comp);
        free(ls->index);
        free(ls->attn_cmp.kv);
        free(ls->attn_cmp.score);
        free(ls->index_cmp.kv);
        free(ls->index_cmp.score);
    }
    free(s->layers);
    free(s);
}

void model_state_reset(model_state *s)
{
    const model_hparams *hp = &s->m->hp;
    s->pos = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        model_layer_state *ls = &s->layers[il];
        memset(ls->raw, 0, (size_t)s->raw_cap * hp->head_dim * sizeof(float));
        ls->n_comp = ls->n_index = 0;
        if (ls->attn_cmp.kv)
            compressor_reset(&ls->attn_cmp);
        if (ls->index_cmp.kv)
            compressor_reset(&ls->index_cmp);
    }
}

uint32_t model_state_pos(const model_state *s)
{
    return s->pos;
}

int model_state_check_room(const model_state *s, uint32_t n, ds4_error *err)
{
    if ((uint64_t)s->pos + n > s->n_ctx)
        return ds4_error_set(err, DS4_E_RANGE, "context full: %u tokens at position %u exceed "
                             "the context of %u", n, s->pos, s->n_ctx);
    return 0;
}
