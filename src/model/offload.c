/* offload.c — placement of the routed experts on a backend (offload.h): the backend made by
 * name and device, the layers chosen (--n-cpu-moe, or by free memory minus the reserve, from
 * the last layer down), their expert tensors uploaded, the placement line. Owns no op. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/offload.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

uint64_t model_offload_reserve(uint64_t total_bytes)
{
    const uint64_t one = 1ull << 30, pct = total_bytes / 20;
    return pct > one ? pct : one;
}

static backend_moe_tensor host_tensor(const gguf_tensor *t)
{
    const size_t rb = quant_row_bytes(t->type, t->ne[0]);
    return (backend_moe_tensor){ t->type, t->ne[0], t->ne[1], t->data, rb, rb * (size_t)t->ne[1] };
}

static backend_moe_layer host_layer(const model *m, uint32_t il)
{
    const model_layer *L = &m->w.layers[il];
    return (backend_moe_layer){ host_tensor(L->ffn_gate_exps), host_tensor(L->ffn_up_exps),
                                host_tensor(L->ffn_down_exps), (int)m->hp.n_expert,
                                m->hp.swiglu_clamp[il] };
}

static bool layer_supported(const ds4_backend *be, const model *m, uint32_t il)
{
    const model_layer *L = &m->w.layers[il];
    return be->supports(be, BACKEND_OP_MOE, L->ffn_gate_exps->type) &&
           be->supports(be, BACKEND_OP_MOE, L->ffn_up_exps->type) &&
           be->supports(be, BACKEND_OP_MOE, L->ffn_down_exps->type);
}

/* Appends the layers il in [0, n) with on[il] == want as "a..b,c" (or "none"). */
static void ranges(char *buf, size_t cap, const bool *on, uint32_t n, bool want)
{
    size_t len = 0;
    buf[0] = 0;
    for (uint32_t a = 0; a < n;) {
        if (on[a] != want) {
            a++;
            continue;
        }
        uint32_t b = a;
        while (b + 1 < n && on[b + 1] == want)
            b++;
        int k = b > a ? snprintf(buf + len, cap - len, "%s%u..%u", len ? "," : "", a, b)
                      : snprintf(buf + len, cap - len, "%s%u", len ? "," : "", a);
        if (k < 0 || (size_t)k >= cap - len)
            break;
        len += (size_t)k;
        a = b + 1;
    }
    if (len == 0)
        snprintf(buf, cap, "none");
}

static int device_number(int gpu, int *out, ds4_error *err)
{
    if (gpu >= 0) {
        *out = gpu;
        return 0;
    }
    const char *env = getenv("DS4_CUDA_DEVICE");
    if (env == NULL || *env == 0) {
        *out = 0;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(env, &end, 10);
    if (*end || errno || v < 0 || v > 1023)
        return ds4_error_set(err, DS4_E_ARG, "DS4_CUDA_DEVICE='%s' is not a device number",
                             env);
    *out = (int)v;
    return 0;
}

/* Chooses the layers (on[il]) and uploads them. */
static int place(model_offload *off, const model *m, int n_cpu_moe, bool *on, ds4_error *err)
{
    ds4_backend *be = off->be;
    const uint32_t n = m->hp.n_layer;
    int rc = be->memory(be, &off->free_bytes, &off->total_bytes, err);
    if (rc)
        return rc;
    off->reserve = be->host ? 0 : model_offload_reserve(off->total_bytes);
    const uint32_t first = n_cpu_moe < 0 ? 0 : (uint32_t)n_cpu_moe;
    uint64_t need = 0;
    if (n_cpu_moe >= 0 || be->host) {
        for (uint32_t il = first; il < n; il++)
            if ((on[il] = layer_supported(be, m, il))) {
                const backend_moe_layer hl = host_layer(m, il);
                need += be->moe_bytes(be, &hl);
            }
        if (!be->host && need > off->free_bytes) {
            char r[128];
            ranges(r, sizeof r, on, n, true);
            return ds4_error_set(err, DS4_E_NOMEM, "the experts of layers %s need %.2f GiB but "
                                 "%s has %.2f GiB free: raise --n-cpu-moe (now %d)", r,
                                 need / GIB, be->desc, off->free_bytes / GIB, n_cpu_moe);
        }
    } else {
        const uint64_t budget =
            off->free_bytes > off->reserve ? off->free_bytes - off->reserve : 0;
        for (uint32_t il = n; il-- > 0;) {
            if (!layer_supported(be, m, il))
                continue;
            const backend_moe_layer hl = host_layer(m, il);
            const uint64_t b = be->moe_bytes(be, &hl);
            if (need + b > budget)
                break;
            need += b;
            on[il] = true;
        }
    }
    for (uint32_t il = 0; il < n; il++) {
        if (!on[il])
            continue;
        const backend_moe_layer hl = host_layer(m, il);
        if ((rc = be->moe_upload(be, &hl, &off->w[il], err)) != 0)
            return rc;
        off->n_on++;
        off->bytes += be->moe_bytes(be, &hl);
    }
    return 0;
}

int model_offload_new_on(model_offload **out, ds4_backend *be, const model *m, int n_cpu_moe,
                         ds4_error *err)
{
    *out = NULL;
    const uint32_t n = m->hp.n_layer;
    model_offload *off = calloc(1, sizeof *off);
    bool *on = calloc(n ? n : 1, sizeof *on);
    if (off == NULL || on == NULL || (off->w = calloc(n ? n : 1, sizeof *off->w)) == NULL) {
        free(on);
        if (off)
            free(off->w);
        free(off);
        backend_free(be);
        return ds4_error_set(err, DS4_E_NOMEM, "offload: out of memory");
    }
    off->be = be;
    off->m = m;
    off->n_layer = n;
    int rc = place(off, m, n_cpu_moe, on, err);
    if (rc) {
        free(on);
        model_offload_free(off);
        return rc;
    }
    char a[128], b[128];
    ranges(a, sizeof a, on, n, true);
    ranges(b, sizeof b, on, n, false);
    if (be->host)
        snprintf(off->desc, sizeof off->desc, "experts of layers %s on the %s backend (%s), %s "
                 "on the CPU forward's own products", a, be->name, be->desc, b);
    else
        snprintf(off->desc, sizeof off->desc, "experts of layers %s on %s using %.2f GiB "
                 "(%.2f GiB free, reserve %.2f GiB), %s on CPU", a, be->desc,
                 off->bytes / GIB, off->free_bytes / GIB, off->reserve / GIB, b);
    free(on);
    *out = off;
    return 0;
}

int model_offload_new(model_offload **out, const model *m, const model_offload_opts *o,
                      ds4_error *err)
{
    *out = NULL;
    const char *name = o->backend ? o->backend : "cpu";
    ds4_backend *be = NULL;
    int dev = 0, rc;
    if (!strcmp(name, "cpu"))
        rc = backend_cpu_new(&be, err);
    else if (!strcmp(name, "cuda"))
        rc = (rc = device_number(o->gpu, &dev, err)) != 0 ? rc : backend_cuda_new(&be, dev, err);
    else
        rc = ds4_error_set(err, DS4_E_ARG, "unknown backend '%s' (cpu, cuda)", name);
    return rc ? rc : model_offload_new_on(out, be, m, o->n_cpu_moe, err);
}

void model_offload_free(model_offload *off)
{
    if (off == NULL)
        return;
    for (uint32_t il = 0; off->be && off->w && il < off->n_layer; il++)
        off->be->moe_release(off->be, off->w[il]);
    free(off->w);
    backend_free(off->be);
    free(off);
}
