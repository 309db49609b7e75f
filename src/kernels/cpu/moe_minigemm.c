/* moe_minigemm.c — the mini-GEMM path of cpu_moe_run (moe.h): the chosen experts as small
 * GEMMs, tokens grouped by expert (up to MOE_TILE_TOK per tile; a token tile is prepared once
 * per group). Gate/up: for each expert of the batch and each tile of MOE_TILE_ROWS rows of the
 * piece, the kernel decodes every weight block of those rows once for all the tile's tokens
 * (gate and up against the same token tile), and the weighted SwiGLU of each token's rows is
 * applied right away (fused epilogue) into the slot's mid. Down: the piece's output rows of
 * every token are formed in place: for each expert in increasing id, each row tile is decoded
 * once and its dot products with the expert's tokens' mids are added straight into those
 * tokens' output rows (no per-expert rows, no sum pass); a token's experts are thus added in
 * (expert, k) order, as the GEMV path adds them. Owns the stage bodies only; kernels come from
 * the variant (moe_kern.h). */
#include "kernels/cpu/moe_impl.h"

void cpu_moe_minigemm_gate_up(void *ctx, int ith, int nth)
{
    const moe_run *r = ctx;
    const cpu_moe_layer *L = r->L;
    int64_t r0, r1;
    moe_piece_rows(r->n_ff, ith, nth, &r0, &r1);
    const quant_block_q8_k *x[MOE_TILE_TOK];
    _Alignas(64) unsigned char tile[MOE_TILE_BYTES];
    _Alignas(64) float g[MOE_TILE_TOK * MOE_TILE_ROWS], u[MOE_TILE_TOK * MOE_TILE_ROWS];
    for (int gi = 0; gi < r->n_grp; gi++) {
        const int e = r->grp_exp[gi];
        for (int s0 = r->grp_off[gi]; s0 < r->grp_off[gi + 1]; s0 += MOE_TILE_TOK) {
            const int n = r->grp_off[gi + 1] - s0 < MOE_TILE_TOK ? r->grp_off[gi + 1] - s0
                                                                  : MOE_TILE_TOK;
            for (int i = 0; i < n; i++)
                x[i] = r->xg + (size_t)r->slot_tok[s0 + i] * r->nb_in;
            r->kg->tile(tile, x, n, r->nb_in);
            for (int64_t row = r0; row < r1; row += MOE_TILE_ROWS) {
                const int nr = r1 - row < MOE_TILE_ROWS ? (int)(r1 - row) : MOE_TILE_ROWS;
                r->kg->gemm2(moe_row(&L->gate, e, row), L->gate.row_bytes,
                             moe_row(&L->up, e, row), L->up.row_bytes, nr, tile, r->nb_in, g, u);
                for (int i = 0; i < n; i++) /* the fused epilogue: SwiGLU of the tile */
                    r->ops->swiglu(g + i * MOE_TILE_ROWS, u + i * MOE_TILE_ROWS,
                                   &r->slot_w[s0 + i], 0, nr, L->clamp,
                                   r->mid + (size_t)(s0 + i) * r->n_ff + row);
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
    _Alignas(64) float o[MOE_TILE_TOK * MOE_TILE_ROWS];
    for (int gi = 0; gi < r->n_grp; gi++) {
        const int e = r->grp_exp[gi];
        for (int s0 = r->grp_off[gi]; s0 < r->grp_off[gi + 1]; s0 += MOE_TILE_TOK) {
            const int n = r->grp_off[gi + 1] - s0 < MOE_TILE_TOK ? r->grp_off[gi + 1] - s0
                                                                  : MOE_TILE_TOK;
            for (int i = 0; i < n; i++)
                x[i] = r->md + (size_t)(s0 + i) * r->nb_ff;
            r->kd->tile(tile, x, n, r->nb_ff);
            for (int64_t row = r0; row < r1; row += MOE_TILE_ROWS) {
                const int nr = r1 - row < MOE_TILE_ROWS ? (int)(r1 - row) : MOE_TILE_ROWS;
                r->kd->gemm(moe_row(D, e, row), D->row_bytes, nr, tile, r->nb_ff, o);
                for (int i = 0; i < n; i++) { /* straight into the token's output row */
                    float *dst = r->acc + (size_t)r->slot_tok[s0 + i] * r->ld_acc + row;
                    for (int k = 0; k < nr; k++)
                        dst[k] += o[i * MOE_TILE_ROWS + k];
                }
            }
        }
    }
}
