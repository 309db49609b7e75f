/* forward_impl.h — what the two halves of the optimized forward share: the per-call context
 * (model, state, pool, the chunk being run) with every scratch buffer sized once per call,
 * the per-token parallel loop, and the entry points of forward_ffn.c. Private to
 * src/model/forward*.c. Invariant: per-token buffers are [chunk][width] rows; a parallel
 * loop's piece i uses thread scratch i only, so no two threads share scratch. */
#ifndef DS4_MODEL_FORWARD_IMPL_H
#define DS4_MODEL_FORWARD_IMPL_H

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "model/forward.h"
#include "model/ops.h"

#define FWD_ACTS 8 /* distinct activations one step may quantize */

typedef struct fwd_thread {
    float *f;            /* [n_hc*n_embd] float scratch (HC post) */
    const float **rows;  /* [raw_cap + max comp rows] rows one query sees */
    double *scores;      /* [raw_cap + max comp rows] */
    float *iscore;       /* [max comp rows] indexer scores */
} fwd_thread;

typedef struct fwd {
    const model *m;
    const model_hparams *hp;
    model_state *s;
    cpu_pool *pool;
    const model_offload *off; /* routed experts of some layers on a backend, or NULL */
    ds4_error *err;
    int n_threads;
    uint32_t cap;        /* largest comp_cap of any layer (>= 1) */
    uint32_t wmax;       /* largest expert / shared FFN width */

    /* the chunk being run */
    uint32_t T, pos0, il, first; /* tokens, first position, layer, first raw position */
    const int32_t *tok;

    rope_cfg *rope;      /* [n_layer] */
    fwd_thread *th;      /* [n_threads] */

    /* per token rows */
    float *X;            /* [T][n_hc*n_embd] residual streams */
    float *F;            /* [T][n_hc*n_embd] RMS-normalised streams (HC mixer input) */
    float *MIX;          /* [T][(2+n_hc)*n_hc] HC mixer output */
    float *XS;           /* [T][n_embd] collapsed sublayer input */
    float *H;            /* [T][n_embd] normalised sublayer input */
    float *POST, *COMB;  /* [T][n_hc], [T][n_hc*n_hc] */
    float *QA, *QN;      /* [T][q_lora_rank] */
    float *Q;            /* [T][n_head*head_dim] */
    float *O;            /* [T][n_head*head_dim] attention output */
    float *MID;          /* [T][n_out_group*o_lora_rank] */
    float *Y;            /* [T][n_embd] sublayer output */
    float *CK, *CS;      /* [T][attention compressor width] kv / score projections */
    float *IK, *IS;      /* [T][indexer compressor width] */
    float *QI, *WI;      /* [T][n_indexer_head*indexer_head_dim], [T][n_indexer_head] */
    uint32_t *SEL;       /* [T][indexer_top_k] indexer choice per token */
    int32_t *ITOK;       /* [T] tokens that run the indexer */
    uint32_t n_itok;
    float *RAW;          /* [T][head_dim] the chunk's raw rows (older ones: the ring) */
    uint32_t cmp_w, idx_w; /* compressor projection widths (max over layers) */

    /* FFN */
    float *ROUT;         /* [T][n_expert] router logits -> scores */
    int32_t *ESEL;       /* [T][n_expert_used] */
    float *EW;           /* [T][n_expert_used] */
    int32_t *SLOT;       /* [T*K] slot of (t, k), slots grouped by expert */
    int32_t *SLOT_TK;    /* [T*K] (t*K + k) of each slot */
    int32_t *SLOT_TOK;   /* [T*K] token of each slot */
    int32_t *IDENT;      /* [T*K] 0, 1, 2, ... */
    uint32_t *ECOUNT, *EOFF; /* [n_expert], [n_expert+1] */
    float *G, *U, *M;    /* [T*K][wmax] routed gate, up, hidden */
    float *DN;           /* [T*K][n_embd] routed down outputs */
    float *GS, *US, *MS; /* [T][wmax] shared expert */
    float *YS;           /* [T][n_embd] */
    cpu_mm *mm;          /* [2*n_expert + 8] products of one dispatch */
    cpu_moe_ctx *moe;    /* routed experts through cpu_moe_run where it has kernels */

    uint32_t n_hblock;   /* attention: head blocks per token */
    uint32_t idx_chunks; /* indexer: row ranges per token (decode) */

    /* activations of the current step, by (source rows, type): see model_fwd_act */
    int n_acts;
    const float *act_src[FWD_ACTS];
    const cpu_act *acts_in[FWD_ACTS];
    cpu_act acts[FWD_ACTS];  /* owned quantization buffers, reused across steps */
    cpu_act views[FWD_ACTS]; /* f32 views */
    cpu_act grouped;         /* attn_output_a's quantized input */
} fwd;

/* A parallel step: index i (a token, a slot, a work item), with the scratch of the piece
 * running it. */
typedef void (*fwd_idx_fn)(fwd *f, uint32_t i, fwd_thread *th);

/* Runs fn for i = 0..count-1 on the pool: min(count, threads) pieces, piece p taking
 * p, p + pieces, ... (interleaved, so uneven items balance) with scratch th[p]. */
void model_fwd_loop(fwd *f, uint32_t count, fwd_idx_fn fn);

/* The activation of rows x [rows][ldx] (n values each) for products with weights of type
 * wtype: quantized once per step (f->n_acts = 0 starts a step) and shared by every product
 * asking for the same (x, type); an f32 view for F16/F32 weights. NULL on failure (error in
 * f->err). */
const cpu_act *model_fwd_act(fwd *f, const float *x, int64_t n, uint32_t rows, int64_t ldx,
                             ds4_type wtype);

/* §3.3 step 10 / §3.9 step 8: HC post of Y into every token's streams. */
void model_fwd_hc_post(fwd *f);

/* The weight descriptor of a 2-D tensor, or expert 0 of a 3-D one. */
cpu_weight model_fwd_weight(const gguf_tensor *t);

/* x = RMSNorm(flat X) for every token, then MIX = fn . x (the HC mixer projection, F16/F32
 * weights on f32 activations). */
int model_fwd_hc_mix(fwd *f, const gguf_tensor *fn);

/* §3.9: the FFN sublayer of layer f->il for the chunk (forward_ffn.c). Returns 0 or a
 * negative DS4_E_* code. */
int model_fwd_ffn(fwd *f);

#endif
