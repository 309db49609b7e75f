/* backend.h — the one interface between the model code and a compute device (style.md §6): a
 * struct of function pointers (ds4_backend) with identity, memory, supports(op, type), the ops,
 * sync and free, plus the constructors of the implementations (cpu.c, cuda/cuda.cu, or
 * cuda_stub.c in a build without CUDA). Model code includes this header only.
 * Today's table holds the one op a second backend implements: the routed-expert FFN of one
 * layer for a chunk of tokens (decode MoE, §3.9 step 6). Everything else of the forward runs
 * on the CPU in src/model/forward*.c. The plan, op by op as the CUDA kernels land: quantized
 * matvec/matmul (attention and shared-expert projections), RMSNorm, RoPE, attention with the
 * compressed rows, hyper-connections, then generic buffers (alloc/upload/download) for the
 * activations that stay on the device between ops; group.c (several GPUs) after that.
 * Invariant: an op's inputs are read before it returns; its outputs are valid after sync. */
#ifndef DS4_BACKEND_BACKEND_H
#define DS4_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ds4.h"
#include "kernels/cpu/threadpool.h"
#include "quant/quant.h"

typedef enum {
    BACKEND_OP_MOE = 0, /* routed experts of one layer: type = the gate/up (or down) weights' */
    BACKEND_OP_COUNT,
} backend_op;

/* One 3-D expert tensor in host memory (the model file's bytes): n_expert matrices of n_out
 * rows of n_in elements, rows row_bytes apart, experts expert_bytes apart. */
typedef struct backend_moe_tensor {
    ds4_type type;
    int64_t n_in, n_out;
    const void *data;
    size_t row_bytes, expert_bytes;
} backend_moe_tensor;

/* The routed experts of one layer, host side. gate/up: n_in = n_embd, n_out = n_ff; down:
 * n_in = n_ff, n_out = n_embd. */
typedef struct backend_moe_layer {
    backend_moe_tensor gate, up, down;
    int n_expert;
    float clamp; /* SwiGLU clamp; <= 0 means none */
} backend_moe_layer;

/* One layer's experts as the backend holds them (device memory, or a reference to the host
 * bytes for the CPU); made by moe_upload, freed by moe_release. */
typedef struct backend_moe_weights backend_moe_weights;

/* One MoE call: n_tok tokens, each with n_used (expert id, route weight) choices; host rows. */
typedef struct backend_moe_args {
    const backend_moe_weights *w;
    int n_tok;
    int n_used;
    const int32_t *ids;    /* [n_tok][n_used] expert ids */
    const float *weights;  /* [n_tok][n_used] route weights */
    const float *h;        /* [n_tok] rows of n_embd floats, ldh apart: the FFN input */
    int64_t ldh;
    float *y;              /* [n_tok] rows of n_embd floats, ldy apart: the output */
    int64_t ldy;
    bool accumulate;       /* y += routed sum; else y = it */
    int layer_index;       /* for messages and profiles; -1 if unknown */
    cpu_pool *pool;        /* the caller's CPU threads (the CPU backend computes on them) */
} backend_moe_args;

typedef struct ds4_backend ds4_backend;

struct ds4_backend {
    /* identity */
    const char *name;      /* "cpu", "cuda" */
    char desc[160];        /* e.g. "CUDA0 (NVIDIA H200, 139.8 GiB)"; "CPU" */
    bool host;             /* its memory is the process's: uploads reference host bytes */
    void *ctx;             /* the implementation's state */

    /* memory: free and total bytes of the device (0, 0 for a host backend) */
    int (*memory)(ds4_backend *b, uint64_t *free_bytes, uint64_t *total_bytes, ds4_error *err);

    /* whether the backend implements op for weights of this type */
    bool (*supports)(const ds4_backend *b, backend_op op, ds4_type type);

    /* BACKEND_OP_MOE: bytes of device memory moe_upload takes for w (0 for a host backend);
     * upload (copy w's expert tensors to the device, or check and reference them): 0 and a
     * handle in *out, or DS4_E_TYPE / DS4_E_RANGE (no kernel for these types or shapes),
     * DS4_E_NOMEM (does not fit), DS4_E_IO (device error); release frees a handle (NULL ok). */
    uint64_t (*moe_bytes)(const ds4_backend *b, const backend_moe_layer *w);
    int (*moe_upload)(ds4_backend *b, const backend_moe_layer *w, backend_moe_weights **out,
                      ds4_error *err);
    void (*moe_release)(ds4_backend *b, backend_moe_weights *w);

    /* BACKEND_OP_MOE: the routed-expert FFN for a->n_tok tokens (cpu_moe_run's contract:
     * src/kernels/cpu/moe.h). Reads h, ids, weights (and y when accumulating) before it
     * returns; y is written by the next sync. Returns 0 or a negative DS4_E_* code. */
    int (*moe_run)(ds4_backend *b, const backend_moe_args *a, ds4_error *err);

    /* Waits for every op enqueued since the last sync and writes their outputs. Returns 0 or
     * a negative DS4_E_* code (an op's error found on the device, e.g. an expert id out of
     * range: DS4_E_RANGE). */
    int (*sync)(ds4_backend *b, ds4_error *err);

    /* Frees the backend (after its moe_weights); NULL is a no-op through backend_free. */
    void (*free)(ds4_backend *b);
};

/* The CPU backend (cpu.c): the op on src/kernels/cpu/ with the caller's pool, synchronous.
 * It offers BACKEND_OP_MOE only where cpu_moe_run has vector kernels (cpu_moe_vectorized:
 * elsewhere the forward's own batched products are faster). Returns 0 or DS4_E_NOMEM. */
int backend_cpu_new(ds4_backend **out, ds4_error *err);

/* The CUDA backend on device `device` (cuda/cuda.cu). Returns 0, DS4_E_ARG (no such device:
 * the message names how many there are), DS4_E_IO (CUDA error), DS4_E_NOMEM; in a build
 * without CUDA (cuda_stub.c) always DS4_E_ARG with "built without CUDA: run make cuda". */
int backend_cuda_new(ds4_backend **out, int device, ds4_error *err);

/* CUDA devices visible (0 without a driver or device, and in a build without CUDA). */
int backend_cuda_device_count(void);

/* Whether this build has the CUDA backend. */
bool backend_cuda_built(void);

/* b->free(b) if b is not NULL. */
static inline void backend_free(ds4_backend *b)
{
    if (b)
        b->free(b);
}

#ifdef __cplusplus
}
#endif

#endif
