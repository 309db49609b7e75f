/* names.c — the one alias table of DS4 tensor names: the spec dialect (published DS4 Flash
 * GGUFs, ds4-architecture.md §1.4) beside the llama.cpp deepseek4 dialect in circulation, and
 * dialect detection. Owns names only (shapes/types: weights.c). Facts and sources of the
 * llama.cpp column: docs/llamacpp-dialect.md; see the table comment for what is unconfirmed.
 * Invariant: suffixes are unique within each column, so parsing a name is unambiguous. */
#include "model/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The llama.cpp column is the spelling of the community llama.cpp deepseek4 lineage whose
 * GGUFs circulate (e.g. the DeepSeek-V4-Flash Q4_K_M files): 21 names differ from the spec —
 * output_hc_* -> hc_head_*, attn_kv -> attn_kv_latent, attn_compressor_* -> attn_compress_*,
 * indexer_compressor_* -> indexer.compress_*, and several tensors without the ".weight" /
 * ".bias" suffix (hc_*, attn_sinks, the two ape, exp_probs_b, ffn_gate_tid2eid). Established
 * from third-party loaders calibrated against such files (not from a file we hold); the
 * suffix-less forms and indexer.compress_* are the least confirmed. ggml-org's upstream
 * deepseek4 uses the spec's spellings, so those are accepted in either dialect (lookup tries
 * the other column second). Rows marked "same" are identical in both. */
static const struct {
    const char *ds4, *llamacpp;
} names[MODEL_T_COUNT] = {
    [MODEL_T_TOKEN_EMBD] = {"token_embd.weight", "token_embd.weight"},                /* same */
    [MODEL_T_OUTPUT_HC_FN] = {"output_hc_fn.weight", "hc_head_fn"},
    [MODEL_T_OUTPUT_HC_BASE] = {"output_hc_base.weight", "hc_head_base"},
    [MODEL_T_OUTPUT_HC_SCALE] = {"output_hc_scale.weight", "hc_head_scale"},
    [MODEL_T_OUTPUT_NORM] = {"output_norm.weight", "output_norm.weight"},             /* same */
    [MODEL_T_OUTPUT] = {"output.weight", "output.weight"},                            /* same */
    [MODEL_T_HC_ATTN_FN] = {"hc_attn_fn.weight", "hc_attn_fn"},
    [MODEL_T_HC_ATTN_SCALE] = {"hc_attn_scale.weight", "hc_attn_scale"},
    [MODEL_T_HC_ATTN_BASE] = {"hc_attn_base.weight", "hc_attn_base"},
    [MODEL_T_ATTN_NORM] = {"attn_norm.weight", "attn_norm.weight"},                   /* same */
    [MODEL_T_ATTN_Q_A] = {"attn_q_a.weight", "attn_q_a.weight"},                      /* same */
    [MODEL_T_ATTN_Q_A_NORM] = {"attn_q_a_norm.weight", "attn_q_a_norm.weight"},       /* same */
    [MODEL_T_ATTN_Q_B] = {"attn_q_b.weight", "attn_q_b.weight"},                      /* same */
    [MODEL_T_ATTN_KV] = {"attn_kv.weight", "attn_kv_latent.weight"},
    [MODEL_T_ATTN_KV_A_NORM] = {"attn_kv_a_norm.weight", "attn_kv_a_norm.weight"},    /* same */
    [MODEL_T_ATTN_SINKS] = {"attn_sinks.weight", "attn_sinks"},
    [MODEL_T_ATTN_OUTPUT_A] = {"attn_output_a.weight", "attn_output_a.weight"},       /* same */
    [MODEL_T_ATTN_OUTPUT_B] = {"attn_output_b.weight", "attn_output_b.weight"},       /* same */
    [MODEL_T_ATTN_COMPRESSOR_APE] = {"attn_compressor_ape.weight", "attn_compress_ape"},
    [MODEL_T_ATTN_COMPRESSOR_KV] = {"attn_compressor_kv.weight", "attn_compress_kv.weight"},
    [MODEL_T_ATTN_COMPRESSOR_GATE] = {"attn_compressor_gate.weight",
                                      "attn_compress_gate.weight"},
    [MODEL_T_ATTN_COMPRESSOR_NORM] = {"attn_compressor_norm.weight",
                                      "attn_compress_norm.weight"},
    [MODEL_T_INDEXER_ATTN_Q_B] = {"indexer.attn_q_b.weight", "indexer.attn_q_b.weight"}, /* same */
    [MODEL_T_INDEXER_PROJ] = {"indexer.proj.weight", "indexer.proj.weight"},          /* same */
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
    [MODEL_T_FFN_NORM] = {"ffn_norm.weight", "ffn_norm.weight"},                      /* same */
    [MODEL_T_FFN_GATE_INP] = {"ffn_gate_inp.weight", "ffn_gate_inp.weight"},          /* same */
    [MODEL_T_EXP_PROBS_B] = {"exp_probs_b.bias", "exp_probs_b"},
    [MODEL_T_FFN_GATE_TID2EID] = {"ffn_gate_tid2eid.weight", "ffn_gate_tid2eid"},
    [MODEL_T_FFN_GATE_EXPS] = {"ffn_gate_exps.weight", "ffn_gate_exps.weight"},       /* same */
    [MODEL_T_FFN_UP_EXPS] = {"ffn_up_exps.weight", "ffn_up_exps.weight"},             /* same */
    [MODEL_T_FFN_DOWN_EXPS] = {"ffn_down_exps.weight", "ffn_down_exps.weight"},       /* same */
    [MODEL_T_FFN_GATE_SHEXP] = {"ffn_gate_shexp.weight", "ffn_gate_shexp.weight"},    /* same */
    [MODEL_T_FFN_UP_SHEXP] = {"ffn_up_shexp.weight", "ffn_up_shexp.weight"},          /* same */
    [MODEL_T_FFN_DOWN_SHEXP] = {"ffn_down_shexp.weight", "ffn_down_shexp.weight"},    /* same */
};

#define KEY_GATING_FUNC "deepseek4.expert_gating_func" /* written by llama.cpp only */

const char *model_tensor_suffix(model_tensor_id id, model_dialect d)
{
    if ((unsigned)id >= MODEL_T_COUNT)
        return NULL;
    return d == MODEL_DIALECT_LLAMACPP ? names[id].llamacpp : names[id].ds4;
}

char *model_tensor_name(char *buf, model_tensor_id id, model_dialect d, uint32_t il)
{
    const char *s = model_tensor_suffix(id, d);
    if (!s)
        snprintf(buf, MODEL_NAME_MAX, "?");
    else if (model_tensor_is_layer(id))
        snprintf(buf, MODEL_NAME_MAX, "blk.%u.%s", il, s);
    else
        snprintf(buf, MODEL_NAME_MAX, "%s", s);
    return buf;
}

const gguf_tensor *model_tensor_find(const gguf_file *f, model_tensor_id id, model_dialect d,
                                     uint32_t il, char *name, bool *both)
{
    model_dialect other = d == MODEL_DIALECT_DS4 ? MODEL_DIALECT_LLAMACPP : MODEL_DIALECT_DS4;
    char alt[MODEL_NAME_MAX];
    model_tensor_name(name, id, d, il);
    model_tensor_name(alt, id, other, il);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    const gguf_tensor *u = strcmp(alt, name) ? gguf_find_tensor(f, alt) : NULL;
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
        if (strcmp(suffix, names[id].ds4) == 0) {
            *spelling = MODEL_DIALECT_DS4;
            return id;
        }
        if (strcmp(suffix, names[id].llamacpp) == 0) {
            *spelling = MODEL_DIALECT_LLAMACPP;
            return id;
        }
    }
    return -1;
}

model_dialect model_dialect_detect(const gguf_file *f)
{
    int64_t n_ds4 = 0, n_llama = 0;
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        uint32_t il;
        model_dialect sp;
        bool layer;
        int id = model_tensor_parse(gguf_tensor_at(f, i)->name, &il, &sp, &layer);
        if (id < 0 || strcmp(names[id].ds4, names[id].llamacpp) == 0)
            continue;
        if (sp == MODEL_DIALECT_LLAMACPP)
            n_llama++;
        else
            n_ds4++;
    }
    if ((n_llama > 0 && n_llama >= n_ds4) || gguf_find_key(f, KEY_GATING_FUNC) >= 0)
        return MODEL_DIALECT_LLAMACPP;
    return MODEL_DIALECT_DS4;
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
