/* cuda.cu — the CUDA backend (backend.h) on one device: creation (device chosen by the
 * caller, never assumed), device memory for the routed experts of the layers placed on it
 * (row pitch padded to 16 bytes), and BACKEND_OP_MOE: the chunk's h rows,
 * ids and route weights packed into pinned staging, copied on the MoE context's stream,
 * cuda_moe_run (cuda_moe.h), y copied back; sync waits, checks the ids (cuda_moe_sync) and
 * writes y into the caller's rows. No kernels here (style.md §7): they are cuda_moe.h's.
 * Invariants: one op in flight (moe_run syncs a pending one first); every entry point makes
 * the backend's device current for the calling thread. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_moe.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

struct backend_moe_weights {
    void *dev;             /* gate, up, down in one allocation */
    uint64_t bytes;
    cuda_moe_layer layer;  /* device pointers into dev */
};

typedef struct cuda_state {
    int device;
    cuda_moe_ctx *moe;
    cudaStream_t stream;
    /* staging: pinned host and device copies of one call's inputs and outputs */
    size_t cap_rows, cap_pairs;  /* floats of h/y, pairs of ids/weights */
    float *h_pin, *y_pin, *w_pin;
    int32_t *ids_pin;
    float *h_dev, *y_dev, *w_dev;
    int32_t *ids_dev;
    /* the op in flight: where sync writes y */
    bool pending;
    float *y;
    int64_t ldy, n_embd;
    int n_tok;
} cuda_state;

static int cuda_err(ds4_error *err, const cuda_state *st, cudaError_t e, const char *what)
{
    return ds4_error_set(err, e == cudaErrorMemoryAllocation ? DS4_E_NOMEM : DS4_E_IO,
                         "CUDA%d: %s: %s", st ? st->device : -1, what, cudaGetErrorString(e));
}

#define CK(x, what)                                                                           \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess)                                                                \
            return cuda_err(err, st, e_, what);                                               \
    } while (0)

static bool known_type(ds4_type t)
{
    return t == DS4_TYPE_IQ2_XXS || t == DS4_TYPE_Q2_K || t == DS4_TYPE_Q4_K;
}

/* ======== identity and memory =========================================================== */

static int c_memory(ds4_backend *b, uint64_t *free_bytes, uint64_t *total_bytes, ds4_error *err)
{
    cuda_state *st = (cuda_state *)b->ctx;
    size_t fr = 0, tot = 0;
    CK(cudaSetDevice(st->device), "set device");
    CK(cudaMemGetInfo(&fr, &tot), "memory info");
    *free_bytes = fr;
    *total_bytes = tot;
    return 0;
}

static bool c_supports(const ds4_backend *b, backend_op op, ds4_type type)
{
    (void)b;
    return op == BACKEND_OP_MOE && known_type(type);
}

/* ======== expert weights ================================================================= */

/* Row pitch on the device: the kernels need a multiple of 4 bytes (cuda_moe.h); 16 keeps every
 * row start aligned for vector loads too. The published shapes are already multiples of 16
 * (IQ2_XXS 4096: 1056 bytes), so only small test models get padding. */
static size_t padded_row(const backend_moe_tensor *t)
{
    const size_t rb = quant_row_bytes(t->type, t->n_in);
    return (rb + 15) / 16 * 16;
}

static uint64_t al256(uint64_t n) { return (n + 255) / 256 * 256; }

static uint64_t tensor_bytes(const backend_moe_tensor *t, int n_expert)
{
    return al256((uint64_t)padded_row(t) * (uint64_t)t->n_out * (uint64_t)n_expert);
}

static uint64_t c_moe_bytes(const ds4_backend *b, const backend_moe_layer *w)
{
    (void)b;
    return tensor_bytes(&w->gate, w->n_expert) + tensor_bytes(&w->up, w->n_expert) +
           tensor_bytes(&w->down, w->n_expert);
}

static int check_layer(const cuda_state *st, const backend_moe_layer *w, ds4_error *err)
{
    const backend_moe_tensor *t[3] = { &w->gate, &w->up, &w->down };
    const char *name[3] = { "gate", "up", "down" };
    for (int i = 0; i < 3; i++) {
        if (!known_type(t[i]->type))
            return ds4_error_set(err, DS4_E_TYPE, "CUDA%d: no MoE kernel for %s experts of "
                                 "type %s", st->device, name[i],
                                 quant_get_traits(t[i]->type) ? quant_get_traits(t[i]->type)->name
                                                              : "?");
        if (t[i]->n_in <= 0 || t[i]->n_in % QUANT_QK_K || t[i]->n_out <= 0 || t[i]->n_out % 16 ||
            t[i]->row_bytes < quant_row_bytes(t[i]->type, t[i]->n_in) ||
            t[i]->expert_bytes < t[i]->row_bytes * (size_t)t[i]->n_out)
            return ds4_error_set(err, DS4_E_RANGE, "CUDA%d: %s experts of %lld x %lld: the "
                                 "kernels need rows of a multiple of 256 and a multiple of 16 "
                                 "rows", st->device, name[i], (long long)t[i]->n_in,
                                 (long long)t[i]->n_out);
    }
    if (w->gate.type != w->up.type || w->gate.n_in != w->up.n_in ||
        w->gate.n_out != w->up.n_out || w->down.n_in != w->gate.n_out ||
        w->down.n_out != w->gate.n_in || w->n_expert < 1)
        return ds4_error_set(err, DS4_E_RANGE, "CUDA%d: inconsistent expert tensors",
                             st->device);
    return 0;
}

/* Copies one host tensor to dst with row pitch padded to 16 bytes. */
static int upload_tensor(cuda_state *st, const backend_moe_tensor *t, int n_expert, char *dst,
                         cuda_moe_tensor *out, ds4_error *err)
{
    const size_t rb = quant_row_bytes(t->type, t->n_in), pr = padded_row(t);
    const size_t rows = (size_t)t->n_out;
    if (t->expert_bytes == t->row_bytes * rows && pr == t->row_bytes) { /* as stored */
        CK(cudaMemcpy(dst, t->data, pr * rows * (size_t)n_expert, cudaMemcpyHostToDevice),
           "upload experts");
    } else if (t->expert_bytes == t->row_bytes * rows) { /* rows one stride apart, padded */
        CK(cudaMemcpy2D(dst, pr, t->data, t->row_bytes, rb, rows * (size_t)n_expert,
                        cudaMemcpyHostToDevice), "upload experts");
    } else {
        for (int e = 0; e < n_expert; e++)
            CK(cudaMemcpy2D(dst + (size_t)e * pr * rows, pr,
                            (const char *)t->data + (size_t)e * t->expert_bytes, t->row_bytes,
                            rb, rows, cudaMemcpyHostToDevice), "upload experts");
    }
    *out = (cuda_moe_tensor){ t->type, t->n_in, t->n_out, dst, pr, pr * rows };
    return 0;
}

static int c_moe_upload(ds4_backend *b, const backend_moe_layer *w, backend_moe_weights **out,
                        ds4_error *err)
{
    cuda_state *st = (cuda_state *)b->ctx;
    *out = NULL;
    int rc = check_layer(st, w, err);
    if (rc)
        return rc;
    CK(cudaSetDevice(st->device), "set device");
    backend_moe_weights *h = (backend_moe_weights *)calloc(1, sizeof *h);
    if (h == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "CUDA%d: out of host memory", st->device);
    h->bytes = c_moe_bytes(b, w);
    cudaError_t e = cudaMalloc(&h->dev, h->bytes);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        const uint64_t bytes = h->bytes;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        free(h);
        return ds4_error_set(err, e == cudaErrorMemoryAllocation ? DS4_E_NOMEM : DS4_E_IO,
                             "%s: cannot allocate %.2f GiB for a layer's experts (%.2f GiB "
                             "free): %s; keep more layers on the CPU with --n-cpu-moe", b->desc,
                             bytes / GIB, fr / GIB, cudaGetErrorString(e));
    }
    char *p = (char *)h->dev;
    const uint64_t og = tensor_bytes(&w->gate, w->n_expert), ou = tensor_bytes(&w->up, w->n_expert);
    if ((rc = upload_tensor(st, &w->gate, w->n_expert, p, &h->layer.gate, err)) != 0 ||
        (rc = upload_tensor(st, &w->up, w->n_expert, p + og, &h->layer.up, err)) != 0 ||
        (rc = upload_tensor(st, &w->down, w->n_expert, p + og + ou, &h->layer.down, err)) != 0) {
        cudaFree(h->dev);
        free(h);
        return rc;
    }
    h->layer.n_expert = w->n_expert;
    h->layer.clamp = w->clamp;
    *out = h;
    return 0;
}

static void c_moe_release(ds4_backend *b, backend_moe_weights *w)
{
    if (w == NULL)
        return;
    cudaSetDevice(((cuda_state *)b->ctx)->device);
    cudaFree(w->dev);
    free(w);
}

/* ======== the op ========================================================================= */

static void free_staging(cuda_state *st)
{
    cudaFreeHost(st->h_pin);
    cudaFreeHost(st->y_pin);
    cudaFreeHost(st->w_pin);
    cudaFreeHost(st->ids_pin);
    cudaFree(st->h_dev);
    cudaFree(st->y_dev);
    cudaFree(st->w_dev);
    cudaFree(st->ids_dev);
    st->h_pin = st->y_pin = st->w_pin = st->h_dev = st->y_dev = st->w_dev = NULL;
    st->ids_pin = st->ids_dev = NULL;
    st->cap_rows = st->cap_pairs = 0;
}

/* Staging for rows floats of h (and of y) and pairs ids/weights; no op is in flight. */
static int staging(cuda_state *st, size_t rows, size_t pairs, ds4_error *err)
{
    if (rows <= st->cap_rows && pairs <= st->cap_pairs)
        return 0;
    rows = rows > st->cap_rows ? rows : st->cap_rows;
    pairs = pairs > st->cap_pairs ? pairs : st->cap_pairs;
    free_staging(st);
    CK(cudaHostAlloc((void **)&st->h_pin, rows * sizeof(float), cudaHostAllocDefault), "pinned h");
    CK(cudaHostAlloc((void **)&st->y_pin, rows * sizeof(float), cudaHostAllocDefault), "pinned y");
    CK(cudaHostAlloc((void **)&st->w_pin, pairs * sizeof(float), cudaHostAllocDefault),
       "pinned weights");
    CK(cudaHostAlloc((void **)&st->ids_pin, pairs * sizeof(int32_t), cudaHostAllocDefault),
       "pinned ids");
    CK(cudaMalloc((void **)&st->h_dev, rows * sizeof(float)), "device h");
    CK(cudaMalloc((void **)&st->y_dev, rows * sizeof(float)), "device y");
    CK(cudaMalloc((void **)&st->w_dev, pairs * sizeof(float)), "device weights");
    CK(cudaMalloc((void **)&st->ids_dev, pairs * sizeof(int32_t)), "device ids");
    st->cap_rows = rows;
    st->cap_pairs = pairs;
    return 0;
}

static int c_sync(ds4_backend *b, ds4_error *err)
{
    cuda_state *st = (cuda_state *)b->ctx;
    if (!st->pending)
        return 0;
    st->pending = false;
    CK(cudaSetDevice(st->device), "set device");
    int rc = cuda_moe_sync(st->moe, err); /* waits the stream; ids out of range: DS4_E_RANGE */
    if (rc)
        return rc;
    const size_t rb = (size_t)st->n_embd * sizeof(float);
    for (int t = 0; t < st->n_tok; t++)
        memcpy(st->y + (int64_t)t * st->ldy, st->y_pin + (int64_t)t * st->n_embd, rb);
    return 0;
}

/* The copies in, the MoE, the copy out, on the stream (inputs already in pinned staging). */
static int enqueue(cuda_state *st, const backend_moe_args *a, int64_t d, size_t rows,
                   size_t pairs, ds4_error *err)
{
    cudaStream_t s = st->stream;
    CK(cudaMemcpyAsync(st->h_dev, st->h_pin, rows * sizeof(float), cudaMemcpyHostToDevice, s),
       "copy h");
    CK(cudaMemcpyAsync(st->ids_dev, st->ids_pin, pairs * sizeof(int32_t), cudaMemcpyHostToDevice,
                       s), "copy ids");
    CK(cudaMemcpyAsync(st->w_dev, st->w_pin, pairs * sizeof(float), cudaMemcpyHostToDevice, s),
       "copy weights");
    if (a->accumulate) {
        CK(cudaMemcpyAsync(st->y_dev, st->y_pin, rows * sizeof(float), cudaMemcpyHostToDevice,
                           s), "copy y");
    }
    cuda_moe_args ca;
    ca.layer = &a->w->layer;
    ca.n_tok = a->n_tok;
    ca.n_used = a->n_used;
    ca.ids = st->ids_dev;
    ca.weights = st->w_dev;
    ca.h = st->h_dev;
    ca.ldh = d;
    ca.y = st->y_dev;
    ca.ldy = d;
    ca.accumulate = a->accumulate;
    ca.path = CUDA_MOE_AUTO;
    ca.layer_index = a->layer_index;
    int rc = cuda_moe_run(st->moe, &ca, err);
    if (rc)
        return rc;
    CK(cudaMemcpyAsync(st->y_pin, st->y_dev, rows * sizeof(float), cudaMemcpyDeviceToHost, s),
       "copy y back");
    return 0;
}

static int c_moe_run(ds4_backend *b, const backend_moe_args *a, ds4_error *err)
{
    cuda_state *st = (cuda_state *)b->ctx;
    int rc = c_sync(b, err); /* one op in flight: the staging is reused */
    if (rc)
        return rc;
    if (a->n_tok <= 0)
        return a->n_tok == 0 ? 0 : ds4_error_set(err, DS4_E_ARG, "CUDA moe: n_tok < 0");
    const int64_t d = a->w->layer.gate.n_in;
    if (a->n_used < 1 || a->ldh < d || a->ldy < d || !a->h || !a->y || !a->ids || !a->weights)
        return ds4_error_set(err, DS4_E_ARG, "CUDA moe: bad counts, pointers or strides");
    CK(cudaSetDevice(st->device), "set device");
    const size_t rows = (size_t)a->n_tok * (size_t)d, pairs = (size_t)a->n_tok * a->n_used;
    if ((rc = staging(st, rows, pairs, err)) != 0)
        return rc;
    const size_t rb = (size_t)d * sizeof(float);
    for (int t = 0; t < a->n_tok; t++)
        memcpy(st->h_pin + (int64_t)t * d, a->h + (int64_t)t * a->ldh, rb);
    memcpy(st->ids_pin, a->ids, pairs * sizeof(int32_t));
    memcpy(st->w_pin, a->weights, pairs * sizeof(float));
    for (int t = 0; a->accumulate && t < a->n_tok; t++)
        memcpy(st->y_pin + (int64_t)t * d, a->y + (int64_t)t * a->ldy, rb);
    if ((rc = enqueue(st, a, d, rows, pairs, err)) != 0) {
        cudaStreamSynchronize(st->stream); /* nothing may still read the staging */
        return rc;
    }
    st->pending = true;
    st->y = a->y;
    st->ldy = a->ldy;
    st->n_embd = d;
    st->n_tok = a->n_tok;
    return 0;
}

/* ======== lifetime ======================================================================= */

static void c_free(ds4_backend *b)
{
    cuda_state *st = (cuda_state *)b->ctx;
    if (st) {
        cudaSetDevice(st->device);
        if (st->pending)
            cudaStreamSynchronize(st->stream);
        free_staging(st);
        cuda_moe_ctx_free(st->moe);
        free(st);
    }
    free(b);
}

extern "C" int backend_cuda_device_count(void)
{
    return cuda_device_count();
}

extern "C" bool backend_cuda_built(void)
{
    return true;
}

extern "C" int backend_cuda_new(ds4_backend **out, int device, ds4_error *err)
{
    *out = NULL;
    const int n = cuda_device_count();
    if (n == 0)
        return ds4_error_set(err, DS4_E_ARG, "no CUDA device (the driver reports none)");
    if (device < 0 || device >= n)
        return ds4_error_set(err, DS4_E_ARG, "no CUDA device %d: %d device%s (0..%d)", device,
                             n, n == 1 ? "" : "s", n - 1);
    ds4_backend *b = (ds4_backend *)calloc(1, sizeof *b);
    cuda_state *st = (cuda_state *)calloc(1, sizeof *st);
    if (b == NULL || st == NULL) {
        free(b);
        free(st);
        return ds4_error_set(err, DS4_E_NOMEM, "CUDA backend: out of memory");
    }
    st->device = device;
    b->ctx = st;
    b->free = c_free;
    cudaDeviceProp prop;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        c_free(b);
        return cuda_err(err, NULL, e, "open device");
    }
    int rc = cuda_moe_ctx_new(&st->moe, NULL, err);
    if (rc) {
        c_free(b);
        return rc;
    }
    st->stream = (cudaStream_t)cuda_moe_stream(st->moe);
    b->name = "cuda";
    snprintf(b->desc, sizeof b->desc, "CUDA%d (%.100s, %.1f GiB)", device, prop.name,
             prop.totalGlobalMem / GIB);
    b->host = false;
    b->memory = c_memory;
    b->supports = c_supports;
    b->moe_bytes = c_moe_bytes;
    b->moe_upload = c_moe_upload;
    b->moe_release = c_moe_release;
    b->moe_run = c_moe_run;
    b->sync = c_sync;
    *out = b;
    return 0;
}
