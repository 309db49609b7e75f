/* ops.h — the DS4 forward-pass components shared by the reference forward (forward_ref.c)
 * and the optimized one: weight-row access and f32 matrix-vector products (linalg.c),
 * hyper-connections (hc.c), RoPE with YaRN (rope.c), the QAT numeric simulations (qat.c),
 * the KV compressors (compressor.c), the lightning indexer (indexer.c), sink-aware attention
 * and the grouped output projection (attention.c), routing and experts (moe.c).
 * Invariants: plain functions on f32 vectors; no allocation, no failure, no global state;
 * every dimension is a parameter or comes from model_hparams / tensor shapes. Callers pass
 * scratch where a function needs it. Spec: ds4-architecture.md §3 (section named per group). */
#ifndef DS4_MODEL_OPS_H
#define DS4_MODEL_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

/* ---- linalg.c: weights as f32 (matvec in double, see linalg.c) ---- */

/* Largest number of elements model_row_chunk dequantizes at once (a multiple of every
 * block size: 1, 32, 256). */
#define MODEL_CHUNK 256

/* Row r of expert e of a 2-D (e = 0) or 3-D weight t (ne = [in, out, n_expert]), dequantized
 * to f32: dst gets ne[0] values. Assumes the type has a dequantizer (model_ref_check). */
void model_row_f32(const gguf_tensor *t, uint32_t e, uint32_t r, float *dst);

/* Element i (flat index) of any tensor, dequantized. For small vectors (scales, biases). */
float model_elem(const gguf_tensor *t, uint64_t i);

/* y[o] = sum_i W[e][r0 + o][i] * x[i] for o < n: products and sums in double, rounded to
 * f32 once. x has ne[0] values. */
void model_matvec_rows(const gguf_tensor *t, uint32_t e, uint32_t r0, uint32_t n,
                       const float *x, float *y);

/* All ne[1] rows of expert e: y = W[e] x. */
void model_matvec(const gguf_tensor *t, uint32_t e, const float *x, float *y);

/* y = x / sqrt(mean(x^2) + eps), times w (a tensor of n values) when w != NULL. Sum of squares
 * in double (spec conventions). y may alias x. */
void model_rmsnorm(const float *x, uint32_t n, float eps, const gguf_tensor *w, float *y);

/* sum_i a[i] * b[i] in double. */
double model_dot(const float *a, const float *b, uint32_t n);

/* Checks that the components can run this model: every tensor has a type with a reference
 * dequantizer, n_hc <= HC_MAX_STREAMS, an even rope width that fits the heads, a power-of-two
 * indexer head dim, and tid2eid entries that name existing experts. Returns 0, or DS4_E_TYPE /
 * DS4_E_RANGE with a message naming what is wrong. */
int model_ref_check(const model *m, ds4_error *err);

/* ---- hc.c: hyper-connections (§3.2, §3.10) ---- */

#define HC_MAX_STREAMS 16 /* sanity bound on n_hc (model_ref_check enforces it) */

/* HC pre: from the state X [n_hc][n_embd] and a sublayer's fn [n_hc*n_embd, (2+n_hc)*n_hc],
 * scale [3], base [(2+n_hc)*n_hc]: x = sum_i pre_i X_i, post [n_hc], comb [n_hc][n_hc]
 * (comb[i*n_hc + j]: from source stream i to destination j; doubly stochastic after
 * hp->hc_sinkhorn_iters rounds). scratch: n_hc*n_embd floats. */
void hc_pre(const model_hparams *hp, const gguf_tensor *fn, const gguf_tensor *scale,
            const gguf_tensor *base, const float *X, float *x, float *post, float *comb,
            float *scratch);

/* The part of hc_pre after the mixer projection, for callers that compute
 * m = fn . RMSNorm(flat X) (no weight, eps = rms_eps; (2 + n_hc) * n_hc values) themselves. */
void hc_pre_finish(const model_hparams *hp, const gguf_tensor *scale, const gguf_tensor *base,
                   const float *m, const float *X, float *x, float *post, float *comb);

/* Sinkhorn normalisation of comb in place (the part of hc_pre after the row softmax + eps):
 * one column normalisation, then iters-1 rounds of (row, column); every sum gets + eps. */
void hc_sinkhorn(float *comb, uint32_t n_hc, uint32_t iters, float eps);

/* HC post, in place: X'_j = post_j * y + sum_i comb[i][j] X_i. scratch: n_hc*n_embd. */
void hc_post(uint32_t n_hc, uint32_t n_embd, float *X, const float *y, const float *post,
             const float *comb, float *scratch);

/* HC head (§3.10 steps 1-3 before the final norm): y = sum_i w_i X_i with
 * w_i = sigmoid(fn_i . RMSNorm(X) * scale[0] + base_i) + hc_eps. scratch: n_hc*n_embd. */
void hc_head(const model_hparams *hp, const gguf_tensor *fn, const gguf_tensor *scale,
             const gguf_tensor *base, const float *X, float *y, float *scratch);

/* The part of hc_head after its projection a = fn . RMSNorm(flat X) (n_hc values). */
void hc_head_finish(const model_hparams *hp, const gguf_tensor *scale, const gguf_tensor *base,
                    const float *a, const float *X, float *y);

/* ---- rope.c: partial interleaved RoPE, YaRN for compressed layers (§3.4) ---- */

#define ROPE_MAX_PAIRS 256 /* sanity bound on n_rot / 2 */

typedef struct rope_cfg {
    uint32_t n_rot;                  /* rotated tail width (even) */
    double inv_freq[ROPE_MAX_PAIRS]; /* theta_k = p * inv_freq[k], k < n_rot / 2 */
    double yarn_lo, yarn_hi;         /* YaRN correction range (compressed layers), else 0 */
    bool yarn;
} rope_cfg;

/* RoPE parameters of layer il: base rope_freq_base for ratio-0 layers; for compressed
 * layers base compress_rope_freq_base with YaRN (cut-offs from n_rot, original context,
 * beta_fast / beta_slow; no amplitude scaling). Also used for their compressor rows and
 * indexer queries. */
void rope_layer_cfg(const model_hparams *hp, uint32_t il, rope_cfg *rc);

/* YaRN correction range for rope width n_rot: lo = floor(corr(beta_fast)),
 * hi = ceil(corr(beta_slow)), clamped to [0, n_rot - 1]; corr(r) =
 * n_rot * ln(orig_ctx / (2 pi r)) / (2 ln base). */
void rope_yarn_range(uint32_t n_rot, double base, double orig_ctx, double beta_fast,
                     double beta_slow, double *lo, double *hi);

/* Rotates the last n_rot values of v (width) as interleaved pairs at position pos; inverse
 * rotates by -theta. */
void rope_apply(const rope_cfg *rc, float *v, uint32_t width, int64_t pos, bool inverse);

/* ---- qat.c: numeric simulations that are part of the graph (§3.8) ---- */

#define QAT_FP8_BLOCK 64   /* FP8 KV simulation block */
#define QAT_FP8_MAX 448.0f /* largest finite E4M3FN value */
#define QAT_FP4_BLOCK 32   /* FP4 indexer simulation block */
#define QAT_FP4_MAX 6.0f   /* largest E2M1 value */

/* Nearest E4M3FN value to x (|x| <= 448 assumed; larger saturates), ties to even code. */
float qat_e4m3(float x);

/* Nearest E2M1 value {0, .5, 1, 1.5, 2, 3, 4, 6} with x's sign, ties to the even index;
 * |x| > 6 saturates. */
float qat_e2m1(float x);

/* FP8 KV simulation of x[0..n): blocks of 64 (the last may be shorter), each scaled by
 * 2^ceil(log2(amax / 448)) (amax >= 1e-4), rounded through E4M3 and scaled back. */
void qat_fp8_sim(float *x, uint32_t n);

/* Orthonormal fast Walsh-Hadamard transform of x[0..n), n a power of two (natural order,
 * butterflies a+b / a-b, then * 1/sqrt(n)). */
void qat_hadamard(float *x, uint32_t n);

/* FP4 simulation of x[0..n): blocks of 32, scale 2^ceil(log2(amax / 6)), E2M1 rounding. */
void qat_fp4_sim(float *x, uint32_t n);

/* Rounds every value through F16 (storage precision of cached rows). */
void qat_f16_round(float *x, uint32_t n);

/* §3.8 QAT of a KV row (raw or compressed, head_dim wide) as stored: FP8 on the non-RoPE
 * dims, then F16 rounding. Does nothing when on is false (DS4_NO_QAT_SIM). */
void qat_kv_row(const model_hparams *hp, bool on, float *row);

/* §3.8 QAT of an indexer row (indexer_head_dim wide): Hadamard, FP4, F16 rounding. */
void qat_index_row(const model_hparams *hp, bool on, float *row);

/* ---- compressor.c: KV compressors (§3.5) ---- */

/* The rolling state of one compressor: n_slot slots of width values of (kv, score).
 * Overlapped (coff = 2, ratio 4): n_slot = 2R, width = 2*head_dim, slots [0,R) = previous
 * window, [R,2R) = current. Otherwise n_slot = R, width = head_dim. */
typedef struct compressor_state {
    uint32_t ratio, coff, head_dim;
    uint32_t n_slot, width;
    float *kv;    /* [n_slot][width] */
    float *score; /* [n_slot][width] */
} compressor_state;

/* The weights of one compressor (attention or indexer). */
typedef struct compressor_w {
    const gguf_tensor *ape, *kv, *gate, *norm;
} compressor_w;

/* Initial state: kv = 0, score = -inf. */
void compressor_reset(compressor_state *cs);

/* Feeds the sublayer input h of the token at pos; when that token completes a window
 * ((pos + 1) % R == 0) writes the pooled, RMS-normalised, RoPE'd row (head_dim values, at
 * rope position pos + 1 - R) to row and returns true. No QAT here (the caller applies it). */
bool compressor_push(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                     compressor_state *cs, const float *h, uint32_t pos, float *row);

/* Same with the projections computed by the caller: k = kv . h and s = gate . h (width
 * values each, s without ape). Identical result when k and s are identical. */
bool compressor_push_proj(const model_hparams *hp, const compressor_w *w, const rope_cfg *rc,
                          compressor_state *cs, const float *k, const float *s, uint32_t pos,
                          float *row);

/* ---- indexer.c: lightning indexer (§3.6) ---- */

/* Indexer queries of one token: qi [n_indexer_head][indexer_head_dim] = indexer_attn_q_b qn,
 * RoPE at pos, then (qat) Hadamard + FP4 per head; wi [n_indexer_head] = indexer_proj h /
 * sqrt(head_dim * n_head). */
void indexer_query(const model_hparams *hp, const model_layer *L, const rope_cfg *rc,
                   const float *qn, const float *h, int64_t pos, bool qat, float *qi, float *wi);

/* The part of indexer_query after its two projections: qi = indexer_attn_q_b . qn and
 * wi = indexer_proj . h given, transformed in place. */
void indexer_query_finish(const model_hparams *hp, const rope_cfg *rc, int64_t pos, bool qat,
                          float *qi, float *wi);

/* score[c] = sum_h wi_h * max(0, qi_h . rows[c]) for c < n_rows (rows [n_rows][head_dim]). */
void indexer_scores(const model_hparams *hp, const float *qi, const float *wi,
                    const float *rows, uint32_t n_rows, float *score);

/* The k highest scores of score[0..n) by repeated arg-max (lowest index wins ties), written
 * to sel in ascending index order. Assumes k <= n. score is clobbered. */
void indexer_top_k(float *score, uint32_t n, uint32_t k, uint32_t *sel);

/* ---- attention.c: sink-aware attention and output projection (§3.7, §3.3 steps 8-9) ---- */

/* For every head h: out_h = sum_r e^{s_r - M} rows[r] / (e^{sink_h - M} + sum_r e^{s_r - M}),
 * s_r = q_h . rows[r] / sqrt(head_dim), M = max(sink_h, s_r). rows: n_rows pointers to
 * head_dim values (K = V). scores: n_rows doubles of scratch. */
void attn_sink_heads(const model_hparams *hp, const gguf_tensor *sinks, const float *q,
                     const float *const *rows, uint32_t n_rows, float *out, double *scores);

/* Same for heads h0 <= h < h1 only (q and out still indexed by absolute head). */
void attn_sink_heads_range(const model_hparams *hp, const gguf_tensor *sinks, const float *q,
                           const float *const *rows, uint32_t n_rows, uint32_t h0, uint32_t h1,
                           float *out, double *scores);

/* Grouped output projection: group g (n_head / n_out_group consecutive heads) times rows
 * g*o_lora_rank.. of attn_output_a, concatenated, times attn_output_b -> y [n_embd].
 * mid: n_out_group * o_lora_rank floats of scratch. */
void attn_output(const model_hparams *hp, const model_layer *L, const float *o, float *mid,
                 float *y);

/* ---- moe.c: router, experts, shared expert (§3.9) ---- */

/* Selected experts and their weights for one token: hash layers take tid2eid[token],
 * others the top-k of sqrt(softplus(z)) + exp_probs_b; weights = unbiased scores of the
 * chosen, normalised (when expert_weights_norm) and scaled. prob: n_expert floats scratch. */
void moe_route(const model_hparams *hp, const model_layer *L, uint32_t il, const float *h,
               int32_t token, int32_t *sel, float *weight, float *prob);

/* The part of moe_route after the router projection: prob holds z = ffn_gate_inp . h
 * (n_expert values) and becomes sqrt(softplus(z)); sel and weight as moe_route. */
void moe_select(const model_hparams *hp, const model_layer *L, uint32_t il, int32_t token,
                float *prob, int32_t *sel, float *weight);

/* y = sum_k W_down[sel_k] (weight_k * swiglu(W_gate[sel_k] h, W_up[sel_k] h)) + shared
 * expert. scratch: 3 * max(n_ff_exp, shared width) + n_embd floats. */
void moe_ffn(const model_hparams *hp, const model_layer *L, uint32_t il, const float *h,
             const int32_t *sel, const float *weight, float *y, float *scratch);

/* The clamped SwiGLU of one expert's hidden: m_i = silu(min(g_i, lim)) * clamp(u_i, +-lim) * w
 * (no clamp when lim <= 0). */
void moe_swiglu(const float *g, const float *u, uint32_t n, float lim, float w, float *m);

#endif
