/* forward_ref.h — the reference forward pass of DS4 (forward_ref.c): f32, scalar,
 * single-threaded, the oracle every faster path is checked against.
 * Two orders, one result: model_forward_ref runs the tokens one at a time through every
 * layer (decode order); model_prefill_ref runs them layer-major (all tokens through layer 0,
 * then layer 1, ...) with per-token visibility that reproduces decode exactly.
 * Spec: ds4-architecture.md §3 (forward), §3.11 (causality and prefill equivalence). */
#ifndef DS4_MODEL_FORWARD_REF_H
#define DS4_MODEL_FORWARD_REF_H

#include <stdint.h>

#include "model/model.h"
#include "model/state.h"

/* Runs tokens[0..n) at positions s->pos .. s->pos+n-1, one token at a time, and advances
 * s->pos by n. logits: NULL (skip the output head) or [n][n_vocab], row i = the logits after
 * tokens[i]. QAT simulations follow s->qat. Errors (nothing is run, the state is unchanged):
 * DS4_E_RANGE when the tokens do not fit in the state's context, DS4_E_ARG for a token id
 * outside the vocabulary or a state of another model, DS4_E_TYPE for an unsupported tensor
 * type, DS4_E_NOMEM. */
int model_forward_ref(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                      float *logits, ds4_error *err);

/* The same computation layer-major, in chunks of MODEL_REF_PREFILL_CHUNK tokens; same
 * arguments, errors and results (bit-identical logits and state). */
int model_prefill_ref(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                      float *logits, ds4_error *err);

#define MODEL_REF_PREFILL_CHUNK 2048 /* tokens per layer-major pass (spec §3.11 default) */

#endif
