/* moe_impl.h — private to src/kernels/cpu/moe*.c: the state of one cpu_moe_run call that the
 * stage bodies of the two paths share (sizes, slot grouping, scratch pointers), the context's
 * buffers, and the stage entry points of moe_gemv.c and moe_minigemm.c.
 * Slots: the n_tok * n_used (token, k) choices sorted by (expert, token, k); slot s has its
 * own mid row (mid, mq, md) and route weight. */
#ifndef DS4_KERNELS_CPU_MOE_IMPL_H
#define DS4_KERNELS_CPU_MOE_IMPL_H

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/moe_kern.h"

#define MOE_ROWS_MIN 16    /* rows per piece at least (pieces are multiples of 16 rows) */
#define MOE_ROWS_MAX 512   /* rows a piece may hold: bounds the stack scratch of a piece */

enum {
    MOE_BUF_XQ,      /* [n_tok][nb_in] Q8_K of h */
    MOE_BUF_XG,      /* [n_tok][nb_in] h prepared for the gate/up kernels */
    MOE_BUF_MID,     /* [slot][n_ff] f32 SwiGLU output */
    MOE_BUF_MQ,      /* [slot][nb_ff] Q8_K of mid */
    MOE_BUF_MD,      /* [slot][nb_ff] mid prepared for the down kernels */
    MOE_BUF_ACC,     /* [n_tok][n_embd] routed sum (accumulate mode) */
    MOE_BUF_COUNT_E, /* [n_expert + 1] */
    MOE_BUF_SLOTS,   /* slot arrays */
    MOE_BUF_SLOT_W,  /* [slot] route weights */
    MOE_BUF_COUNT
};

struct cpu_moe_ctx {
    struct {
        void *p;
        size_t cap;
    } buf[MOE_BUF_COUNT];
    const cpu_moe_ops *ops; /* NULL: the selected variant */
};

typedef struct moe_run {
    const cpu_moe_ops *ops;
    const cpu_moe_layer *L;
    const cpu_moe_kern *kg, *kd; /* gate/up and down kernels */
    void (*prep_act)(const quant_block_q8_k *, quant_block_q8_k *, int64_t);
    void (*prep_mid)(const quant_block_q8_k *, quant_block_q8_k *, int64_t);
    cpu_moe_path path;
    int n_tok, n_used, n_slot;
    int64_t n_embd, n_ff, nb_in, nb_ff;
    const float *h;
    int64_t ldh;
    float *y;
    int64_t ldy;
    float *acc;          /* where the routed sum is formed: y itself, or MOE_BUF_ACC */
    int64_t ld_acc;
    quant_block_q8_k *xq, *xg, *mq, *md;
    float *mid;
    /* grouping */
    int32_t *slot_tok;   /* [slot] token */
    int32_t *slot_exp;   /* [slot] expert */
    float *slot_w;       /* [slot] route weight */
    int32_t *tok_slots;  /* [n_tok][n_used] a token's slots in (expert, k) order */
    int n_grp;           /* experts chosen by at least one token */
    int32_t *grp_exp;    /* [n_grp] their ids, increasing */
    int32_t *grp_off;    /* [n_grp + 1] their first slot */
} moe_run;

/* Rows [*r0, *r1) of piece ith of nth over n rows: multiples of MOE_ROWS_MIN but the last. */
static inline void moe_piece_rows(int64_t n, int ith, int nth, int64_t *r0, int64_t *r1)
{
    const int64_t units = (n + MOE_ROWS_MIN - 1) / MOE_ROWS_MIN;
    *r0 = units * ith / nth * MOE_ROWS_MIN;
    *r1 = units * (ith + 1) / nth * MOE_ROWS_MIN;
    if (*r1 > n)
        *r1 = n;
}

/* Row r of expert e of a tensor. */
static inline const void *moe_row(const cpu_moe_tensor *t, int e, int64_t r)
{
    return (const uint8_t *)t->data + (size_t)e * t->expert_bytes + (size_t)r * t->row_bytes;
}

/* Stage 2 (gate, up, SwiGLU into mid) and stage 4 (down, summed per token into acc) of each
 * path, as cpu_pool jobs over row pieces; ctx is the moe_run. */
void cpu_moe_gemv_gate_up(void *ctx, int ith, int nth);
void cpu_moe_gemv_down(void *ctx, int ith, int nth);
void cpu_moe_minigemm_gate_up(void *ctx, int ith, int nth);
void cpu_moe_minigemm_down(void *ctx, int ith, int nth);

/* Makes c compute with a given variant (tests: the reference against the AVX-512 one). */
void cpu_moe_ctx_set_ops(cpu_moe_ctx *c, const cpu_moe_ops *ops);

#endif
