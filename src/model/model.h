/* model.h — the DS4 model as loaded from a GGUF: hyperparameters read from `deepseek4.*`
 * metadata (model_hparams), every tensor of ds4-architecture.md §1.4 bound by name and
 * validated for shape and type (model_weights), and the open file that owns their bytes.
 * Owns no computation: the forward passes are forward_ref.c / forward.c, caches state.h.
 * Invariant: every dimension comes from metadata or tensor shapes, never from constants. */
#ifndef DS4_MODEL_H
#define DS4_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "ds4.h"
#include "gguf/gguf.h"

#define MODEL_MAX_LAYERS 1024 /* sanity bound on block_count, not a model constant */

/* Hyperparameters (spec §1.3 / §2). Field names follow the GGUF keys. */
typedef struct model_hparams {
    uint32_t n_layer;            /* block_count */
    uint32_t n_embd;             /* embedding_length: hidden size d */
    uint32_t n_vocab;            /* vocab_size */
    uint32_t n_head;             /* attention.head_count */
    uint32_t n_head_kv;          /* attention.head_count_kv (1: K = V shared row) */
    uint32_t head_dim;           /* attention.key_length (= value_length) */
    uint32_t n_rot;              /* rope.dimension_count: rotated tail of each head */
    uint32_t q_lora_rank;        /* attention.q_lora_rank */
    uint32_t o_lora_rank;        /* attention.output_lora_rank: per-group rank */
    uint32_t n_out_group;        /* attention.output_group_count */
    uint32_t n_expert;           /* expert_count */
    uint32_t n_expert_used;      /* expert_used_count */
    uint32_t n_ff_exp;           /* expert_feed_forward_length (also shared expert width) */
    uint32_t n_expert_shared;    /* expert_shared_count */
    uint32_t n_hash_layer;       /* hash_layer_count: leading layers routed by tid2eid */
    uint32_t n_swa;              /* attention.sliding_window: raw rows incl. current token */
    uint32_t n_indexer_head;     /* attention.indexer.head_count */
    uint32_t indexer_head_dim;   /* attention.indexer.key_length */
    uint32_t indexer_top_k;      /* attention.indexer.top_k */
    uint32_t n_hc;               /* hyper_connection.count: residual streams */
    uint32_t hc_sinkhorn_iters;  /* hyper_connection.sinkhorn_iterations */
    float hc_eps;                /* hyper_connection.epsilon */
    float rms_eps;               /* attention.layer_norm_rms_epsilon */
    float rope_freq_base;        /* rope.freq_base (uncompressed layers) */
    float rope_compress_freq_base; /* attention.compress_rope_freq_base */
    float rope_scaling_factor;   /* rope.scaling.factor (YaRN, compressed layers) */
    uint64_t rope_orig_ctx;      /* rope.scaling.original_context_length */
    float rope_beta_fast;        /* rope.scaling.yarn_beta_fast */
    float rope_beta_slow;        /* rope.scaling.yarn_beta_slow */
    float expert_weights_scale;  /* expert_weights_scale */
    bool expert_weights_norm;    /* expert_weights_norm */
    uint64_t context_length;     /* context_length (informational; 0 if absent) */
    uint32_t n_nextn_layer;      /* nextn_predict_layers (llama.cpp, optional): MTP blocks
                                    stored after the n_layer main ones, counted in its
                                    block_count; ds4 ignores their tensors */
    uint32_t compress_ratio[MODEL_MAX_LAYERS]; /* attention.compress_ratios: 0 (none), 4
                                                  (overlapped + indexer) or > 4 (Flash: 128) */
    float swiglu_clamp[MODEL_MAX_LAYERS];      /* swiglu_clamp_exp per layer */
} model_hparams;

/* One layer's tensors (§1.4). NULL where the layer kind has none (compressor on ratio 0,
 * indexer off ratio 4, tid2eid off hash layers, exp_probs_b when absent). */
typedef struct model_layer {
    const gguf_tensor *hc_attn_fn, *hc_attn_scale, *hc_attn_base;
    const gguf_tensor *attn_norm;
    const gguf_tensor *attn_q_a, *attn_q_a_norm, *attn_q_b;
    const gguf_tensor *attn_kv, *attn_kv_a_norm;
    const gguf_tensor *attn_sinks;
    const gguf_tensor *attn_output_a, *attn_output_b;
    const gguf_tensor *attn_compressor_ape, *attn_compressor_kv, *attn_compressor_gate;
    const gguf_tensor *attn_compressor_norm;
    const gguf_tensor *indexer_attn_q_b, *indexer_proj;
    const gguf_tensor *indexer_compressor_ape, *indexer_compressor_kv, *indexer_compressor_gate;
    const gguf_tensor *indexer_compressor_norm;
    const gguf_tensor *hc_ffn_fn, *hc_ffn_scale, *hc_ffn_base;
    const gguf_tensor *ffn_norm;
    const gguf_tensor *ffn_gate_inp, *exp_probs_b, *ffn_gate_tid2eid;
    const gguf_tensor *ffn_gate_exps, *ffn_up_exps, *ffn_down_exps;
    const gguf_tensor *ffn_gate_shexp, *ffn_up_shexp, *ffn_down_shexp;
} model_layer;

typedef struct model_weights {
    const gguf_tensor *token_embd;
    const gguf_tensor *output_hc_fn, *output_hc_base, *output_hc_scale;
    const gguf_tensor *output_norm;
    const gguf_tensor *output;
    model_layer *layers; /* [n_layer] */
} model_weights;

/* GGUF dialect the file was written in: the spec's or llama.cpp's deepseek4 (same tensor
 * names, different keys; both load: names.c, hparams.c, docs/llamacpp-dialect.md). */
typedef enum { MODEL_DIALECT_DS4 = 0, MODEL_DIALECT_LLAMACPP = 1 } model_dialect;

typedef struct model {
    gguf_file *file;
    model_dialect dialect;
    model_hparams hp;
    model_weights w;
    int64_t n_ignored;   /* tensors of the file no field binds (mtp.*, unknown names) */
} model;

#define MODEL_ARCH "deepseek4" /* general.architecture and the prefix of every model key */

/* Reads every key of §1.3 from f into hp (array keys accept u32/i32-like integer or
 * f32/f64 elements, swiglu_clamp_exp also a scalar) and validates their consistency with
 * model_hparams_check. In the llama.cpp dialect a missing key is derived from tensor
 * shapes where it can be (see hparams.c); otherwise, and always in the spec dialect, a
 * missing key is an error. Returns 0 or a negative DS4_E* code with a one-line message
 * naming the file and the key. */
int model_hparams_read(model_hparams *hp, const gguf_file *f, model_dialect d,
                       ds4_error *err);

/* Checks hp for consistency (ratios 0 or >= 4, n_rot even and < head_dim, n_head divisible
 * by n_out_group, n_expert_used <= n_expert, ...). what prefixes the message (a path).
 * Returns 0 or DS4_E_RANGE with a message naming the offending key. */
int model_hparams_check(const model_hparams *hp, const char *what, ds4_error *err);

/* Opens path, reads and validates hyperparameters, binds and validates every tensor.
 * On failure returns a negative DS4_E* code with a one-line message naming the key or
 * tensor (and *out is NULL). */
int model_load(model **out, const char *path, ds4_error *err);

/* Same, from an already open file (takes ownership of f even on failure). */
int model_load_file(model **out, gguf_file *f, ds4_error *err);

void model_free(model *m);

/* Layer kind helpers. */
static inline uint32_t model_ratio(const model_hparams *hp, uint32_t il) { return hp->compress_ratio[il]; }
static inline bool model_is_hash_layer(const model_hparams *hp, uint32_t il) { return il < hp->n_hash_layer; }

#endif
