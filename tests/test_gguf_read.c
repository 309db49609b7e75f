/* test_gguf_read.c — the GGUF reader against hand-assembled files (tests/gguf_bytes.h, no
 * help from the writer): a valid file read back field by field; every malformed input the
 * reader must reject, each with a clean error naming file, offset and problem; truncation at
 * every byte and corruption of every byte; injected allocation and system-call failures at
 * every call (leaks are caught by the ASan build); typed accessors and their type errors.
 * Implements style.md §9 kinds 4 (identity), 6 (corpus-like inputs) and 7 (injected failures). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "gguf_bytes.h"
#include "test_util.h"

/* ---- a small valid file, assembled by hand ----------------------------------------------- */

#define VALID_N_KV 18
#define VALID_N_TENSORS 3

/* Builds the reference file; *data_end gets the end of the last tensor's data. */
static void make_valid(gb *b, size_t *data_end)
{
    gb_header(b, 3, VALID_N_TENSORS, VALID_N_KV);
    gb_str(b, "general.architecture"); gb_u32(b, 8); gb_str(b, "deepseek4");
    gb_str(b, "general.alignment"); gb_u32(b, 4); gb_u32(b, 32);
    gb_str(b, "k.u8"); gb_u32(b, 0); gb_u8(b, 250);
    gb_str(b, "k.i8"); gb_u32(b, 1); gb_u8(b, (uint8_t)-7);
    gb_str(b, "k.u16"); gb_u32(b, 2); { uint16_t v = 65000; gb_bytes(b, &v, 2); }
    gb_str(b, "k.i16"); gb_u32(b, 3); { int16_t v = -32000; gb_bytes(b, &v, 2); }
    gb_str(b, "k.u32"); gb_u32(b, 4); gb_u32(b, 4000000000u);
    gb_str(b, "k.i32"); gb_u32(b, 5); gb_u32(b, (uint32_t)-2000000000);
    gb_str(b, "k.f32"); gb_u32(b, 6); { float v = 1.5f; gb_bytes(b, &v, 4); }
    gb_str(b, "k.bool"); gb_u32(b, 7); gb_u8(b, 1);
    gb_str(b, "k.u64"); gb_u32(b, 10); gb_u64(b, UINT64_MAX);
    gb_str(b, "k.i64"); gb_u32(b, 11); gb_u64(b, (uint64_t)INT64_MIN);
    gb_str(b, "k.f64"); gb_u32(b, 12); { double v = -0.1; gb_bytes(b, &v, 8); }
    gb_str(b, "k.arr_u32"); gb_u32(b, 9); gb_u32(b, 4); gb_u64(b, 3);
    gb_u32(b, 1); gb_u32(b, 2); gb_u32(b, 3000000000u);
    gb_str(b, "k.arr_str"); gb_u32(b, 9); gb_u32(b, 8); gb_u64(b, 3);
    gb_str(b, "a"); gb_str(b, "bc"); gb_str(b, "");
    gb_str(b, "k.arr_empty"); gb_u32(b, 9); gb_u32(b, 1); gb_u64(b, 0);
    gb_str(b, "k.arr_bool"); gb_u32(b, 9); gb_u32(b, 7); gb_u64(b, 2); gb_u8(b, 0); gb_u8(b, 1);
    gb_str(b, "k.arr_u64"); gb_u32(b, 9); gb_u32(b, 10); gb_u64(b, 1); gb_u64(b, UINT64_MAX);
    const uint64_t ne_f32[] = {8}, ne_q8[] = {32, 2}, ne_q6[] = {256};
    gb_tensor(b, "t.f32", 1, ne_f32, DS4_TYPE_F32, 0);        /* 32 bytes */
    gb_tensor(b, "t.q8_0", 2, ne_q8, DS4_TYPE_Q8_0, 32);      /* 68 bytes */
    gb_tensor(b, "t.q6_K", 1, ne_q6, DS4_TYPE_Q6_K, 128);     /* 210 bytes, size-only type */
    gb_pad(b, 32);
    size_t start = b->n;
    for (int i = 0; i < 8; i++) {
        float v = (float)i - 2.5f;
        gb_bytes(b, &v, 4);
    }
    for (int i = 0; i < 68; i++)
        gb_u8(b, (uint8_t)(i * 7));
    gb_pad(b, 32);
    for (int i = 0; i < 210; i++)
        gb_u8(b, (uint8_t)(i ^ 0x5a));
    *data_end = b->n;
    (void)start;
    gb_pad(b, 32);
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* Opens size bytes from an exact-size heap copy (so ASan sees any over-read). */
static int open_copy(gguf_file **f, const void *p, size_t size, ds4_error *err)
{
    void *copy = malloc(size ? size : 1);
    if (size)
        memcpy(copy, p, size);
    int rc = gguf_open_memory(f, copy, size, err);
    gguf_close(*f);
    *f = NULL;
    free(copy);
    return rc;
}

/* The bytes must be rejected with code, and the message must contain every needle. */
static void expect_reject(const char *name, const gb *b, int code, const char *needle1,
                          const char *needle2)
{
    gguf_file *f = (gguf_file *)1;
    ds4_error err = {0};
    int rc = open_copy(&f, b->p, b->n, &err);
    bool ok = rc == code && f == NULL && strstr(err.msg, "<memory>: ") &&
              (!needle1 || strstr(err.msg, needle1)) && (!needle2 || strstr(err.msg, needle2));
    if (!t_check(ok, "reject %s", name))
        printf("      rc=%d want %d, message: %s\n", rc, code, err.msg);
}

static bool has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

/* ---- the valid file --------------------------------------------------------------------- */

static void test_valid(void)
{
    gb b = {0};
    size_t data_end;
    make_valid(&b, &data_end);
    gguf_file *f;
    ds4_error err = {0};
    int rc = gguf_open_memory(&f, b.p, b.n, &err);
    if (!t_check(rc == 0, "open hand-built valid file (%zu bytes)", b.n)) {
        printf("      %s\n", err.msg);
        gb_free(&b);
        return;
    }
    t_check(gguf_kv_count(f) == VALID_N_KV && gguf_tensor_count(f) == VALID_N_TENSORS,
            "counts: %lld pairs, %lld tensors", (long long)gguf_kv_count(f),
            (long long)gguf_tensor_count(f));
    t_check(gguf_alignment(f) == 32 && gguf_data_offset(f) % 32 == 0 &&
            gguf_size(f) == b.n && gguf_base(f) == b.p && strcmp(gguf_path(f), "<memory>") == 0,
            "file facts (alignment, data offset %llu, size, base, path)",
            (unsigned long long)gguf_data_offset(f));

    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
    uint64_t u64; int64_t i64; float f32; double f64; bool bo; const char *s; uint64_t len;
    t_check(!gguf_get_u8(f, "k.u8", &u8, &err) && u8 == 250, "get_u8");
    t_check(!gguf_get_i8(f, "k.i8", &i8, &err) && i8 == -7, "get_i8");
    t_check(!gguf_get_u16(f, "k.u16", &u16, &err) && u16 == 65000, "get_u16");
    t_check(!gguf_get_i16(f, "k.i16", &i16, &err) && i16 == -32000, "get_i16");
    t_check(!gguf_get_u32(f, "k.u32", &u32, &err) && u32 == 4000000000u, "get_u32");
    t_check(!gguf_get_i32(f, "k.i32", &i32, &err) && i32 == -2000000000, "get_i32");
    t_check(!gguf_get_f32(f, "k.f32", &f32, &err) && f32 == 1.5f, "get_f32");
    t_check(!gguf_get_bool(f, "k.bool", &bo, &err) && bo, "get_bool");
    t_check(!gguf_get_u64(f, "k.u64", &u64, &err) && u64 == UINT64_MAX, "get_u64");
    t_check(!gguf_get_i64(f, "k.i64", &i64, &err) && i64 == INT64_MIN, "get_i64");
    t_check(!gguf_get_f64(f, "k.f64", &f64, &err) && f64 == -0.1, "get_f64");
    t_check(!gguf_get_str(f, "general.architecture", &s, &len, &err) &&
            strcmp(s, "deepseek4") == 0 && len == 9, "get_str");

    /* type mismatches and missing keys */
    rc = gguf_get_u32(f, "k.i32", &u32, &err);
    t_check(rc == DS4_E_TYPE && has(err.msg, "k.i32") && has(err.msg, "i32") &&
            has(err.msg, "expected u32") && has(err.msg, "offset"),
            "get_u32 on an i32 is DS4_E_TYPE: %s", err.msg);
    rc = gguf_get_str(f, "k.arr_str", &s, NULL, &err);
    t_check(rc == DS4_E_TYPE && has(err.msg, "array of str"), "get_str on an array: %s",
            err.msg);
    rc = gguf_get_f32(f, "no.such.key", &f32, &err);
    t_check(rc == DS4_E_NOTFOUND && has(err.msg, "no.such.key"), "missing key: %s", err.msg);
    t_check(gguf_find_key(f, "k.f64") == 12 && gguf_find_key(f, "k.f6") == -1 &&
            gguf_find_key(f, NULL) == -1, "find_key");
    t_check(gguf_kv_at(f, -1) == NULL && gguf_kv_at(f, VALID_N_KV) == NULL &&
            strcmp(gguf_kv_at(f, 2)->key, "k.u8") == 0, "kv_at bounds");

    /* converting getters */
    bool conv = !gguf_get_f64_any(f, "k.u32", &f64, &err) && f64 == 4000000000.0 &&
                !gguf_get_f64_any(f, "k.i8", &f64, &err) && f64 == -7.0 &&
                !gguf_get_f64_any(f, "k.f32", &f64, &err) && f64 == 1.5 &&
                !gguf_get_f64_any(f, "k.f64", &f64, &err) && f64 == -0.1 &&
                !gguf_get_f64_any(f, "k.u64", &f64, &err) && f64 == 18446744073709551616.0;
    t_check(conv, "get_f64_any on u32, i8, f32, f64, u64");
    t_check(gguf_get_f64_any(f, "k.bool", &f64, &err) == DS4_E_TYPE &&
            gguf_get_f64_any(f, "general.architecture", &f64, &err) == DS4_E_TYPE &&
            gguf_get_f64_any(f, "k.arr_u32", &f64, &err) == DS4_E_TYPE,
            "get_f64_any rejects bool, str, arr");
    t_check(!gguf_get_u64_any(f, "k.u16", &u64, &err) && u64 == 65000 &&
            !gguf_get_u64_any(f, "k.u64", &u64, &err) && u64 == UINT64_MAX &&
            !gguf_get_u64_any(f, "k.u8", &u64, &err) && u64 == 250,
            "get_u64_any on u16, u64, u8");
    rc = gguf_get_u64_any(f, "k.i32", &u64, &err);
    t_check(rc == DS4_E_RANGE && has(err.msg, "negative"), "get_u64_any on a negative i32: %s",
            err.msg);
    t_check(gguf_get_u64_any(f, "k.f32", &u64, &err) == DS4_E_TYPE, "get_u64_any rejects f32");
    t_check(!gguf_get_f64_any(f, "k.i16", &f64, &err) && f64 == -32000.0 &&
            !gguf_get_f64_any(f, "k.i64", &f64, &err) && f64 == -9223372036854775808.0 &&
            !gguf_get_f64_any(f, "k.u16", &f64, &err) && f64 == 65000.0,
            "get_f64_any on i16, i64, u16");
    t_check(gguf_get_str(f, "nope", &s, NULL, &err) == DS4_E_NOTFOUND &&
            gguf_get_f64_any(f, "nope", &f64, &err) == DS4_E_NOTFOUND &&
            gguf_get_u64_any(f, "nope", &u64, &err) == DS4_E_NOTFOUND &&
            gguf_get_arr(f, "nope", &(const gguf_kv *){0}, &err) == DS4_E_NOTFOUND &&
            gguf_get_bool(f, NULL, &bo, &err) == DS4_E_NOTFOUND,
            "every getter reports a missing key");

    /* arrays */
    const gguf_kv *kv;
    const gguf_str *gs;
    t_check(!gguf_get_arr(f, "k.arr_u32", &kv, &err) && kv->arr_type == GGUF_TYPE_U32 &&
            kv->arr_count == 3 && !gguf_arr_i64(f, kv, 2, &i64, &err) && i64 == 3000000000 &&
            !gguf_arr_f64(f, kv, 0, &f64, &err) && f64 == 1.0, "u32 array elements");
    rc = gguf_arr_i64(f, kv, 3, &i64, &err);
    t_check(rc == DS4_E_RANGE && has(err.msg, "index 3"), "array index out of range: %s",
            err.msg);
    t_check(gguf_arr_str(f, kv, 0, &gs, &err) == DS4_E_TYPE, "arr_str on a u32 array");
    t_check(!gguf_get_arr(f, "k.arr_str", &kv, &err) && kv->arr_count == 3 &&
            !gguf_arr_str(f, kv, 1, &gs, &err) && strcmp(gs->s, "bc") == 0 && gs->len == 2 &&
            !gguf_arr_str(f, kv, 2, &gs, &err) && gs->len == 0 && gs->s[0] == 0,
            "string array elements");
    t_check(gguf_arr_f64(f, kv, 0, &f64, &err) == DS4_E_TYPE &&
            gguf_arr_i64(f, kv, 0, &i64, &err) == DS4_E_TYPE, "numeric getters on strings");
    t_check(!gguf_get_arr(f, "k.arr_empty", &kv, &err) && kv->arr_count == 0 &&
            kv->arr_type == GGUF_TYPE_I8 && gguf_arr_i64(f, kv, 0, &i64, &err) == DS4_E_RANGE,
            "empty array");
    t_check(!gguf_get_arr(f, "k.arr_bool", &kv, &err) &&
            gguf_arr_f64(f, kv, 1, &f64, &err) == DS4_E_TYPE &&
            ((const uint8_t *)kv->v.arr_data)[1] == 1, "bool array (raw data, not a number)");
    t_check(!gguf_get_arr(f, "k.arr_u64", &kv, &err) &&
            gguf_arr_i64(f, kv, 0, &i64, &err) == DS4_E_RANGE, "u64 element above INT64_MAX");
    t_check(gguf_get_arr(f, "k.u8", &kv, &err) == DS4_E_TYPE &&
            gguf_arr_f64(f, gguf_kv_at(f, 2), 0, &f64, &err) == DS4_E_TYPE &&
            gguf_arr_i64(f, gguf_kv_at(f, 2), 0, &i64, &err) == DS4_E_TYPE &&
            gguf_arr_str(f, gguf_kv_at(f, 2), 0, &gs, &err) == DS4_E_TYPE,
            "array getters on a scalar");

    /* tensors */
    const gguf_tensor *t = gguf_find_tensor(f, "t.q8_0");
    t_check(t && t->type == DS4_TYPE_Q8_0 && t->n_dims == 2 && t->ne[0] == 32 && t->ne[1] == 2 &&
            t->ne[2] == 1 && t->ne[7] == 1 && t->n_elems == 64 && t->nbytes == 68 &&
            t->offset == 32 && (const uint8_t *)t->data == b.p + gguf_data_offset(f) + 32 &&
            ((const uint8_t *)t->data)[1] == 7, "tensor t.q8_0: shape, size, data");
    t = gguf_find_tensor(f, "t.q6_K");
    t_check(t && t->nbytes == 210 && (const uint8_t *)t->data + 210 == b.p + data_end,
            "size-only type q6_K loads with its size");
    t = gguf_find_tensor(f, "t.f32");
    float v0;
    memcpy(&v0, t->data, 4);
    t_check(t == gguf_tensor_at(f, 0) && v0 == -2.5f, "tensor_at(0) is t.f32");
    t_check(!gguf_find_tensor(f, "t.f3") && !gguf_find_tensor(f, NULL) &&
            !gguf_tensor_at(f, 3) && !gguf_tensor_at(f, -1), "missing tensors");
    t_check(!gguf_get_tensor(f, "t.q6_K", &t, &err) && t == gguf_tensor_at(f, 2),
            "get_tensor on a present name");
    rc = gguf_get_tensor(f, "blk.0.attn_kv.weight", &t, &err);
    t_check(rc == DS4_E_NOTFOUND && t == NULL && has(err.msg, "blk.0.attn_kv.weight"),
            "get_tensor on a missing name: %s", err.msg);

    t_check(strcmp(gguf_type_name(GGUF_TYPE_F64), "f64") == 0 &&
            strcmp(gguf_type_name((gguf_type)13), "?") == 0 &&
            gguf_type_size(GGUF_TYPE_U16) == 2 && gguf_type_size(GGUF_TYPE_STR) == 0 &&
            gguf_type_size((gguf_type)99) == 0, "type names and sizes");
    gguf_close(f);
    gguf_close(NULL);
    gb_free(&b);
}

/* ---- truncation and corruption ---------------------------------------------------------- */

static void test_truncation(void)
{
    gb b = {0};
    size_t data_end;
    make_valid(&b, &data_end);
    int bad = 0, bad_msg = 0;
    for (size_t k = 0; k < b.n; k++) {
        gguf_file *f;
        ds4_error err = {0};
        int rc = open_copy(&f, b.p, k, &err);
        bool want_ok = k >= data_end;  /* only trailing padding is missing */
        if (want_ok ? rc != 0 : rc != DS4_E_FORMAT) {
            if (bad++ < 3)
                printf("      truncated at %zu: rc=%d %s\n", k, rc, err.msg);
        } else if (!want_ok && (!has(err.msg, "<memory>: offset ") ||
                                (!has(err.msg, "end of file") && !has(err.msg, "past") &&
                                 !has(err.msg, "too large")))) {
            if (bad_msg++ < 3)
                printf("      truncated at %zu: unexpected message: %s\n", k, err.msg);
        }
    }
    t_check(bad == 0 && bad_msg == 0, "truncated at every byte 0..%zu: clean error before %zu,"
            " success after", b.n - 1, data_end);

    /* corrupt each byte three ways: must never crash; errors must be clean */
    int n_ok = 0, n_err = 0, unclean = 0;
    static const uint8_t how[3] = {0x00, 0xff, 0x01};
    for (size_t k = 0; k < data_end; k++) {
        for (int h = 0; h < 3; h++) {
            uint8_t save = b.p[k];
            b.p[k] = h == 2 ? (uint8_t)(save + 1) : how[h];
            gguf_file *f;
            ds4_error err = {0};
            int rc = open_copy(&f, b.p, b.n, &err);
            if (rc == 0)
                n_ok++;
            else if (rc == DS4_E_FORMAT && has(err.msg, "<memory>: offset "))
                n_err++;
            else if (unclean++ < 3)
                printf("      byte %zu: rc=%d %s\n", k, rc, err.msg);
            b.p[k] = save;
        }
    }
    t_check(unclean == 0, "every byte corrupted 3 ways: %d opened, %d clean errors", n_ok, n_err);
    gb_free(&b);
}

/* ---- malformed inputs, one case each ---------------------------------------------------- */

/* Header + one pair whose key and type are given; the caller appends the value. */
static void one_kv(gb *b, const char *key, uint32_t type)
{
    gb_header(b, 3, 0, 1);
    gb_str(b, key);
    gb_u32(b, type);
}

/* Header (n tensors, 0 pairs) ready for directory entries. */
static void tensors_only(gb *b, uint64_t n) { gb_header(b, 3, n, 0); }

static void data_of(gb *b, size_t bytes)
{
    gb_pad(b, 32);
    for (size_t i = 0; i < bytes; i++)
        gb_u8(b, (uint8_t)i);
}

static void test_malformed(void)
{
    gb b = {0};
    const uint64_t ne8[] = {8}, ne32[] = {32};

    gb_u32(&b, 0x46554746u); gb_u32(&b, 3); gb_u64(&b, 0); gb_u64(&b, 0);
    expect_reject("bad magic", &b, DS4_E_FORMAT, "offset 0:", "bad magic");
    gb_free(&b);
    gb_header(&b, 2, 0, 0);
    expect_reject("version 2", &b, DS4_E_FORMAT, "offset 4:", "version 2");
    gb_free(&b);
    gb_header(&b, 0x03000000u, 0, 0);
    expect_reject("big-endian version", &b, DS4_E_FORMAT, "version", NULL);
    gb_free(&b);
    expect_reject("empty input", &b, DS4_E_FORMAT, "end of file", NULL);
    gb_u32(&b, 0x46554747u); gb_u32(&b, 3); gb_u32(&b, 0);
    expect_reject("header cut in the tensor count", &b, DS4_E_FORMAT, "tensor count", NULL);
    gb_free(&b);

    gb_header(&b, 3, UINT64_MAX, 0);
    expect_reject("tensor count 2^64-1", &b, DS4_E_FORMAT, "offset 8:", "too large");
    gb_free(&b);
    gb_header(&b, 3, 0, 1ull << 62);
    expect_reject("kv count 2^62", &b, DS4_E_FORMAT, "offset 16:", "too large");
    gb_free(&b);
    gb_header(&b, 3, 0, 2);  /* plausible count, but only one pair present */
    gb_str(&b, "a.key"); gb_u32(&b, 4); gb_u32(&b, 1); gb_u64(&b, 1000);
    expect_reject("kv count larger than the pairs", &b, DS4_E_FORMAT, "offset 45:",
                  "key of pair 1 length 1000 past end of file");
    gb_free(&b);

    gb_header(&b, 3, 0, 1); gb_u64(&b, UINT64_MAX); gb_str(&b, "xxxxxxxx");
    expect_reject("key length 2^64-1", &b, DS4_E_FORMAT, "offset 24:", "past end of file");
    gb_free(&b);
    gb_header(&b, 3, 0, 1); gb_u64(&b, 0); gb_u32(&b, 4); gb_u32(&b, 0);
    expect_reject("empty key", &b, DS4_E_FORMAT, "empty key", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 1); gb_u64(&b, 3); gb_bytes(&b, "a\0b", 3); gb_u32(&b, 0); gb_u8(&b, 0);
    expect_reject("key with a NUL byte", &b, DS4_E_FORMAT, "NUL", NULL);
    gb_free(&b);
    one_kv(&b, "s", 8); gb_u64(&b, 1000); gb_str(&b, "short");
    expect_reject("string value past end", &b, DS4_E_FORMAT, "string value length 1000", NULL);
    gb_free(&b);
    one_kv(&b, "k", 13); gb_u64(&b, 0);
    expect_reject("value type 13", &b, DS4_E_FORMAT, "unknown value type 13", NULL);
    gb_free(&b);
    one_kv(&b, "k", 0xffffffffu); gb_u64(&b, 0);
    expect_reject("value type 2^32-1", &b, DS4_E_FORMAT, "unknown value type", NULL);
    gb_free(&b);
    one_kv(&b, "b", 7); gb_u8(&b, 2); gb_u64(&b, 0);
    expect_reject("bool value 2", &b, DS4_E_FORMAT, "bool value is 2", NULL);
    gb_free(&b);
    one_kv(&b, "b", 7); gb_u8(&b, 0xff); gb_u64(&b, 0);
    expect_reject("bool value 255", &b, DS4_E_FORMAT, "not 0 or 1", NULL);
    gb_free(&b);
    one_kv(&b, "u", 10); gb_u32(&b, 1);
    expect_reject("u64 value cut short", &b, DS4_E_FORMAT, "end of file reading value", NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 9); gb_u64(&b, 1); gb_u32(&b, 4); gb_u64(&b, 1); gb_u32(&b, 5);
    expect_reject("nested array", &b, DS4_E_FORMAT, "nested arrays", NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 13); gb_u64(&b, 0);
    expect_reject("array element type 13", &b, DS4_E_FORMAT, "unknown array element type 13",
                  NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 4); gb_u64(&b, 1ull << 62); gb_u64(&b, 0);
    expect_reject("u32 array count 2^62 (bytes overflow)", &b, DS4_E_FORMAT,
                  "past end of file", NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 6); gb_u64(&b, 3); gb_u32(&b, 0); gb_u32(&b, 0);
    expect_reject("f32 array one element short", &b, DS4_E_FORMAT, "array of 3 f32", NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 8); gb_u64(&b, UINT64_MAX); gb_u64(&b, 0);
    expect_reject("string array count 2^64-1", &b, DS4_E_FORMAT, "strings past end", NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 8); gb_u64(&b, 2); gb_str(&b, "x"); gb_u64(&b, 99);
    gb_str(&b, "y");
    expect_reject("string array element past end", &b, DS4_E_FORMAT, "array string length 99",
                  NULL);
    gb_free(&b);
    one_kv(&b, "a", 9); gb_u32(&b, 7); gb_u64(&b, 3); gb_u8(&b, 0); gb_u8(&b, 1); gb_u8(&b, 3);
    expect_reject("bool array element 3", &b, DS4_E_FORMAT, "element 2 is 3", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 2);
    gb_str(&b, "dup"); gb_u32(&b, 0); gb_u8(&b, 1);
    gb_str(&b, "dup"); gb_u32(&b, 4); gb_u32(&b, 1);
    expect_reject("duplicate key", &b, DS4_E_FORMAT, "duplicate key 'dup' (first at offset 24)",
                  "offset 40:");
    gb_free(&b);

    {
        char longkey[121];
        memset(longkey, 'k', 120);
        longkey[120] = 0;
        gb_header(&b, 3, 0, 2);
        gb_str(&b, longkey); gb_u32(&b, 0); gb_u8(&b, 1);
        gb_str(&b, longkey); gb_u32(&b, 0); gb_u8(&b, 2);
        expect_reject("duplicate 120-byte key (message shortened)", &b, DS4_E_FORMAT,
                      "kkk...'", "duplicate key");
        gb_free(&b);
    }

    /* alignment */
    one_kv(&b, "general.alignment", 4); gb_u32(&b, 0);
    expect_reject("alignment 0", &b, DS4_E_FORMAT, "not a power of two", NULL);
    gb_free(&b);
    one_kv(&b, "general.alignment", 4); gb_u32(&b, 48);
    expect_reject("alignment 48", &b, DS4_E_FORMAT, "48 is not a power of two", NULL);
    gb_free(&b);
    one_kv(&b, "general.alignment", 10); gb_u64(&b, 32);
    expect_reject("alignment of type u64", &b, DS4_E_FORMAT, "type u64, expected u32", NULL);
    gb_free(&b);

    /* tensor directory */
    tensors_only(&b, 1); gb_tensor(&b, "t", 0, ne8, 0, 0); data_of(&b, 32);
    expect_reject("n_dims 0", &b, DS4_E_FORMAT, "n_dims 0 not in 1..8", NULL);
    gb_free(&b);
    {
        const uint64_t ne9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
        tensors_only(&b, 1); gb_tensor(&b, "t", 9, ne9, 0, 0); data_of(&b, 4);
        expect_reject("n_dims 9", &b, DS4_E_FORMAT, "n_dims 9", NULL);
        gb_free(&b);
    }
    tensors_only(&b, 1); gb_tensor(&b, "", 1, ne8, 0, 0); data_of(&b, 32);
    expect_reject("empty tensor name", &b, DS4_E_FORMAT, "empty name of tensor 0", NULL);
    gb_free(&b);
    {
        const uint64_t big[] = {1ull << 32, 1ull << 32};
        tensors_only(&b, 1); gb_tensor(&b, "t", 2, big, 0, 0); data_of(&b, 32);
        expect_reject("dims product 2^64", &b, DS4_E_FORMAT, "element count overflows", NULL);
        gb_free(&b);
        const uint64_t neg[] = {1ull << 63};
        tensors_only(&b, 1); gb_tensor(&b, "t", 1, neg, 0, 0); data_of(&b, 32);
        expect_reject("dim 2^63", &b, DS4_E_FORMAT, "too large", NULL);
        gb_free(&b);
        const uint64_t bytes_ovf[] = {1ull << 61, 2};  /* elements fit, f32 bytes do not */
        tensors_only(&b, 1); gb_tensor(&b, "t", 2, bytes_ovf, 0, 0); data_of(&b, 32);
        expect_reject("byte size 2^65", &b, DS4_E_FORMAT, "byte size overflows", NULL);
        gb_free(&b);
    }
    static const uint32_t unknown[] = {4, 5, 31, 36, 38, DS4_TYPE_COUNT, 1000, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "tensor type %u", unknown[i]);
        tensors_only(&b, 1); gb_tensor(&b, "t", 1, ne32, unknown[i], 0); data_of(&b, 64);
        expect_reject(name, &b, DS4_E_FORMAT, "unknown tensor type", NULL);
        gb_free(&b);
    }
    {
        const uint64_t ne33[] = {33, 2};
        tensors_only(&b, 1); gb_tensor(&b, "t", 2, ne33, DS4_TYPE_Q8_0, 0); data_of(&b, 80);
        expect_reject("q8_0 with ne[0] = 33", &b, DS4_E_FORMAT, "not a multiple of the q8_0",
                      NULL);
        gb_free(&b);
    }
    tensors_only(&b, 1); gb_tensor(&b, "blk.0.attn_kv.weight", 1, ne8, 0, 0); data_of(&b, 31);
    expect_reject("tensor data 1 byte past EOF", &b, DS4_E_FORMAT, "'blk.0.attn_kv.weight'",
                  "past end of file");
    gb_free(&b);
    tensors_only(&b, 1); gb_tensor(&b, "t", 1, ne8, 0, UINT64_MAX - 31); data_of(&b, 32);
    expect_reject("tensor offset near 2^64", &b, DS4_E_FORMAT, "past end of file", NULL);
    gb_free(&b);
    tensors_only(&b, 1); gb_tensor(&b, "t", 1, ne8, 0, 16); data_of(&b, 64);
    expect_reject("misaligned tensor offset", &b, DS4_E_FORMAT, "offset 24:",
                  "not a multiple of the alignment 32");
    gb_free(&b);
    tensors_only(&b, 2); gb_tensor(&b, "t", 1, ne8, 0, 0); gb_tensor(&b, "t", 1, ne8, 0, 32);
    data_of(&b, 64);
    expect_reject("duplicate tensor name", &b, DS4_E_FORMAT, "duplicate tensor 't'", NULL);
    gb_free(&b);
    {
        const uint64_t ne16[] = {16};
        tensors_only(&b, 2); gb_tensor(&b, "a", 1, ne16, 0, 0); gb_tensor(&b, "b", 1, ne8, 0, 32);
        data_of(&b, 96);
        expect_reject("overlapping tensor data", &b, DS4_E_FORMAT, "overlaps tensor 'a'", NULL);
        gb_free(&b);
    }
    tensors_only(&b, 1); gb_tensor(&b, "t", 1, ne8, 0, 0);
    expect_reject("no data section at all", &b, DS4_E_FORMAT, "past end of file", NULL);
    gb_free(&b);
    tensors_only(&b, 1); gb_str(&b, "t"); gb_u32(&b, 1); gb_u64(&b, 8); gb_u32(&b, 0);
    expect_reject("directory too short for its tensor count", &b, DS4_E_FORMAT,
                  "tensor count 1 too large", NULL);
    gb_free(&b);
}

/* ---- shapes and alignments the reader must accept ---------------------------------------- */

static void test_accepts(void)
{
    gb b = {0};
    gguf_file *f;
    ds4_error err = {0};
    const uint64_t ne8d[8] = {2, 1, 3, 1, 1, 2, 1, 1};
    tensors_only(&b, 1); gb_tensor(&b, "t", 8, ne8d, 0, 0); data_of(&b, 48);
    int rc = gguf_open_memory(&f, b.p, b.n, &err);
    t_check(rc == 0 && gguf_tensor_at(f, 0)->n_elems == 12 && gguf_tensor_at(f, 0)->ne[5] == 2,
            "n_dims 8 accepted");
    gguf_close(f);
    gb_free(&b);

    const uint64_t zero[] = {0, 5};
    tensors_only(&b, 2); gb_tensor(&b, "z", 2, zero, DS4_TYPE_Q4_K, 0);
    gb_tensor(&b, "t", 1, (const uint64_t[]){8}, 0, 0); data_of(&b, 32);
    rc = gguf_open_memory(&f, b.p, b.n, &err);
    t_check(rc == 0 && gguf_tensor_at(f, 0)->nbytes == 0 && gguf_tensor_at(f, 0)->n_elems == 0,
            "empty tensor (ne[0] = 0) shares an offset: %s", rc ? err.msg : "ok");
    gguf_close(f);
    gb_free(&b);

    static const uint32_t aligns[] = {1, 2, 8, 32, 64, 4096};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        uint32_t a = aligns[i];
        gb_header(&b, 3, 2, 1);
        gb_str(&b, "general.alignment"); gb_u32(&b, 4); gb_u32(&b, a);
        uint64_t off2 = (12 + a - 1) / a * a;
        gb_tensor(&b, "a", 1, (const uint64_t[]){3}, DS4_TYPE_F32, 0);
        gb_tensor(&b, "b", 1, (const uint64_t[]){2}, DS4_TYPE_F16, off2);
        gb_pad(&b, a);
        size_t start = b.n;
        for (uint64_t k = 0; k < off2 + 4; k++)
            gb_u8(&b, (uint8_t)k);
        rc = gguf_open_memory(&f, b.p, b.n, &err);
        bool ok = rc == 0 && gguf_alignment(f) == a && gguf_data_offset(f) == start &&
                  gguf_data_offset(f) % a == 0 &&
                  (const uint8_t *)gguf_find_tensor(f, "b")->data == b.p + start + off2;
        t_check(ok, "alignment %u accepted (data offset %zu)", a, start);
        gguf_close(f);
        gb_free(&b);
    }

    gb_header(&b, 3, 0, 0);  /* no tensors: the data section may be absent */
    rc = gguf_open_memory(&f, b.p, b.n, &err);
    t_check(rc == 0 && gguf_kv_count(f) == 0 && gguf_tensor_count(f) == 0 &&
            gguf_find_key(f, "x") == -1 && !gguf_find_tensor(f, "x"),
            "header only, no pairs or tensors");
    gguf_close(f);
    gb_free(&b);
    rc = gguf_open_memory(NULL, "", 0, &err);
    t_check(rc == DS4_E_ARG, "open_memory with out = NULL");
    rc = gguf_open_memory(&f, NULL, 5, &err);
    t_check(rc == DS4_E_ARG && f == NULL, "open_memory with data = NULL");
}

/* ---- files on disk and injected failures ------------------------------------------------- */

static void test_files_and_failures(void)
{
    gb b = {0};
    size_t data_end;
    make_valid(&b, &data_end);
    char path[] = "/tmp/ds4_test_gguf_read_XXXXXX";
    int fd = mkstemp(path);
    bool wrote = fd >= 0 && write(fd, b.p, b.n) == (ssize_t)b.n;
    if (fd >= 0)
        close(fd);
    if (!wrote) {
        t_skip("cannot write a temporary file in /tmp", "files on disk");
        gb_free(&b);
        return;
    }
    gguf_file *f;
    ds4_error err = {0};
    int rc = gguf_open(&f, path, &err);
    t_check(rc == 0 && strcmp(gguf_path(f), path) == 0 && gguf_size(f) == b.n &&
            gguf_find_tensor(f, "t.q6_K")->nbytes == 210, "gguf_open of a file on disk");
    gguf_close(f);

    rc = gguf_open(&f, "/nonexistent/ds4.gguf", &err);
    t_check(rc == DS4_E_IO && f == NULL && has(err.msg, "/nonexistent/ds4.gguf") &&
            has(err.msg, "cannot open"), "missing file: %s", err.msg);
    rc = gguf_open(&f, "/tmp", &err);
    t_check(rc == DS4_E_IO && has(err.msg, "not a regular file"), "directory: %s", err.msg);
    rc = gguf_open(&f, NULL, &err);
    t_check(rc == DS4_E_ARG && f == NULL, "NULL path");
    t_check(gguf_open(NULL, path, &err) == DS4_E_ARG, "NULL out");

    /* truncated copy on disk: the message names the path */
    if (truncate(path, 30) == 0) {
        rc = gguf_open(&f, path, &err);
        t_check(rc == DS4_E_FORMAT && has(err.msg, path) && has(err.msg, ": offset 8: "),
                "truncated file on disk: %s", err.msg);
    }
    if (truncate(path, 0) == 0) {
        rc = gguf_open(&f, path, &err);
        t_check(rc == DS4_E_FORMAT && has(err.msg, "offset 0"), "empty file: %s", err.msg);
    }
    fd = open(path, O_WRONLY | O_TRUNC);
    wrote = fd >= 0 && write(fd, b.p, b.n) == (ssize_t)b.n;
    if (fd >= 0)
        close(fd);

    /* every system call of gguf_open fails once */
    gguf_debug_fail_io(0);
    rc = gguf_open(&f, path, &err);
    long n_io = gguf_debug_io_count();
    gguf_close(f);
    int io_bad = 0;
    for (long k = 1; k <= n_io; k++) {
        gguf_debug_fail_io(k);
        rc = gguf_open(&f, path, &err);
        if (rc != DS4_E_IO || f != NULL || !has(err.msg, path))
            io_bad++, printf("      io failure %ld: rc=%d %s\n", k, rc, err.msg);
        gguf_close(f);
    }
    gguf_debug_fail_io(0);
    t_check(wrote && n_io == 3 && io_bad == 0, "each of %ld system calls failing: DS4_E_IO",
            n_io);

    /* every allocation fails once: clean DS4_E_NOMEM, nothing leaks (ASan build) */
    const char *srcs[2] = {"file", "memory"};
    for (int m = 0; m < 2; m++) {
        gguf_debug_fail_alloc(0);
        rc = m ? gguf_open_memory(&f, b.p, b.n, &err) : gguf_open(&f, path, &err);
        long n_alloc = gguf_debug_alloc_count();
        gguf_close(f);
        int bad = 0;
        for (long k = 1; k <= n_alloc; k++) {
            gguf_debug_fail_alloc(k);
            rc = m ? gguf_open_memory(&f, b.p, b.n, &err) : gguf_open(&f, path, &err);
            if (rc != DS4_E_NOMEM || f != NULL || !has(err.msg, "out of memory"))
                bad++, printf("      allocation %ld: rc=%d %s\n", k, rc, err.msg);
            gguf_close(f);
        }
        gguf_debug_fail_alloc(n_alloc + 1);
        rc = m ? gguf_open_memory(&f, b.p, b.n, &err) : gguf_open(&f, path, &err);
        gguf_close(f);
        gguf_debug_fail_alloc(0);
        t_check(n_alloc >= 7 && bad == 0 && rc == 0,
                "open (%s): each of %ld allocations failing: DS4_E_NOMEM", srcs[m], n_alloc);
    }
    unlink(path);
    gb_free(&b);
}

int main(void)
{
    test_valid();
    test_truncation();
    test_malformed();
    test_accepts();
    test_files_and_failures();
    return t_summary();
}
