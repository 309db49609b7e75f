/* cpu.c — the CPU backend (backend.h): BACKEND_OP_MOE through cpu_moe_run on the caller's
 * thread pool, synchronously (sync has nothing to wait for). Uploads reference the host bytes
 * (the mapped model file): no copy, no device memory. Owns only the glue and a cpu_moe_ctx;
 * the kernels are src/kernels/cpu/moe*.c. Invariant: the same call as the forward's own
 * cpu_moe_run, so its outputs are bit-identical to it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "kernels/cpu/moe.h"

struct backend_moe_weights {
    cpu_moe_layer layer;
};

typedef struct cpu_state {
    cpu_moe_ctx *moe;
} cpu_state;

static int c_memory(ds4_backend *b, uint64_t *free_bytes, uint64_t *total_bytes,
                      ds4_error *err)
{
    (void)b, (void)err;
    *free_bytes = *total_bytes = 0;
    return 0;
}

static bool c_supports(const ds4_backend *b, backend_op op, ds4_type type)
{
    (void)b;
    return op == BACKEND_OP_MOE && cpu_moe_vectorized() &&
           (type == DS4_TYPE_IQ2_XXS || type == DS4_TYPE_Q2_K || type == DS4_TYPE_Q4_K);
}

static uint64_t c_moe_bytes(const ds4_backend *b, const backend_moe_layer *w)
{
    (void)b, (void)w;
    return 0;
}

static cpu_moe_tensor tensor(const backend_moe_tensor *t)
{
    return (cpu_moe_tensor){ t->type, t->n_in, t->n_out, t->data, t->row_bytes,
                             t->expert_bytes };
}

static int c_moe_upload(ds4_backend *b, const backend_moe_layer *w, backend_moe_weights **out,
                          ds4_error *err)
{
    (void)b;
    *out = NULL;
    if (!cpu_moe_supported(w->gate.type, w->down.type, w->gate.n_in, w->gate.n_out) ||
        w->up.type != w->gate.type)
        return ds4_error_set(err, DS4_E_TYPE, "cpu backend: no MoE kernel for gate %s, down %s "
                             "at %lld x %lld", quant_get_traits(w->gate.type)->name,
                             quant_get_traits(w->down.type)->name, (long long)w->gate.n_in,
                             (long long)w->gate.n_out);
    backend_moe_weights *h = malloc(sizeof *h);
    if (h == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "cpu backend: out of memory");
    h->layer = (cpu_moe_layer){ tensor(&w->gate), tensor(&w->up), tensor(&w->down), w->n_expert,
                                w->clamp };
    *out = h;
    return 0;
}

static void c_moe_release(ds4_backend *b, backend_moe_weights *w)
{
    (void)b;
    free(w);
}

static int c_moe_run(ds4_backend *b, const backend_moe_args *a, ds4_error *err)
{
    cpu_state *st = b->ctx;
    const cpu_moe_args ca = { &a->w->layer, a->n_tok, a->n_used, a->ids, a->weights, a->h,
                              a->ldh, a->y, a->ldy, a->accumulate, CPU_MOE_AUTO,
                              a->layer_index };
    return cpu_moe_run(st->moe, a->pool, &ca, err);
}

static int c_sync(ds4_backend *b, ds4_error *err)
{
    (void)b, (void)err;
    return 0;
}

static void c_free(ds4_backend *b)
{
    cpu_state *st = b->ctx;
    cpu_moe_ctx_free(st->moe);
    free(st);
    free(b);
}

int backend_cpu_new(ds4_backend **out, ds4_error *err)
{
    *out = NULL;
    ds4_backend *b = calloc(1, sizeof *b);
    cpu_state *st = calloc(1, sizeof *st);
    int rc = b && st ? cpu_moe_ctx_new(&st->moe, err)
                     : ds4_error_set(err, DS4_E_NOMEM, "cpu backend: out of memory");
    if (rc) {
        free(st);
        free(b);
        return rc;
    }
    b->name = "cpu";
    snprintf(b->desc, sizeof b->desc, "CPU (%s)", cpu_moe_isa_name());
    b->host = true;
    b->ctx = st;
    b->memory = c_memory;
    b->supports = c_supports;
    b->moe_bytes = c_moe_bytes;
    b->moe_upload = c_moe_upload;
    b->moe_release = c_moe_release;
    b->moe_run = c_moe_run;
    b->sync = c_sync;
    b->free = c_free;
    *out = b;
    return 0;
}
