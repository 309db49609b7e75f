/* names.c — the one table of DS4 tensor names (ds4-architecture.md §1.4), which the spec
 * dialect and llama.cpp's deepseek4 dialect share, plus the legacy spellings of a pre-upstream
 * community llama.cpp fork (accepted when reading, never written), and dialect detection.
 * Owns names only (shapes/types: weights.c, keys: hparams.c). Facts and sources:
 * docs/llamacpp-dialect.md. Invariant: no string appears twice in the table, so parsing a
 * name is unambiguous. */
#include "model/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* name: the spec's spelling, which is also llama.cpp's: ggml-org llama.cpp 0c1e57098 (the
 * one vendored by llama-cpp-python 0.3.36) creates every deepseek4 tensor under exactly
 * these names (src/models/deepseek4.cpp with llama-arch.cpp's table; its converter writes
 * them; a llama.cpp build loads ds4-mkmodel files spelled so — tests/reference/
 * test_llamacpp_ref.py). legacy: the 21 spellings third-party loaders report for GGUFs of an
 * earlier community llama.cpp fork (hc_head_*, attn_kv_latent, attn_compress_*,
 * indexer.compress_*, several without the .weight/.bias suffix); not verified against a file,
 * kept so such a file still loads; NULL where that fork used the spec name. */
static const struct {
    const char *name, *legacy;
} names[MODEL_T_COUNT] = {
    [MODEL_T_TOKEN_EMBD] = {"token_embd.weight", NULL},
    [MODEL_T_OUTPUT_HC_FN] = {"output_hc_fn.weight", "hc_head_fn"},
    [MODEL_T_OUTPUT_HC_BASE] = {"output_hc_base.weight", "hc_head_base"},
    [MODEL_T_OUTPUT_HC_SCALE] = {"output_hc_scale.weight", "hc_head_scale"},
    [MODEL_T_OUTPUT_NORM] = {"output_norm.weight", NULL},
    [MODEL_T_OUTPUT] = {"output.weight", NULL},
    [MODEL_T_HC_ATTN_FN] = {"hc_attn_fn.weight", "hc_attn_fn"},
    [MODEL_T_HC_ATTN_SCALE] = {"hc_attn_scale.weight", "hc_attn_scale"},
    [MODEL_T_HC_ATTN_BASE] = {"hc_attn_base.weight", "hc_attn_base"},
    [MODEL_T_ATTN_NORM] = {"attn_norm.weight", NULL},
    [MODEL_T_ATTN_Q_A] = {"attn_q_a.weight", NULL},
    [MODEL_T_ATTN_Q_A_NORM] = {"attn_q_a_norm.weight", NULL},
    [MODEL_T_ATTN_Q_B] = {"attn_q_b.weight", NULL},
    [MODEL_T_ATTN_KV] = {"attn_kv.weight", "attn_kv_latent.weight"},
    [MODEL_T_ATTN_KV_A_NORM] = {"attn_kv_a_norm.weight", NULL},
    [MODEL_T_ATTN_SINKS] = {"attn_sinks.weight", "attn_sinks"},
    [MODEL_T_ATTN_OUTPUT_A] = {"attn_output_a.weight", NULL},
    [MODEL_T_ATTN_OUTPUT_B] = {"attn_output_b.weight", NULL},
    [MODEL_T_ATTN_COMPRESSOR_APE] = {"attn_compressor_ape.weight", "attn_compress_ape"},
    [MODEL_T_ATTN_COMPRESSOR_KV] = {"attn_compressor_kv.weight", "attn_compress_kv.weight"},
    [MODEL_T_ATTN_COMPRESSOR_GATE] = {"attn_compressor_gate.weight",
                                      "attn_compress_gate.weight"},
    [MODEL_T_ATTN_COMPRESSOR_NORM] = {"attn_compressor_norm.weight",
                                      "attn_compress_norm.weight"},
    [MODEL_T_INDEXER_ATTN_Q_B] = {"indexer.attn_q_b.weight", NULL},
    [MODEL_T_INDEXER_PROJ] = {"indexer.proj.weight", NULL},
    [MODEL_T_INDEXER_COMPRESSOR_APE] = {"indexer_compressor_ape.weight", "indexer.compress_ape"},
    [MODEL_T_INDEXER_COMPRESSOR_KV] = {"indexer_compressor_kv.weight",
                                       "indexer.compress_kv.weight"},
    [MODEL_T_INDEXER_COMPRESSOR_GATE] = {"indexer_compressor_gate.weight",
                                         "indexer.compress_gate.weight"},
    [MODEL_T_INDEXER_COMPRESSOR_NORM] = {"indexer_compressor_norm.weight",
                                         "indexer.compress_norm.weight"},
    [MODEL_T_HC_FFN_FN] = {"hc_ffn_fn.weight", "hc_ffn_fn"},
    [MODEL_T_HC_FFN_SCALE] = {"hc_ffn_scale.weight", "hc_ffn_scale"},
    [MODEL_T_HC_FFN_BASE] = {"hc_ffn_base.weight", "hc_ffn_base"},
    [MODEL_T_FFN_NORM] = {"ffn_norm.weight", NULL},
    [MODEL_T_FFN_GATE_INP] = {"ffn_gate_inp.weight", NULL},
    [MODEL_T_EXP_PROBS_B] = {"exp_probs_b.bias", "exp_probs_b"},
    [MODEL_T_FFN_GATE_TID2EID] = {"ffn_gate_tid2eid.weight", "ffn_gate_tid2eid"},
    [MODEL_T_FFN_GATE_EXPS] = {"ffn_gate_exps.weight", NULL},
    [MODEL_T_FFN_UP_EXPS] = {"ffn_up_exps.weight", NULL},
    [MODEL_T_FFN_DOWN_EXPS] = {"ffn_down_exps.weight", NULL},
    [MODEL_T_FFN_GATE_SHEXP] = {"ffn_gate_shexp.weight", NULL},
    [MODEL_T_FFN_UP_SHEXP] = {"ffn_up_shexp.weight", NULL},
    [MODEL_T_FFN_DOWN_SHEXP] = {"ffn_down_shexp.weight", NULL},
};

#define KEY_GATING_FUNC "deepseek4.expert_gating_func" /* required by llama.cpp; not in the spec */

const char *model_tensor_suffix(model_tensor_id id, model_dialect d)
{
    (void)d; /* both dialects spell every tensor alike (see the table) */
    return (unsigned)id < MODEL_T_COUNT ? names[id].name : NULL;
}

const char *model_tensor_legacy_suffix(model_tensor_id id)
{
    return (unsigned)id < MODEL_T_COUNT ? names[id].legacy : NULL;
}

static char *format(char *buf, model_tensor_id id, const char *s, uint32_t il)
{
    if (!s)
        snprintf(buf, MODEL_NAME_MAX, "?");
    else if (model_tensor_is_layer(id))
        snprintf(buf, MODEL_NAME_MAX, "blk.%u.%s", il, s);
    else
        snprintf(buf, MODEL_NAME_MAX, "%s", s);
    return buf;
}

char *model_tensor_name(char *buf, model_tensor_id id, model_dialect d, uint32_t il)
{
    return format(buf, id, model_tensor_suffix(id, d), il);
}

char *model_tensor_legacy_name(char *buf, model_tensor_id id, uint32_t il)
{
    const char *s = model_tensor_legacy_suffix(id);
    return s ? format(buf, id, s, il) : NULL;
}

const gguf_tensor *model_tensor_find(const gguf_file *f, model_tensor_id id, model_dialect d,
                                     uint32_t il, char *name, bool *both)
{
    char alt[MODEL_NAME_MAX];
    model_tensor_name(name, id, d, il);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    const gguf_tensor *u =
        model_tensor_legacy_name(alt, id, il) ? gguf_find_tensor(f, alt) : NULL;
    if (both)
        *both = t && u;
    if (!t && u) {
        memcpy(name, alt, MODEL_NAME_MAX);
        return u;
    }
    return t;
}

int model_tensor_parse(const char *name, uint32_t *il, model_dialect *spelling,
                       bool *is_layer_name)
{
    const char *suffix = name;
    bool layer = false;
    *is_layer_name = false;
    if (strncmp(name, "blk.", 4) == 0 && name[4] >= '0' && name[4] <= '9') {
        char *end;
        unsigned long n = strtoul(name + 4, &end, 10);
        if (*end == '.' && n <= UINT32_MAX) {
            *il = (uint32_t)n;
            *is_layer_name = true;
            layer = true;
            suffix = end + 1;
        }
    }
    for (int id = 0; id < MODEL_T_COUNT; id++) {
        if (model_tensor_is_layer((model_tensor_id)id) != layer)
            continue;
        if (strcmp(suffix, names[id].name) == 0) {
            *spelling = MODEL_DIALECT_DS4;
            return id;
        }
        if (names[id].legacy && strcmp(suffix, names[id].legacy) == 0) {
            *spelling = MODEL_DIALECT_LLAMACPP;
            return id;
        }
    }
    return -1;
}

model_dialect model_dialect_detect(const gguf_file *f)
{
    if (gguf_find_key(f, KEY_GATING_FUNC) >= 0)
        return MODEL_DIALECT_LLAMACPP;
    int64_t n_spec = 0, n_legacy = 0; /* spellings of the tensors that have a legacy one */
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        uint32_t il;
        model_dialect sp;
        bool layer;
        int id = model_tensor_parse(gguf_tensor_at(f, i)->name, &il, &sp, &layer);
        if (id < 0 || !names[id].legacy)
            continue;
        if (sp == MODEL_DIALECT_LLAMACPP)
            n_legacy++;
        else
            n_spec++;
    }
    return n_legacy > 0 && n_legacy >= n_spec ? MODEL_DIALECT_LLAMACPP : MODEL_DIALECT_DS4;
}

const char *model_dialect_name(model_dialect d)
{
    return d == MODEL_DIALECT_LLAMACPP ? "llamacpp" : "ds4";
}

int model_dialect_from_name(const char *s)
{
    if (s && strcmp(s, "ds4") == 0)
        return MODEL_DIALECT_DS4;
    if (s && (strcmp(s, "llamacpp") == 0 || strcmp(s, "llama.cpp") == 0))
        return MODEL_DIALECT_LLAMACPP;
    return -1;
}
