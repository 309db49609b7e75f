/* cuda_test_util.h — what the GPU tests of tests/cuda/ share: CUCHECK (a CUDA runtime call that
 * must succeed, else the test fails on the spot) and the device copy of a host expert tensor.
 * Header-only (static functions). */
#ifndef DS4_TESTS_CUDA_TEST_UTIL_H
#define DS4_TESTS_CUDA_TEST_UTIL_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda/cuda_moe.h"
#include "kernels/cpu/moe.h"

#define CUCHECK(x)                                                                            \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            printf("FAIL  %s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

/* The device copy of T's n_expert experts in G, each row at a pitch of `pitch` bytes (0: as
 * stored, T->row_bytes), as src/backend/cuda/cuda.cu uploads a model's rows padded. */
__attribute__((unused))
static void cuda_test_upload(cuda_moe_tensor *G, const cpu_moe_tensor *T, int n_expert, size_t pitch)
{
    if (!pitch)
        pitch = T->row_bytes;
    G->type = T->type;
    G->n_in = T->n_in;
    G->n_out = T->n_out;
    G->row_bytes = pitch;
    G->expert_bytes = pitch * (size_t)T->n_out;
    void *d;
    CUCHECK(cudaMalloc(&d, G->expert_bytes * (size_t)n_expert));
    CUCHECK(cudaMemcpy2D(d, pitch, T->data, T->row_bytes, T->row_bytes,
                         (size_t)T->n_out * (size_t)n_expert, cudaMemcpyHostToDevice));
    G->data = d;
}

#endif
