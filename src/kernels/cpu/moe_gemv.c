/* moe_gemv.c — the GEMV path of cpu_moe_run (moe.h): every (token, expert) slot on its own.
 * Gate/up: for each slot, the gate and up rows of the piece in one pass over the token's
 * activation (gemv2), then the weighted SwiGLU of the piece into the slot's mid row.
 * Down: for each token and each of its slots in (expert, k) order, the piece's down rows
 * against the slot's quantized mid, added into the token's row sums, which are then written
 * (or added) to the output. Weights shared by several slots are read once per slot.
 * Owns the stage bodies only; kernels come from the variant (moe_kern.h). */
#include "kernels/cpu/moe_impl.h"

void cpu_moe_gemv_gate_up(void *ctx, int ith, int nth)
{
    const moe_run *r = ctx;
    const cpu_moe_layer *L = r->L;
    int64_t r0, r1;
    moe_piece_rows(r->n_ff, ith, nth, &r0, &r1);
    float g[MOE_ROWS_MAX], u[MOE_ROWS_MAX];
    for (int s = 0; s < r->n_slot; s++) {
        const int e = r->slot_exp[s];
        const quant_block_q8_k *x = r->xg + (size_t)r->slot_tok[s] * r->nb_in;
        const uint8_t *wg = moe_row(&L->gate, e, r0), *wu = moe_row(&L->up, e, r0);
        for (int64_t i = 0; i < r1 - r0; i++) {
            float o[2];
            r->kg->gemv2(wg + (size_t)i * L->gate.row_bytes, wu + (size_t)i * L->up.row_bytes,
                         x, r->nb_in, o);
            g[i] = o[0];
            u[i] = o[1];
        }
        r->ops->swiglu(g, u, &r->slot_w[s], 0, r1 - r0, L->clamp,
                       r->mid + (size_t)s * r->n_ff + r0);
    }
}

void cpu_moe_gemv_down(void *ctx, int ith, int nth)
{
    const moe_run *r = ctx;
    const cpu_moe_tensor *D = &r->L->down;
    int64_t r0, r1;
    moe_piece_rows(r->n_embd, ith, nth, &r0, &r1);
    float acc[MOE_ROWS_MAX];
    for (int t = 0; t < r->n_tok; t++) {
        for (int64_t i = 0; i < r1 - r0; i++)
            acc[i] = 0.0f;
        for (int k = 0; k < r->n_used; k++) {
            const int s = r->tok_slots[t * r->n_used + k];
            const quant_block_q8_k *x = r->md + (size_t)s * r->nb_ff;
            const uint8_t *w = moe_row(D, r->slot_exp[s], r0);
            for (int64_t i = 0; i < r1 - r0; i++)
                acc[i] += r->kd->gemv(w + (size_t)i * D->row_bytes, x, r->nb_ff);
        }
        float *out = r->acc + (size_t)t * r->ld_acc + r0;
        for (int64_t i = 0; i < r1 - r0; i++)
            out[i] = acc[i];
    }
}
