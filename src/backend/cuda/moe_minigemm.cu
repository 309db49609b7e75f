/* moe_minigemm.cu — the mini-GEMM decode-MoE kernels on int8 tensor cores (mma.sync
 * m16n8k32 s8.s8.s32, sm_80+): pairs grouped by expert (k_route), then per 16-row tile the
 * weight words unpacked straight into A fragments once and multiplied against every column
 * (token) of the tile; per 32-chunk integer scales and per-block d/dmin applied in the
 * epilogue; SwiGLU fused into gate/up; down sums every tile of a token into its output row
 * inside one block (shared-memory partials per warp, reduced in fixed order; no atomics).
 * Does not own quantization or the path choice (cuda_moe.cu). */
#include "backend/cuda/moe_minigemm.cuh"

/* ======== routing: pairs grouped by expert ============================================= */

__global__ void __launch_bounds__(1024)
k_route(const int32_t *ids, int n_pairs, int n_tok, int n_expert, int cols, moe_tile *tiles,
        int *n_tiles, int *err, int *choice)
{
    __shared__ int se[1024], sbefore[1024], stile[1024];
    __shared__ int s_count;
    const int p = threadIdx.x;
    int e = -1;
    if (p < n_pairs) {
        e = ids[p];
        if (e < 0 || e >= n_expert) {
            atomicExch(err, 1);
            e = -1;
        }
    }
    se[p] = e;
    if (p == 0)
        s_count = 0;
    __syncthreads();
    int before = 0, size = 0;
    if (e >= 0)
        for (int q = 0; q < n_pairs; q++) {
            const int m = se[q] == e;
            before += m & (q < p);
            size += m;
        }
    sbefore[p] = before;
    const bool lead = e >= 0 && before % cols == 0;
    stile[p] = lead ? 1 : 0;
    __syncthreads();
    int ti = 0;
    if (lead) {
        for (int q = 0; q < p; q++)
            ti += stile[q];
    }
    __syncthreads();
    if (lead) {
        stile[p] = ti + 1; /* tile index + 1 at each leader */
        tiles[ti].expert = e;
        tiles[ti].n = min(cols, size - before);
        atomicAdd(&s_count, 1);
    } else {
        stile[p] = 0;
    }
    __syncthreads();
    if (e >= 0) {
        const int lb = before - before % cols;
        for (int q = 0; q <= p; q++)
            if (se[q] == e && sbefore[q] == lb) {
                tiles[stile[q] - 1].pair[before % cols] = p;
                break;
            }
    }
    if (p == 0) {
        *n_tiles = s_count;
        /* the path for CUDA_MOE_AUTO: mini-GEMM when the tiles are few enough per token
         * (tuning.cuh, from the measured cost per tile and per token) */
        if (choice)
            *choice = 100 * s_count < CUDA_MOE_MG_TILES_PER_TOK_X100 * n_tok ? 1 : 0;
    }
}

/* ======== the MMA ====================================================================== */

__device__ __forceinline__ void mma_s8(int c[4], int a0, int a1, int a2, int a3, int b0, int b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0), "r"(0),
                   "r"(0), "r"(0));
}

/* The sum over the 8 chunks of a block's min terms (0 for IQ2_XXS). */
template <int T>
__device__ __forceinline__ int block_min(const typename wt_block<T>::type *b, const int16_t *bs)
{
    int m = 0;
    if constexpr (T != WT_IQ2_XXS) {
#pragma unroll
        for (int j = 0; j < 8; j++)
            m += wq_min<T>(b, j, bs);
    }
    return m;
}

/* One 256-block of rows ra (= row g) and rb (= row g+8) against NT column groups of 8:
 * ia[nt][i] (+)= the scaled integer sums of the C fragment (rows g, g, g+8, g+8; columns
 * 2*tid, 2*tid+1). xw[nt]: the qs of this block for column g + 8*nt. */
template <int T, int NT>
__device__ __forceinline__ void tile_block(const typename wt_block<T>::type *ra,
                                           const typename wt_block<T>::type *rb,
                                           const int *const xw[NT], int tid, const uint64_t *grid,
                                           const uint8_t *signs, int ia[NT][4])
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const int a0 = wq_word<T>(ra, j, tid, grid, signs);
        const int a1 = wq_word<T>(rb, j, tid, grid, signs);
        const int a2 = wq_word<T>(ra, j, tid + 4, grid, signs);
        const int a3 = wq_word<T>(rb, j, tid + 4, grid, signs);
        const int sa = wq_scale<T>(ra, j), sb = wq_scale<T>(rb, j);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            int c[4];
            mma_s8(c, a0, a1, a2, a3, __ldg(xw[nt] + 8 * j + tid), __ldg(xw[nt] + 8 * j + tid + 4));
            ia[nt][0] += sa * c[0];
            ia[nt][1] += sa * c[1];
            ia[nt][2] += sb * c[2];
            ia[nt][3] += sb * c[3];
        }
    }
}

/* ======== gate/up + SwiGLU ============================================================= */

/* 4-byte words per row of a staged gate/up tile: nb blocks rounded up to a word. */
template <int T>
__host__ __device__ constexpr int tile_row_words(int nb)
{
    constexpr int bb = (int)sizeof(typename wt_block<T>::type);
    /* whole words per block (Q2_K, Q4_K) need no rounding: the same code as before, which
     * keeps k_mma_gate_up of those types within its register budget on sm_80 */
    return bb % 4 == 0 ? nb * (bb / 4) : (nb * bb + 3) / 4;
}

template <int T, int NT>
__global__ void __launch_bounds__(CUDA_MMA_GU_WARPS * 32, CUDA_MMA_GU_BLOCKS_PER_SM)
k_mma_gate_up(moe_wt gate, moe_wt up, moe_iq2_tables tab, const quant_block_q8_k *xq,
              const moe_tile *tiles, const int *n_tiles, const float *wts, int n_used,
              float clamp, float *mid, moe_sel sel)
{
    typedef typename wt_block<T>::type B;
    constexpr int KW = CUDA_MMA_GU_WARPS / 2; /* warps per matrix, splitting the K blocks */
    __shared__ uint64_t sgrid[256];
    __shared__ uint8_t ssign[128];
    __shared__ float red[2][KW][NT * 4][32];
    if (sel_skip(sel) || (int)blockIdx.y >= *n_tiles)
        return;
    if constexpr (T == WT_IQ2_XXS) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            sgrid[i] = tab.grid[i];
        for (int i = threadIdx.x; i < 128; i += blockDim.x)
            ssign[i] = tab.signs[i];
    }
    const moe_tile &tl = tiles[blockIdx.y];
    const int n = tl.n, e = tl.expert, nb = gate.nb, n_ff = gate.n_out;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tid = lane & 3;
    const int mat = warp / KW, ks = warp % KW; /* mat 0: gate, 1: up */
    const int row0 = blockIdx.x * 16;
    const quant_block_q8_k *xb[NT], *xe[NT][2];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int c = g + 8 * nt;
        xb[nt] = xq + (int64_t)(tl.pair[c < n ? c : 0] / n_used) * nb;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int cc = 2 * tid + i + 8 * nt;
            xe[nt][i] = xq + (int64_t)(tl.pair[cc < n ? cc : 0] / n_used) * nb;
        }
    }
    /* the 16 rows of gate and of up, copied once into shared memory with coalesced 4-byte
     * loads (rows of one expert are contiguous), then decoded from there by the warps */
    extern __shared__ uint32_t wtile[]; /* [mat][16 rows][rw words] */
    /* words per staged row: the row's blocks rounded up to 4 bytes (an odd count of 66-byte
     * IQ2_XXS blocks ends mid-word; row_bytes is a multiple of 4, so the word is the row's) */
    const int rw = tile_row_words<T>(nb);
    {
        constexpr int U = 8;
        const int total = 16 * rw; /* words per matrix */
        for (int m = 0; m < 2; m++) {
            const size_t row_bytes = m ? up.row_bytes : gate.row_bytes;
            const uint8_t *base = (m ? up.data : gate.data) +
                                  (size_t)e * (m ? up.expert_bytes : gate.expert_bytes) +
                                  (size_t)row0 * row_bytes;
            uint32_t *dst = wtile + m * total;
            if (row_bytes == (size_t)rw * 4 && ((uintptr_t)base & 15) == 0 && total % 4 == 0) {
                /* packed rows: one flat span, 16-byte loads */
                const int4 *src4 = (const int4 *)base;
                int4 *dst4 = (int4 *)dst;
                const int t4 = total / 4;
                for (int i0 = 0; i0 < t4; i0 += U * (int)blockDim.x) {
                    int4 v[U];
#pragma unroll
                    for (int u = 0; u < U; u++) {
                        const int i = i0 + u * (int)blockDim.x + (int)threadIdx.x;
                        if (i < t4)
                            v[u] = __ldg(src4 + i);
                    }
#pragma unroll
                    for (int u = 0; u < U; u++) {
                        const int i = i0 + u * (int)blockDim.x + (int)threadIdx.x;
                        if (i < t4)
                            dst4[i] = v[u];
                    }
                }
                continue;
            }
            for (int i0 = 0; i0 < total; i0 += U * (int)blockDim.x) {
                uint32_t v[U];
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int i = i0 + u * (int)blockDim.x + (int)threadIdx.x;
                    if (i < total) {
                        const int r = i / rw, c = i - r * rw;
                        v[u] = __ldg((const uint32_t *)(base + (size_t)r * row_bytes) + c);
                    }
                }
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int i = i0 + u * (int)blockDim.x + (int)threadIdx.x;
                    if (i < total)
                        dst[i] = v[u];
                }
            }
        }
    }
    const B *w_a = (const B *)(wtile + mat * 16 * rw + g * rw);
    const B *w_b = (const B *)(wtile + mat * 16 * rw + (g + 8) * rw);
    __syncthreads();
    float acc[NT][4] = {};
    for (int b = ks; b < nb; b += KW) {
        const int *xw[NT];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            xw[nt] = (const int *)xb[nt][b].qs;
        int ia[NT][4] = {};
        tile_block<T, NT>(w_a + b, w_b + b, xw, tid, sgrid, ssign, ia);
        const float2 da = wq_d<T>(w_a + b), db = wq_d<T>(w_b + b);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const quant_block_q8_k *x = xe[nt][i & 1] + b;
                const float2 d = i < 2 ? da : db;
                float v = d.x * (float)ia[nt][i];
                if constexpr (T != WT_IQ2_XXS)
                    v -= d.y * (float)block_min<T>((i < 2 ? w_a : w_b) + b, x->bsums);
                acc[nt][i] += x->d * v;
            }
        }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            red[mat][ks][nt * 4 + i][lane] = acc[nt][i];
    __syncthreads();
    if (warp != 0)
        return;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float sg = 0.0f, su = 0.0f;
            for (int w = 0; w < KW; w++) {
                sg += red[0][w][nt * 4 + i][lane];
                su += red[1][w][nt * 4 + i][lane];
            }
            const int c = 2 * tid + (i & 1) + 8 * nt;
            const int row = row0 + g + 8 * (i >> 1);
            if (c < n) {
                const int p = tl.pair[c];
                mid[(int64_t)p * n_ff + row] = moe_swiglu(sg, su, clamp, wts[p]);
            }
        }
    }
}

/* ======== down, all experts of a token summed ========================================== */

template <int T, int NT>
__global__ void __launch_bounds__(CUDA_MMA_DOWN_WARPS * 32, CUDA_MMA_DOWN_BLOCKS_PER_SM)
k_mma_down(moe_wt down, moe_iq2_tables tab, const quant_block_q8_k *midq, const moe_tile *tiles,
           const int *n_tiles, int n_tok, int n_used, float *y, int64_t ldy, int accumulate,
           moe_sel sel)
{
    if (sel_skip(sel))
        return;
    typedef typename wt_block<T>::type B;
    __shared__ uint64_t sgrid[256];
    __shared__ uint8_t ssign[128];
    extern __shared__ float part[]; /* [warp][16 rows][n_tok] */
    if constexpr (T == WT_IQ2_XXS) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            sgrid[i] = tab.grid[i];
        for (int i = threadIdx.x; i < 128; i += blockDim.x)
            ssign[i] = tab.signs[i];
    }
    for (int i = threadIdx.x; i < CUDA_MMA_DOWN_WARPS * 16 * n_tok; i += blockDim.x)
        part[i] = 0.0f;
    __syncthreads();
    const int nt_all = *n_tiles, nb = down.nb;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tid = lane & 3;
    const int row0 = blockIdx.x * 16;
    float *my = part + warp * 16 * n_tok;
    for (int it = warp; it < nt_all * nb; it += CUDA_MMA_DOWN_WARPS) {
        const int ti = it / nb, b = it - ti * nb;
        const moe_tile &tl = tiles[ti];
        const int n = tl.n;
        const B *ra = (const B *)(down.data + (size_t)tl.expert * down.expert_bytes +
                                  (size_t)(row0 + g) * down.row_bytes) + b;
        const B *rb = (const B *)((const uint8_t *)ra + 8 * down.row_bytes);
        const int *xw[NT];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int c = g + 8 * nt;
            xw[nt] = (const int *)midq[(int64_t)tl.pair[c < n ? c : 0] * nb + b].qs;
        }
        int ia[NT][4] = {};
        tile_block<T, NT>(ra, rb, xw, tid, sgrid, ssign, ia);
        const float2 da = wq_d<T>(ra), db = wq_d<T>(rb);
        float v[NT][4];
        int tk[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int c = 2 * tid + (i & 1) + 8 * nt;
                tk[nt][i] = -1;
                v[nt][i] = 0.0f;
                if (c < n) {
                    const int p = tl.pair[c];
                    const quant_block_q8_k *x = midq + (int64_t)p * nb + b;
                    const float2 d = i < 2 ? da : db;
                    float s = d.x * (float)ia[nt][i];
                    if constexpr (T != WT_IQ2_XXS)
                        s -= d.y * (float)block_min<T>(i < 2 ? ra : rb, x->bsums);
                    v[nt][i] = x->d * s;
                    tk[nt][i] = p / n_used;
                }
            }
        }
        /* the 4 lanes of a row take turns: two columns of one tile may be one token */
        for (int s = 0; s < 4; s++) {
            if (tid == s) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        if (tk[nt][i] >= 0)
                            my[(g + 8 * (i >> 1)) * n_tok + tk[nt][i]] += v[nt][i];
            }
            __syncwarp();
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * n_tok; i += blockDim.x) {
        const int r = i / n_tok, t = i - r * n_tok;
        float s = 0.0f;
        for (int w = 0; w < CUDA_MMA_DOWN_WARPS; w++)
            s += part[w * 16 * n_tok + i];
        float *o = y + (int64_t)t * ldy + row0 + r;
        *o = accumulate ? *o + s : s;
    }
}

/* ======== launchers ==================================================================== */

cudaError_t cuda_moe_route(const int32_t *ids, int n_pairs, int n_tok, int n_expert, int cols,
                           moe_tile *tiles, int *n_tiles, int *err, int *choice, cudaStream_t s)
{
    const int threads = (n_pairs + 31) / 32 * 32;
    k_route<<<1, threads, 0, s>>>(ids, n_pairs, n_tok, n_expert, cols, tiles, n_tiles, err, choice);
    return cudaGetLastError();
}

template <int T, int NT>
static cudaError_t gate_up(const moe_wt *gate, const moe_wt *up, moe_iq2_tables tab,
                           const quant_block_q8_k *xq, const moe_tile *tiles, const int *n_tiles,
                           int max_tiles, const float *wts, int n_used, float clamp, float *mid,
                           moe_sel sel, cudaStream_t s)
{
    const dim3 grid(gate->n_out / 16, max_tiles);
    const size_t smem = 2 * 16 * (size_t)tile_row_words<T>(gate->nb) * 4;
    static size_t smem_set = 0; /* per instantiation; static + dynamic may pass 48 KB */
    if (smem > smem_set) {
        cudaError_t rc = cudaFuncSetAttribute(k_mma_gate_up<T, NT>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (rc != cudaSuccess)
            return rc;
        smem_set = smem;
    }
    k_mma_gate_up<T, NT><<<grid, CUDA_MMA_GU_WARPS * 32, smem, s>>>(*gate, *up, tab, xq, tiles,
                                                                     n_tiles, wts, n_used, clamp, mid, sel);
    return cudaGetLastError();
}

template <int T, int NT>
static cudaError_t down_k(const moe_wt *down, moe_iq2_tables tab, const quant_block_q8_k *midq,
                          const moe_tile *tiles, const int *n_tiles, int n_tok, int n_used,
                          float *y, int64_t ldy, bool accumulate, moe_sel sel, cudaStream_t s)
{
    const size_t smem = (size_t)CUDA_MMA_DOWN_WARPS * 16 * n_tok * sizeof(float);
    static size_t smem_set = 0;
    if (smem > smem_set) {
        cudaError_t rc = cudaFuncSetAttribute(k_mma_down<T, NT>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (rc != cudaSuccess)
            return rc;
        smem_set = smem;
    }
    k_mma_down<T, NT><<<down->n_out / 16, CUDA_MMA_DOWN_WARPS * 32, smem, s>>>(
        *down, tab, midq, tiles, n_tiles, n_tok, n_used, y, ldy, accumulate ? 1 : 0, sel);
    return cudaGetLastError();
}

#define BY_TYPE(type, fn, NT, ...)                                                            \
    ((type) == WT_IQ2_XXS ? fn<WT_IQ2_XXS, NT>(__VA_ARGS__)                                   \
     : (type) == WT_Q2_K  ? fn<WT_Q2_K, NT>(__VA_ARGS__)                                      \
                          : fn<WT_Q4_K, NT>(__VA_ARGS__))

cudaError_t cuda_moe_mma_gate_up(int type, const moe_wt *gate, const moe_wt *up,
                                 moe_iq2_tables tab, const quant_block_q8_k *xq,
                                 const moe_tile *tiles, const int *n_tiles, int max_tiles, int cols,
                                 const float *wts, int n_used, float clamp, float *mid,
                                 moe_sel sel, cudaStream_t s)
{
    if (cols <= 8)
        return BY_TYPE(type, gate_up, 1, gate, up, tab, xq, tiles, n_tiles, max_tiles, wts, n_used, clamp, mid, sel, s);
    return BY_TYPE(type, gate_up, 2, gate, up, tab, xq, tiles, n_tiles, max_tiles, wts, n_used, clamp, mid, sel, s);
}

cudaError_t cuda_moe_mma_down(int type, const moe_wt *down, moe_iq2_tables tab,
                              const quant_block_q8_k *midq, const moe_tile *tiles,
                              const int *n_tiles, int cols, int n_tok, int n_used, float *y,
                              int64_t ldy, bool accumulate, moe_sel sel, cudaStream_t s)
{
    if (cols <= 8)
        return BY_TYPE(type, down_k, 1, down, tab, midq, tiles, n_tiles, n_tok, n_used, y, ldy, accumulate, sel, s);
    return BY_TYPE(type, down_k, 2, down, tab, midq, tiles, n_tiles, n_tok, n_used, y, ldy, accumulate, sel, s);
}
