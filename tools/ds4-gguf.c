/* ds4-gguf.c — inspect and rewrite GGUF files with ds4's own reader and writer:
 *   ds4-gguf info FILE            metadata (arrays abbreviated, with their count) + tensor table
 *   ds4-gguf dump FILE TENSOR     dequantized values, one per line, "%.9g" (exact for f32)
 *   ds4-gguf copy IN OUT          every pair and tensor of IN, in order, written to OUT
 *   ds4-gguf model FILE           loads FILE as a DS4 model (model_load: every key and tensor
 *                                 validated) and prints its hyperparameters and layer kinds
 * Bad arguments or files: one line on stderr naming file, offset and problem; exit code 2.
 * Owns printing only; parsing and validation are src/gguf/ and src/model/, dequantizers
 * src/quant/. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "model/names.h"

#define ARR_SHOWN 8        /* array elements printed by info before "..." */
#define STR_SHOWN 200      /* string bytes printed by info before "..." */

static int usage(void)
{
    fprintf(stderr, "usage: ds4-gguf info FILE | dump FILE TENSOR | copy IN OUT | model FILE\n");
    return 2;
}

static int fail(const ds4_error *err)
{
    fprintf(stderr, "ds4-gguf: %s\n", err->msg);
    return 2;
}

/* ---- info ------------------------------------------------------------------------------- */

/* Prints a string quoted, escaping quotes, backslashes and control bytes. */
static void print_str(const gguf_str *s, uint64_t max)
{
    putchar('"');
    for (uint64_t i = 0; i < s->len && i < max; i++) {
        unsigned char c = (unsigned char)s->s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (s->len > max)
        printf("...(%" PRIu64 " bytes)", s->len);
}

/* Prints one fixed-size value of type t stored at p. */
static void print_num(gguf_type t, const void *p)
{
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        float f32; uint64_t u64; int64_t i64; double f64;
    } v;
    memcpy(&v, p, gguf_type_size(t));
    switch (t) {
    case GGUF_TYPE_U8: printf("%u", v.u8); break;
    case GGUF_TYPE_I8: printf("%d", v.i8); break;
    case GGUF_TYPE_U16: printf("%u", v.u16); break;
    case GGUF_TYPE_I16: printf("%d", v.i16); break;
    case GGUF_TYPE_U32: printf("%" PRIu32, v.u32); break;
    case GGUF_TYPE_I32: printf("%" PRId32, v.i32); break;
    case GGUF_TYPE_F32: printf("%.9g", v.f32); break;
    case GGUF_TYPE_BOOL: fputs(v.u8 ? "true" : "false", stdout); break;
    case GGUF_TYPE_U64: printf("%" PRIu64, v.u64); break;
    case GGUF_TYPE_I64: printf("%" PRId64, v.i64); break;
    case GGUF_TYPE_F64: printf("%.17g", v.f64); break;
    default: fputs("?", stdout); break;
    }
}

static void print_kv(const gguf_kv *kv, int width)
{
    char type[32];
    if (kv->type == GGUF_TYPE_ARR)
        snprintf(type, sizeof type, "arr[%s]", gguf_type_name(kv->arr_type));
    else
        snprintf(type, sizeof type, "%s", gguf_type_name(kv->type));
    printf("  %-*s  %-9s  ", width, kv->key, type);
    if (kv->type == GGUF_TYPE_STR) {
        print_str(&kv->v.str, STR_SHOWN);
    } else if (kv->type == GGUF_TYPE_ARR) {
        printf("n=%" PRIu64 " [", kv->arr_count);
        size_t esz = gguf_type_size(kv->arr_type);
        for (uint64_t j = 0; j < kv->arr_count && j < ARR_SHOWN; j++) {
            if (j)
                fputs(", ", stdout);
            if (kv->arr_type == GGUF_TYPE_STR)
                print_str(&kv->v.arr_str[j], 40);
            else
                print_num(kv->arr_type, (const uint8_t *)kv->v.arr_data + j * esz);
        }
        fputs(kv->arr_count > ARR_SHOWN ? ", ...]" : "]", stdout);
    } else {
        print_num(kv->type, &kv->v);
    }
    putchar('\n');
}

static int cmd_info(const char *path)
{
    gguf_file *f;
    ds4_error err;
    if (gguf_open(&f, path, &err))
        return fail(&err);
    printf("file       %s\n", path);
    printf("size       %zu bytes\n", gguf_size(f));
    printf("version    %u\n", GGUF_VERSION);
    printf("alignment  %u\n", gguf_alignment(f));
    printf("data       offset %" PRIu64 "\n", gguf_data_offset(f));
    int64_t n_kv = gguf_kv_count(f), n_t = gguf_tensor_count(f);
    int width = 3;
    for (int64_t i = 0; i < n_kv; i++) {
        int n = (int)strlen(gguf_kv_at(f, i)->key);
        width = n > width ? (n < 60 ? n : 60) : width;
    }
    printf("metadata   %" PRId64 " pairs\n", n_kv);
    for (int64_t i = 0; i < n_kv; i++)
        print_kv(gguf_kv_at(f, i), width);

    width = 4;
    for (int64_t i = 0; i < n_t; i++) {
        int n = (int)strlen(gguf_tensor_at(f, i)->name);
        width = n > width ? (n < 60 ? n : 60) : width;
    }
    printf("tensors    %" PRId64 "\n", n_t);
    printf("  %-*s  %-8s  %-28s  %14s  %12s\n", width, "name", "type", "shape", "offset",
           "bytes");
    for (int64_t i = 0; i < n_t; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[200];
        int n = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        snprintf(shape + n, sizeof shape - (size_t)n, "]");
        printf("  %-*s  %-8s  %-28s  %14" PRIu64 "  %12" PRIu64 "\n", width, t->name,
               quant_get_traits(t->type)->name, shape, gguf_data_offset(f) + t->offset,
               t->nbytes);
    }
    gguf_close(f);
    return 0;
}

/* ---- dump ------------------------------------------------------------------------------- */

static int cmd_dump(const char *path, const char *name)
{
    gguf_file *f;
    ds4_error err;
    const gguf_tensor *t;
    if (gguf_open(&f, path, &err))
        return fail(&err);
    if (gguf_get_tensor(f, name, &t, &err)) {
        gguf_close(f);
        return fail(&err);
    }
    const quant_traits *tr = quant_get_traits(t->type);
    if (!tr->dequant_row) {
        fprintf(stderr, "ds4-gguf: %s: offset %" PRIu64 ": tensor '%s' has type %s, which ds4"
                " cannot dequantize\n", path, t->info_offset, name, tr->name);
        gguf_close(f);
        return 2;
    }
    int64_t ne0 = t->ne[0], rows = ne0 ? t->n_elems / ne0 : 0;
    uint64_t row_bytes = rows ? t->nbytes / (uint64_t)rows : 0;
    float *buf = malloc((size_t)(ne0 ? ne0 : 1) * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "ds4-gguf: %s: tensor '%s': out of memory for a row of %" PRId64 "\n",
                path, name, ne0);
        gguf_close(f);
        return 2;
    }
    for (int64_t r = 0; r < rows; r++) {
        tr->dequant_row((const uint8_t *)t->data + (uint64_t)r * row_bytes, buf, ne0);
        for (int64_t i = 0; i < ne0; i++)
            printf("%.9g\n", buf[i]);
    }
    free(buf);
    gguf_close(f);
    return fflush(stdout) == 0 ? 0 : 2;
}

/* ---- copy ------------------------------------------------------------------------------- */

static int cmd_copy(const char *in, const char *out)
{
    gguf_file *f;
    ds4_error err;
    if (gguf_open(&f, in, &err))
        return fail(&err);
    gguf_writer *w = gguf_writer_new();
    if (!w) {
        fprintf(stderr, "ds4-gguf: %s: out of memory\n", out);
        gguf_close(f);
        return 2;
    }
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        gguf_writer_add_kv(w, gguf_kv_at(f, i));
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    int rc = gguf_writer_write(w, out, &err);  /* reports the first add error, if any */
    gguf_writer_free(w);
    gguf_close(f);
    return rc ? fail(&err) : 0;
}

/* ---- model ------------------------------------------------------------------------------ */

static const char *tname(const gguf_tensor *t)
{
    return t ? quant_get_traits(t->type)->name : "-";
}

static int cmd_model(const char *path)
{
    model *m;
    ds4_error err;
    if (model_load(&m, path, &err))
        return fail(&err);
    const model_hparams *hp = &m->hp;
    printf("file       %s\n", path);
    printf("dialect    %s\n", model_dialect_name(m->dialect));
    printf("layers     %u (%u hash-routed)%s\n", hp->n_layer, hp->n_hash_layer,
           hp->n_nextn_layer ? " + nextn blocks (ignored)" : "");
    printf("embedding  %u, vocab %u, context %" PRIu64 "\n", hp->n_embd, hp->n_vocab,
           hp->context_length);
    printf("attention  %u heads x %u (rope %u), kv heads %u, q rank %u, output %u groups x %u,"
           " window %u\n", hp->n_head, hp->head_dim, hp->n_rot, hp->n_head_kv, hp->q_lora_rank,
           hp->n_out_group, hp->o_lora_rank, hp->n_swa);
    printf("indexer    %u heads x %u, top-k %u\n", hp->n_indexer_head, hp->indexer_head_dim,
           hp->indexer_top_k);
    printf("experts    %u routed (%u used), %u shared, ff %u, weights x%g%s\n", hp->n_expert,
           hp->n_expert_used, hp->n_expert_shared, hp->n_ff_exp,
           (double)hp->expert_weights_scale, hp->expert_weights_norm ? " normalized" : "");
    printf("hc         %u streams, %u sinkhorn iterations, eps %g; rms eps %g\n", hp->n_hc,
           hp->hc_sinkhorn_iters, (double)hp->hc_eps, (double)hp->rms_eps);
    printf("rope       base %g; compressed base %g, yarn factor %g, orig ctx %" PRIu64
           ", beta %g/%g\n", (double)hp->rope_freq_base, (double)hp->rope_compress_freq_base,
           (double)hp->rope_scaling_factor, hp->rope_orig_ctx, (double)hp->rope_beta_fast,
           (double)hp->rope_beta_slow);
    printf("globals    token_embd %s, output %s, output_hc_fn %s\n", tname(m->w.token_embd),
           tname(m->w.output), tname(m->w.output_hc_fn));
    printf("  layer  ratio  routing  indexer  clamp  attn_q_a  gate/up   down      shexp\n");
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->w.layers[il];
        printf("  %5u  %5u  %-7s  %-7s  %5g  %-8s  %-8s  %-8s  %s\n", il, hp->compress_ratio[il],
               model_is_hash_layer(hp, il) ? "hash" : "top-k", L->indexer_proj ? "yes" : "no",
               (double)hp->swiglu_clamp[il], tname(L->attn_q_a), tname(L->ffn_gate_exps),
               tname(L->ffn_down_exps), tname(L->ffn_gate_shexp));
    }
    printf("tensors    %" PRId64 " (%" PRId64 " ignored: not part of the model)\n",
           gguf_tensor_count(m->file), m->n_ignored);
    model_free(m);
    return fflush(stdout) == 0 ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "info") == 0)
        return cmd_info(argv[2]);
    if (argc == 4 && strcmp(argv[1], "dump") == 0)
        return cmd_dump(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "model") == 0)
        return cmd_model(argv[2]);
    if (argc == 4 && strcmp(argv[1], "copy") == 0)
        return cmd_copy(argv[2], argv[3]);
    return usage();
}
