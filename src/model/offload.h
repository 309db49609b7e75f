/* offload.h — where the routed experts of each layer run (llama.cpp's --n-cpu-moe): a backend
 * (backend.h) made by name, the layers whose experts it holds, and the one line that says so
 * at load ("experts of layers 3..42 on CUDA0 (...), 0..2 on CPU"). The experts of the first
 * n_cpu_moe layers stay with the CPU forward, those of the rest are uploaded to the backend;
 * by default as many of the last layers as fit in the device's free memory minus a reserve
 * (model_offload_reserve). Layers whose expert types the backend has no kernel for stay on the
 * CPU. Everything else of the forward runs on the CPU (forward.c). Owns placement and the
 * uploaded handles; the ops are the backend's. */
#ifndef DS4_MODEL_OFFLOAD_H
#define DS4_MODEL_OFFLOAD_H

#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"

typedef struct model_offload_opts {
    const char *backend; /* "cpu" (the CPU backend) or "cuda" */
    int gpu;             /* CUDA device; -1: DS4_CUDA_DEVICE if set, else device 0 */
    int n_cpu_moe;       /* experts of layers 0..n_cpu_moe-1 stay on the CPU; -1: by memory */
} model_offload_opts;

#define MODEL_OFFLOAD_OPTS_DEFAULT ((model_offload_opts){ "cpu", -1, -1 })

typedef struct model_offload {
    ds4_backend *be;            /* owned */
    const model *m;             /* the model it was placed for */
    uint32_t n_layer;
    backend_moe_weights **w;    /* [n_layer]: the layer's experts on be, or NULL (CPU) */
    uint32_t n_on;              /* layers with experts on be */
    uint64_t bytes;             /* device bytes they take */
    uint64_t free_bytes, total_bytes, reserve; /* device memory before the upload */
    char desc[640];             /* the placement line (no newline) */
} model_offload;

/* Device memory left free when placing by memory: max(1 GiB, 5% of total) for the CUDA
 * context's own use, the MoE scratch, staging and whatever else runs on the GPU. */
uint64_t model_offload_reserve(uint64_t total_bytes);

/* Makes the backend o->backend, places the layers and uploads their experts. Returns 0 and
 * *out, or DS4_E_ARG (unknown backend, bad --gpu / DS4_CUDA_DEVICE, a CPU-only build asked
 * for cuda), DS4_E_NOMEM (the layers asked for do not fit: the message says how much is
 * needed and free, and to raise --n-cpu-moe), DS4_E_IO (device error). */
int model_offload_new(model_offload **out, const model *m, const model_offload_opts *o,
                      ds4_error *err);

/* The same on a backend the caller made (taken over, freed on failure too): experts of
 * layers 0..n_cpu_moe-1 stay on the CPU (-1: by free memory, all for a host backend). */
int model_offload_new_on(model_offload **out, ds4_backend *be, const model *m, int n_cpu_moe,
                         ds4_error *err);

/* Releases the uploaded experts and the backend; NULL is a no-op. */
void model_offload_free(model_offload *off);

#endif
