/* forward.h — the optimized CPU forward pass of DS4 (forward.c, forward_ffn.c): the same
 * computation and state as the reference (forward_ref.h) with the matrix products on the
 * thread pool through cpu_matmul, activations quantized to each weight type's dot type (spec
 * §4.1: Q8_0 for Q8_0 weights, Q8_K once per token for all routed experts' gate/up and per
 * expert hidden for down, f32 for F16/F32), and tokens processed layer-major in chunks.
 * Invariants: logits and state do not depend on the thread count (bit-identical) nor on how
 * the tokens are split into calls (decode one at a time == prefill, bit-identical); they
 * differ from the reference only by the activation quantization and f32 accumulation.
 * Spec: ds4-architecture.md §3, §3.11, §4.1. */
#ifndef DS4_MODEL_FORWARD_H
#define DS4_MODEL_FORWARD_H

#include <stdint.h>

#include "kernels/cpu/threadpool.h"
#include "model/model.h"
#include "model/offload.h"
#include "model/state.h"

/* Tokens per layer-major pass: bounds the scratch (about 0.8 MB per token at Flash size). */
#define MODEL_PREFILL_CHUNK 256

/* Runs tokens[0..n) at positions s->pos .. s->pos+n-1 and advances s->pos by n, like
 * model_forward_ref: logits NULL or [n][n_vocab] (row i after tokens[i]). Threads: pool, or
 * with pool NULL one thread. Errors (nothing run, state unchanged): DS4_E_RANGE (context
 * full), DS4_E_ARG (token outside the vocabulary, state of another model), DS4_E_TYPE (a
 * matrix type without a CPU kernel, e.g. BF16), DS4_E_NOMEM. */
int model_forward_pool(cpu_pool *pool, const model *m, model_state *s, const int32_t *tokens,
                       uint32_t n, float *logits, ds4_error *err);

/* Same with the routed experts of the layers off places on its backend (off NULL: all on
 * the CPU, exactly model_forward_pool): each such layer's routed FFN is that backend's
 * BACKEND_OP_MOE, enqueued before the shared expert runs here and synced after; everything
 * else is unchanged. Errors as model_forward_pool, plus the backend's (e.g. DS4_E_IO). */
int model_forward_offload(cpu_pool *pool, const model_offload *off, const model *m,
                          model_state *s, const int32_t *tokens, uint32_t n, float *logits,
                          ds4_error *err);

/* The process-wide default pool (below); NULL if it could not be made (one thread). */
cpu_pool *model_forward_default_pool(void);

/* Same on the process-wide default pool, created on first use with cpu_pool_default_threads()
 * threads (DS4_THREADS, else the online CPUs) and kept until exit. */
int model_forward(const model *m, model_state *s, const int32_t *tokens, uint32_t n,
                  float *logits, ds4_error *err);

#endif
