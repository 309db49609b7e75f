/* mkmodel.c — the plan of a generated DS4 model: presets, the tensor list of §1.4 with the
 * types of the chosen mix and an initialisation per role, the deepseek4.* metadata of §1.3
 * in either dialect, the byte-level BPE vocabulary (src/tokenizer/bpe_train.c), and writing
 * it all through the GGUF writer (tensor bytes streamed from mkmodel_fill.c). Names and shapes come from
 * names.c/weights.c, so what it writes is by construction what the loader expects.
 * llama.cpp dialect: what llama.cpp's deepseek4 converter writes (ggml-org 0c1e57098, see
 * docs/llamacpp-dialect.md): the same tensor names, context_length as u32, no vocab_size,
 * compress_ratios as an i32 array, swiglu_clamp_shexp, expert_gating_func, rope.scaling.type
 * "yarn" (without it llama.cpp drops YaRN) and embedding_length_out. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/mkmodel.h"
#include "model/mkmodel_impl.h"
#include "model/names.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tok.h"

#define KP MODEL_ARCH "."
#define LLAMACPP_GATING_SQRT_SOFTPLUS 4u /* llama-hparams.h LLAMA_EXPERT_GATING_FUNC_TYPE_ */

/* ---- presets ---------------------------------------------------------------------------- */

/* The DS4 constants every preset shares (published values; §2.1). */
static void common_constants(model_hparams *hp)
{
    hp->n_head_kv = 1;
    hp->n_expert_shared = 1;
    hp->n_hc = 4;
    hp->hc_sinkhorn_iters = 20;
    hp->hc_eps = 1e-6f;
    hp->rms_eps = 1e-6f;
    hp->rope_freq_base = 10000.0f;
    hp->rope_compress_freq_base = 160000.0f;
    hp->rope_scaling_factor = 16.0f;
    hp->rope_orig_ctx = 65536;
    hp->rope_beta_fast = 32.0f;
    hp->rope_beta_slow = 1.0f;
    hp->expert_weights_scale = 1.5f;
    hp->expert_weights_norm = true;
    hp->swiglu_clamp[0] = 10.0f;
}

void model_mk_set_layers(model_mk_opts *o, uint32_t n_layer)
{
    model_hparams *hp = &o->hp;
    float clamp = hp->swiglu_clamp[0] > 0 ? hp->swiglu_clamp[0] : 10.0f;
    if (n_layer > MODEL_MAX_LAYERS)
        n_layer = MODEL_MAX_LAYERS;
    hp->n_layer = n_layer;
    for (uint32_t il = 0; il < MODEL_MAX_LAYERS; il++) {
        hp->compress_ratio[il] = il < 2 ? 0 : il % 2 == 0 ? 4 : 128;
        hp->swiglu_clamp[il] = clamp;
    }
    hp->n_hash_layer = n_layer < 3 ? n_layer : 3;
}

int model_mk_preset(model_mk_opts *o, const char *preset, ds4_error *err)
{
    memset(o, 0, sizeof *o);
    model_hparams *hp = &o->hp;
    common_constants(hp);
    o->quant = MODEL_MK_Q2;
    o->dialect = MODEL_DIALECT_DS4;
    o->seed = 1;
    uint32_t layers;
    if (preset && strcmp(preset, "tiny") == 0) {
        /* every structural feature: 6 layers (ratios 0,0,4,128,4,128), 3 hash layers, an
         * indexer whose top-k (8) is reached after 36 tokens, 16 experts > 6 selected;
         * rows of 256 so the q2/q4 block types apply. */
        layers = 6;
        hp->n_embd = 256, hp->n_vocab = 512, hp->n_head = 4, hp->head_dim = 128;
        hp->n_rot = 64, hp->q_lora_rank = 128, hp->o_lora_rank = 64, hp->n_out_group = 2;
        hp->n_expert = 16, hp->n_expert_used = 6, hp->n_ff_exp = 256;
        hp->n_swa = 64, hp->n_indexer_head = 4, hp->indexer_head_dim = 128;
        hp->indexer_top_k = 8, hp->context_length = 8192;
    } else if (preset && strcmp(preset, "small") == 0) {
        /* bigger, for CPU speed measurements: Flash proportions at 1/4 width */
        layers = 8;
        hp->n_embd = 1024, hp->n_vocab = 8192, hp->n_head = 16, hp->head_dim = 256;
        hp->n_rot = 64, hp->q_lora_rank = 256, hp->o_lora_rank = 256, hp->n_out_group = 4;
        hp->n_expert = 64, hp->n_expert_used = 6, hp->n_ff_exp = 512;
        hp->n_swa = 128, hp->n_indexer_head = 16, hp->indexer_head_dim = 128;
        hp->indexer_top_k = 64, hp->context_length = 65536;
    } else if (preset && strcmp(preset, "flash-shape") == 0) {
        /* the published DS4 Flash dimensions (ds4-architecture.md §2.1), fewer layers */
        layers = 4;
        hp->n_embd = 4096, hp->n_vocab = 129280, hp->n_head = 64, hp->head_dim = 512;
        hp->n_rot = 64, hp->q_lora_rank = 1024, hp->o_lora_rank = 1024, hp->n_out_group = 8;
        hp->n_expert = 256, hp->n_expert_used = 6, hp->n_ff_exp = 2048;
        hp->n_swa = 128, hp->n_indexer_head = 64, hp->indexer_head_dim = 128;
        hp->indexer_top_k = 512, hp->context_length = 1048576;
    } else {
        return ds4_error_set(err, DS4_E_ARG, "mkmodel: unknown preset '%s' (tiny, small,"
                             " flash-shape)", preset ? preset : "(null)");
    }
    model_mk_set_layers(o, layers);
    snprintf(o->name, sizeof o->name, "ds4-mkmodel-%s", preset);
    return 0;
}

int model_mk_quant_from_name(const char *s)
{
    static const char *const names[] = {"q2", "q4", "f16", "f32"};
    for (int i = 0; s && i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *model_mk_quant_name(model_mk_quant q)
{
    return q == MODEL_MK_Q2 ? "q2" : q == MODEL_MK_Q4 ? "q4" : q == MODEL_MK_F16 ? "f16" : "f32";
}

/* ---- the tensor plan -------------------------------------------------------------------- */

/* Type of id in the mix q (§1.4 "Type summary per published file"). */
static ds4_type type_for(model_mk_quant q, model_tensor_id id)
{
    const ds4_type mat = q == MODEL_MK_F32 ? DS4_TYPE_F32 : DS4_TYPE_F16;
    const ds4_type q8 = q == MODEL_MK_Q2 || q == MODEL_MK_Q4 ? DS4_TYPE_Q8_0 : mat;
    switch (id) {
    case MODEL_T_TOKEN_EMBD: case MODEL_T_OUTPUT_HC_FN: case MODEL_T_HC_ATTN_FN:
    case MODEL_T_HC_FFN_FN: case MODEL_T_FFN_GATE_INP:
    case MODEL_T_ATTN_COMPRESSOR_APE: case MODEL_T_ATTN_COMPRESSOR_KV:
    case MODEL_T_ATTN_COMPRESSOR_GATE: case MODEL_T_INDEXER_ATTN_Q_B: case MODEL_T_INDEXER_PROJ:
    case MODEL_T_INDEXER_COMPRESSOR_APE: case MODEL_T_INDEXER_COMPRESSOR_KV:
    case MODEL_T_INDEXER_COMPRESSOR_GATE:
        return mat;
    case MODEL_T_OUTPUT: case MODEL_T_ATTN_Q_A: case MODEL_T_ATTN_Q_B: case MODEL_T_ATTN_KV:
    case MODEL_T_ATTN_OUTPUT_A: case MODEL_T_ATTN_OUTPUT_B: case MODEL_T_FFN_GATE_SHEXP:
    case MODEL_T_FFN_UP_SHEXP: case MODEL_T_FFN_DOWN_SHEXP:
        return q8;
    case MODEL_T_FFN_GATE_EXPS: case MODEL_T_FFN_UP_EXPS:
        return q == MODEL_MK_Q2 ? DS4_TYPE_IQ2_XXS : q == MODEL_MK_Q4 ? DS4_TYPE_Q4_K : mat;
    case MODEL_T_FFN_DOWN_EXPS:
        return q == MODEL_MK_Q2 ? DS4_TYPE_Q2_K : q == MODEL_MK_Q4 ? DS4_TYPE_Q4_K : mat;
    case MODEL_T_FFN_GATE_TID2EID:
        return DS4_TYPE_I32;
    default:
        return DS4_TYPE_F32; /* vectors: norms, HC scales/bases, sinks, exp_probs_b */
    }
}

/* Initialisation of id with shape ne: matrices N(0, 1/fan_in) so activations keep their
 * scale through the layers (fan_in = ne0), norms ~1, HC bases near identity mixing. */
static void init_for(mk_tensor *t, const model_hparams *hp, model_tensor_id id)
{
    t->init = MK_INIT_NORMAL;
    t->mean = 0.0f;
    t->std = 1.0f / sqrtf((float)t->ne[0]);
    switch (id) {
    case MODEL_T_TOKEN_EMBD: t->std = 1.0f; break;
    case MODEL_T_OUTPUT_NORM: case MODEL_T_ATTN_NORM: case MODEL_T_FFN_NORM:
    case MODEL_T_ATTN_Q_A_NORM: case MODEL_T_ATTN_KV_A_NORM: case MODEL_T_ATTN_COMPRESSOR_NORM:
    case MODEL_T_INDEXER_COMPRESSOR_NORM:
        t->mean = 1.0f, t->std = 0.05f;
        break;
    case MODEL_T_OUTPUT_HC_SCALE: case MODEL_T_HC_ATTN_SCALE: case MODEL_T_HC_FFN_SCALE:
        t->mean = 0.3f, t->std = 0.05f;
        break;
    case MODEL_T_HC_ATTN_BASE: case MODEL_T_HC_FFN_BASE:
        t->init = MK_INIT_HC_BASE, t->hc = hp->n_hc, t->std = 0.5f;
        break;
    case MODEL_T_OUTPUT_HC_BASE: case MODEL_T_ATTN_SINKS: case MODEL_T_ATTN_COMPRESSOR_APE:
    case MODEL_T_INDEXER_COMPRESSOR_APE:
        t->std = 0.5f;
        break;
    case MODEL_T_EXP_PROBS_B: t->std = 0.01f; break;
    case MODEL_T_FFN_GATE_TID2EID:
        t->init = MK_INIT_TID2EID, t->n_expert = hp->n_expert, t->n_used = hp->n_expert_used;
        break;
    default: break;
    }
}

typedef struct plan {
    mk_tensor *t;
    size_t n, cap;
} plan;

static int plan_add(plan *p, const model_mk_opts *o, model_tensor_id id, uint32_t il,
                    bool random_blocks, int n_threads, ds4_error *err)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        mk_tensor *t = realloc(p->t, cap * sizeof *t);
        if (!t)
            return ds4_error_set(err, DS4_E_NOMEM, "mkmodel: out of memory for the plan");
        p->t = t, p->cap = cap;
    }
    mk_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    model_tensor_name(t->name, id, o->dialect, il);
    t->type = type_for(o->quant, id);
    t->n_dims = (uint32_t)model_tensor_shape(&o->hp, id, il, t->ne);
    const quant_traits *tr = quant_get_traits(t->type);
    if (t->ne[0] % tr->block_elems)
        return ds4_error_set(err, DS4_E_ARG, "mkmodel: --quant %s: tensor '%s' has rows of %lld"
                             " elements, not a multiple of the %s block (%lld); pick dimensions"
                             " that are", model_mk_quant_name(o->quant), t->name,
                             (long long)t->ne[0], tr->name, (long long)tr->block_elems);
    init_for(t, &o->hp, id);
    char canon[MODEL_NAME_MAX]; /* seeded by the spec name: both dialects hold the same data */
    t->seed = model_mk_hash(model_tensor_name(canon, id, MODEL_DIALECT_DS4, il), o->seed);
    t->random_blocks = random_blocks;
    t->n_threads = n_threads;
    p->n++;
    return 0;
}

/* Elements of the slow-to-quantize types (k/iq) in o's routed experts. */
static long long slow_elements(const model_mk_opts *o)
{
    if (o->quant != MODEL_MK_Q2 && o->quant != MODEL_MK_Q4)
        return 0;
    return 3ll * o->hp.n_layer * o->hp.n_expert * o->hp.n_embd * o->hp.n_ff_exp;
}

bool model_mk_uses_random_blocks(const model_mk_opts *o)
{
    if (o->fill != MODEL_MK_FILL_AUTO)
        return o->fill == MODEL_MK_FILL_RANDOM;
    return slow_elements(o) > MODEL_MK_AUTO_QUANTIZE_MAX;
}

static int plan_build(plan *p, const model_mk_opts *o, ds4_error *err)
{
    const bool rb = model_mk_uses_random_blocks(o);
    int nt = o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int rc = 0;
    for (int id = 0; !rc && id < MODEL_T_FIRST_LAYER; id++)
        rc = plan_add(p, o, (model_tensor_id)id, 0, rb, nt > 0 ? nt : 1, err);
    for (uint32_t il = 0; !rc && il < o->hp.n_layer; il++)
        for (int id = MODEL_T_FIRST_LAYER; !rc && id < MODEL_T_COUNT; id++) {
            int pr = model_tensor_presence(&o->hp, (model_tensor_id)id, il);
            /* exp_probs_b (optional): on top-k layers only, as the HF checkpoints have it */
            if (pr == MODEL_PRESENT_ABSENT ||
                (pr == MODEL_PRESENT_OPTIONAL && il < o->hp.n_hash_layer))
                continue;
            rc = plan_add(p, o, (model_tensor_id)id, il, rb, nt > 0 ? nt : 1, err);
        }
    return rc;
}

/* ---- metadata --------------------------------------------------------------------------- */

static void add_hparams(gguf_writer *w, const model_mk_opts *o)
{
    const model_hparams *hp = &o->hp;
    const bool llama = o->dialect == MODEL_DIALECT_LLAMACPP;
#define U32(k, v) gguf_writer_add_u32(w, KP k, (uint32_t)(v))
#define F32(k, v) gguf_writer_add_f32(w, KP k, (float)(v))
    U32("block_count", hp->n_layer);
    if (llama && hp->context_length <= UINT32_MAX) /* llama.cpp refuses a u64 here */
        U32("context_length", hp->context_length);
    else
        gguf_writer_add_u64(w, KP "context_length", hp->context_length);
    U32("embedding_length", hp->n_embd);
    if (!llama) /* llama.cpp's converter leaves it to the token list */
        U32("vocab_size", hp->n_vocab);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    U32("attention.key_length", hp->head_dim);
    U32("attention.value_length", hp->head_dim);
    U32("rope.dimension_count", hp->n_rot);
    U32("attention.q_lora_rank", hp->q_lora_rank);
    U32("attention.output_lora_rank", hp->o_lora_rank);
    U32("attention.output_group_count", hp->n_out_group);
    U32("expert_count", hp->n_expert);
    U32("expert_used_count", hp->n_expert_used);
    U32("expert_feed_forward_length", hp->n_ff_exp);
    U32("expert_shared_count", hp->n_expert_shared);
    U32("hash_layer_count", hp->n_hash_layer);
    U32("attention.sliding_window", hp->n_swa);
    U32("attention.indexer.head_count", hp->n_indexer_head);
    U32("attention.indexer.key_length", hp->indexer_head_dim);
    U32("attention.indexer.top_k", hp->indexer_top_k);
    U32("hyper_connection.count", hp->n_hc);
    U32("hyper_connection.sinkhorn_iterations", hp->hc_sinkhorn_iters);
    F32("hyper_connection.epsilon", hp->hc_eps);
    /* u32 in the spec; gguf-py writes a Python int list as i32 (same bytes for ratios) */
    gguf_writer_add_arr(w, KP "attention.compress_ratios", llama ? GGUF_TYPE_I32 : GGUF_TYPE_U32,
                        hp->compress_ratio, hp->n_layer);
    gguf_writer_add_arr(w, KP "swiglu_clamp_exp", GGUF_TYPE_F32, hp->swiglu_clamp, hp->n_layer);
    if (llama)
        gguf_writer_add_arr(w, KP "swiglu_clamp_shexp", GGUF_TYPE_F32, hp->swiglu_clamp,
                            hp->n_layer);
    if (hp->rope_orig_ctx <= UINT32_MAX)
        U32("rope.scaling.original_context_length", hp->rope_orig_ctx);
    else
        gguf_writer_add_u64(w, KP "rope.scaling.original_context_length", hp->rope_orig_ctx);
    F32("rope.freq_base", hp->rope_freq_base);
    if (llama)
        gguf_writer_add_str(w, KP "rope.scaling.type", "yarn");
    F32("rope.scaling.factor", hp->rope_scaling_factor);
    F32("rope.scaling.yarn_beta_fast", hp->rope_beta_fast);
    F32("rope.scaling.yarn_beta_slow", hp->rope_beta_slow);
    F32("attention.compress_rope_freq_base", hp->rope_compress_freq_base);
    F32("expert_weights_scale", hp->expert_weights_scale);
    gguf_writer_add_bool(w, KP "expert_weights_norm", hp->expert_weights_norm);
    F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    if (llama) {
        U32("expert_gating_func", LLAMACPP_GATING_SQRT_SOFTPLUS);
        U32("embedding_length_out", (uint64_t)hp->n_hc * hp->n_embd);
    }
#undef U32
#undef F32
}

/* The vocabulary: the DS4 special tokens (ids 0..6, BOS = 0, EOS = 1), the 256 byte
 * symbols, merges learned from the public-domain text of data/ (src/tokenizer/bpe_train.c),
 * padding up to n_vocab; so generated models tokenize text like a real vocabulary. */
#define N_SPECIAL ((uint32_t)TOK_N_SPECIAL)

static int add_tokenizer(gguf_writer *w, uint32_t n_vocab, ds4_error *err)
{
    tok_vocab_spec spec;
    int rc = tok_train_default(&spec, n_vocab, err);
    if (rc == 0)
        rc = tok_vocab_spec_write(&spec, w, err);
    tok_vocab_spec_free(&spec);
    return rc;
}

/* ---- writing ---------------------------------------------------------------------------- */

int model_mk_check(const model_mk_opts *o, ds4_error *err)
{
    int rc = model_hparams_check(&o->hp, "mkmodel", err);
    if (rc)
        return rc;
    if (o->hp.n_vocab < N_SPECIAL + 256)
        return ds4_error_set(err, DS4_E_ARG, "mkmodel: vocab %u cannot hold the %u special and"
                             " 256 byte tokens", o->hp.n_vocab, N_SPECIAL);
    plan p = {0};
    rc = plan_build(&p, o, err);
    free(p.t);
    return rc;
}

/* Builds the writer for o; *pl owns the tensor records the writer points at. */
static int build(const model_mk_opts *o, gguf_writer **out, plan *pl, ds4_error *err)
{
    *out = NULL;
    memset(pl, 0, sizeof *pl);
    int rc = model_mk_check(o, err);
    if (rc || (rc = plan_build(pl, o, err)))
        return rc;
    gguf_writer *w = gguf_writer_new();
    if (!w)
        return ds4_error_set(err, DS4_E_NOMEM, "mkmodel: out of memory for the writer");
    gguf_writer_add_str(w, "general.architecture", MODEL_ARCH);
    gguf_writer_add_str(w, "general.name", o->name[0] ? o->name : "ds4-mkmodel");
    add_hparams(w, o);
    if ((rc = add_tokenizer(w, o->hp.n_vocab, err))) {
        gguf_writer_free(w);
        return rc;
    }
    for (size_t i = 0; i < pl->n; i++)
        gguf_writer_add_tensor_rows(w, pl->t[i].name, pl->t[i].type, pl->t[i].n_dims,
                                    pl->t[i].ne, model_mk_fill_rows, &pl->t[i]);
    *out = w; /* a failed add is sticky: the write call reports it */
    return 0;
}

int model_mk_write(const model_mk_opts *o, const char *path, uint64_t *bytes, ds4_error *err)
{
    gguf_writer *w;
    plan pl;
    int rc = build(o, &w, &pl, err);
    if (!rc) {
        if (bytes)
            *bytes = gguf_writer_size(w);
        rc = gguf_writer_write(w, path, err);
    }
    gguf_writer_free(w);
    free(pl.t);
    return rc;
}

int model_mk_write_memory(const model_mk_opts *o, void **buf, size_t *size, ds4_error *err)
{
    gguf_writer *w;
    plan pl;
    int rc = build(o, &w, &pl, err);
    if (!rc)
        rc = gguf_writer_write_memory(w, buf, size, err);
    gguf_writer_free(w);
    free(pl.t);
    return rc;
}
