/* moe_minigemm.c — the mini-GEMM path of cpu_moe_run (moe.h): the chosen experts as small
 * GEMMs, tokens grouped by expert. Gate/up: for each expert of the batch and each row of the
 * piece, the gate and up rows are decoded block by block once for all the expert's tokens (up
 * to MOE_TILE_TOK per kernel call), sharing the tokens' activation tile, and the weighted
 * SwiGLU of those tokens is applied to the results right away (fused epilogue). Down: the
 * piece's output rows of every token are formed in place: for each expert in increasing id,
 * each of its down rows is decoded once and its dot products with the expert's tokens' mids
 * are added straight into those tokens' output rows (no per-expert rows, no sum pass).
 * Owns the stage bodies only; kernels come from the variant (moe_kern.h). */
#include "kernels/cpu/moe_impl.h"

void cpu_moe_minigemm_gate_up(void *ctx, int ith, int nth)
{
    const moe_run *r = ctx;
    const cpu_moe_layer *L = r->L;
    int64_t r0, r1;
    moe_piece_rows(r->n_ff, ith, nth, &r0, &r1);
    const quant_block_q8_k *x[MOE_TILE_TOK];
    _Alignas(64) unsigned char tile[MOE_TILE_BYTES];
    float g[MOE_TILE_TOK], u[MOE_TILE_TOK], m[MOE_TILE_TOK];
    for (int gi = 0; gi < r->n_grp; gi++) {
        const int e = r->grp_exp[gi];
        for (int s0 = r->grp_off[gi]; s0 < r->grp_off[gi + 1]; s0 += MOE_TILE_TOK) {
            const int n = r->grp_off[gi + 1] - s0 < MOE_TILE_TOK ? r->grp_off[gi + 1] - s0
                                                                  : MOE_TILE_TOK;
            for (int i = 0; i < n; i++)
                x[i] = r->xg + (size_t)r->slot_tok[s0 + i] * r->nb_in;
            r->kg->tile(tile, x, n, r->nb_in);
            const uint8_t *wg = moe_row(&L->gate, e, r0), *wu = moe_row(&L->up, e, r0);
            for (int64_t row = r0; row < r1; row++) {
                r->kg->gemm2(wg, wu, tile, r->nb_in, g, u);
                r->ops->swiglu(g, u, &r->slot_w[s0], 1, n, L->clamp, m);
                for (int i = 0; i < n; i++)
                    r->mid[(size_t)(s0 + i) * r->n_ff + row] = m[i];
                wg += L->gate.row_bytes;
                wu += L->up.row_bytes;
            }
        }
    }
}

void cpu_moe_minigemm_down(void *ctx, int ith, int nth)
{
    const moe_run *r = ctx;
    const cpu_moe_tensor *D = &r->L->down;
    int64_t r0, r1;
    moe_piece_rows(r->n_embd, ith, nth, &r0, &r1);
    for (int t = 0; t < r->n_tok; t++) {
        float *out = r->acc + (size_t)t * r->ld_acc;
        for (int64_t row = r0; row < r1; row++)
            out[row] = 0.0f;
    }
    const quant_block_q8_k *x[MOE_TILE_TOK];
    _Alignas(64) unsigned char tile[MOE_TILE_BYTES];
    float *dst[MOE_TILE_TOK];
    float o[MOE_TILE_TOK];
    for (int gi = 0; gi < r->n_grp; gi++) {
        const int e = r->grp_exp[gi];
        for (int s0 = r->grp_off[gi]; s0 < r->grp_off[gi + 1]; s0 += MOE_TILE_TOK) {
            const int n = r->grp_off[gi + 1] - s0 < MOE_TILE_TOK ? r->grp_off[gi + 1] - s0
                                                                  : MOE_TILE_TOK;
            for (int i = 0; i < n; i++) {
                x[i] = r->md + (size_t)(s0 + i) * r->nb_ff;
                dst[i] = r->acc + (size_t)r->slot_tok[s0 + i] * r->ld_acc;
            }
            r->kd->tile(tile, x, n, r->nb_ff);
            const uint8_t *w = moe_row(D, e, r0);
            for (int64_t row = r0; row < r1; row++, w += D->row_bytes) {
                r->kd->gemm(w, tile, r->nb_ff, o);
                for (int i = 0; i < n; i++)
                    dst[i][row] += o[i];
            }
        }
    }
}
