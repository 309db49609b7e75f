/* test_gguf_write.c — the GGUF writer, checked through the reader: write then read is the
 * identity (exact bits) for every value type, edge values, strings with NUL bytes, arrays of
 * every type (empty ones too), tensors of every known type and n_dims 1..8, and every
 * alignment; output bytes are deterministic and a read-then-rewrite gives the same bytes;
 * seeded random files do the same; every invalid writer call is refused with a sticky error;
 * tensors produced in row chunks at write time give the same bytes as referenced data.
 * Implements style.md §9 kind 4 ("write then read a GGUF = identity (exact)"). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "test_util.h"

#define N_RANDOM_FILES 40  /* seeded random files written, read and rewritten */

static bool has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

/* Writes w to memory and opens it; returns the file (NULL on failure, reported). */
static gguf_file *roundtrip(gguf_writer *w, void **buf, size_t *size, const char *what)
{
    ds4_error err = {0};
    gguf_file *f = NULL;
    *buf = NULL;
    if (gguf_writer_write_memory(w, buf, size, &err) || gguf_open_memory(&f, *buf, *size, &err)) {
        t_check(false, "%s: write + read: %s", what, err.msg);
        free(*buf);
        *buf = NULL;
        return NULL;
    }
    return f;
}

/* Re-adds every pair and tensor of f to a new writer; true if the bytes equal buf. */
static bool rewrite_same(const gguf_file *f, const void *buf, size_t size)
{
    gguf_writer *w = gguf_writer_new();
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        gguf_writer_add_kv(w, gguf_kv_at(f, i));
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    void *out = NULL;
    size_t n = 0;
    ds4_error err;
    bool same = !gguf_writer_write_memory(w, &out, &n, &err) && n == size &&
                memcmp(out, buf, size) == 0;
    free(out);
    gguf_writer_free(w);
    return same;
}

/* ---- scalars and strings ---------------------------------------------------------------- */

static void test_scalars(void)
{
    gguf_writer *w = gguf_writer_new();
    uint32_t nan_bits = 0x7fc12345u, snan_bits = 0xff800001u;
    uint64_t dnan_bits = 0x7ff8000000abcdefull;
    float fnan, fsnan, fneg0 = -0.0f, fden = 1e-45f;
    double dnan, dneg0 = -0.0, dden = 4.9e-324;
    memcpy(&fnan, &nan_bits, 4);
    memcpy(&fsnan, &snan_bits, 4);
    memcpy(&dnan, &dnan_bits, 8);
    gguf_writer_add_u8(w, "u8", 255);
    gguf_writer_add_i8(w, "i8", -128);
    gguf_writer_add_u16(w, "u16", 65535);
    gguf_writer_add_i16(w, "i16", -32768);
    gguf_writer_add_u32(w, "u32", UINT32_MAX);
    gguf_writer_add_i32(w, "i32", INT32_MIN);
    gguf_writer_add_u64(w, "u64", UINT64_MAX);
    gguf_writer_add_i64(w, "i64", INT64_MIN);
    gguf_writer_add_f32(w, "f32.nan", fnan);
    gguf_writer_add_f32(w, "f32.snan", fsnan);
    gguf_writer_add_f32(w, "f32.neg0", fneg0);
    gguf_writer_add_f32(w, "f32.denorm", fden);
    gguf_writer_add_f32(w, "f32.inf", INFINITY);
    gguf_writer_add_f64(w, "f64.nan", dnan);
    gguf_writer_add_f64(w, "f64.neg0", dneg0);
    gguf_writer_add_f64(w, "f64.denorm", dden);
    gguf_writer_add_f64(w, "f64.max", 1.7976931348623157e308);
    gguf_writer_add_bool(w, "bool.t", true);
    gguf_writer_add_bool(w, "bool.f", false);
    gguf_writer_add_str(w, "str.empty", "");
    gguf_writer_add_strn(w, "str.nul", "a\0b\0", 4);
    gguf_writer_add_str(w, "str.utf8", "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x99\x82");
    size_t big_len = 100000;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    gguf_writer_add_strn(w, "str.big", big, big_len);

    void *buf;
    size_t size;
    gguf_file *f = roundtrip(w, &buf, &size, "scalars");
    if (!f) {
        free(big);
        gguf_writer_free(w);
        return;
    }
    ds4_error err;
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
    uint64_t u64; int64_t i64; float f32; double f64; bool b; const char *s; uint64_t len;
    t_check(!gguf_get_u8(f, "u8", &u8, &err) && u8 == 255 &&
            !gguf_get_i8(f, "i8", &i8, &err) && i8 == -128 &&
            !gguf_get_u16(f, "u16", &u16, &err) && u16 == 65535 &&
            !gguf_get_i16(f, "i16", &i16, &err) && i16 == -32768 &&
            !gguf_get_u32(f, "u32", &u32, &err) && u32 == UINT32_MAX &&
            !gguf_get_i32(f, "i32", &i32, &err) && i32 == INT32_MIN &&
            !gguf_get_u64(f, "u64", &u64, &err) && u64 == UINT64_MAX &&
            !gguf_get_i64(f, "i64", &i64, &err) && i64 == INT64_MIN,
            "integer scalars at their limits");
    bool bits = true;
    const char *fkeys[] = {"f32.nan", "f32.snan", "f32.neg0", "f32.denorm", "f32.inf"};
    float fwant[] = {fnan, fsnan, fneg0, fden, INFINITY};
    for (int i = 0; i < 5; i++)
        bits &= !gguf_get_f32(f, fkeys[i], &f32, &err) && memcmp(&f32, &fwant[i], 4) == 0;
    const char *dkeys[] = {"f64.nan", "f64.neg0", "f64.denorm", "f64.max"};
    double dwant[] = {dnan, dneg0, dden, 1.7976931348623157e308};
    for (int i = 0; i < 4; i++)
        bits &= !gguf_get_f64(f, dkeys[i], &f64, &err) && memcmp(&f64, &dwant[i], 8) == 0;
    t_check(bits, "f32/f64 bits kept (NaN payloads, signalling NaN, -0, denormals, inf)");
    t_check(!gguf_get_bool(f, "bool.t", &b, &err) && b && !gguf_get_bool(f, "bool.f", &b, &err) &&
            !b, "bools");
    t_check(!gguf_get_str(f, "str.empty", &s, &len, &err) && len == 0 && s[0] == 0,
            "empty string");
    t_check(!gguf_get_str(f, "str.nul", &s, &len, &err) && len == 4 &&
            memcmp(s, "a\0b\0", 5) == 0, "string with NUL bytes keeps its length");
    t_check(!gguf_get_str(f, "str.utf8", &s, &len, &err) &&
            strcmp(s, "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x99\x82") == 0, "UTF-8 string");
    t_check(!gguf_get_str(f, "str.big", &s, &len, &err) && len == big_len &&
            memcmp(s, big, big_len) == 0, "100 KB string");
    t_check(gguf_kv_count(f) == 23 && strcmp(gguf_kv_at(f, 0)->key, "u8") == 0 &&
            strcmp(gguf_kv_at(f, 22)->key, "str.big") == 0, "pairs kept in insertion order");
    t_check(size == gguf_writer_size(w) && size % 32 == 0, "size %zu = gguf_writer_size", size);
    t_check(rewrite_same(f, buf, size), "read then rewrite: identical bytes");
    gguf_close(f);
    free(buf);
    free(big);
    gguf_writer_free(w);
}

/* ---- arrays ----------------------------------------------------------------------------- */

static void test_arrays(t_rng *rng)
{
    static const gguf_type types[] = {
        GGUF_TYPE_U8, GGUF_TYPE_I8, GGUF_TYPE_U16, GGUF_TYPE_I16, GGUF_TYPE_U32, GGUF_TYPE_I32,
        GGUF_TYPE_F32, GGUF_TYPE_BOOL, GGUF_TYPE_U64, GGUF_TYPE_I64, GGUF_TYPE_F64};
    const int nt = (int)(sizeof types / sizeof types[0]);
    const uint64_t counts[] = {0, 1, 7, 1000};
    uint8_t *data[11][4];
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < nt; i++) {
        for (int c = 0; c < 4; c++) {
            size_t bytes = counts[c] * gguf_type_size(types[i]);
            data[i][c] = malloc(bytes ? bytes : 1);
            for (size_t k = 0; k < bytes; k++)
                data[i][c][k] = types[i] == GGUF_TYPE_BOOL ? (uint8_t)(t_next(rng) & 1)
                                                           : (uint8_t)t_next(rng);
            char key[64];
            snprintf(key, sizeof key, "arr.%s.%llu", gguf_type_name(types[i]),
                     (unsigned long long)counts[c]);
            gguf_writer_add_arr(w, key, types[i], data[i][c], counts[c]);
        }
    }
    const char *strs[] = {"", "x", "tokens with spaces", "\xe2\x96\x81"};
    gguf_str nstrs[] = {{"a\0b", 3}, {"", 0}, {NULL, 0}, {"zz", 2}};
    gguf_writer_add_arr_str(w, "arr.str", strs, 4);
    gguf_writer_add_arr_str(w, "arr.str.empty", NULL, 0);
    gguf_writer_add_arr_strn(w, "arr.strn", nstrs, 4);

    void *buf;
    size_t size;
    gguf_file *f = roundtrip(w, &buf, &size, "arrays");
    if (f) {
        int bad = 0;
        ds4_error err;
        for (int i = 0; i < nt; i++) {
            for (int c = 0; c < 4; c++) {
                char key[64];
                snprintf(key, sizeof key, "arr.%s.%llu", gguf_type_name(types[i]),
                         (unsigned long long)counts[c]);
                const gguf_kv *kv;
                size_t bytes = counts[c] * gguf_type_size(types[i]);
                if (gguf_get_arr(f, key, &kv, &err) || kv->arr_type != types[i] ||
                    kv->arr_count != counts[c] || memcmp(kv->v.arr_data, data[i][c], bytes))
                    bad++, printf("      %s differs\n", key);
            }
        }
        t_check(bad == 0, "arrays of all 11 fixed-size types x counts 0, 1, 7, 1000: exact");
        const gguf_kv *kv;
        const gguf_str *s;
        bool ok = !gguf_get_arr(f, "arr.str", &kv, &err) && kv->arr_count == 4;
        for (uint64_t j = 0; ok && j < 4; j++)
            ok = !gguf_arr_str(f, kv, j, &s, &err) && strcmp(s->s, strs[j]) == 0;
        t_check(ok, "string array");
        t_check(!gguf_get_arr(f, "arr.str.empty", &kv, &err) && kv->arr_count == 0 &&
                kv->arr_type == GGUF_TYPE_STR, "empty string array");
        ok = !gguf_get_arr(f, "arr.strn", &kv, &err) && kv->arr_count == 4 &&
             kv->v.arr_str[0].len == 3 && memcmp(kv->v.arr_str[0].s, "a\0b", 4) == 0 &&
             kv->v.arr_str[2].len == 0 && strcmp(kv->v.arr_str[3].s, "zz") == 0;
        t_check(ok, "string array with explicit lengths (NUL inside, NULL empty)");
        t_check(rewrite_same(f, buf, size), "arrays: read then rewrite gives identical bytes");
        gguf_close(f);
        free(buf);
    }
    for (int i = 0; i < nt; i++)
        for (int c = 0; c < 4; c++)
            free(data[i][c]);
    gguf_writer_free(w);
}

/* ---- tensors and alignment -------------------------------------------------------------- */

static void test_tensors(t_rng *rng)
{
    static const uint32_t aligns[] = {0 /* default 32 */, 1, 2, 32, 64, 256, 4096};
    for (size_t ai = 0; ai < sizeof aligns / sizeof aligns[0]; ai++) {
        gguf_writer *w = gguf_writer_new();
        uint32_t a = aligns[ai] ? aligns[ai] : GGUF_DEFAULT_ALIGNMENT;
        if (aligns[ai])
            gguf_writer_add_u32(w, GGUF_KEY_ALIGNMENT, a);
        gguf_writer_add_str(w, "general.architecture", "deepseek4");
        void *datas[DS4_TYPE_COUNT] = {0};
        int n_types = 0;
        for (int t = 0; t < DS4_TYPE_COUNT; t++) {
            const quant_traits *tr = quant_get_traits((ds4_type)t);
            if (!tr)
                continue;
            uint32_t n_dims = 1 + (uint32_t)(t % GGUF_MAX_DIMS);
            int64_t ne[GGUF_MAX_DIMS];
            for (uint32_t d = 0; d < n_dims; d++)
                ne[d] = d == 0 ? tr->block_elems * (1 + (int64_t)(t_next(rng) % 3))
                               : 1 + (int64_t)(t_next(rng) % 2);
            int64_t rows = 1;
            for (uint32_t d = 1; d < n_dims; d++)
                rows *= ne[d];
            size_t bytes = (size_t)(ne[0] / tr->block_elems) * tr->block_bytes * (size_t)rows;
            uint8_t *p = malloc(bytes);
            for (size_t k = 0; k < bytes; k++)
                p[k] = (uint8_t)t_next(rng);
            datas[t] = p;
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", t, tr->name);
            if (gguf_writer_add_tensor(w, name, (ds4_type)t, n_dims, ne, p))
                printf("      add %s failed\n", name);
            n_types++;
        }
        void *buf;
        size_t size;
        char what[64];
        snprintf(what, sizeof what, "tensors, alignment %u", a);
        gguf_file *f = roundtrip(w, &buf, &size, what);
        if (f) {
            int bad = 0;
            for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
                const gguf_tensor *t = gguf_tensor_at(f, i);
                const uint8_t *want = datas[t->type];
                size_t off = (size_t)((const uint8_t *)t->data - (const uint8_t *)buf);
                if (!want || memcmp(t->data, want, t->nbytes) || off % a || t->offset % a ||
                    t->n_dims != 1 + (uint32_t)(t->type % GGUF_MAX_DIMS))
                    bad++, printf("      tensor %s differs\n", t->name);
            }
            t_check(bad == 0 && gguf_tensor_count(f) == n_types && gguf_alignment(f) == a &&
                    gguf_data_offset(f) % a == 0 && size == gguf_writer_size(w),
                    "alignment %4u: %d tensors (every known type, n_dims 1..8) exact", a,
                    n_types);
            t_check(rewrite_same(f, buf, size), "alignment %4u: read then rewrite identical", a);
            gguf_close(f);
            free(buf);
        }
        for (int t = 0; t < DS4_TYPE_COUNT; t++)
            free(datas[t]);
        gguf_writer_free(w);
    }
}

/* ---- determinism, files, empty writer --------------------------------------------------- */

static void test_output(void)
{
    gguf_writer *w = gguf_writer_new();
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i * 0.25f;
    gguf_writer_add_str(w, "general.name", "det");
    gguf_writer_add_tensor(w, "x", DS4_TYPE_F32, 2, (const int64_t[]){32, 2}, x);
    gguf_writer_add_tensor(w, "y", DS4_TYPE_F16, 1, (const int64_t[]){10}, x);
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    ds4_error err;
    gguf_writer_write_memory(w, &a, &na, &err);
    gguf_writer_write_memory(w, &b, &nb, &err);
    t_check(a && b && na == nb && memcmp(a, b, na) == 0, "two writes give identical bytes");

    char path[] = "/tmp/ds4_test_gguf_write_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        close(fd);
        int rc = gguf_writer_write(w, path, &err);
        FILE *fp = fopen(path, "rb");
        uint8_t *c = malloc(na + 1);
        size_t nc = fp ? fread(c, 1, na + 1, fp) : 0;
        if (fp)
            fclose(fp);
        t_check(rc == 0 && nc == na && memcmp(a, c, na) == 0, "file output = memory output");
        gguf_file *f;
        rc = gguf_open(&f, path, &err);
        t_check(rc == 0 && gguf_tensor_count(f) == 2 &&
                memcmp(gguf_find_tensor(f, "x")->data, x, sizeof x) == 0,
                "written file opens with gguf_open");
        gguf_close(f);
        free(c);
        unlink(path);
    } else {
        t_skip("cannot create a temporary file in /tmp", "file output");
    }
    int rc = gguf_writer_write(w, "/nonexistent-dir/out.gguf", &err);
    t_check(rc == DS4_E_IO && has(err.msg, "/nonexistent-dir/out.gguf"),
            "unwritable path: %s", err.msg);
    free(a);
    free(b);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_file *f = roundtrip(w, &a, &na, "empty writer");
    t_check(f && na == 32 && gguf_kv_count(f) == 0 && gguf_tensor_count(f) == 0,
            "empty writer: header padded to 32 bytes");
    gguf_close(f);
    free(a);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
}

/* ---- invalid writer calls --------------------------------------------------------------- */

typedef int (*misuse_fn)(gguf_writer *w);

static int m_dup_key(gguf_writer *w) { gguf_writer_add_u8(w, "k", 1); return gguf_writer_add_str(w, "k", "x"); }
static int m_empty_key(gguf_writer *w) { return gguf_writer_add_u8(w, "", 1); }
static int m_null_key(gguf_writer *w) { return gguf_writer_add_u32(w, NULL, 1); }
static int m_align0(gguf_writer *w) { return gguf_writer_add_u32(w, GGUF_KEY_ALIGNMENT, 0); }
static int m_align3(gguf_writer *w) { return gguf_writer_add_u32(w, GGUF_KEY_ALIGNMENT, 3); }
static int m_align_u64(gguf_writer *w) { return gguf_writer_add_u64(w, GGUF_KEY_ALIGNMENT, 32); }
static int m_bool_arr(gguf_writer *w) { static const uint8_t v[] = {0, 2}; return gguf_writer_add_arr(w, "b", GGUF_TYPE_BOOL, v, 2); }
static int m_arr_str(gguf_writer *w) { return gguf_writer_add_arr(w, "a", GGUF_TYPE_STR, "x", 1); }
static int m_arr_arr(gguf_writer *w) { return gguf_writer_add_arr(w, "a", GGUF_TYPE_ARR, "x", 1); }
static int m_arr_null(gguf_writer *w) { return gguf_writer_add_arr(w, "a", GGUF_TYPE_U8, NULL, 3); }
static int m_arr_huge(gguf_writer *w) { return gguf_writer_add_arr(w, "a", GGUF_TYPE_U64, "x", 1ull << 62); }
static int m_strs_null(gguf_writer *w) { const char *s[] = {"a", NULL}; return gguf_writer_add_arr_str(w, "a", s, 2); }
static int m_str_null(gguf_writer *w) { return gguf_writer_add_strn(w, "s", NULL, 3); }
static const float zeros[256];
static int m_dup_tensor(gguf_writer *w) { gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 1, (const int64_t[]){4}, zeros); return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 1, (const int64_t[]){4}, zeros); }
static int m_empty_name(gguf_writer *w) { return gguf_writer_add_tensor(w, "", DS4_TYPE_F32, 1, (const int64_t[]){4}, zeros); }
static int m_type4(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", (ds4_type)4, 1, (const int64_t[]){32}, zeros); }
static int m_type_count(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_COUNT, 1, (const int64_t[]){32}, zeros); }
static int m_dims0(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 0, (const int64_t[]){4}, zeros); }
static int m_dims9(gguf_writer *w) { static const int64_t ne[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}; return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 9, ne, zeros); }
static int m_neg(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, (const int64_t[]){4, -1}, zeros); }
static int m_block(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_Q4_K, 1, (const int64_t[]){128}, zeros); }
static int m_overflow(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 2, (const int64_t[]){1ll << 40, 1ll << 30}, zeros); }
static int m_bytes_overflow(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_F64, 2, (const int64_t[]){1ll << 61, 2}, zeros); }
static int m_null_data(gguf_writer *w) { return gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 1, (const int64_t[]){4}, NULL); }

static void test_misuse(void)
{
    static const struct {
        const char *name;
        misuse_fn fn;
        const char *needle;
    } cases[] = {
        {"duplicate key", m_dup_key, "key 'k' added twice"},
        {"empty key", m_empty_key, "empty key"},
        {"NULL key", m_null_key, "empty key"},
        {"alignment 0", m_align0, "not a power of two"},
        {"alignment 3", m_align3, "3 is not a power of two"},
        {"alignment as u64", m_align_u64, "must be u32"},
        {"bool array element 2", m_bool_arr, "bool element 1 is 2"},
        {"add_arr of str", m_arr_str, "not a fixed-size type"},
        {"add_arr of arr", m_arr_arr, "not a fixed-size type"},
        {"add_arr NULL data", m_arr_null, "NULL array data"},
        {"add_arr 2^62 u64", m_arr_huge, "too large"},
        {"string array with a NULL", m_strs_null, "NULL string 1"},
        {"strn NULL with length", m_str_null, "NULL string"},
        {"duplicate tensor", m_dup_tensor, "tensor 't' added twice"},
        {"empty tensor name", m_empty_name, "empty tensor name"},
        {"tensor type 4", m_type4, "unknown type 4"},
        {"tensor type DS4_TYPE_COUNT", m_type_count, "unknown type"},
        {"n_dims 0", m_dims0, "n_dims 0"},
        {"n_dims 9", m_dims9, "n_dims 9"},
        {"negative ne", m_neg, "ne[1] = -1"},
        {"q4_K ne[0] = 128", m_block, "not a multiple of the q4_K block size 256"},
        {"element count 2^70", m_overflow, "overflowing"},
        {"byte size 2^65", m_bytes_overflow, "byte size overflows"},
        {"NULL tensor data", m_null_data, "NULL data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gguf_writer *w = gguf_writer_new();
        int rc = cases[i].fn(w);
        int later = gguf_writer_add_u8(w, "after.error", 1);  /* refused: the error sticks */
        ds4_error err = {0};
        void *buf = NULL;
        size_t size;
        int wr = gguf_writer_write_memory(w, &buf, &size, &err);
        bool ok = rc == DS4_E_ARG && later == DS4_E_ARG && wr == DS4_E_ARG && buf == NULL &&
                  has(err.msg, "gguf writer: ") && has(err.msg, cases[i].needle) &&
                  gguf_writer_size(w) == 0;
        if (!t_check(ok, "writer refuses %s", cases[i].name))
            printf("      rc=%d later=%d write=%d: %s\n", rc, later, wr, err.msg);
        gguf_writer_free(w);
    }
    gguf_writer *w = gguf_writer_new();
    gguf_kv bad = {.key = "b", .type = GGUF_TYPE_BOOL};
    bad.v.u8 = 2;
    int rc = gguf_writer_add_kv(w, &bad);
    ds4_error err;
    void *buf = NULL;
    size_t size;
    gguf_writer_write_memory(w, &buf, &size, &err);
    t_check(rc == DS4_E_ARG && buf == NULL && has(err.msg, "bool value 2"),
            "add_kv refuses a bool byte 2");
    gguf_writer_free(w);
    w = gguf_writer_new();
    bad.type = (gguf_type)13;
    t_check(gguf_writer_add_kv(w, &bad) == DS4_E_ARG, "add_kv refuses value type 13");
    t_check(gguf_writer_add_tensor(w, "t", DS4_TYPE_F32, 1, (const int64_t[]){4}, zeros) ==
            DS4_E_ARG, "add_tensor after an error: the first error sticks");
    gguf_writer_free(w);
    w = gguf_writer_new();
    t_check(gguf_writer_add_arr_str(w, "a", NULL, 2) == DS4_E_ARG, "arr_str NULL with count 2");
    gguf_writer_free(w);
    w = gguf_writer_new();
    t_check(gguf_writer_add_arr_strn(w, "a", NULL, 2) == DS4_E_ARG, "arr_strn NULL with count 2");
    gguf_writer_free(w);
    w = gguf_writer_new();
    t_check(gguf_writer_add_strn(w, "s", "x", UINT64_MAX) == DS4_E_ARG,
            "string of 2^64-1 bytes refused");
    gguf_writer_free(w);

    w = gguf_writer_new();  /* two tensors of 2^63 bytes each: the file size overflows */
    gguf_writer_add_tensor(w, "a", DS4_TYPE_F32, 1, (const int64_t[]){1ll << 61}, zeros);
    gguf_writer_add_tensor(w, "b", DS4_TYPE_F32, 1, (const int64_t[]){1ll << 61}, zeros);
    rc = gguf_writer_write_memory(w, &buf, &size, &err);
    t_check(rc == DS4_E_RANGE && gguf_writer_size(w) == 0 && buf == NULL,
            "file size past 2^64: DS4_E_RANGE (%s)", err.msg);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_writer_add_tensor(w, "a", DS4_TYPE_F32, 1, (const int64_t[]){256}, zeros);
    t_check(gguf_writer_write(w, NULL, &err) == DS4_E_ARG &&
            gguf_writer_write_memory(w, NULL, &size, &err) == DS4_E_ARG, "NULL path / output");
    /* a write that fails half-way: a file size limit below the file's size (SIGXFSZ
     * ignored, so write() returns EFBIG); the partial file must be removed */
    char path[] = "/tmp/ds4_test_gguf_fsize_XXXXXX";
    int fd = mkstemp(path);
    struct rlimit old;
    if (fd >= 0 && getrlimit(RLIMIT_FSIZE, &old) == 0) {
        close(fd);
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = old;
        lim.rlim_cur = 100;
        setrlimit(RLIMIT_FSIZE, &lim);
        rc = gguf_writer_write(w, path, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        signal(SIGXFSZ, prev);
        t_check(rc == DS4_E_IO && has(err.msg, path) && has(err.msg, "write failed") &&
                access(path, F_OK) != 0, "write past a 100-byte file size limit: DS4_E_IO,"
                " partial file removed");
        unlink(path);
    } else {
        t_skip("cannot create a temporary file in /tmp", "write failing half-way");
    }
    gguf_writer_free(w);

    t_check(gguf_writer_add_u8(NULL, "k", 1) == DS4_E_ARG &&
            gguf_writer_add_strn(NULL, "k", "", 0) == DS4_E_ARG &&
            gguf_writer_add_arr(NULL, "k", GGUF_TYPE_U8, "", 0) == DS4_E_ARG &&
            gguf_writer_add_arr_str(NULL, "k", NULL, 0) == DS4_E_ARG &&
            gguf_writer_add_arr_strn(NULL, "k", NULL, 0) == DS4_E_ARG &&
            gguf_writer_add_tensor(NULL, "t", DS4_TYPE_F32, 1, (const int64_t[]){1}, zeros) ==
            DS4_E_ARG &&
            gguf_writer_write(NULL, "/tmp/x", &err) == DS4_E_ARG &&
            gguf_writer_add_kv(NULL, NULL) == DS4_E_ARG, "NULL writer");
}

/* ---- seeded random files ---------------------------------------------------------------- */

/* What a random pair was given, to compare with what is read back. */
typedef struct rkv {
    gguf_type type, arr_type;
    uint64_t count;
    uint8_t *bytes;   /* scalar, string or numeric-array bytes */
    size_t nbytes;
    gguf_str *strs;   /* string arrays */
} rkv;

static void random_bytes(t_rng *rng, uint8_t *p, size_t n, gguf_type t)
{
    for (size_t k = 0; k < n; k++)
        p[k] = t == GGUF_TYPE_BOOL ? (uint8_t)(t_next(rng) & 1) : (uint8_t)t_next(rng);
}

static char *random_string(t_rng *rng, uint64_t *len)
{
    *len = t_next(rng) % 12;
    char *s = malloc(*len + 1);
    for (uint64_t k = 0; k < *len; k++)
        s[k] = (char)(t_next(rng) % 256);  /* any byte, NUL included */
    s[*len] = 0;
    return s;
}

static bool same_value(const gguf_kv *kv, const rkv *r)
{
    if (kv->type != r->type)
        return false;
    if (r->type == GGUF_TYPE_STR)
        return kv->v.str.len == r->nbytes && memcmp(kv->v.str.s, r->bytes, r->nbytes) == 0;
    if (r->type != GGUF_TYPE_ARR)
        return memcmp(&kv->v, r->bytes, r->nbytes) == 0;
    if (kv->arr_type != r->arr_type || kv->arr_count != r->count)
        return false;
    if (r->arr_type != GGUF_TYPE_STR)
        return memcmp(kv->v.arr_data, r->bytes, r->nbytes) == 0;
    for (uint64_t j = 0; j < r->count; j++)
        if (kv->v.arr_str[j].len != r->strs[j].len ||
            memcmp(kv->v.arr_str[j].s, r->strs[j].s, r->strs[j].len) != 0)
            return false;
    return true;
}

static void test_random(uint64_t seed)
{
    int bad_files = 0;
    for (int it = 0; it < N_RANDOM_FILES; it++) {
        t_rng rng = {seed + (uint64_t)it * 7919};
        int n_kv = (int)(t_next(&rng) % 20);
        rkv *kvs = calloc((size_t)n_kv + 1, sizeof *kvs);
        gguf_writer *w = gguf_writer_new();
        for (int i = 0; i < n_kv; i++) {
            rkv *r = &kvs[i];
            char key[32];
            snprintf(key, sizeof key, "rand.%d.%d", it, i);
            r->type = (gguf_type)(t_next(&rng) % GGUF_TYPE_COUNT);
            if (r->type == GGUF_TYPE_STR) {
                uint64_t len;
                r->bytes = (uint8_t *)random_string(&rng, &len);
                r->nbytes = len;
                gguf_writer_add_strn(w, key, (const char *)r->bytes, len);
            } else if (r->type == GGUF_TYPE_ARR) {
                do
                    r->arr_type = (gguf_type)(t_next(&rng) % GGUF_TYPE_COUNT);
                while (r->arr_type == GGUF_TYPE_ARR);
                r->count = t_next(&rng) % 9;
                if (r->arr_type == GGUF_TYPE_STR) {
                    r->strs = calloc(r->count + 1, sizeof *r->strs);
                    for (uint64_t j = 0; j < r->count; j++)
                        r->strs[j].s = random_string(&rng, &r->strs[j].len);
                    gguf_writer_add_arr_strn(w, key, r->strs, r->count);
                } else {
                    r->nbytes = r->count * gguf_type_size(r->arr_type);
                    r->bytes = malloc(r->nbytes + 1);
                    random_bytes(&rng, r->bytes, r->nbytes, r->arr_type);
                    gguf_writer_add_arr(w, key, r->arr_type, r->bytes, r->count);
                }
            } else {
                r->nbytes = gguf_type_size(r->type);
                r->bytes = malloc(r->nbytes);
                random_bytes(&rng, r->bytes, r->nbytes, r->type);
                gguf_kv kv = {.key = key, .type = r->type};
                memcpy(&kv.v, r->bytes, r->nbytes);
                gguf_writer_add_kv(w, &kv);
            }
        }
        uint8_t tdata[4][544];
        int n_t = (int)(t_next(&rng) % 4);
        static const ds4_type tt[] = {DS4_TYPE_F32, DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_I8};
        for (int i = 0; i < n_t; i++) {
            ds4_type type = tt[t_next(&rng) % 4];
            const quant_traits *tr = quant_get_traits(type);
            int64_t ne[2] = {tr->block_elems * (type == DS4_TYPE_Q2_K ? 1 : 4), 2};
            random_bytes(&rng, tdata[i], sizeof tdata[i], GGUF_TYPE_U8);
            char name[32];
            snprintf(name, sizeof name, "t%d", i);
            gguf_writer_add_tensor(w, name, type, 2, ne, tdata[i]);
        }
        void *buf;
        size_t size;
        gguf_file *f = roundtrip(w, &buf, &size, "random file");
        bool ok = f && gguf_kv_count(f) == n_kv && gguf_tensor_count(f) == n_t;
        for (int i = 0; ok && i < n_kv; i++)
            ok = same_value(gguf_kv_at(f, i), &kvs[i]);
        for (int i = 0; ok && i < n_t; i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            ok = memcmp(t->data, tdata[i], t->nbytes) == 0;
        }
        ok = ok && rewrite_same(f, buf, size);
        if (!ok && bad_files++ < 3)
            printf("      random file %d (seed %llu) differs\n", it,
                   (unsigned long long)(seed + (uint64_t)it * 7919));
        gguf_close(f);
        free(buf);
        for (int i = 0; i < n_kv; i++) {
            free(kvs[i].bytes);
            for (uint64_t j = 0; kvs[i].strs && j < kvs[i].count; j++)
                free((char *)kvs[i].strs[j].s);
            free(kvs[i].strs);
        }
        free(kvs);
        gguf_writer_free(w);
    }
    t_check(bad_files == 0, "%d seeded random files: values exact, rewrite identical",
            N_RANDOM_FILES);
}

/* ---- tensors produced at write time ------------------------------------------------------ */

typedef struct producer {
    int64_t row_bytes, next_row; /* rows must come in order, each once */
    int calls, fail_at;          /* fail_at > 0: the call that fails */
    bool in_order;
} producer;

static uint8_t row_byte(int64_t r, int64_t i) { return (uint8_t)(r * 131 + i * 7 + (r >> 8)); }

static int produce(void *user, int64_t row0, int64_t n, void *dst, ds4_error *err)
{
    producer *p = user;
    p->calls++;
    p->in_order &= row0 == p->next_row;
    p->next_row = row0 + n;
    if (p->calls == p->fail_at)
        return ds4_error_set(err, DS4_E_RANGE, "producer refused rows %lld..", (long long)row0);
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < p->row_bytes; i++)
            ((uint8_t *)dst)[r * p->row_bytes + i] = row_byte(row0 + r, i);
    return 0;
}

static void test_rows(void)
{
    /* [1024 x 4096] f32 = 16 MiB (several chunks), a 12 MiB single row, a small q8_0 */
    const struct { ds4_type type; uint32_t n_dims; int64_t ne[3]; } ts[] = {
        {DS4_TYPE_F32, 2, {1024, 4096, 1}}, {DS4_TYPE_F32, 1, {3 << 20, 1, 1}},
        {DS4_TYPE_Q8_0, 3, {64, 3, 5}}};
    gguf_writer *wr = gguf_writer_new(), *wd = gguf_writer_new();
    producer pr[3];
    uint8_t *data[3];
    for (int k = 0; k < 3; k++) {
        int64_t rows = ts[k].ne[1] * ts[k].ne[2];
        size_t rb = quant_row_bytes(ts[k].type, ts[k].ne[0]);
        pr[k] = (producer){(int64_t)rb, 0, 0, 0, true};
        data[k] = malloc(rb * (size_t)rows);
        for (int64_t r = 0; r < rows; r++)
            for (size_t i = 0; i < rb; i++)
                data[k][(size_t)r * rb + i] = row_byte(r, (int64_t)i);
        char name[16];
        snprintf(name, sizeof name, "t%d", k);
        gguf_writer_add_tensor_rows(wr, name, ts[k].type, ts[k].n_dims, ts[k].ne, produce, &pr[k]);
        gguf_writer_add_tensor(wd, name, ts[k].type, ts[k].n_dims, ts[k].ne, data[k]);
    }
    void *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    ds4_error err = {0};
    int rc = gguf_writer_write_memory(wr, &a, &na, &err);
    gguf_writer_write_memory(wd, &b, &nb, &err);
    t_check(!rc && na == nb && !memcmp(a, b, na), "rows producer: same bytes as referenced data");
    t_check(pr[0].calls >= 2 && pr[1].calls == 1 && pr[0].in_order && pr[1].in_order &&
            pr[2].in_order && pr[0].next_row == 4096, "rows producer: chunks of whole rows, in"
            " order (%d, %d, %d calls)", pr[0].calls, pr[1].calls, pr[2].calls);
    char path[] = "/tmp/ds4-test-rows-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    for (int k = 0; k < 3; k++)
        pr[k].next_row = 0, pr[k].calls = 0;
    rc = gguf_writer_write(wr, path, &err);
    FILE *f = fopen(path, "rb");
    void *c = malloc(na);
    bool same = f && fread(c, 1, na, f) == na && fgetc(f) == EOF && !memcmp(c, b, na);
    if (f)
        fclose(f);
    t_check(!rc && same, "rows producer: the file has the same bytes");
    for (int k = 0; k < 3; k++)
        pr[k].next_row = 0, pr[k].calls = 0;
    pr[0].fail_at = 2;
    rc = gguf_writer_write(wr, path, &err);
    t_check(rc == DS4_E_RANGE && has(err.msg, "producer refused rows") && access(path, F_OK) != 0,
            "rows producer failure: its error, file removed (%s)", err.msg);
    pr[0].next_row = 0, pr[0].calls = 0, pr[1].calls = 0, pr[2].calls = 0;
    free(a);
    a = NULL;
    rc = gguf_writer_write_memory(wr, &a, &na, &err);
    t_check(rc == DS4_E_RANGE && a == NULL, "rows producer failure in memory: its error");
    rc = gguf_writer_add_tensor_rows(wd, "null", DS4_TYPE_F32, 1, ts[2].ne, NULL, NULL);
    t_check(rc == DS4_E_ARG, "rows producer: NULL producer refused");
    remove(path);
    free(b), free(c);
    for (int k = 0; k < 3; k++)
        free(data[k]);
    gguf_writer_free(wr);
    gguf_writer_free(wd);
}

int main(void)
{
    uint64_t seed = t_seed(20240601);
    t_rng rng = {seed};
    test_scalars();
    test_arrays(&rng);
    test_tensors(&rng);
    test_output();
    test_misuse();
    test_random(seed);
    test_rows();
    return t_summary();
}
