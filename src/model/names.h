/* names.h — the GGUF tensor names of ds4-architecture.md §1.4, one table keyed by a tensor
 * id: the name the spec dialect and llama.cpp's deepseek4 dialect share, plus a read-only
 * legacy alias (an earlier community llama.cpp fork) for 21 ids; and dialect detection
 * (the dialects differ in keys, not names: hparams.c, docs/llamacpp-dialect.md). Owns names
 * only: shapes and types are weights.c. Invariant: a name never maps to two ids; per-layer
 * names are "blk.<il>.<suffix>". */
#ifndef DS4_MODEL_NAMES_H
#define DS4_MODEL_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define MODEL_NAME_MAX 96 /* room for any tensor name of the table, "blk.<u32>." included */

/* Tensor ids, in the order the tables of §1.4 list them (globals first). */
typedef enum model_tensor_id {
    MODEL_T_TOKEN_EMBD,
    MODEL_T_OUTPUT_HC_FN,
    MODEL_T_OUTPUT_HC_BASE,
    MODEL_T_OUTPUT_HC_SCALE,
    MODEL_T_OUTPUT_NORM,
    MODEL_T_OUTPUT,
    MODEL_T_HC_ATTN_FN, /* first per-layer id */
    MODEL_T_HC_ATTN_SCALE,
    MODEL_T_HC_ATTN_BASE,
    MODEL_T_ATTN_NORM,
    MODEL_T_ATTN_Q_A,
    MODEL_T_ATTN_Q_A_NORM,
    MODEL_T_ATTN_Q_B,
    MODEL_T_ATTN_KV,
    MODEL_T_ATTN_KV_A_NORM,
    MODEL_T_ATTN_SINKS,
    MODEL_T_ATTN_OUTPUT_A,
    MODEL_T_ATTN_OUTPUT_B,
    MODEL_T_ATTN_COMPRESSOR_APE,
    MODEL_T_ATTN_COMPRESSOR_KV,
    MODEL_T_ATTN_COMPRESSOR_GATE,
    MODEL_T_ATTN_COMPRESSOR_NORM,
    MODEL_T_INDEXER_ATTN_Q_B,
    MODEL_T_INDEXER_PROJ,
    MODEL_T_INDEXER_COMPRESSOR_APE,
    MODEL_T_INDEXER_COMPRESSOR_KV,
    MODEL_T_INDEXER_COMPRESSOR_GATE,
    MODEL_T_INDEXER_COMPRESSOR_NORM,
    MODEL_T_HC_FFN_FN,
    MODEL_T_HC_FFN_SCALE,
    MODEL_T_HC_FFN_BASE,
    MODEL_T_FFN_NORM,
    MODEL_T_FFN_GATE_INP,
    MODEL_T_EXP_PROBS_B,
    MODEL_T_FFN_GATE_TID2EID,
    MODEL_T_FFN_GATE_EXPS,
    MODEL_T_FFN_UP_EXPS,
    MODEL_T_FFN_DOWN_EXPS,
    MODEL_T_FFN_GATE_SHEXP,
    MODEL_T_FFN_UP_SHEXP,
    MODEL_T_FFN_DOWN_SHEXP,
    MODEL_T_COUNT
} model_tensor_id;

#define MODEL_T_FIRST_LAYER MODEL_T_HC_ATTN_FN

/* True for ids stored once per layer ("blk.<il>." prefix). */
static inline bool model_tensor_is_layer(model_tensor_id id) { return id >= MODEL_T_FIRST_LAYER; }

/* The name of id in dialect d (the same in both) without the "blk.<il>." prefix
 * ("attn_q_a.weight"), or NULL for an id out of range. */
const char *model_tensor_suffix(model_tensor_id id, model_dialect d);

/* The legacy alias of id without the prefix ("attn_kv_latent.weight"), or NULL when id has
 * none (or is out of range). Read-only: nothing writes these names. */
const char *model_tensor_legacy_suffix(model_tensor_id id);

/* Writes the full name of id (layer il for per-layer ids, ignored otherwise) in dialect d
 * into buf (MODEL_NAME_MAX bytes); returns buf. */
char *model_tensor_name(char *buf, model_tensor_id id, model_dialect d, uint32_t il);

/* Writes the full legacy alias of id into buf and returns buf, or returns NULL (buf
 * untouched) when id has none. */
char *model_tensor_legacy_name(char *buf, model_tensor_id id, uint32_t il);

/* Looks id (layer il) up in f under its name, then under its legacy alias. Returns the
 * tensor or NULL. name (MODEL_NAME_MAX bytes) receives the name found, or the dialect-d
 * name when absent. *both is set when the name and the alias are both present (an
 * ambiguous file); pass NULL if not wanted. */
const gguf_tensor *model_tensor_find(const gguf_file *f, model_tensor_id id, model_dialect d,
                                     uint32_t il, char *name, bool *both);

/* Parses a tensor name: returns its id and sets *il (per-layer ids) and *spelling
 * (MODEL_DIALECT_LLAMACPP for a legacy alias, MODEL_DIALECT_DS4 for the shared name);
 * returns -1 for a name outside the table (mtp.*, nextn, unknown). *is_layer_name is set for
 * any "blk.<n>." name, known or not, with *il = n. */
int model_tensor_parse(const char *name, uint32_t *il, model_dialect *spelling,
                       bool *is_layer_name);

/* Detects the dialect of f: llama.cpp when the key deepseek4.expert_gating_func (required by
 * llama.cpp, absent from the spec) is present, or when legacy aliases are at least as many
 * as shared names among the tensors that have both; the spec's otherwise. */
model_dialect model_dialect_detect(const gguf_file *f);

/* ---- shapes and presence (implemented in weights.c, beside the checks that use them) ---- */

/* The exact ne of id in layer il computed from hp (§1.4); returns the number of dims. */
int model_tensor_shape(const model_hparams *hp, model_tensor_id id, uint32_t il,
                       int64_t ne[4]);

/* Whether layer il (ignored for globals) carries id: MODEL_PRESENT_REQUIRED, _ABSENT (a
 * tensor there is an error) or _OPTIONAL (exp_probs_b). */
enum { MODEL_PRESENT_ABSENT = 0, MODEL_PRESENT_REQUIRED = 1, MODEL_PRESENT_OPTIONAL = 2 };
int model_tensor_presence(const model_hparams *hp, model_tensor_id id, uint32_t il);

/* "ds4" / "llamacpp"; and the reverse (-1 if unknown). */
const char *model_dialect_name(model_dialect d);
int model_dialect_from_name(const char *s);

#endif
