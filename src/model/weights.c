/* weights.c — model_load: opens the GGUF, reads the hyperparameters (hparams.c), then binds
 * every tensor of ds4-architecture.md §1.4 by name (names.c) and checks it strictly: the
 * exact shape computed from the hyperparameters, a type allowed for its role (the q2/q4
 * mixes and all-F16/F32/BF16 variants), presence by layer kind (compressor iff ratio != 0,
 * indexer iff ratio == 4, tid2eid iff hash layer), gate/up of one type per layer, tid2eid
 * ids within the expert count, and no tensor of a layer beyond block_count. Owns no
 * computation. Invariant: every failure is one line naming the file and the tensor. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/names.h"

/* ---- the rules: allowed types, presence, where each tensor is bound -------------------- */

enum { TC_VEC, TC_FLOAT, TC_EMBD, TC_DENSE, TC_EXPERT, TC_I32, TC_COUNT };

/* Types allowed per class, DS4_TYPE_NONE-terminated. Vectors (norms, scales, biases,
 * sinks) stay F32 as in every published file; the spec's F16 matrices may be any float
 * type; its Q8_0 matrices also float; routed experts any type ds4 has a kernel for. */
static const ds4_type class_types[TC_COUNT][8] = {
    [TC_VEC] = {DS4_TYPE_F32, DS4_TYPE_NONE},
    [TC_FLOAT] = {DS4_TYPE_F16, DS4_TYPE_F32, DS4_TYPE_BF16, DS4_TYPE_NONE},
    [TC_EMBD] = {DS4_TYPE_F16, DS4_TYPE_F32, DS4_TYPE_BF16, DS4_TYPE_Q8_0, DS4_TYPE_NONE},
    [TC_DENSE] = {DS4_TYPE_Q8_0, DS4_TYPE_F16, DS4_TYPE_F32, DS4_TYPE_BF16, DS4_TYPE_NONE},
    [TC_EXPERT] = {DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_Q8_0,
                   DS4_TYPE_F16, DS4_TYPE_F32, DS4_TYPE_BF16, DS4_TYPE_NONE},
    [TC_I32] = {DS4_TYPE_I32, DS4_TYPE_NONE},
};

/* When a per-layer tensor is present: every layer, compressed layers (ratio != 0),
 * ratio-4 layers (indexer), hash layers (il < hash_layer_count), or optionally anywhere. */
enum { P_ALL, P_COMP, P_IDX, P_HASH, P_OPT };

#define G(id, cls, field) [id] = {cls, P_ALL, offsetof(model_weights, field)}
#define L(id, cls, when, field) [id] = {cls, when, offsetof(model_layer, field)}

static const struct rule {
    unsigned char cls, when;
    size_t off; /* of the const gguf_tensor * in model_weights (globals) / model_layer */
} rules[MODEL_T_COUNT] = {
    G(MODEL_T_TOKEN_EMBD, TC_EMBD, token_embd),
    G(MODEL_T_OUTPUT_HC_FN, TC_FLOAT, output_hc_fn),
    G(MODEL_T_OUTPUT_HC_BASE, TC_VEC, output_hc_base),
    G(MODEL_T_OUTPUT_HC_SCALE, TC_VEC, output_hc_scale),
    G(MODEL_T_OUTPUT_NORM, TC_VEC, output_norm),
    G(MODEL_T_OUTPUT, TC_DENSE, output),
    L(MODEL_T_HC_ATTN_FN, TC_FLOAT, P_ALL, hc_attn_fn),
    L(MODEL_T_HC_ATTN_SCALE, TC_VEC, P_ALL, hc_attn_scale),
    L(MODEL_T_HC_ATTN_BASE, TC_VEC, P_ALL, hc_attn_base),
    L(MODEL_T_ATTN_NORM, TC_VEC, P_ALL, attn_norm),
    L(MODEL_T_ATTN_Q_A, TC_DENSE, P_ALL, attn_q_a),
    L(MODEL_T_ATTN_Q_A_NORM, TC_VEC, P_ALL, attn_q_a_norm),
    L(MODEL_T_ATTN_Q_B, TC_DENSE, P_ALL, attn_q_b),
    L(MODEL_T_ATTN_KV, TC_DENSE, P_ALL, attn_kv),
    L(MODEL_T_ATTN_KV_A_NORM, TC_VEC, P_ALL, attn_kv_a_norm),
    L(MODEL_T_ATTN_SINKS, TC_VEC, P_ALL, attn_sinks),
    L(MODEL_T_ATTN_OUTPUT_A, TC_DENSE, P_ALL, attn_output_a),
    L(MODEL_T_ATTN_OUTPUT_B, TC_DENSE, P_ALL, attn_output_b),
    L(MODEL_T_ATTN_COMPRESSOR_APE, TC_FLOAT, P_COMP, attn_compressor_ape),
    L(MODEL_T_ATTN_COMPRESSOR_KV, TC_FLOAT, P_COMP, attn_compressor_kv),
    L(MODEL_T_ATTN_COMPRESSOR_GATE, TC_FLOAT, P_COMP, attn_compressor_gate),
    L(MODEL_T_ATTN_COMPRESSOR_NORM, TC_VEC, P_COMP, attn_compressor_norm),
    L(MODEL_T_INDEXER_ATTN_Q_B, TC_FLOAT, P_IDX, indexer_attn_q_b),
    L(MODEL_T_INDEXER_PROJ, TC_FLOAT, P_IDX, indexer_proj),
    L(MODEL_T_INDEXER_COMPRESSOR_APE, TC_FLOAT, P_IDX, indexer_compressor_ape),
    L(MODEL_T_INDEXER_COMPRESSOR_KV, TC_FLOAT, P_IDX, indexer_compressor_kv),
    L(MODEL_T_INDEXER_COMPRESSOR_GATE, TC_FLOAT, P_IDX, indexer_compressor_gate),
    L(MODEL_T_INDEXER_COMPRESSOR_NORM, TC_VEC, P_IDX, indexer_compressor_norm),
    L(MODEL_T_HC_FFN_FN, TC_FLOAT, P_ALL, hc_ffn_fn),
    L(MODEL_T_HC_FFN_SCALE, TC_VEC, P_ALL, hc_ffn_scale),
    L(MODEL_T_HC_FFN_BASE, TC_VEC, P_ALL, hc_ffn_base),
    L(MODEL_T_FFN_NORM, TC_VEC, P_ALL, ffn_norm),
    L(MODEL_T_FFN_GATE_INP, TC_FLOAT, P_ALL, ffn_gate_inp),
    L(MODEL_T_EXP_PROBS_B, TC_VEC, P_OPT, exp_probs_b),
    L(MODEL_T_FFN_GATE_TID2EID, TC_I32, P_HASH, ffn_gate_tid2eid),
    L(MODEL_T_FFN_GATE_EXPS, TC_EXPERT, P_ALL, ffn_gate_exps),
    L(MODEL_T_FFN_UP_EXPS, TC_EXPERT, P_ALL, ffn_up_exps),
    L(MODEL_T_FFN_DOWN_EXPS, TC_EXPERT, P_ALL, ffn_down_exps),
    L(MODEL_T_FFN_GATE_SHEXP, TC_DENSE, P_ALL, ffn_gate_shexp),
    L(MODEL_T_FFN_UP_SHEXP, TC_DENSE, P_ALL, ffn_up_shexp),
    L(MODEL_T_FFN_DOWN_SHEXP, TC_DENSE, P_ALL, ffn_down_shexp),
};

#undef G
#undef L

int model_tensor_shape(const model_hparams *hp, model_tensor_id id, uint32_t il,
                       int64_t ne[4])
{
    const int64_t d = hp->n_embd, V = hp->n_vocab, hc = hp->n_hc, mix = (2 + hc) * hc;
    const int64_t H = hp->n_head, D = hp->head_dim, q = hp->q_lora_rank;
    const int64_t g = hp->n_out_group, r = hp->o_lora_rank, E = hp->n_expert;
    const int64_t I = hp->n_ff_exp, S = I * hp->n_expert_shared, R = hp->compress_ratio[il];
    const int64_t w = R == 4 ? 2 * D : D, Hi = hp->n_indexer_head, Di = hp->indexer_head_dim;
#define SH(...)                                                          \
    do {                                                                 \
        const int64_t v[] = {__VA_ARGS__};                               \
        memcpy(ne, v, sizeof v);                                         \
        return (int)(sizeof v / sizeof v[0]);                            \
    } while (0)
    switch (id) {
    case MODEL_T_TOKEN_EMBD: case MODEL_T_OUTPUT: SH(d, V);
    case MODEL_T_OUTPUT_HC_FN: SH(hc * d, hc);
    case MODEL_T_OUTPUT_HC_BASE: SH(hc);
    case MODEL_T_OUTPUT_HC_SCALE: SH(1);
    case MODEL_T_OUTPUT_NORM: case MODEL_T_ATTN_NORM: case MODEL_T_FFN_NORM: SH(d);
    case MODEL_T_HC_ATTN_FN: case MODEL_T_HC_FFN_FN: SH(hc * d, mix);
    case MODEL_T_HC_ATTN_SCALE: case MODEL_T_HC_FFN_SCALE: SH(3);
    case MODEL_T_HC_ATTN_BASE: case MODEL_T_HC_FFN_BASE: SH(mix);
    case MODEL_T_ATTN_Q_A: SH(d, q);
    case MODEL_T_ATTN_Q_A_NORM: SH(q);
    case MODEL_T_ATTN_Q_B: SH(q, H * D);
    case MODEL_T_ATTN_KV: SH(d, D);
    case MODEL_T_ATTN_KV_A_NORM: case MODEL_T_ATTN_COMPRESSOR_NORM: SH(D);
    case MODEL_T_ATTN_SINKS: SH(H);
    case MODEL_T_ATTN_OUTPUT_A: SH(H * D / g, g * r);
    case MODEL_T_ATTN_OUTPUT_B: SH(g * r, d);
    case MODEL_T_ATTN_COMPRESSOR_APE: SH(w, R);
    case MODEL_T_ATTN_COMPRESSOR_KV: case MODEL_T_ATTN_COMPRESSOR_GATE: SH(d, w);
    case MODEL_T_INDEXER_ATTN_Q_B: SH(q, Hi * Di);
    case MODEL_T_INDEXER_PROJ: SH(d, Hi);
    case MODEL_T_INDEXER_COMPRESSOR_APE: SH(2 * Di, R);
    case MODEL_T_INDEXER_COMPRESSOR_KV: case MODEL_T_INDEXER_COMPRESSOR_GATE: SH(d, 2 * Di);
    case MODEL_T_INDEXER_COMPRESSOR_NORM: SH(Di);
    case MODEL_T_FFN_GATE_INP: SH(d, E);
    case MODEL_T_EXP_PROBS_B: SH(E);
    case MODEL_T_FFN_GATE_TID2EID: SH(hp->n_expert_used, V);
    case MODEL_T_FFN_GATE_EXPS: case MODEL_T_FFN_UP_EXPS: SH(d, I, E);
    case MODEL_T_FFN_DOWN_EXPS: SH(I, d, E);
    case MODEL_T_FFN_GATE_SHEXP: case MODEL_T_FFN_UP_SHEXP: SH(d, S);
    case MODEL_T_FFN_DOWN_SHEXP: SH(S, d);
    default: SH(0);
    }
#undef SH
}

int model_tensor_presence(const model_hparams *hp, model_tensor_id id, uint32_t il)
{
    if ((unsigned)id >= MODEL_T_COUNT)
        return MODEL_PRESENT_ABSENT;
    const uint32_t R = model_tensor_is_layer(id) ? hp->compress_ratio[il] : 0;
    switch (rules[id].when) {
    case P_COMP: return R != 0;
    case P_IDX: return R == 4;
    case P_HASH: return il < hp->n_hash_layer;
    case P_OPT: return MODEL_PRESENT_OPTIONAL;
    default: return MODEL_PRESENT_REQUIRED;
    }
}

/* ---- binding ---------------------------------------------------------------------------- */

static void fmt_shape(char *buf, size_t n, const int64_t *ne, int dims)
{
    int k = snprintf(buf, n, "[");
    for (int i = 0; i < dims && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, "%s%" PRId64, i ? ", " : "", ne[i]);
    if (k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "]");
}

/* Why layer il has no tensor of this presence class. */
static const char *kind_why(int when)
{
    switch (when) {
    case P_COMP: return "has compress ratio 0 (no compressor)";
    case P_IDX: return "has no indexer (compress ratio is not 4)";
    default: return "is not a hash layer (il >= hash_layer_count)";
    }
}

static int check_type(const char *path, const char *name, const gguf_tensor *t, int cls,
                      ds4_error *err)
{
    char allowed[128] = "";
    for (const ds4_type *p = class_types[cls]; *p != DS4_TYPE_NONE; p++) {
        if (t->type == *p)
            return 0;
        snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s",
                 p == class_types[cls] ? "" : ", ", quant_get_traits(*p)->name);
    }
    return ds4_error_set(err, DS4_E_TYPE, "%s: tensor '%s': type %s not allowed (expected %s)",
                         path, name, quant_get_traits(t->type)->name, allowed);
}

static int check_shape(const char *path, const char *name, const gguf_tensor *t,
                       const int64_t *want, int dims, model_tensor_id id, ds4_error *err)
{
    int64_t full[GGUF_MAX_DIMS];
    for (int i = 0; i < GGUF_MAX_DIMS; i++)
        full[i] = i < dims ? want[i] : 1;
    if (memcmp(full, t->ne, sizeof full) == 0)
        return 0;
    /* attn_output_a as [H*D/g, r, g] (a reshape some llama.cpp forks write): same bytes */
    if (id == MODEL_T_ATTN_OUTPUT_A && t->ne[0] == want[0] && t->ne[2] > 1 &&
        t->ne[1] * t->ne[2] == want[1] && t->n_dims == 3)
        return 0;
    char got[160], exp[160];
    fmt_shape(got, sizeof got, t->ne, (int)t->n_dims);
    fmt_shape(exp, sizeof exp, want, dims);
    return ds4_error_set(err, DS4_E_FORMAT, "%s: tensor '%s': shape %s expected %s", path, name,
                         got, exp);
}

/* Binds id of layer il (0 for globals) into *slot after checking presence, type, shape. */
static int bind(const model *m, model_tensor_id id, uint32_t il, const gguf_tensor **slot,
                ds4_error *err)
{
    const model_hparams *hp = &m->hp;
    const char *path = gguf_path(m->file);
    const struct rule *ru = &rules[id];
    char name[MODEL_NAME_MAX];
    bool both;
    const gguf_tensor *t = model_tensor_find(m->file, id, m->dialect, il, name, &both);
    const int presence = model_tensor_presence(hp, id, il);
    const bool want = presence != MODEL_PRESENT_ABSENT;
    *slot = NULL;
    if (both) {
        char alt[MODEL_NAME_MAX];
        model_tensor_legacy_name(alt, id, il); /* both: the alias exists */
        return ds4_error_set(err, DS4_E_FORMAT, "%s: tensor '%s': present under two names"
                             " ('%s' too)", path, name, alt);
    }
    if (!t) {
        if (presence != MODEL_PRESENT_REQUIRED)
            return 0;
        return ds4_error_set(err, DS4_E_NOTFOUND, "%s: tensor '%s' missing", path, name);
    }
    if (!want)
        return ds4_error_set(err, DS4_E_FORMAT, "%s: tensor '%s' present but layer %u %s", path,
                             name, il, kind_why(ru->when));
    int64_t ne[4];
    int dims = model_tensor_shape(hp, id, il, ne), rc;
    if ((rc = check_type(path, name, t, ru->cls, err)) ||
        (rc = check_shape(path, name, t, ne, dims, id, err)))
        return rc;
    *slot = t;
    return 0;
}

/* Every tid2eid entry must be an expert id. */
static int check_tid2eid(const model *m, uint32_t il, const gguf_tensor *t, ds4_error *err)
{
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < t->n_elems; i++) {
        int32_t e;
        memcpy(&e, p + 4 * i, 4);
        if (e < 0 || (uint32_t)e >= m->hp.n_expert) {
            char name[MODEL_NAME_MAX];
            model_tensor_find(m->file, MODEL_T_FFN_GATE_TID2EID, m->dialect, il, name, NULL);
            return ds4_error_set(err, DS4_E_RANGE, "%s: tensor '%s': token %" PRId64 " entry %"
                                 PRId64 " = %d is not an expert id (expert_count %u)",
                                 gguf_path(m->file), name, i / t->ne[0], i % t->ne[0], e,
                                 m->hp.n_expert);
        }
    }
    return 0;
}

static int bind_layer(model *m, uint32_t il, ds4_error *err)
{
    model_layer *L = &m->w.layers[il];
    int rc;
    for (int id = MODEL_T_FIRST_LAYER; id < MODEL_T_COUNT; id++)
        if ((rc = bind(m, (model_tensor_id)id, il,
                       (const gguf_tensor **)((char *)L + rules[id].off), err)))
            return rc;
    if (L->ffn_up_exps->type != L->ffn_gate_exps->type) {
        char up[MODEL_NAME_MAX], gate[MODEL_NAME_MAX];
        model_tensor_find(m->file, MODEL_T_FFN_UP_EXPS, m->dialect, il, up, NULL);
        model_tensor_find(m->file, MODEL_T_FFN_GATE_EXPS, m->dialect, il, gate, NULL);
        return ds4_error_set(err, DS4_E_TYPE, "%s: tensor '%s': type %s differs from '%s' type"
                             " %s (gate and up must match)", gguf_path(m->file), up,
                             quant_get_traits(L->ffn_up_exps->type)->name, gate,
                             quant_get_traits(L->ffn_gate_exps->type)->name);
    }
    return L->ffn_gate_tid2eid ? check_tid2eid(m, il, L->ffn_gate_tid2eid, err) : 0;
}

/* Tensors the table does not bind: layers past block_count are an error (except llama.cpp's
 * trailing MTP blocks), anything else is counted and ignored (mtp.*, unknown names). */
static int scan_rest(model *m, ds4_error *err)
{
    const uint32_t n_all = m->hp.n_layer + m->hp.n_nextn_layer;
    for (int64_t i = 0; i < gguf_tensor_count(m->file); i++) {
        const char *name = gguf_tensor_at(m->file, i)->name;
        uint32_t il = 0;
        model_dialect sp;
        bool layer;
        int id = model_tensor_parse(name, &il, &sp, &layer);
        if (layer && il >= n_all)
            return ds4_error_set(err, DS4_E_FORMAT, "%s: tensor '%s' belongs to layer %u but"
                                 " block_count is %u", gguf_path(m->file), name, il, n_all);
        if (id < 0 || (layer && il >= m->hp.n_layer))
            m->n_ignored++;
    }
    return 0;
}

/* ---- lifetime --------------------------------------------------------------------------- */

int model_load_file(model **out, gguf_file *f, ds4_error *err)
{
    *out = NULL;
    if (!f)
        return ds4_error_set(err, DS4_E_ARG, "model_load_file: NULL file");
    model *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        return ds4_error_set(err, DS4_E_NOMEM, "%s: out of memory for the model", gguf_path(f));
    }
    m->file = f;
    m->dialect = model_dialect_detect(f);
    int rc = model_hparams_read(&m->hp, f, m->dialect, err);
    if (!rc && !(m->w.layers = calloc(m->hp.n_layer, sizeof *m->w.layers)))
        rc = ds4_error_set(err, DS4_E_NOMEM, "%s: out of memory for %u layers", gguf_path(f),
                           m->hp.n_layer);
    for (int id = 0; !rc && id < MODEL_T_FIRST_LAYER; id++)
        rc = bind(m, (model_tensor_id)id, 0,
                  (const gguf_tensor **)((char *)&m->w + rules[id].off), err);
    for (uint32_t il = 0; !rc && il < m->hp.n_layer; il++)
        rc = bind_layer(m, il, err);
    if (!rc)
        rc = scan_rest(m, err);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int model_load(model **out, const char *path, ds4_error *err)
{
    gguf_file *f;
    *out = NULL;
    int rc = gguf_open(&f, path, err);
    return rc ? rc : model_load_file(out, f, err);
}

void model_free(model *m)
{
    if (!m)
        return;
    gguf_close(m->file);
    free(m->w.layers);
    free(m);
}
