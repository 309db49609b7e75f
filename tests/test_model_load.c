/* test_model_load.c — model_load on models made in-process by the model maker: every preset
 * shape (tiny and small written and loaded; flash-shape's 43-layer layout checked against the
 * published tensor table), each type mix, both naming dialects, deterministic bytes, weight
 * scales that keep activations conditioned; then malformed variants — every tensor missing,
 * reshaped and retyped in turn, gate/up type mismatch, short arrays, missing keys (and the
 * llama.cpp keys derived from shapes), inconsistent metadata — each failing with one line
 * that names the tensor or key; a file spelled with the legacy llama.cpp-fork aliases.
 * Implements the loader checks of ds4-architecture.md §1.3/§1.4 and the llama.cpp dialect
 * of docs/llamacpp-dialect.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/mkmodel.h"
#include "model/names.h"
#include "test_util.h"

#define RMS_TOL 0.25 /* relative: random weights' RMS vs 1/sqrt(fan_in) (per-block scales vary) */

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct blob {
    void *buf;
    size_t size;
} blob;

static bool make(const model_mk_opts *o, blob *b, const char *what)
{
    ds4_error err = {0};
    b->buf = NULL;
    if (model_mk_write_memory(o, &b->buf, &b->size, &err)) {
        t_check(false, "%s: write: %s", what, err.msg);
        return false;
    }
    return true;
}

/* Loads b; returns the model or NULL with the error in err. */
static model *load(const blob *b, ds4_error *err)
{
    gguf_file *f;
    model *m = NULL;
    if (gguf_open_memory(&f, b->buf, b->size, err) == 0)
        model_load_file(&m, f, err);
    return m;
}

static model_mk_opts preset(const char *name, model_mk_quant q, model_dialect d)
{
    model_mk_opts o;
    model_mk_preset(&o, name, NULL);
    o.quant = q, o.dialect = d, o.fill = MODEL_MK_FILL_RANDOM;
    return o;
}

/* Field-by-field equality of what the file should say. */
static bool hp_equal(const model_hparams *a, const model_hparams *b, char *why, size_t n)
{
#define EQ(f)                                                                   \
    if (a->f != b->f) {                                                         \
        snprintf(why, n, #f " %g != %g", (double)a->f, (double)b->f);           \
        return false;                                                           \
    }
    EQ(n_layer) EQ(n_embd) EQ(n_vocab) EQ(n_head) EQ(n_head_kv) EQ(head_dim) EQ(n_rot)
    EQ(q_lora_rank) EQ(o_lora_rank) EQ(n_out_group) EQ(n_expert) EQ(n_expert_used)
    EQ(n_ff_exp) EQ(n_expert_shared) EQ(n_hash_layer) EQ(n_swa) EQ(n_indexer_head)
    EQ(indexer_head_dim) EQ(indexer_top_k) EQ(n_hc) EQ(hc_sinkhorn_iters) EQ(hc_eps)
    EQ(rms_eps) EQ(rope_freq_base) EQ(rope_compress_freq_base) EQ(rope_scaling_factor)
    EQ(rope_orig_ctx) EQ(rope_beta_fast) EQ(rope_beta_slow) EQ(expert_weights_scale)
    EQ(expert_weights_norm) EQ(context_length)
    for (uint32_t il = 0; il < a->n_layer; il++) {
        EQ(compress_ratio[il]) EQ(swiglu_clamp[il])
    }
#undef EQ
    return true;
}

/* Failing load: one line, names the file and every needle. */
static void expect_fail(const blob *b, const char *needle, const char *needle2, const char *what)
{
    ds4_error err = {0};
    model *m = load(b, &err);
    bool ok = !m && err.code < 0 && !strchr(err.msg, '\n') && strstr(err.msg, "<memory>") &&
              strstr(err.msg, needle) && (!needle2 || strstr(err.msg, needle2));
    t_check(ok, "%s -> %s", what, m ? "loaded (expected an error)" : err.msg);
    model_free(m);
}

static void expect_ok(const blob *b, const char *what)
{
    ds4_error err = {0};
    model *m = load(b, &err);
    t_check(m != NULL, "%s loads%s%s", what, m ? "" : ": ", m ? "" : err.msg);
    model_free(m);
}

/* ---- rewriting a file with one change --------------------------------------------------- */

typedef struct edit {
    const char *drop_key, *drop_tensor;
    const char *u32_key;     /* replace (or add) with u32 value */
    uint32_t u32;
    const char *str_key, *str;
    const char *arr_key;     /* replace with a u32 array */
    const uint32_t *arr;
    uint64_t arr_n;
    const char *tensor;      /* replace with type/shape and zero data */
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[4];
    bool add;                /* add tensor (instead of replacing) */
    const char *poke;        /* i32 tensor: set element poke_at to poke_value */
    int64_t poke_at;
    int32_t poke_value;
    bool legacy_names;       /* rename every tensor that has one to its legacy alias */
} edit;

static blob rewrite(const blob *in, const edit *e)
{
    ds4_error err;
    gguf_file *f;
    blob out = {0};
    if (gguf_open_memory(&f, in->buf, in->size, &err))
        return out;
    gguf_writer *w = gguf_writer_new();
    bool did_u32 = false, did_str = false;
    for (int64_t i = 0; i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (e->drop_key && !strcmp(kv->key, e->drop_key))
            continue;
        if (e->u32_key && !strcmp(kv->key, e->u32_key))
            gguf_writer_add_u32(w, kv->key, e->u32), did_u32 = true;
        else if (e->str_key && !strcmp(kv->key, e->str_key))
            gguf_writer_add_str(w, kv->key, e->str), did_str = true;
        else if (e->arr_key && !strcmp(kv->key, e->arr_key))
            gguf_writer_add_arr(w, kv->key, GGUF_TYPE_U32, e->arr, e->arr_n);
        else
            gguf_writer_add_kv(w, kv);
    }
    if (e->u32_key && !did_u32)
        gguf_writer_add_u32(w, e->u32_key, e->u32);
    if (e->str_key && !did_str)
        gguf_writer_add_str(w, e->str_key, e->str);
    void *zeros = NULL, *poked = NULL;
    if (e->tensor) {
        int64_t n = 1;
        for (uint32_t d = 0; d < e->n_dims; d++)
            n *= e->ne[d];
        zeros = calloc(1, quant_row_bytes(e->type, e->ne[0]) * (size_t)(n / e->ne[0]) + 1);
    }
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char legacy[MODEL_NAME_MAX];
        uint32_t il = 0;
        model_dialect sp;
        bool layer;
        int id = e->legacy_names ? model_tensor_parse(t->name, &il, &sp, &layer) : -1;
        if (e->drop_tensor && !strcmp(t->name, e->drop_tensor))
            continue;
        if (id >= 0 && model_tensor_legacy_name(legacy, (model_tensor_id)id, il)) {
            gguf_writer_add_tensor(w, legacy, t->type, t->n_dims, t->ne, t->data);
        } else if (e->tensor && !e->add && !strcmp(t->name, e->tensor)) {
            gguf_writer_add_tensor(w, t->name, e->type, e->n_dims, e->ne, zeros);
        } else if (e->poke && !strcmp(t->name, e->poke)) {
            poked = malloc(t->nbytes);
            memcpy(poked, t->data, t->nbytes);
            memcpy((char *)poked + 4 * e->poke_at, &e->poke_value, 4);
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, poked);
        } else {
            gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
        }
    }
    if (e->tensor && e->add)
        gguf_writer_add_tensor(w, e->tensor, e->type, e->n_dims, e->ne, zeros);
    if (gguf_writer_write_memory(w, &out.buf, &out.size, &err))
        fprintf(stderr, "rewrite failed: %s\n", err.msg);
    gguf_writer_free(w);
    gguf_close(f);
    free(zeros);
    free(poked);
    return out;
}

/* ---- well-formed models ----------------------------------------------------------------- */

/* Mean over rows of a tensor's row RMS (dequantized), for the first rows rows. */
static double row_rms(const gguf_tensor *t, int64_t rows)
{
    const quant_traits *tr = quant_get_traits(t->type);
    size_t rb = quant_row_bytes(t->type, t->ne[0]);
    float *x = malloc((size_t)t->ne[0] * sizeof *x);
    double acc = 0;
    for (int64_t r = 0; r < rows; r++) {
        tr->dequant_row((const char *)t->data + (size_t)r * rb, x, t->ne[0]);
        double ss = 0;
        for (int64_t i = 0; i < t->ne[0]; i++)
            ss += (double)x[i] * x[i];
        acc += sqrt(ss / (double)t->ne[0]);
    }
    free(x);
    return acc / (double)rows;
}

static void check_model(const model_mk_opts *o, const char *what)
{
    blob b;
    if (!make(o, &b, what))
        return;
    ds4_error err = {0};
    model *m = load(&b, &err);
    if (!t_check(m != NULL, "%s loads%s%s", what, m ? "" : ": ", m ? "" : err.msg)) {
        free(b.buf);
        return;
    }
    char why[160] = "";
    t_check(hp_equal(&m->hp, &o->hp, why, sizeof why), "%s: hparams as requested %s", what, why);
    t_check(m->dialect == o->dialect, "%s: dialect detected %s", what,
            model_dialect_name(m->dialect));
    t_check(m->n_ignored == 0, "%s: no ignored tensors (%lld)", what, (long long)m->n_ignored);
    /* every per-layer slot bound exactly where the layer kind says */
    bool slots = true;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &m->w.layers[il];
        uint32_t R = m->hp.compress_ratio[il];
        slots &= (L->attn_compressor_kv != NULL) == (R != 0);
        slots &= (L->indexer_proj != NULL) == (R == 4);
        slots &= (L->ffn_gate_tid2eid != NULL) == (il < m->hp.n_hash_layer);
        slots &= (L->exp_probs_b != NULL) == (il >= m->hp.n_hash_layer);
        slots &= L->ffn_gate_exps && L->ffn_down_shexp && L->hc_attn_fn;
    }
    t_check(slots, "%s: layer tensors bound by layer kind", what);
    /* the type mix */
    const model_layer *L0 = &m->w.layers[0];
    ds4_type gate = L0->ffn_gate_exps->type, down = L0->ffn_down_exps->type;
    ds4_type want_gate[] = {DS4_TYPE_IQ2_XXS, DS4_TYPE_Q4_K, DS4_TYPE_F16, DS4_TYPE_F32};
    ds4_type want_down[] = {DS4_TYPE_Q2_K, DS4_TYPE_Q4_K, DS4_TYPE_F16, DS4_TYPE_F32};
    ds4_type want_q8[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q8_0, DS4_TYPE_F16, DS4_TYPE_F32};
    t_check(gate == want_gate[o->quant] && down == want_down[o->quant] &&
            L0->attn_q_a->type == want_q8[o->quant] && L0->attn_norm->type == DS4_TYPE_F32 &&
            L0->ffn_gate_tid2eid->type == DS4_TYPE_I32,
            "%s: types %s/%s/%s", what, quant_get_traits(gate)->name,
            quant_get_traits(down)->name, quant_get_traits(L0->attn_q_a->type)->name);
    /* weights scaled 1/sqrt(fan_in): activations neither vanish nor blow up */
    double want = 1.0 / sqrt((double)m->hp.n_embd);
    double got = row_rms(L0->ffn_gate_exps, 64), got2 = row_rms(L0->attn_q_a, 64);
    t_case(fabs(got / want - 1) < RMS_TOL && fabs(got2 / want - 1) < RMS_TOL,
           fabs(got / want - 1), RMS_TOL, "%s: expert/attention row RMS %.4f/%.4f vs %.4f", what,
           got, got2, want);
    model_free(m);
    free(b.buf);
}

static void test_presets(void)
{
    static const char *const qn[] = {"q2", "q4", "f16", "f32"};
    for (int q = 0; q < 4; q++)
        for (int d = 0; d < 2; d++) {
            model_mk_opts o = preset("tiny", (model_mk_quant)q, (model_dialect)d);
            char what[64];
            snprintf(what, sizeof what, "tiny %s %s", qn[q], model_dialect_name(o.dialect));
            check_model(&o, what);
        }
    model_mk_opts o = preset("tiny", MODEL_MK_Q4, MODEL_DIALECT_DS4);
    o.fill = MODEL_MK_FILL_QUANTIZE, o.hp.n_expert = 8; /* quantizer path, kept quick */
    check_model(&o, "tiny q4 quantized (8 experts)");
    o = preset("small", MODEL_MK_Q2, MODEL_DIALECT_LLAMACPP);
    model_mk_set_layers(&o, 4);
    check_model(&o, "small q2 llamacpp (4 layers)");
}

/* flash-shape at the published 43 layers: the layout of ds4-architecture.md §1.4 (shapes,
 * kinds, 1328 tensors + exp_probs_b on the 40 top-k layers), without writing 80 GB. */
static void test_flash_layout(void)
{
    model_mk_opts o = preset("flash-shape", MODEL_MK_Q2, MODEL_DIALECT_DS4);
    model_mk_set_layers(&o, 43);
    ds4_error err = {0};
    t_check(model_mk_check(&o, &err) == 0, "flash-shape 43 layers: consistent %s", err.msg);
    const model_hparams *hp = &o.hp;
    int64_t ne[4];
    struct { model_tensor_id id; uint32_t il; int64_t e0, e1, e2; } pub[] = {
        {MODEL_T_TOKEN_EMBD, 0, 4096, 129280, 1}, {MODEL_T_OUTPUT_HC_FN, 0, 16384, 4, 1},
        {MODEL_T_OUTPUT, 0, 4096, 129280, 1}, {MODEL_T_HC_ATTN_FN, 5, 16384, 24, 1},
        {MODEL_T_ATTN_Q_B, 5, 1024, 32768, 1}, {MODEL_T_ATTN_KV, 7, 4096, 512, 1},
        {MODEL_T_ATTN_OUTPUT_A, 9, 4096, 8192, 1}, {MODEL_T_ATTN_OUTPUT_B, 9, 8192, 4096, 1},
        {MODEL_T_ATTN_COMPRESSOR_APE, 2, 1024, 4, 1},
        {MODEL_T_ATTN_COMPRESSOR_APE, 3, 512, 128, 1},
        {MODEL_T_ATTN_COMPRESSOR_KV, 42, 4096, 1024, 1},
        {MODEL_T_ATTN_COMPRESSOR_KV, 41, 4096, 512, 1},
        {MODEL_T_INDEXER_ATTN_Q_B, 4, 1024, 8192, 1}, {MODEL_T_INDEXER_PROJ, 4, 4096, 64, 1},
        {MODEL_T_INDEXER_COMPRESSOR_APE, 4, 256, 4, 1},
        {MODEL_T_INDEXER_COMPRESSOR_KV, 4, 4096, 256, 1},
        {MODEL_T_INDEXER_COMPRESSOR_NORM, 4, 128, 1, 1},
        {MODEL_T_FFN_GATE_INP, 10, 4096, 256, 1}, {MODEL_T_FFN_GATE_TID2EID, 2, 6, 129280, 1},
        {MODEL_T_FFN_GATE_EXPS, 10, 4096, 2048, 256}, {MODEL_T_FFN_DOWN_EXPS, 10, 2048, 4096, 256},
        {MODEL_T_FFN_DOWN_SHEXP, 10, 2048, 4096, 1},
    };
    bool shapes = true;
    for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++) {
        int nd = model_tensor_shape(hp, pub[i].id, pub[i].il, ne);
        shapes &= ne[0] == pub[i].e0 && (nd < 2 ? pub[i].e1 == 1 : ne[1] == pub[i].e1) &&
                  (nd < 3 ? pub[i].e2 == 1 : ne[2] == pub[i].e2);
    }
    t_check(shapes, "flash-shape: published shapes of §1.4");
    int n = MODEL_T_FIRST_LAYER, n_bias = 0, n4 = 0, n128 = 0;
    for (uint32_t il = 0; il < 43; il++) {
        n4 += hp->compress_ratio[il] == 4, n128 += hp->compress_ratio[il] == 128;
        for (int id = MODEL_T_FIRST_LAYER; id < MODEL_T_COUNT; id++) {
            int p = model_tensor_presence(hp, (model_tensor_id)id, il);
            n += p == MODEL_PRESENT_REQUIRED;
            n_bias += p == MODEL_PRESENT_OPTIONAL && il >= hp->n_hash_layer;
        }
    }
    t_check(n + n_bias == 1328 && n_bias == 40 && n4 == 21 && n128 == 20,
            "flash-shape: %d tensors with %d exp_probs_b (1328 with 40), %d ratio-4 (21),"
            " %d ratio-128 (20)", n + n_bias, n_bias, n4, n128);
}

/* The same options in both dialects: different names and keys, the same tensor bytes. */
static void test_dialects_same_data(void)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_DS4);
    blob a, b;
    ds4_error err = {0};
    make(&o, &a, "dialects");
    o.dialect = MODEL_DIALECT_LLAMACPP;
    make(&o, &b, "dialects");
    model *ma = load(&a, &err), *mb = load(&b, &err);
    bool same = ma && mb && gguf_tensor_count(ma->file) == gguf_tensor_count(mb->file);
    for (int64_t i = 0; same && i < gguf_tensor_count(ma->file); i++) {
        const gguf_tensor *x = gguf_tensor_at(ma->file, i), *y = gguf_tensor_at(mb->file, i);
        same = x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
    }
    t_check(same, "ds4 and llamacpp dialects of one seed: identical tensor data");
    model_free(ma), model_free(mb);
    free(a.buf), free(b.buf);
}

/* A file spelled with the legacy aliases, without the keys that fork reportedly omits
 * (and without llama.cpp's gating key): detected as llama.cpp by its names, keys derived. */
static void test_legacy(void)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_LLAMACPP);
    blob base, a, b, c, d;
    if (!make(&o, &base, "legacy"))
        return;
    a = rewrite(&base, &(edit){.legacy_names = true,
                               .drop_key = "deepseek4.attention.output_lora_rank"});
    b = rewrite(&a, &(edit){.drop_key = "deepseek4.hyper_connection.count"});
    c = rewrite(&b, &(edit){.drop_key = "deepseek4.attention.compress_ratios"});
    d = rewrite(&c, &(edit){.drop_key = "deepseek4.expert_gating_func"});
    ds4_error err = {0};
    model *m = load(&d, &err);
    char why[160] = "";
    bool ok = m && m->dialect == MODEL_DIALECT_LLAMACPP && hp_equal(&m->hp, &o.hp, why,
                                                                     sizeof why);
    t_check(ok, "legacy aliases, no gating/output_lora_rank/hc.count/compress_ratios: loads as"
            " llamacpp, hparams derived %s%s", why, m ? "" : err.msg);
    t_check(!m || !strcmp(gguf_tensor_at(m->file, 1)->name, "hc_head_fn"),
            "legacy file really spelled with the aliases");
    model_free(m);
    free(base.buf), free(a.buf), free(b.buf), free(c.buf), free(d.buf);
}

static void test_determinism(void)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_DS4);
    blob a, b, c;
    o.n_threads = 1;
    make(&o, &a, "determinism");
    o.n_threads = 3;
    make(&o, &b, "determinism");
    o.seed = 2;
    make(&o, &c, "determinism");
    t_check(a.size == b.size && !memcmp(a.buf, b.buf, a.size), "same seed, 1 vs 3 threads:"
            " identical bytes");
    t_check(a.size == c.size && memcmp(a.buf, c.buf, a.size), "another seed: other bytes");
    free(a.buf), free(b.buf), free(c.buf);
}

/* The name table: every name and legacy alias parses back to its id (the alias as the
 * llama.cpp spelling); llama.cpp's names are the spec's (verified against llama.cpp
 * 0c1e57098, docs/llamacpp-dialect.md). */
static void test_names(void)
{
    bool ok = true;
    int differ = 0, legacy = 0;
    for (int id = 0; id < MODEL_T_COUNT; id++) {
        char name[MODEL_NAME_MAX];
        uint32_t il = 99;
        model_dialect sp;
        bool layer;
        for (int d = 0; d < 2; d++) {
            model_tensor_name(name, (model_tensor_id)id, (model_dialect)d, 7);
            int got = model_tensor_parse(name, &il, &sp, &layer);
            ok &= got == id && sp == MODEL_DIALECT_DS4 &&
                  layer == model_tensor_is_layer((model_tensor_id)id) && (!layer || il == 7);
        }
        differ += strcmp(model_tensor_suffix((model_tensor_id)id, MODEL_DIALECT_DS4),
                         model_tensor_suffix((model_tensor_id)id, MODEL_DIALECT_LLAMACPP)) != 0;
        if (model_tensor_legacy_name(name, (model_tensor_id)id, 7)) {
            legacy++;
            il = 99;
            ok &= model_tensor_parse(name, &il, &sp, &layer) == id &&
                  sp == MODEL_DIALECT_LLAMACPP && (!layer || il == 7);
        }
    }
    t_check(ok, "names: every name and legacy alias parses back to its id");
    t_check(differ == 0, "names: %d llama.cpp names differ from the spec's (0)", differ);
    t_check(legacy == 21, "names: %d legacy aliases (21)", legacy);
}

/* ---- missing keys and the llama.cpp derivations ------------------------------------------ */

static const char *const derivable[] = {
    "block_count", "embedding_length", "vocab_size", "attention.key_length",
    "attention.value_length", "attention.head_count", "attention.head_count_kv",
    "attention.q_lora_rank", "attention.output_group_count", "expert_count",
    "expert_used_count", "expert_feed_forward_length", "expert_shared_count",
    "hash_layer_count", "attention.indexer.head_count", "attention.indexer.key_length",
    "attention.output_lora_rank", "hyper_connection.count", "attention.compress_ratios",
};
#define N_DERIVABLE (sizeof derivable / sizeof derivable[0])
static const char *const underivable[] = {
    "rope.dimension_count", "attention.sliding_window", "attention.indexer.top_k",
    "hyper_connection.sinkhorn_iterations", "hyper_connection.epsilon", "swiglu_clamp_exp",
    "rope.scaling.original_context_length", "rope.freq_base", "rope.scaling.factor",
    "rope.scaling.yarn_beta_fast", "rope.scaling.yarn_beta_slow",
    "attention.compress_rope_freq_base", "expert_weights_scale", "expert_weights_norm",
    "attention.layer_norm_rms_epsilon",
};

static void test_keys(void)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_LLAMACPP);
    blob base, ds4b;
    if (!make(&o, &base, "keys"))
        return;
    char key[128];
    for (size_t i = 0; i < N_DERIVABLE; i++) {
        snprintf(key, sizeof key, "deepseek4.%s", derivable[i]);
        blob b = rewrite(&base, &(edit){.drop_key = key});
        ds4_error err = {0};
        model *m = load(&b, &err);
        char why[160] = "";
        t_check(m && hp_equal(&m->hp, &o.hp, why, sizeof why), "llamacpp without %s: derived %s%s",
                key, m ? why : "", m ? "" : err.msg);
        model_free(m);
        free(b.buf);
    }
    for (size_t i = 0; i < sizeof underivable / sizeof underivable[0]; i++) {
        snprintf(key, sizeof key, "deepseek4.%s", underivable[i]);
        blob b = rewrite(&base, &(edit){.drop_key = key});
        char what[160];
        snprintf(what, sizeof what, "llamacpp without %s", key);
        expect_fail(&b, key, "not derivable", what);
        free(b.buf);
    }
    blob all = {0}, next;
    for (size_t i = 0; i < N_DERIVABLE; i++) {
        snprintf(key, sizeof key, "deepseek4.%s", derivable[i]);
        next = rewrite(i ? &all : &base, &(edit){.drop_key = key});
        free(all.buf);
        all = next;
    }
    expect_ok(&all, "llamacpp without any derivable key");
    free(all.buf);
    o.dialect = MODEL_DIALECT_DS4;
    if (!make(&o, &ds4b, "keys"))
        return;
    for (size_t i = 0; i < N_DERIVABLE; i++) {
        snprintf(key, sizeof key, "deepseek4.%s", derivable[i]);
        blob b = rewrite(&ds4b, &(edit){.drop_key = key});
        char what[160];
        snprintf(what, sizeof what, "ds4 dialect without %s", key);
        expect_fail(&b, key, "missing", what);
        free(b.buf);
    }
    free(base.buf);
    free(ds4b.buf);
}

/* ---- malformed tensors ------------------------------------------------------------------ */

static void test_each_tensor(model_dialect d)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, d);
    blob base;
    if (!make(&o, &base, "tensors"))
        return;
    gguf_file *f;
    ds4_error err;
    gguf_open_memory(&f, base.buf, base.size, &err);
    int miss_ok = 0, shape_ok = 0, type_ok = 0, n = (int)gguf_tensor_count(f);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        bool optional = strstr(t->name, "exp_probs_b") != NULL;
        char want[160];
        /* missing */
        blob b = rewrite(&base, &(edit){.drop_tensor = t->name});
        model *m = load(&b, &err);
        snprintf(want, sizeof want, "tensor '%s' missing", t->name);
        bool ok = optional ? m != NULL : !m && strstr(err.msg, want) && !strchr(err.msg, '\n');
        miss_ok += ok;
        if (!ok)
            t_check(false, "without %s -> %s", t->name, m ? "loaded" : err.msg);
        model_free(m);
        free(b.buf);
        /* wrong shape: last dimension one larger (one more block for vectors) */
        edit e = {.tensor = t->name, .type = t->type, .n_dims = t->n_dims};
        memcpy(e.ne, t->ne, sizeof e.ne);
        e.ne[t->n_dims - 1] += t->n_dims == 1 ? quant_get_traits(t->type)->block_elems : 1;
        b = rewrite(&base, &e);
        snprintf(want, sizeof want, "tensor '%s'", t->name);
        m = load(&b, &err);
        /* llama.cpp files carry no vocab_size: token_embd's ne1 is it, and then the
         * token list disagrees */
        bool vocab_from_shape =
            d == MODEL_DIALECT_LLAMACPP && !strcmp(t->name, "token_embd.weight");
        ok = !m && strstr(err.msg, want) &&
             (vocab_from_shape ? strstr(err.msg, "vocab_size is 513 (from tensor") != NULL
                               : strstr(err.msg, "expected") || strstr(err.msg, "multiple"));
        shape_ok += ok;
        if (!ok)
            t_check(false, "%s reshaped -> %s", t->name, m ? "loaded" : err.msg);
        model_free(m);
        free(b.buf);
        /* wrong type: I32 where floats belong, F32 for tid2eid */
        memcpy(e.ne, t->ne, sizeof e.ne);
        e.type = t->type == DS4_TYPE_I32 ? DS4_TYPE_F32 : DS4_TYPE_I32;
        b = rewrite(&base, &e);
        snprintf(want, sizeof want, "tensor '%s': type %s not allowed", t->name,
                 quant_get_traits(e.type)->name);
        m = load(&b, &err);
        ok = !m && strstr(err.msg, want);
        type_ok += ok;
        if (!ok)
            t_check(false, "%s retyped -> %s", t->name, m ? "loaded" : err.msg);
        model_free(m);
        free(b.buf);
    }
    const char *dn = model_dialect_name(d);
    t_check(miss_ok == n, "%s: each of %d tensors missing: named in the error (%d)", dn, n,
            miss_ok);
    t_check(shape_ok == n, "%s: each of %d tensors reshaped: named with both shapes (%d)", dn,
            n, shape_ok);
    t_check(type_ok == n, "%s: each of %d tensors retyped: named with the type (%d)", dn, n,
            type_ok);
    gguf_close(f);
    free(base.buf);
}

static void test_inconsistent(void)
{
    model_mk_opts o = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_DS4);
    blob base, b;
    if (!make(&o, &base, "inconsistent"))
        return;
    uint32_t r[6] = {0, 0, 4, 128, 4, 128};
#define CASE(needle, needle2, what, ...)                                      \
    do {                                                                      \
        b = rewrite(&base, &(edit){__VA_ARGS__});                             \
        expect_fail(&b, needle, needle2, what);                               \
        free(b.buf);                                                          \
    } while (0)
    CASE("'blk.3.ffn_up_exps.weight': type q4_K differs", "gate and up", "gate/up types differ",
         .tensor = "blk.3.ffn_up_exps.weight", .type = DS4_TYPE_Q4_K, .n_dims = 3,
         .ne = {256, 256, 16});
    CASE("compress_ratios' has 5 entries", "block_count is 6", "ratios array too short",
         .arr_key = "deepseek4.attention.compress_ratios", .arr = r, .arr_n = 5);
    uint32_t r2[6] = {0, 0, 2, 128, 4, 128};
    CASE("compress_ratios'[2] = 2", NULL, "ratio 2", .arr_key = "deepseek4.attention.compress_ratios",
         .arr = r2, .arr_n = 6);
    uint32_t r3[6] = {0, 4, 4, 128, 4, 128};
    CASE("tensor 'blk.1.attn_compressor_ape.weight' missing", NULL, "ratio 4 on layer 1",
         .arr_key = "deepseek4.attention.compress_ratios", .arr = r3, .arr_n = 6);
    uint32_t r4[6] = {0, 0, 4, 0, 4, 128};
    CASE("'blk.3.attn_compressor_ape.weight' present but layer 3 has compress ratio 0", NULL,
         "ratio 0 on layer 3", .arr_key = "deepseek4.attention.compress_ratios", .arr = r4,
         .arr_n = 6);
    uint32_t r5[6] = {0, 0, 128, 128, 4, 128};
    CASE("tensor 'blk.2.attn_compressor_ape.weight': shape [256, 4] expected [128, 128]", NULL,
         "ratio 128 on a ratio-4 layer", .arr_key = "deepseek4.attention.compress_ratios",
         .arr = r5, .arr_n = 6);
    CASE("'blk.2.ffn_gate_tid2eid.weight' present but layer 2 is not a hash layer", NULL,
         "hash_layer_count 2", .u32_key = "deepseek4.hash_layer_count", .u32 = 2);
    CASE("tensor 'blk.3.ffn_gate_tid2eid.weight' missing", NULL, "hash_layer_count 4",
         .u32_key = "deepseek4.hash_layer_count", .u32 = 4);
    CASE("hash_layer_count' = 7 exceeds block_count", NULL, "hash_layer_count 7",
         .u32_key = "deepseek4.hash_layer_count", .u32 = 7);
    CASE("tensor 'blk.5.", "belongs to layer 5 but block_count is 5", "block_count 5",
         .u32_key = "deepseek4.block_count", .u32 = 5);
    CASE("compress_ratios' has 6 entries", "block_count is 7", "block_count 7",
         .u32_key = "deepseek4.block_count", .u32 = 7);
    CASE("tensor 'token_embd.weight': shape [256, 512] expected [512, 512]", NULL,
         "embedding_length 512", .u32_key = "deepseek4.embedding_length", .u32 = 512);
    CASE("'tokenizer.ggml.tokens' holds 512", "vocab_size is 600", "vocab_size 600",
         .u32_key = "deepseek4.vocab_size", .u32 = 600);
    CASE("head_count' = 5 is not a multiple of", "output_group_count", "heads vs groups",
         .u32_key = "deepseek4.attention.head_count", .u32 = 5);
    CASE("expert_used_count' = 17 exceeds expert_count", NULL, "top-k > experts",
         .u32_key = "deepseek4.expert_used_count", .u32 = 17);
    CASE("rope.dimension_count' = 63", "even", "odd rope dims",
         .u32_key = "deepseek4.rope.dimension_count", .u32 = 63);
    CASE("rope.dimension_count' = 128", "below", "rope dims = head dim",
         .u32_key = "deepseek4.rope.dimension_count", .u32 = 128);
    CASE("head_count_kv' = 2", "one shared KV head", "2 KV heads",
         .u32_key = "deepseek4.attention.head_count_kv", .u32 = 2);
    CASE("value_length' = 64 differs from key_length", NULL, "value_length",
         .u32_key = "deepseek4.attention.value_length", .u32 = 64);
    CASE("expert_group_count' = 2", "group-limited", "expert groups",
         .u32_key = "deepseek4.expert_group_count", .u32 = 2);
    CASE("general.architecture' is 'llama'", NULL, "architecture",
         .str_key = "general.architecture", .str = "llama");
    CASE("key 'deepseek4.block_count' has type str", NULL, "block_count as a string",
         .str_key = "deepseek4.block_count", .str = "6");
    CASE("'blk.1.ffn_gate_tid2eid.weight': token 3 entry 2 = 16 is not an expert id", NULL,
         "tid2eid out of range", .poke = "blk.1.ffn_gate_tid2eid.weight", .poke_at = 3 * 6 + 2,
         .poke_value = 16);
    CASE("'blk.0.attn_kv.weight': present under two names", "attn_kv_latent",
         "both spellings of a tensor", .tensor = "blk.0.attn_kv_latent.weight", .add = true,
         .type = DS4_TYPE_Q8_0, .n_dims = 2, .ne = {256, 128});
    model_mk_opts ol = preset("tiny", MODEL_MK_Q2, MODEL_DIALECT_LLAMACPP);
    blob llama;
    if (make(&ol, &llama, "inconsistent llamacpp")) {
        blob ds4base = base;
        base = llama; /* CASE rewrites base */
        CASE("compress_ratios' has 6 entries", "block_count is 7", "llamacpp block_count 7",
             .u32_key = "deepseek4.block_count", .u32 = 7);
        CASE("tensor 'blk.3.attn_kv.weight': shape [256, 64] expected [256, 128]", NULL,
             "llamacpp kv width", .tensor = "blk.3.attn_kv.weight", .type = DS4_TYPE_Q8_0,
             .n_dims = 2, .ne = {256, 64});
        CASE("tensor 'output_hc_fn.weight' missing", NULL, "llamacpp without output_hc_fn",
             .drop_tensor = "output_hc_fn.weight");
        CASE("expert_gating_func' = 1", "sqrt-softplus", "llamacpp gating func softmax",
             .u32_key = "deepseek4.expert_gating_func", .u32 = 1);
        b = rewrite(&base, &(edit){.tensor = "blk.0.attn_output_a.weight", .type = DS4_TYPE_Q8_0,
                                   .n_dims = 3, .ne = {256, 64, 2}});
        expect_ok(&b, "llamacpp attn_output_a as [H*D/g, r, g] (output_lora_rank derived)");
        free(b.buf);
        base = ds4base;
        free(llama.buf);
    }
#undef CASE
    /* tolerated: unknown and MTP tensors are ignored (and counted), llama.cpp nextn blocks */
    b = rewrite(&base, &(edit){.tensor = "mtp.0.attn_norm.weight", .add = true,
                               .type = DS4_TYPE_F32, .n_dims = 1, .ne = {256}});
    ds4_error err = {0};
    model *m = load(&b, &err);
    t_check(m && m->n_ignored == 1, "an mtp.* tensor is ignored%s", m ? "" : err.msg);
    model_free(m);
    free(b.buf);
    blob two = rewrite(&base, &(edit){.u32_key = "deepseek4.nextn_predict_layers", .u32 = 1});
    blob three = rewrite(&two, &(edit){.u32_key = "deepseek4.block_count", .u32 = 7});
    b = rewrite(&three, &(edit){.tensor = "blk.6.nextn.eh_proj.weight", .add = true,
                                .type = DS4_TYPE_F32, .n_dims = 1, .ne = {256}});
    m = load(&b, &err);
    t_check(m && m->hp.n_layer == 6 && m->n_ignored == 1, "nextn block after the main layers"
            " ignored %s", m ? "" : err.msg);
    model_free(m);
    free(b.buf), free(two.buf), free(three.buf);
    free(base.buf);
}

int main(void)
{
    t_seed(1);
    test_names();
    test_presets();
    test_flash_layout();
    test_determinism();
    test_dialects_same_data();
    test_legacy();
    test_keys();
    test_each_tensor(MODEL_DIALECT_DS4);
    test_each_tensor(MODEL_DIALECT_LLAMACPP);
    test_inconsistent();
    return t_summary();
}
