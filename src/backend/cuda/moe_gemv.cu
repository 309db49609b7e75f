/* moe_gemv.cu — the GEMV decode-MoE kernels: gate+up+SwiGLU fused per (token, expert) pair
 * with the token's Q8_K activation (and the IQ2_XXS tables) staged in shared memory, and down
 * summing all of a token's experts into its output row in one kernel. Each warp takes
 * CUDA_GEMV_*_ROWS rows; 8 lanes per 256-block, one 32-element chunk each, __dp4a on the
 * unpacked int8 words (common.cuh). Does not own routing, quantization or the path choice
 * (cuda_moe.cu). Numerics: per-block integer sums, f32 across blocks and lanes. */
#include "backend/cuda/moe_gemv.cuh"
#include "backend/cuda/tuning.cuh"

/* Shared memory: nx Q8_K rows as qs words, d and bsums, then the IQ2 tables. */
struct smem_x {
    int *qs;
    float *d;
    int16_t *bs;
    uint64_t *grid;
    uint8_t *signs;
};

static size_t smem_x_bytes(int nx, int nb)
{
    return (size_t)nx * nb * (QUANT_QK_K + sizeof(float) + 16 * sizeof(int16_t)) + 256 * 8 + 128;
}

__device__ __forceinline__ smem_x stage_x(unsigned char *raw, const quant_block_q8_k *x,
                                          int nx, int nb, moe_iq2_tables tab, bool iq2)
{
    smem_x s;
    const int nblk = nx * nb;
    s.grid = (uint64_t *)raw;
    s.qs = (int *)(raw + 256 * 8);
    s.d = (float *)(s.qs + nblk * 64);
    s.bs = (int16_t *)(s.d + nblk);
    s.signs = (uint8_t *)(s.bs + nblk * 16);
    for (int i = threadIdx.x; i < nblk * 64; i += blockDim.x)
        s.qs[i] = ((const int *)x[i >> 6].qs)[i & 63];
    for (int i = threadIdx.x; i < nblk; i += blockDim.x)
        s.d[i] = x[i].d;
    for (int i = threadIdx.x; i < nblk * 16; i += blockDim.x)
        s.bs[i] = x[i >> 4].bsums[i & 15];
    if (iq2) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            s.grid[i] = tab.grid[i];
        for (int i = threadIdx.x; i < 128; i += blockDim.x)
            s.signs[i] = tab.signs[i];
    }
    return s;
}

/* Lane part of one row . one staged activation row: lane = 8*bi + j takes chunk j of blocks
 * bi, bi+4, ... */
template <int T, int NB>
__device__ __forceinline__ float row_dot(const typename wt_block<T>::type *w, const smem_x &s,
                                         int xrow, int nb_rt, int lane)
{
    const int j = lane & 7;
    const int nb = NB ? NB : nb_rt; /* NB: the block count known at compile time (unrolled) */
    float acc = 0.0f;
#pragma unroll
    for (int b = lane >> 3; b < nb; b += 4) {
        const typename wt_block<T>::type *blk = w + b;
        const int xb = xrow * nb + b;
        const int4 *xw = (const int4 *)(s.qs + xb * 64 + 8 * j);
        const int4 x0 = xw[0], x1 = xw[1];
        const int xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        int isum = 0;
#pragma unroll
        for (int k = 0; k < 8; k++)
            isum = __dp4a(wq_word<T>(blk, j, k, s.grid, s.signs), xv[k], isum);
        const float2 d = wq_d<T>(blk);
        const float sub = d.x * (float)(isum * wq_scale<T>(blk, j));
        if constexpr (T == WT_IQ2_XXS)
            acc += s.d[xb] * sub;
        else
            acc += s.d[xb] * (sub - d.y * (float)wq_min<T>(blk, j, s.bs + 16 * xb));
    }
    return acc;
}

template <int T, int NB>
__global__ void __launch_bounds__(CUDA_GEMV_WARPS * 32)
k_gemv_gate_up(moe_wt gate, moe_wt up, moe_iq2_tables tab, const quant_block_q8_k *xq,
               const int32_t *ids, const float *wts, int n_used, int n_expert, float clamp,
               float *mid, int *err, moe_sel sel)
{
    if (sel_skip(sel))
        return;
    typedef typename wt_block<T>::type B;
    extern __shared__ __align__(16) unsigned char raw[];
    const int pair = blockIdx.y, tok = pair / n_used, nb = gate.nb;
    const int e = ids[pair];
    const int row0 = (blockIdx.x * CUDA_GEMV_WARPS + (threadIdx.x >> 5)) * CUDA_GEMV_GU_ROWS;
    const int lane = threadIdx.x & 31;
    if (e < 0 || e >= n_expert) {
        if (threadIdx.x == 0)
            atomicExch(err, 1);
        if (lane < CUDA_GEMV_GU_ROWS && row0 + lane < gate.n_out)
            mid[(int64_t)pair * gate.n_out + row0 + lane] = 0.0f;
        return;
    }
    /* the warp's rows start streaming in while the activation is staged */
    {
        const int r0 = min(row0, gate.n_out - CUDA_GEMV_GU_ROWS);
        prefetch_span(gate.data + (size_t)e * gate.expert_bytes + (size_t)r0 * gate.row_bytes,
                      CUDA_GEMV_GU_ROWS * gate.row_bytes, lane);
        prefetch_span(up.data + (size_t)e * up.expert_bytes + (size_t)r0 * up.row_bytes,
                      CUDA_GEMV_GU_ROWS * up.row_bytes, lane);
    }
    const smem_x s = stage_x(raw, xq + (int64_t)tok * nb, 1, nb, tab, T == WT_IQ2_XXS);
    __syncthreads();
    float g[CUDA_GEMV_GU_ROWS], u[CUDA_GEMV_GU_ROWS];
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_GU_ROWS; r++) {
        const int row = min(row0 + r, gate.n_out - 1);
        const B *wg = (const B *)(gate.data + (size_t)e * gate.expert_bytes + (size_t)row * gate.row_bytes);
        const B *wu = (const B *)(up.data + (size_t)e * up.expert_bytes + (size_t)row * up.row_bytes);
        g[r] = row_dot<T, NB>(wg, s, 0, nb, lane);
        u[r] = row_dot<T, NB>(wu, s, 0, nb, lane);
    }
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_GU_ROWS; r++) {
        const float gs = warp_sum(g[r]), us = warp_sum(u[r]);
        if (lane == r && row0 + r < gate.n_out)
            mid[(int64_t)pair * gate.n_out + row0 + r] = moe_swiglu(gs, us, clamp, wts[pair]);
    }
}

template <int T, int NB>
__global__ void __launch_bounds__(CUDA_GEMV_WARPS * 32)
k_gemv_down(moe_wt down, moe_iq2_tables tab, const quant_block_q8_k *midq, const int32_t *ids,
            int n_used, int n_expert, float *y, int64_t ldy, int accumulate, moe_sel sel)
{
    if (sel_skip(sel))
        return;
    typedef typename wt_block<T>::type B;
    extern __shared__ __align__(16) unsigned char raw[];
    const int tok = blockIdx.y, nb = down.nb;
    {
        const int r0 = min((int)((blockIdx.x * CUDA_GEMV_WARPS + (threadIdx.x >> 5)) * CUDA_GEMV_DOWN_ROWS),
                           down.n_out - CUDA_GEMV_DOWN_ROWS);
        const int e0 = ids[tok * n_used];
        if (e0 >= 0 && e0 < n_expert) /* the first expert's rows stream in during the staging */
            prefetch_span(down.data + (size_t)e0 * down.expert_bytes + (size_t)r0 * down.row_bytes,
                          CUDA_GEMV_DOWN_ROWS * down.row_bytes, threadIdx.x & 31);
    }
    const smem_x s = stage_x(raw, midq + (int64_t)tok * n_used * nb, n_used, nb, tab,
                             T == WT_IQ2_XXS);
    __syncthreads();
    const int row0 = (blockIdx.x * CUDA_GEMV_WARPS + (threadIdx.x >> 5)) * CUDA_GEMV_DOWN_ROWS;
    const int lane = threadIdx.x & 31;
    float acc[CUDA_GEMV_DOWN_ROWS];
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_DOWN_ROWS; r++)
        acc[r] = 0.0f;
    for (int k = 0; k < n_used; k++) {
        const int e = ids[tok * n_used + k];
        if (e < 0 || e >= n_expert)
            continue;
#pragma unroll
        for (int r = 0; r < CUDA_GEMV_DOWN_ROWS; r++) {
            const int row = min(row0 + r, down.n_out - 1);
            const B *w = (const B *)(down.data + (size_t)e * down.expert_bytes + (size_t)row * down.row_bytes);
            acc[r] += row_dot<T, NB>(w, s, k, nb, lane);
        }
    }
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_DOWN_ROWS; r++) {
        const float v = warp_sum(acc[r]);
        if (lane == r && row0 + r < down.n_out) {
            float *o = y + (int64_t)tok * ldy + row0 + r;
            *o = accumulate ? *o + v : v;
        }
    }
}

template <int T>
static cudaError_t launch_gate_up(const moe_wt *gate, const moe_wt *up, moe_iq2_tables tab,
                                  const quant_block_q8_k *xq, const int32_t *ids, const float *wts,
                                  int n_tok, int n_used, int n_expert, float clamp, float *mid,
                                  int *err, moe_sel sel, cudaStream_t s)
{
    const int rows_per_block = CUDA_GEMV_WARPS * CUDA_GEMV_GU_ROWS;
    const dim3 grid((gate->n_out + rows_per_block - 1) / rows_per_block, n_tok * n_used);
    const size_t smem = smem_x_bytes(1, gate->nb);
    if (gate->nb == 16) /* n_embd 4096 */
        k_gemv_gate_up<T, 16><<<grid, CUDA_GEMV_WARPS * 32, smem, s>>>(
            *gate, *up, tab, xq, ids, wts, n_used, n_expert, clamp, mid, err, sel);
    else
        k_gemv_gate_up<T, 0><<<grid, CUDA_GEMV_WARPS * 32, smem, s>>>(
            *gate, *up, tab, xq, ids, wts, n_used, n_expert, clamp, mid, err, sel);
    return cudaGetLastError();
}

template <int T>
static cudaError_t launch_down(const moe_wt *down, moe_iq2_tables tab, const quant_block_q8_k *midq,
                               const int32_t *ids, int n_tok, int n_used, int n_expert, float *y,
                               int64_t ldy, bool accumulate, moe_sel sel, cudaStream_t s)
{
    const int rows_per_block = CUDA_GEMV_WARPS * CUDA_GEMV_DOWN_ROWS;
    const size_t smem = smem_x_bytes(n_used, down->nb);
    const bool nb8 = down->nb == 8; /* n_ff 2048 */
    if (smem > 48 * 1024) {
        cudaError_t rc = cudaFuncSetAttribute(nb8 ? k_gemv_down<T, 8> : k_gemv_down<T, 0>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (rc != cudaSuccess)
            return rc;
    }
    const dim3 grid((down->n_out + rows_per_block - 1) / rows_per_block, n_tok);
    if (nb8)
        k_gemv_down<T, 8><<<grid, CUDA_GEMV_WARPS * 32, smem, s>>>(*down, tab, midq, ids, n_used,
                                                                   n_expert, y, ldy, accumulate ? 1 : 0, sel);
    else
        k_gemv_down<T, 0><<<grid, CUDA_GEMV_WARPS * 32, smem, s>>>(*down, tab, midq, ids, n_used,
                                                                   n_expert, y, ldy, accumulate ? 1 : 0, sel);
    return cudaGetLastError();
}

cudaError_t cuda_moe_gemv_gate_up(int type, const moe_wt *gate, const moe_wt *up,
                                  moe_iq2_tables tab, const quant_block_q8_k *xq,
                                  const int32_t *ids, const float *wts, int n_tok, int n_used,
                                  int n_expert, float clamp, float *mid, int *err, moe_sel sel,
                                  cudaStream_t s)
{
    switch (type) {
    case WT_IQ2_XXS:
        return launch_gate_up<WT_IQ2_XXS>(gate, up, tab, xq, ids, wts, n_tok, n_used, n_expert, clamp, mid, err, sel, s);
    case WT_Q2_K:
        return launch_gate_up<WT_Q2_K>(gate, up, tab, xq, ids, wts, n_tok, n_used, n_expert, clamp, mid, err, sel, s);
    default:
        return launch_gate_up<WT_Q4_K>(gate, up, tab, xq, ids, wts, n_tok, n_used, n_expert, clamp, mid, err, sel, s);
    }
}

cudaError_t cuda_moe_gemv_down(int type, const moe_wt *down, moe_iq2_tables tab,
                               const quant_block_q8_k *midq, const int32_t *ids, int n_tok,
                               int n_used, int n_expert, float *y, int64_t ldy, bool accumulate,
                               moe_sel sel, cudaStream_t s)
{
    switch (type) {
    case WT_IQ2_XXS:
        return launch_down<WT_IQ2_XXS>(down, tab, midq, ids, n_tok, n_used, n_expert, y, ldy, accumulate, sel, s);
    case WT_Q2_K:
        return launch_down<WT_Q2_K>(down, tab, midq, ids, n_tok, n_used, n_expert, y, ldy, accumulate, sel, s);
    default:
        return launch_down<WT_Q4_K>(down, tab, midq, ids, n_tok, n_used, n_expert, y, ldy, accumulate, sel, s);
    }
}
