/* act_quant.cuh — host entry point of the Q8_K activation quantizer on the GPU (act_quant.cu).
 * Declares only the launcher; the kernel is private to act_quant.cu. */
#ifndef DS4_BACKEND_CUDA_ACT_QUANT_CUH
#define DS4_BACKEND_CUDA_ACT_QUANT_CUH

#include "backend/cuda/common.cuh"

/* Quantizes rows f32 rows of n elements (n a multiple of 256), ldx floats apart, into
 * rows * n/256 Q8_K blocks at out (row-major), on stream s. Same rounding as
 * quant_quant_row_q8_k. Returns the launch status. */
cudaError_t cuda_act_quant_q8_k(const float *x, int64_t ldx, int rows, int64_t n,
                                quant_block_q8_k *out, cudaStream_t s);

#endif
