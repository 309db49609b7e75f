/* moe_minigemm.cuh — host entry points of the tensor-core mini-GEMM decode-MoE kernels
 * (moe_minigemm.cu): (token, expert) pairs grouped by expert into tiles of up to 16 columns,
 * int8 mma.sync m16n8k32 on unpacked weights x Q8_K activations. */
#ifndef DS4_BACKEND_CUDA_MOE_MINIGEMM_CUH
#define DS4_BACKEND_CUDA_MOE_MINIGEMM_CUH

#include "backend/cuda/common.cuh"
#include "backend/cuda/tuning.cuh"

/* One tile: the pairs (p = t*n_used + k) of one expert, n <= CUDA_MOE_TILE_COLS of them. */
struct moe_tile {
    int expert;
    int n;
    int pair[CUDA_MOE_TILE_COLS];
};

/* Groups the n_pairs = n_tok*n_used pairs of ids by expert into tiles of at most cols (8 or
 * 16) columns, in order of first appearance: tiles[0..*n_tiles-1]. Out-of-range ids set *err
 * and are left out. n_pairs <= 1024. choice (if not NULL) gets 1 when the mini-GEMM path
 * should run (few tiles per token, tuning.cuh), else 0. */
cudaError_t cuda_moe_route(const int32_t *ids, int n_pairs, int n_tok, int n_expert, int cols,
                           moe_tile *tiles, int *n_tiles, int *err, int *choice, cudaStream_t s);

/* gate/up/SwiGLU on the tiles (at most max_tiles of them): mid[p][r] as the GEMV path. */
cudaError_t cuda_moe_mma_gate_up(int type, const moe_wt *gate, const moe_wt *up,
                                 moe_iq2_tables tab, const quant_block_q8_k *xq,
                                 const moe_tile *tiles, const int *n_tiles, int max_tiles, int cols,
                                 const float *wts, int n_used, float clamp, float *mid,
                                 moe_sel sel, cudaStream_t s);

/* down on the tiles, every expert of a token summed into y[t] (+= if accumulate). */
cudaError_t cuda_moe_mma_down(int type, const moe_wt *down, moe_iq2_tables tab,
                              const quant_block_q8_k *midq, const moe_tile *tiles,
                              const int *n_tiles, int cols, int n_tok, int n_used, float *y,
                              int64_t ldy, bool accumulate, moe_sel sel, cudaStream_t s);

#endif
