/* state.h — the per-sequence state of a DS4 forward pass: the position, and per layer the
 * raw KV window, the compressed attention rows, the indexer rows and the compressor
 * frontiers (all f32). Owns allocation, reset and the context limit; the forward passes own
 * what goes into it. Invariant: after k tokens every layer holds exactly what decoding those
 * k tokens one at a time leaves (prefill and decode share it). Spec: ds4-architecture.md
 * §6.2 (caches) and §3.11 (causality). */
#ifndef DS4_MODEL_STATE_H
#define DS4_MODEL_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "model/ops.h"

typedef struct model_layer_state {
    uint32_t ratio;      /* compress ratio R of the layer (0: raw window only) */
    uint32_t comp_cap;   /* n_ctx / R + 2 compressed (and indexer) rows; 0 when R = 0 */
    float *raw;          /* [raw_cap][head_dim]: the row of position p is p % raw_cap */
    float *comp;         /* [comp_cap][head_dim]: compressed attention rows, row c pools
                            the block ending at position R*(c+1)-1 (R != 0) */
    uint32_t n_comp;     /* compressed rows emitted */
    float *index;        /* [comp_cap][indexer_head_dim]: indexer rows (indexer layers) */
    uint32_t n_index;    /* indexer rows emitted */
    compressor_state attn_cmp;  /* attention compressor frontier (R != 0) */
    compressor_state index_cmp; /* indexer compressor frontier (indexer layers) */
} model_layer_state;

typedef struct model_state {
    const model *m;
    uint32_t n_ctx;      /* positions this state can hold */
    uint32_t pos;        /* tokens processed = position of the next token */
    uint32_t raw_cap;    /* min(n_swa, n_ctx) raw rows per layer */
    bool qat;            /* FP8/FP4 simulations and F16 storage rounding (§3.8); default on,
                            off when env DS4_NO_QAT_SIM is set to anything but "" or "0" */
    model_layer_state *layers; /* [n_layer] */
} model_state;

/* Allocates a state for sequences of up to n_ctx tokens, empty (position 0). Reads
 * DS4_NO_QAT_SIM. Returns 0, DS4_E_ARG (n_ctx 0, or a layer shape the state cannot hold) or
 * DS4_E_NOMEM; *out is NULL on failure. */
int model_state_new(model_state **out, const model *m, uint32_t n_ctx, ds4_error *err);

/* Frees the state; NULL is a no-op. */
void model_state_free(model_state *s);

/* Back to position 0 with empty caches and initial frontiers (keeps n_ctx and qat). */
void model_state_reset(model_state *s);

/* Position of the next token (= tokens processed). */
uint32_t model_state_pos(const model_state *s);

/* 0 if n more tokens fit, else DS4_E_RANGE "context full" with the numbers. */
int model_state_check_room(const model_state *s, uint32_t n, ds4_error *err);

#endif
