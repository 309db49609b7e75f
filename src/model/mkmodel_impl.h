/* mkmodel_impl.h — what mkmodel.c (the plan: names, types, metadata) and mkmodel_fill.c
 * (the bytes: seeded random rows, random valid quant blocks, threads) share: one record per
 * tensor to write. Private to src/model/mkmodel*.c. */
#ifndef DS4_MODEL_MKMODEL_IMPL_H
#define DS4_MODEL_MKMODEL_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "model/names.h"

/* How a tensor's values are drawn: mean + std * N(0,1) per element; HC bases add 1 on the
 * diagonal of the combine block (near-identity mixing after Sinkhorn); tid2eid rows hold
 * n_used distinct expert ids. */
enum { MK_INIT_NORMAL, MK_INIT_HC_BASE, MK_INIT_TID2EID };

typedef struct mk_tensor {
    char name[MODEL_NAME_MAX];
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[4];
    int init;
    float mean, std;
    uint32_t hc;             /* MK_INIT_HC_BASE: stream count */
    uint32_t n_expert, n_used; /* MK_INIT_TID2EID */
    uint64_t seed;           /* from the model seed and the tensor name */
    bool random_blocks;      /* quantized types: random valid blocks instead of quantizing */
    int n_threads;
} mk_tensor;

/* gguf_rows_fn for an mk_tensor: rows [row0, row0 + n_rows) into dst. Row r depends only
 * on (seed, r), so any chunking and any thread count give the same bytes. */
int model_mk_fill_rows(void *user, int64_t row0, int64_t n_rows, void *dst, ds4_error *err);

/* A 64-bit hash of a string (FNV-1a), mixing tensor names into seeds. */
uint64_t model_mk_hash(const char *s, uint64_t seed);

#endif
