/* moe_gemv.cuh — host entry points of the GEMV decode-MoE kernels (moe_gemv.cu): one
 * (token, expert) pair at a time, integer dot products (__dp4a) per weight row. */
#ifndef DS4_BACKEND_CUDA_MOE_GEMV_CUH
#define DS4_BACKEND_CUDA_MOE_GEMV_CUH

#include "backend/cuda/common.cuh"

/* mid[p][r] = SwiGLU(gate_e[r] . x_t, up_e[r] . x_t) * wts[p] for every pair p = t*n_used + k
 * (e = ids[p]) and row r < gate->n_out. xq: the tokens' Q8_K rows (gate->nb blocks each).
 * An id outside 0..n_expert-1 sets *err to 1 and writes zeros for its pair. Both launchers
 * do nothing on the device when sel says another path was chosen. */
cudaError_t cuda_moe_gemv_gate_up(int type, const moe_wt *gate, const moe_wt *up,
                                  moe_iq2_tables tab, const quant_block_q8_k *xq,
                                  const int32_t *ids, const float *wts, int n_tok, int n_used,
                                  int n_expert, float clamp, float *mid, int *err, moe_sel sel,
                                  cudaStream_t s);

/* y[t][r] (+)= sum_k down_{ids[t][k]}[r] . midq[t*n_used+k] for every token t and row r.
 * midq: n_tok*n_used Q8_K rows of down->nb blocks. Out-of-range ids are skipped. */
cudaError_t cuda_moe_gemv_down(int type, const moe_wt *down, moe_iq2_tables tab,
                               const quant_block_q8_k *midq, const int32_t *ids, int n_tok,
                               int n_used, int n_expert, float *y, int64_t ldy, bool accumulate,
                               moe_sel sel, cudaStream_t s);

#endif
