/* gguf_fuzz.c — libFuzzer target for the GGUF reader: opens the input from memory, then walks
 * every pair with the typed getters and every tensor with the lookups (dequantizing the first
 * row when ds4 can), and finally rewrites an accepted file with the writer, which the reader
 * must accept again with identical bytes on a second rewrite. Any broken invariant aborts so
 * the fuzzer reports it. Replayed over fuzz/corpus/gguf/ by `make test-fuzz` (replay_main.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

#define MAX_ROW 65536       /* longest first row the harness dequantizes */
#define MAX_ARR_WALK 4096   /* array elements read back per pair */
#define MAX_REWRITE (64u << 20)  /* larger rewrites (huge general.alignment) are skipped */

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "gguf_fuzz: invariant broken: %s\n", what);
        abort();
    }
}

/* Reads the pair back through the getter of its own type and through the converting ones. */
static void walk_kv(const gguf_file *f, int64_t i)
{
    const gguf_kv *kv = gguf_kv_at(f, i);
    ds4_error err;
    check(kv && gguf_find_key(f, kv->key) == i, "find_key(key of pair i) == i");
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        uint64_t u64; int64_t i64; float f32; double f64; bool b;
    } v;
    int rc = 0;
    switch (kv->type) {
    case GGUF_TYPE_U8: rc = gguf_get_u8(f, kv->key, &v.u8, &err); break;
    case GGUF_TYPE_I8: rc = gguf_get_i8(f, kv->key, &v.i8, &err); break;
    case GGUF_TYPE_U16: rc = gguf_get_u16(f, kv->key, &v.u16, &err); break;
    case GGUF_TYPE_I16: rc = gguf_get_i16(f, kv->key, &v.i16, &err); break;
    case GGUF_TYPE_U32: rc = gguf_get_u32(f, kv->key, &v.u32, &err); break;
    case GGUF_TYPE_I32: rc = gguf_get_i32(f, kv->key, &v.i32, &err); break;
    case GGUF_TYPE_U64: rc = gguf_get_u64(f, kv->key, &v.u64, &err); break;
    case GGUF_TYPE_I64: rc = gguf_get_i64(f, kv->key, &v.i64, &err); break;
    case GGUF_TYPE_F32: rc = gguf_get_f32(f, kv->key, &v.f32, &err); break;
    case GGUF_TYPE_F64: rc = gguf_get_f64(f, kv->key, &v.f64, &err); break;
    case GGUF_TYPE_BOOL: rc = gguf_get_bool(f, kv->key, &v.b, &err); break;
    case GGUF_TYPE_STR: {
        const char *s;
        uint64_t len;
        rc = gguf_get_str(f, kv->key, &s, &len, &err);
        check(rc || (len == kv->v.str.len && s[len] == 0), "string NUL-terminated at len");
        break;
    }
    case GGUF_TYPE_ARR: {
        const gguf_kv *a;
        rc = gguf_get_arr(f, kv->key, &a, &err);
        check(rc || a == kv, "get_arr returns the pair");
        for (uint64_t j = 0; j < kv->arr_count && j < MAX_ARR_WALK; j++) {
            double d;
            int64_t n;
            const gguf_str *s;
            if (kv->arr_type == GGUF_TYPE_STR)
                check(!gguf_arr_str(f, kv, j, &s, &err) && s->s[s->len] == 0, "arr_str");
            else if (kv->arr_type != GGUF_TYPE_BOOL)
                check(!gguf_arr_f64(f, kv, j, &d, &err), "arr_f64 on a numeric array");
            int r2 = gguf_arr_i64(f, kv, j, &n, &err);
            check(r2 == 0 || r2 == DS4_E_TYPE || r2 == DS4_E_RANGE, "arr_i64 code");
        }
        double d;
        check(gguf_arr_f64(f, kv, kv->arr_count, &d, &err) == DS4_E_RANGE, "index past end");
        break;
    }
    default:
        check(0, "value type in range");
    }
    check(rc == 0, "typed getter of the stored type succeeds");
    double d;
    uint64_t u;
    rc = gguf_get_f64_any(f, kv->key, &d, &err);
    check(rc == 0 || rc == DS4_E_TYPE, "f64_any code");
    rc = gguf_get_u64_any(f, kv->key, &u, &err);
    check(rc == 0 || rc == DS4_E_TYPE || rc == DS4_E_RANGE, "u64_any code");
    rc = gguf_get_u32(f, kv->key, &v.u32, &err);
    check((rc == 0) == (kv->type == GGUF_TYPE_U32), "get_u32 matches the type");
}

static void walk_tensor(const gguf_file *f, int64_t i, float *row)
{
    const gguf_tensor *t = gguf_tensor_at(f, i);
    const uint8_t *base = gguf_base(f), *p = t->data;
    check(gguf_find_tensor(f, t->name) == t, "find_tensor(name of tensor i) == tensor i");
    check(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS, "n_dims in range");
    check(t->offset % gguf_alignment(f) == 0, "offset aligned");
    check(p >= base + gguf_data_offset(f) && t->nbytes <= gguf_size(f) &&
          (size_t)(p - base) <= gguf_size(f) - t->nbytes, "data inside the file");
    const quant_traits *tr = quant_get_traits(t->type);
    check(tr != NULL, "known type");
    if (tr->dequant_row && t->n_elems > 0 && t->ne[0] <= MAX_ROW)
        tr->dequant_row(t->data, row, t->ne[0]);
}

/* An accepted file rewritten by the writer must read back and rewrite to the same bytes.
 * Returns false (nothing written) when the output would exceed MAX_REWRITE. */
static bool rewrite(const gguf_file *f, void **out, size_t *size)
{
    gguf_writer *w = gguf_writer_new();
    check(w != NULL, "writer");
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        check(gguf_writer_add_kv(w, gguf_kv_at(f, i)) == 0, "writer accepts every pair");
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        check(!gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data),
              "writer accepts every tensor");
    }
    ds4_error err;
    if (gguf_writer_size(w) > MAX_REWRITE) {
        gguf_writer_free(w);
        return false;
    }
    check(gguf_writer_write_memory(w, out, size, &err) == 0, "writer writes");
    gguf_writer_free(w);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f;
    ds4_error err;
    int rc = gguf_open_memory(&f, data, size, &err);
    if (rc) {
        check(f == NULL && rc < 0 && strncmp(err.msg, "<memory>: ", 10) == 0,
              "failure: NULL file, negative code, message naming the input");
        return 0;
    }
    static float row[MAX_ROW];
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        walk_kv(f, i);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++)
        walk_tensor(f, i, row);
    check(!gguf_kv_at(f, gguf_kv_count(f)) && !gguf_tensor_at(f, gguf_tensor_count(f)),
          "at(count) is NULL");

    void *a = NULL, *b = NULL;
    size_t na, nb;
    gguf_file *g;
    if (rewrite(f, &a, &na)) {
        check(gguf_open_memory(&g, a, na, &err) == 0, "reader accepts the rewritten file");
        check(gguf_kv_count(g) == gguf_kv_count(f) &&
              gguf_tensor_count(g) == gguf_tensor_count(f), "rewritten counts");
        check(rewrite(g, &b, &nb) && na == nb && memcmp(a, b, na) == 0,
              "second rewrite gives identical bytes");
        gguf_close(g);
        free(a);
        free(b);
    }
    gguf_close(f);
    return 0;
}
