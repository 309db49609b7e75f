/* linalg.c — weights as f32 for the reference forward: row dequantization of any tensor the
 * traits table can dequantize (3-D routed-expert tensors by expert index), element access,
 * matrix-vector products and RMSNorm; and model_ref_check, which tells whether a loaded
 * model is one these components can run (types, bounds, hash-table entries).
 * Numerics (the reference's choice): weight rows are dequantized with the traits table's
 * reference dequant_row, products of f32 values are exact in double and are summed in double
 * (8 interleaved partial sums, then combined in a fixed order), so a result depends only on
 * the inputs; it is rounded to f32 once. Not owned here: fast kernels (src/kernels/cpu).
 * Spec: ds4-architecture.md conventions (ne order, expert blocks, RMSNorm in double). */
#include <math.h>
#include <string.h>

#include "model/ops.h"
#include "quant/quant.h"

/* First byte of row r of expert e. */
static const uint8_t *row_ptr(const gguf_tensor *t, uint32_t e, uint32_t r)
{
    size_t rb = quant_row_bytes(t->type, t->ne[0]);
    return (const uint8_t *)t->data + ((uint64_t)e * (uint64_t)t->ne[1] + r) * rb;
}

void model_row_f32(const gguf_tensor *t, uint32_t e, uint32_t r, float *dst)
{
    const quant_traits *tr = quant_get_traits(t->type);
    tr->dequant_row(row_ptr(t, e, r), dst, t->ne[0]);
}

float model_elem(const gguf_tensor *t, uint64_t i)
{
    const quant_traits *tr = quant_get_traits(t->type);
    float buf[MODEL_CHUNK];
    uint64_t blk = i / (uint64_t)tr->block_elems;
    tr->dequant_row((const uint8_t *)t->data + blk * tr->block_bytes, buf, tr->block_elems);
    return buf[i % (uint64_t)tr->block_elems];
}

double model_dot(const float *a, const float *b, uint32_t n)
{
    double s[8] = { 0 };
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += (double)a[i + k] * (double)b[i + k];
    for (int k = 0; i < n; i++, k++)
        s[k] += (double)a[i] * (double)b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

void model_matvec_rows(const gguf_tensor *t, uint32_t e, uint32_t r0, uint32_t n,
                       const float *x, float *y)
{
    const quant_traits *tr = quant_get_traits(t->type);
    const uint32_t in = (uint32_t)t->ne[0];
    float buf[MODEL_CHUNK];
    for (uint32_t o = 0; o < n; o++) {
        const uint8_t *row = row_ptr(t, e, r0 + o);
        double acc = 0.0;
        /* A chunk of MODEL_CHUNK elements is a whole number of blocks of every type. */
        for (uint32_t c = 0; c < in; c += MODEL_CHUNK) {
            uint32_t len = in - c < MODEL_CHUNK ? in - c : MODEL_CHUNK;
            tr->dequant_row(row + quant_row_bytes(t->type, c), buf, len);
            acc += model_dot(buf, x + c, len);
        }
        y[o] = (float)acc;
    }
}

void model_matvec(const gguf_tensor *t, uint32_t e, const float *x, float *y)
{
    model_matvec_rows(t, e, 0, (uint32_t)t->ne[1], x, y);
}

void model_rmsnorm(const float *x, uint32_t n, float eps, const gguf_tensor *w, float *y)
{
    double ss = 0.0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)x[i] * (double)x[i];
    const float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    if (w == NULL) {
        for (uint32_t i = 0; i < n; i++)
            y[i] = x[i] * scale;
        return;
    }
    const quant_traits *tr = quant_get_traits(w->type);
    float buf[MODEL_CHUNK];
    for (uint32_t c = 0; c < n; c += MODEL_CHUNK) {
        uint32_t len = n - c < MODEL_CHUNK ? n - c : MODEL_CHUNK;
        tr->dequant_row((const uint8_t *)w->data + quant_row_bytes(w->type, c), buf, len);
        for (uint32_t i = 0; i < len; i++)
            y[c + i] = (x[c + i] * scale) * buf[i];
    }
}

static int check_one(const gguf_tensor *t, ds4_error *err)
{
    if (t == NULL)
        return 0;
    const quant_traits *tr = quant_get_traits(t->type);
    if (tr == NULL || tr->dequant_row == NULL || tr->block_elems > MODEL_CHUNK ||
        MODEL_CHUNK % tr->block_elems != 0)
        return ds4_error_set(err, DS4_E_TYPE, "%s: type %s has no reference dequantizer",
                             t->name, tr ? tr->name : "?");
    return 0;
}

int model_ref_check(const model *m, ds4_error *err)
{
    const model_weights *w = &m->w;
    const model_hparams *hp = &m->hp;
    if (hp->n_hc == 0 || hp->n_hc > HC_MAX_STREAMS)
        return ds4_error_set(err, DS4_E_RANGE, "model: %u hyper-connection streams (1..%d)",
                             hp->n_hc, HC_MAX_STREAMS);
    if (hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim || hp->n_rot / 2 > ROPE_MAX_PAIRS ||
        (hp->indexer_head_dim && hp->n_rot > hp->indexer_head_dim))
        return ds4_error_set(err, DS4_E_RANGE, "model: rope width %u (head dims %u, %u)",
                             hp->n_rot, hp->head_dim, hp->indexer_head_dim);
    if (hp->indexer_head_dim & (hp->indexer_head_dim - 1))
        return ds4_error_set(err, DS4_E_RANGE, "model: indexer head dim %u is not a power of "
                             "two (Hadamard transform)", hp->indexer_head_dim);
    const gguf_tensor *globals[] = { w->token_embd, w->output_hc_fn, w->output_hc_base,
                                     w->output_hc_scale, w->output_norm, w->output };
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++) {
        if (globals[i] == NULL)
            return ds4_error_set(err, DS4_E_NOTFOUND, "model: a global tensor is missing");
        int rc = check_one(globals[i], err);
        if (rc)
            return rc;
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *L = &w->layers[il];
        const gguf_tensor *lt[] = {
            L->hc_attn_fn, L->hc_attn_scale, L->hc_attn_base, L->attn_norm, L->attn_q_a,
            L->attn_q_a_norm, L->attn_q_b, L->attn_kv, L->attn_kv_a_norm, L->attn_sinks,
            L->attn_output_a, L->attn_output_b, L->attn_compressor_ape, L->attn_compressor_kv,
            L->attn_compressor_gate, L->attn_compressor_norm, L->indexer_attn_q_b,
            L->indexer_proj, L->indexer_compressor_ape, L->indexer_compressor_kv,
            L->indexer_compressor_gate, L->indexer_compressor_norm, L->hc_ffn_fn,
            L->hc_ffn_scale, L->hc_ffn_base, L->ffn_norm, L->ffn_gate_inp, L->exp_probs_b,
            L->ffn_gate_tid2eid, L->ffn_gate_exps, L->ffn_up_exps, L->ffn_down_exps,
            L->ffn_gate_shexp, L->ffn_up_shexp, L->ffn_down_shexp,
        };
        for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++) {
            int rc = check_one(lt[i], err);
            if (rc)
                return rc;
        }
        const gguf_tensor *t = L->ffn_gate_tid2eid;
        if (model_is_hash_layer(hp, il) && (t == NULL || t->type != DS4_TYPE_I32))
            return ds4_error_set(err, DS4_E_TYPE, "blk.%u: hash layer without an I32 tid2eid", il);
        for (int64_t i = 0; t && i < t->n_elems; i++) {
            int32_t e;
            memcpy(&e, (const uint8_t *)t->data + 4 * i, 4);
            if (e < 0 || (uint32_t)e >= hp->n_expert)
                return ds4_error_set(err, DS4_E_RANGE, "%s: entry %lld is expert %d of %u",
                                     t->name, (long long)i, e, hp->n_expert);
        }
    }
    return 0;
}
