/* act_quant.cu — Q8_K quantization of activation rows on the GPU (ds4-architecture.md §4.1):
 * one 256-thread block per 256-element block, the signed max by |x| (first index on ties),
 * q = rint(-127/max * x) clamped to int8, the 16-element sums, d = 1/iscale; all-zero blocks
 * are zero. The same IEEE operations as quant_quant_row_q8_k, so it matches it exactly. */
#include "backend/cuda/act_quant.cuh"

__global__ void __launch_bounds__(256)
k_quant_q8_k(const float *__restrict__ x, int64_t ldx, int nb, quant_block_q8_k *__restrict__ out)
{
    __shared__ float s_a[8];
    __shared__ int s_i[8];
    const int b = blockIdx.x, row = blockIdx.y, t = threadIdx.x, lane = t & 31, wp = t >> 5;
    const float v = x[(int64_t)row * ldx + (int64_t)b * QUANT_QK_K + t];
    float a = fabsf(v);
    int ia = t;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, a, o);
        const int oi = __shfl_xor_sync(0xffffffffu, ia, o);
        if (oa > a || (oa == a && oi < ia))
            a = oa, ia = oi;
    }
    if (lane == 0)
        s_a[wp] = a, s_i[wp] = ia;
    __shared__ float s_max;
    __syncthreads();
    if (t == 0) {
        float ba = s_a[0];
        int bi = s_i[0];
        for (int w = 1; w < 8; w++)
            if (s_a[w] > ba)
                ba = s_a[w], bi = s_i[w];
        s_max = ba == 0.0f ? 0.0f : x[(int64_t)row * ldx + (int64_t)b * QUANT_QK_K + bi];
    }
    __syncthreads();
    quant_block_q8_k *o = out + (int64_t)row * nb + b;
    const float mx = s_max;
    if (mx == 0.0f) {
        o->qs[t] = 0;
        if (t < 16)
            o->bsums[t] = 0;
        if (t == 0)
            o->d = 0.0f;
        return;
    }
    const float iscale = -127.0f / mx;
    const int q = __float2int_rn(fminf(fmaxf(iscale * v, -128.0f), 127.0f));
    o->qs[t] = (int8_t)q;
    int s = q;
#pragma unroll
    for (int off = 8; off > 0; off >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if ((lane & 15) == 0)
        o->bsums[t >> 4] = (int16_t)s;
    if (t == 0)
        o->d = 1.0f / iscale;
}

cudaError_t cuda_act_quant_q8_k(const float *x, int64_t ldx, int rows, int64_t n,
                                quant_block_q8_k *out, cudaStream_t s)
{
    const int nb = (int)(n / QUANT_QK_K);
    if (rows <= 0 || nb <= 0)
        return cudaSuccess;
    k_quant_q8_k<<<dim3(nb, rows), 256, 0, s>>>(x, ldx, nb, out);
    return cudaGetLastError();
}
