/* hparams.c — model_hparams from the deepseek4.* metadata of ds4-architecture.md §1.3:
 * reading each key with the type variants the spec and llama.cpp use (u32/u64, scalar or
 * per-layer array), llama.cpp's extra keys (gating function checked, shared-expert clamp
 * checked, the rest ignored), deriving from tensor shapes the keys that llama.cpp-dialect
 * files may leave out (vocab_size; all those the legacy fork omits; docs/llamacpp-dialect.md),
 * and the consistency checks every later stage relies on. Owns no tensor binding (weights.c).
 * Invariants: no model constant is assumed — every value comes from a key or a tensor
 * shape; every failure is one line naming the file and the key. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"
#include "model/names.h"

#define KP MODEL_ARCH "."

typedef struct ctx {
    const gguf_file *f;
    model_dialect d;
    const char *path;
    model_hparams *hp;
    ds4_error *err;
} ctx;

/* A derivation stores the value and returns 0, or writes why it cannot into why. */
typedef int (*derive_fn)(ctx *c, uint64_t *v, char *why, size_t n);

/* ---- derivations from tensor shapes (llama.cpp dialect) --------------------------------- */

/* Dimension dim of tensor id in layer il, or -1 with why filled. */
static int64_t dim_of(ctx *c, model_tensor_id id, uint32_t il, int dim, char *why, size_t n)
{
    char name[MODEL_NAME_MAX];
    const gguf_tensor *t = model_tensor_find(c->f, id, c->d, il, name, NULL);
    if (!t) {
        snprintf(why, n, "tensor '%s' missing", name);
        return -1;
    }
    return t->ne[dim];
}

static int d_n_layer(ctx *c, uint64_t *v, char *why, size_t n)
{
    uint64_t top = 0;
    for (int64_t i = 0; i < gguf_tensor_count(c->f); i++) {
        uint32_t il;
        model_dialect sp;
        bool layer;
        if (model_tensor_parse(gguf_tensor_at(c->f, i)->name, &il, &sp, &layer) >= 0 && layer &&
            (uint64_t)il + 1 > top)
            top = (uint64_t)il + 1;
    }
    if (!top)
        return snprintf(why, n, "no blk.N tensors"), -1;
    *v = top;
    return 0;
}

#define DIM_DERIVE(fn, id, il, dim)                                   \
    static int fn(ctx *c, uint64_t *v, char *why, size_t n)          \
    {                                                                 \
        int64_t x = dim_of(c, id, il, dim, why, n);                   \
        if (x < 0)                                                    \
            return -1;                                                \
        *v = (uint64_t)x;                                             \
        return 0;                                                     \
    }

DIM_DERIVE(d_n_embd, MODEL_T_TOKEN_EMBD, 0, 0)
DIM_DERIVE(d_n_vocab, MODEL_T_TOKEN_EMBD, 0, 1)
DIM_DERIVE(d_head_dim, MODEL_T_ATTN_KV_A_NORM, 0, 0)
DIM_DERIVE(d_n_head, MODEL_T_ATTN_SINKS, 0, 0)
DIM_DERIVE(d_q_lora, MODEL_T_ATTN_Q_A, 0, 1)
DIM_DERIVE(d_n_expert, MODEL_T_FFN_GATE_EXPS, 0, 2)
DIM_DERIVE(d_n_ff, MODEL_T_FFN_GATE_EXPS, 0, 1)
DIM_DERIVE(d_n_hc, MODEL_T_OUTPUT_HC_FN, 0, 1)

#undef DIM_DERIVE

/* Quotient a / b when exact, else -1 with why naming layer 0's tensor id. */
static int exact_div(ctx *c, int64_t a, int64_t b, uint64_t *v, model_tensor_id id,
                     const char *what, char *why, size_t n)
{
    if (b <= 0 || a % b) {
        char name[MODEL_NAME_MAX];
        model_tensor_find(c->f, id, c->d, 0, name, NULL);
        snprintf(why, n, "tensor '%s': %s: %" PRId64 " not a multiple of %" PRId64, name, what,
                 a, b);
        return -1;
    }
    *v = (uint64_t)(a / b);
    return 0;
}

static int d_n_head_kv(ctx *c, uint64_t *v, char *why, size_t n)
{
    int64_t w = dim_of(c, MODEL_T_ATTN_KV, 0, 1, why, n);
    return w < 0 ? -1 : exact_div(c, w, c->hp->head_dim, v, MODEL_T_ATTN_KV, "ne1 / key_length",
                                      why, n);
}

/* attn_output_a is [H*D/g, g*r] (or, as some forks write it, [H*D/g, r, g]). */
static int out_a_dims(ctx *c, int64_t *ne0, int64_t *ne1, int64_t *ne2, char *why, size_t n)
{
    if ((*ne0 = dim_of(c, MODEL_T_ATTN_OUTPUT_A, 0, 0, why, n)) < 0)
        return -1;
    *ne1 = dim_of(c, MODEL_T_ATTN_OUTPUT_A, 0, 1, why, n);
    *ne2 = dim_of(c, MODEL_T_ATTN_OUTPUT_A, 0, 2, why, n);
    return 0;
}

static int d_n_out_group(ctx *c, uint64_t *v, char *why, size_t n)
{
    int64_t a, b, g;
    if (out_a_dims(c, &a, &b, &g, why, n))
        return -1;
    if (g > 1)
        return *v = (uint64_t)g, 0;
    return exact_div(c, (int64_t)c->hp->n_head * c->hp->head_dim, a, v, MODEL_T_ATTN_OUTPUT_A,
                     "head_count * key_length / ne0", why, n);
}

static int d_o_lora(ctx *c, uint64_t *v, char *why, size_t n)
{
    int64_t a, b, g;
    if (out_a_dims(c, &a, &b, &g, why, n))
        return -1;
    if (g > 1)
        return *v = (uint64_t)b, 0;
    return exact_div(c, b, c->hp->n_out_group, v, MODEL_T_ATTN_OUTPUT_A,
                     "ne1 / output_group_count", why, n);
}

static int d_n_expert_used(ctx *c, uint64_t *v, char *why, size_t n)
{
    int64_t k = dim_of(c, MODEL_T_FFN_GATE_TID2EID, 0, 0, why, n);
    if (k < 0)
        return snprintf(why, n, "needs a hash layer's ffn_gate_tid2eid"), -1;
    return *v = (uint64_t)k, 0;
}

static int d_n_shared(ctx *c, uint64_t *v, char *why, size_t n)
{
    int64_t w = dim_of(c, MODEL_T_FFN_GATE_SHEXP, 0, 1, why, n);
    return w < 0 ? -1 : exact_div(c, w, c->hp->n_ff_exp, v, MODEL_T_FFN_GATE_SHEXP,
                                      "ne1 / expert_feed_forward_length", why, n);
}

static int d_n_hash(ctx *c, uint64_t *v, char *why, size_t n)
{
    (void)why, (void)n;
    uint32_t k = 0;
    char name[MODEL_NAME_MAX];
    while (k < c->hp->n_layer &&
           model_tensor_find(c->f, MODEL_T_FFN_GATE_TID2EID, c->d, k, name, NULL))
        k++;
    return *v = k, 0;
}

/* First ratio-4 layer, or n_layer. */
static uint32_t first_ratio4(const model_hparams *hp)
{
    uint32_t il = 0;
    while (il < hp->n_layer && hp->compress_ratio[il] != 4)
        il++;
    return il;
}

static int d_idx_head(ctx *c, uint64_t *v, char *why, size_t n)
{
    uint32_t il = first_ratio4(c->hp);
    if (il == c->hp->n_layer)
        return *v = 0, 0; /* no indexer anywhere: the value is never used */
    int64_t x = dim_of(c, MODEL_T_INDEXER_PROJ, il, 1, why, n);
    return x < 0 ? -1 : (*v = (uint64_t)x, 0);
}

static int d_idx_dim(ctx *c, uint64_t *v, char *why, size_t n)
{
    uint32_t il = first_ratio4(c->hp);
    if (il == c->hp->n_layer)
        return *v = 0, 0;
    int64_t x = dim_of(c, MODEL_T_INDEXER_COMPRESSOR_NORM, il, 0, why, n);
    return x < 0 ? -1 : (*v = (uint64_t)x, 0);
}

static int d_idx_top_k(ctx *c, uint64_t *v, char *why, size_t n)
{
    if (first_ratio4(c->hp) == c->hp->n_layer)
        return *v = 0, 0;
    return snprintf(why, n, "no tensor holds it"), -1;
}

/* ---- reading keys ----------------------------------------------------------------------- */

static int missing(ctx *c, const char *key, derive_fn derive, const char *why)
{
    if (c->d == MODEL_DIALECT_LLAMACPP)
        return ds4_error_set(c->err, DS4_E_NOTFOUND, "%s: key '" KP "%s' missing and not"
                             " derivable from tensor shapes (%s)", c->path, key,
                             derive ? why : "no tensor holds it");
    return ds4_error_set(c->err, DS4_E_NOTFOUND, "%s: key '" KP "%s' missing", c->path, key);
}

/* An integer key as u64: 1 present, 0 absent, < 0 error (wrong type, negative). */
static int get_int(ctx *c, const char *key, uint64_t *v)
{
    char full[128];
    snprintf(full, sizeof full, KP "%s", key);
    int rc = gguf_get_u64_any(c->f, full, v, c->err);
    if (rc == DS4_E_NOTFOUND)
        return 0;
    return rc ? rc : 1;
}

static int key_u64(ctx *c, const char *key, uint64_t *out, derive_fn derive)
{
    int rc = get_int(c, key, out);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        char why[200] = "";
        if (c->d != MODEL_DIALECT_LLAMACPP || !derive || derive(c, out, why, sizeof why))
            return missing(c, key, derive, why);
    }
    return 0;
}

static int key_u32(ctx *c, const char *key, uint32_t *out, derive_fn derive)
{
    uint64_t v;
    int rc = key_u64(c, key, &v, derive);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '" KP "%s' = %" PRIu64 " exceeds"
                             " 32 bits", c->path, key, v);
    *out = (uint32_t)v;
    return 0;
}

/* A float key (any numeric type); non-finite values are refused. Never derivable. */
static int key_f32(ctx *c, const char *key, float *out)
{
    char full[128];
    double v;
    snprintf(full, sizeof full, KP "%s", key);
    int rc = gguf_get_f64_any(c->f, full, &v, c->err);
    if (rc == DS4_E_NOTFOUND)
        return missing(c, key, NULL, "");
    if (rc)
        return rc;
    if (!isfinite(v) || !isfinite((float)v))
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '%s' = %g is not a finite f32",
                             c->path, full, v);
    *out = (float)v;
    return 0;
}

/* compress_ratios: array of integers, at least n_layer long; derived from the compressor
 * ape shapes (ne1 = R; no compressor = 0) in the llama.cpp dialect. */
static int key_ratios(ctx *c)
{
    model_hparams *hp = c->hp;
    const gguf_kv *kv;
    int rc = gguf_get_arr(c->f, KP "attention.compress_ratios", &kv, c->err);
    if (rc == DS4_E_NOTFOUND && c->d == MODEL_DIALECT_LLAMACPP) {
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            char name[MODEL_NAME_MAX], kv_name[MODEL_NAME_MAX];
            const gguf_tensor *t =
                model_tensor_find(c->f, MODEL_T_ATTN_COMPRESSOR_APE, c->d, il, name, NULL);
            if (!t && model_tensor_find(c->f, MODEL_T_ATTN_COMPRESSOR_KV, c->d, il, kv_name,
                                        NULL))
                return ds4_error_set(c->err, DS4_E_NOTFOUND, "%s: key '" KP "attention."
                                     "compress_ratios' missing and not derivable from tensor"
                                     " shapes (tensor '%s' missing, layer %u has '%s')",
                                     c->path, name, il, kv_name);
            hp->compress_ratio[il] = t && t->ne[1] <= UINT32_MAX ? (uint32_t)t->ne[1] : 0;
        }
        return 0;
    }
    if (rc == DS4_E_NOTFOUND)
        return missing(c, "attention.compress_ratios", NULL, "");
    if (rc)
        return rc;
    if (kv->arr_count < hp->n_layer)
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '" KP "attention.compress_ratios'"
                             " has %" PRIu64 " entries, block_count is %u", c->path,
                             kv->arr_count, hp->n_layer);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        int64_t r;
        if ((rc = gguf_arr_i64(c->f, kv, il, &r, c->err)))
            return rc;
        if (r < 0 || r > UINT32_MAX)
            return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '" KP "attention.compress_ratios'"
                                 "[%u] = %" PRId64 " out of range", c->path, il, r);
        hp->compress_ratio[il] = (uint32_t)r;
    }
    return 0;
}

/* A per-layer float: an array of at least n_layer numbers, or (llama.cpp) one scalar
 * broadcast to every layer. out == NULL only checks the values against ref. */
static int key_per_layer(ctx *c, const char *key, float *out, const float *ref)
{
    char full[128];
    const gguf_kv *kv;
    snprintf(full, sizeof full, KP "%s", key);
    int64_t i = gguf_find_key(c->f, full);
    if (i < 0)
        return out ? missing(c, key, NULL, "") : 0;
    kv = gguf_kv_at(c->f, i);
    uint32_t n = c->hp->n_layer;
    for (uint32_t il = 0; il < n; il++) {
        double v;
        int rc;
        if (kv->type == GGUF_TYPE_ARR) {
            if (kv->arr_count < n)
                return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '%s' has %" PRIu64 " entries,"
                                     " block_count is %u", c->path, full, kv->arr_count, n);
            rc = gguf_arr_f64(c->f, kv, il, &v, c->err);
        } else {
            rc = gguf_get_f64_any(c->f, full, &v, c->err);
        }
        if (rc)
            return rc;
        if (isnan(v) || v <= 0)
            return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '%s'[%u] = %g must be > 0",
                                 c->path, full, il, v);
        if (out)
            out[il] = (float)v;
        else if ((float)v != ref[il])
            return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '%s'[%u] = %g differs from"
                                 " swiglu_clamp_exp = %g (ds4 applies one clamp to routed and"
                                 " shared experts)", c->path, full, il, v, (double)ref[il]);
    }
    return 0;
}

/* general.architecture (if present) must be deepseek4; tokenizer.ggml.tokens (if present)
 * must have one entry per vocabulary row. */
static int file_facts(ctx *c)
{
    const char *arch;
    int rc = gguf_get_str(c->f, "general.architecture", &arch, NULL, c->err);
    if (rc && rc != DS4_E_NOTFOUND)
        return rc;
    if (!rc && strcmp(arch, MODEL_ARCH) != 0)
        return ds4_error_set(c->err, DS4_E_FORMAT, "%s: key 'general.architecture' is '%s',"
                             " not '" MODEL_ARCH "'", c->path, arch);
    return 0;
}

static int tokenizer_facts(ctx *c)
{
    const gguf_kv *kv;
    int rc = gguf_get_arr(c->f, "tokenizer.ggml.tokens", &kv, c->err);
    if (rc == DS4_E_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    /* llama.cpp's converter writes no vocab_size: then it came from token_embd's shape */
    bool derived = gguf_find_key(c->f, KP "vocab_size") < 0;
    if (kv->arr_type != GGUF_TYPE_STR || kv->arr_count != c->hp->n_vocab)
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key 'tokenizer.ggml.tokens' holds %"
                             PRIu64 " %s entries, vocab_size is %u%s", c->path, kv->arr_count,
                             gguf_type_name(kv->arr_type), c->hp->n_vocab,
                             derived ? " (from tensor 'token_embd.weight')" : "");
    return 0;
}

/* expert_gating_func (llama.cpp's dialect): if present, llama.cpp's sqrt-softplus value. */
#define LLAMACPP_GATING_SQRT_SOFTPLUS 4 /* llama-hparams.h LLAMA_EXPERT_GATING_FUNC_TYPE_ */

static int key_gating(ctx *c)
{
    uint64_t v;
    int rc = get_int(c, "expert_gating_func", &v);
    if (rc < 0)
        return rc;
    if (rc == 1 && v != LLAMACPP_GATING_SQRT_SOFTPLUS)
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '" KP "expert_gating_func' = %"
                             PRIu64 ": DS4 routes with sqrt-softplus (llama.cpp's value %d)",
                             c->path, v, LLAMACPP_GATING_SQRT_SOFTPLUS);
    return 0;
}

/* Group-limited routing keys are optional and must be 0 (DS4 routes over all experts). */
static int key_zero_or_absent(ctx *c, const char *key)
{
    uint64_t v;
    int rc = get_int(c, key, &v);
    if (rc < 0)
        return rc;
    if (rc == 1 && v != 0)
        return ds4_error_set(c->err, DS4_E_RANGE, "%s: key '" KP "%s' = %" PRIu64 ": group-"
                             "limited routing is not part of DS4 (must be 0 or absent)",
                             c->path, key, v);
    return 0;
}

int model_hparams_read(model_hparams *hp, const gguf_file *f, model_dialect d,
                       ds4_error *err)
{
    memset(hp, 0, sizeof *hp);
    ctx c = {.f = f, .d = d, .path = gguf_path(f), .hp = hp, .err = err};
    ctx *x = &c;
    uint32_t value_length = 0;
    bool norm;
    int rc;
#define TRY(e)              \
    do {                    \
        if ((rc = (e)))     \
            return rc;      \
    } while (0)
    TRY(file_facts(x));
    TRY(key_u32(x, "block_count", &hp->n_layer, d_n_layer));
    uint64_t nextn = 0;
    if ((rc = get_int(x, "nextn_predict_layers", &nextn)) < 0)
        return rc;
    if (nextn >= hp->n_layer)
        return ds4_error_set(err, DS4_E_RANGE, "%s: key '" KP "nextn_predict_layers' = %" PRIu64
                             " leaves no main layer of block_count = %u", c.path, nextn,
                             hp->n_layer);
    hp->n_nextn_layer = (uint32_t)nextn;
    hp->n_layer -= hp->n_nextn_layer;
    if (hp->n_layer < 1 || hp->n_layer > MODEL_MAX_LAYERS)
        return ds4_error_set(err, DS4_E_RANGE, "%s: key '" KP "block_count' = %u not in 1..%d",
                             c.path, hp->n_layer, MODEL_MAX_LAYERS);
    TRY(key_u32(x, "embedding_length", &hp->n_embd, d_n_embd));
    TRY(key_u32(x, "vocab_size", &hp->n_vocab, d_n_vocab));
    TRY(key_u32(x, "attention.key_length", &hp->head_dim, d_head_dim));
    TRY(key_u32(x, "attention.value_length", &value_length, d_head_dim));
    TRY(key_u32(x, "attention.head_count", &hp->n_head, d_n_head));
    TRY(key_u32(x, "attention.head_count_kv", &hp->n_head_kv, d_n_head_kv));
    TRY(key_u32(x, "rope.dimension_count", &hp->n_rot, NULL));
    TRY(key_u32(x, "attention.q_lora_rank", &hp->q_lora_rank, d_q_lora));
    TRY(key_u32(x, "attention.output_group_count", &hp->n_out_group, d_n_out_group));
    TRY(key_u32(x, "attention.output_lora_rank", &hp->o_lora_rank, d_o_lora));
    TRY(key_u32(x, "expert_count", &hp->n_expert, d_n_expert));
    TRY(key_u32(x, "expert_used_count", &hp->n_expert_used, d_n_expert_used));
    TRY(key_u32(x, "expert_feed_forward_length", &hp->n_ff_exp, d_n_ff));
    TRY(key_u32(x, "expert_shared_count", &hp->n_expert_shared, d_n_shared));
    TRY(key_u32(x, "hash_layer_count", &hp->n_hash_layer, d_n_hash));
    TRY(key_zero_or_absent(x, "expert_group_count"));
    TRY(key_zero_or_absent(x, "expert_group_used_count"));
    TRY(key_gating(x));
    TRY(key_u32(x, "attention.sliding_window", &hp->n_swa, NULL));
    TRY(key_ratios(x));
    TRY(key_u32(x, "attention.indexer.head_count", &hp->n_indexer_head, d_idx_head));
    TRY(key_u32(x, "attention.indexer.key_length", &hp->indexer_head_dim, d_idx_dim));
    TRY(key_u32(x, "attention.indexer.top_k", &hp->indexer_top_k, d_idx_top_k));
    TRY(key_u32(x, "hyper_connection.count", &hp->n_hc, d_n_hc));
    TRY(key_u32(x, "hyper_connection.sinkhorn_iterations", &hp->hc_sinkhorn_iters, NULL));
    TRY(key_f32(x, "hyper_connection.epsilon", &hp->hc_eps));
    TRY(key_per_layer(x, "swiglu_clamp_exp", hp->swiglu_clamp, NULL));
    TRY(key_per_layer(x, "swiglu_clamp_shexp", NULL, hp->swiglu_clamp));
    TRY(key_u64(x, "rope.scaling.original_context_length", &hp->rope_orig_ctx, NULL));
    TRY(key_f32(x, "rope.freq_base", &hp->rope_freq_base));
    TRY(key_f32(x, "rope.scaling.factor", &hp->rope_scaling_factor));
    TRY(key_f32(x, "rope.scaling.yarn_beta_fast", &hp->rope_beta_fast));
    TRY(key_f32(x, "rope.scaling.yarn_beta_slow", &hp->rope_beta_slow));
    TRY(key_f32(x, "attention.compress_rope_freq_base", &hp->rope_compress_freq_base));
    TRY(key_f32(x, "expert_weights_scale", &hp->expert_weights_scale));
    rc = gguf_get_bool(f, KP "expert_weights_norm", &norm, err);
    if (rc == DS4_E_NOTFOUND)
        return missing(x, "expert_weights_norm", NULL, "");
    if (rc)
        return rc;
    hp->expert_weights_norm = norm;
    TRY(key_f32(x, "attention.layer_norm_rms_epsilon", &hp->rms_eps));
    if ((rc = get_int(x, "context_length", &hp->context_length)) < 0)
        return rc;
    if (value_length != hp->head_dim)
        return ds4_error_set(err, DS4_E_RANGE, "%s: key '" KP "attention.value_length' = %u"
                             " differs from key_length = %u (DS4 uses one row as K and V)",
                             c.path, value_length, hp->head_dim);
    TRY(tokenizer_facts(x));
#undef TRY
    return model_hparams_check(hp, c.path, err);
}

/* ---- consistency ------------------------------------------------------------------------ */

#define BAD(...) ds4_error_set(err, DS4_E_RANGE, __VA_ARGS__)

static bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

int model_hparams_check(const model_hparams *hp, const char *what, ds4_error *err)
{
    const char *w = what ? what : "model";
    struct { const char *key; uint64_t v; } pos[] = {
        {"embedding_length", hp->n_embd}, {"vocab_size", hp->n_vocab},
        {"attention.head_count", hp->n_head}, {"attention.key_length", hp->head_dim},
        {"rope.dimension_count", hp->n_rot}, {"attention.q_lora_rank", hp->q_lora_rank},
        {"attention.output_lora_rank", hp->o_lora_rank},
        {"attention.output_group_count", hp->n_out_group}, {"expert_count", hp->n_expert},
        {"expert_used_count", hp->n_expert_used},
        {"expert_feed_forward_length", hp->n_ff_exp},
        {"expert_shared_count", hp->n_expert_shared},
        {"attention.sliding_window", hp->n_swa}, {"hyper_connection.count", hp->n_hc},
        {"hyper_connection.sinkhorn_iterations", hp->hc_sinkhorn_iters},
        {"rope.scaling.original_context_length", hp->rope_orig_ctx},
    };
    if (hp->n_layer < 1 || hp->n_layer > MODEL_MAX_LAYERS)
        return BAD("%s: key '" KP "block_count' = %u not in 1..%d", w, hp->n_layer,
                   MODEL_MAX_LAYERS);
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v == 0)
            return BAD("%s: key '" KP "%s' is 0", w, pos[i].key);
    if (hp->n_head_kv != 1)
        return BAD("%s: key '" KP "attention.head_count_kv' = %u: DS4 attention has one shared"
                   " KV head", w, hp->n_head_kv);
    if (hp->n_rot % 2 || hp->n_rot >= hp->head_dim)
        return BAD("%s: key '" KP "rope.dimension_count' = %u must be even and below"
                   " attention.key_length = %u", w, hp->n_rot, hp->head_dim);
    if (hp->n_head % hp->n_out_group)
        return BAD("%s: key '" KP "attention.head_count' = %u is not a multiple of"
                   " attention.output_group_count = %u", w, hp->n_head, hp->n_out_group);
    if (hp->n_expert_used > hp->n_expert)
        return BAD("%s: key '" KP "expert_used_count' = %u exceeds expert_count = %u", w,
                   hp->n_expert_used, hp->n_expert);
    if (hp->n_hash_layer > hp->n_layer)
        return BAD("%s: key '" KP "hash_layer_count' = %u exceeds block_count = %u", w,
                   hp->n_hash_layer, hp->n_layer);
    bool any4 = false;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        uint32_t r = hp->compress_ratio[il];
        if (r != 0 && r < 4)
            return BAD("%s: key '" KP "attention.compress_ratios'[%u] = %u: a ratio is 0"
                       " (uncompressed), 4 (overlapped, with indexer) or above 4", w, il, r);
        any4 |= r == 4;
        if (!(hp->swiglu_clamp[il] > 0))
            return BAD("%s: key '" KP "swiglu_clamp_exp'[%u] = %g must be > 0", w, il,
                       (double)hp->swiglu_clamp[il]);
    }
    if (any4) {
        if (!hp->n_indexer_head || !hp->indexer_top_k)
            return BAD("%s: key '" KP "attention.indexer.%s' is 0 but ratio-4 layers have an"
                       " indexer", w, !hp->n_indexer_head ? "head_count" : "top_k");
        if (!pow2(hp->indexer_head_dim) || hp->indexer_head_dim < hp->n_rot)
            return BAD("%s: key '" KP "attention.indexer.key_length' = %u must be a power of"
                       " two (Hadamard transform) and at least rope.dimension_count = %u", w,
                       hp->indexer_head_dim, hp->n_rot);
    }
    struct { const char *key; float v; } fpos[] = {
        {"hyper_connection.epsilon", hp->hc_eps},
        {"attention.layer_norm_rms_epsilon", hp->rms_eps},
        {"rope.freq_base", hp->rope_freq_base},
        {"attention.compress_rope_freq_base", hp->rope_compress_freq_base},
        {"rope.scaling.factor", hp->rope_scaling_factor},
        {"rope.scaling.yarn_beta_fast", hp->rope_beta_fast},
        {"rope.scaling.yarn_beta_slow", hp->rope_beta_slow},
        {"expert_weights_scale", hp->expert_weights_scale},
    };
    for (size_t i = 0; i < sizeof fpos / sizeof fpos[0]; i++)
        if (!(fpos[i].v > 0) || !isfinite(fpos[i].v))
            return BAD("%s: key '" KP "%s' = %g must be finite and > 0", w, fpos[i].key,
                       (double)fpos[i].v);
    return 0;
}
