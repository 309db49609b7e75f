/* gguf_write.c — the GGUF v3 writer: collects pairs (serialized at add time, in order) and
 * tensors (data referenced, not copied, or produced in row chunks by a callback at write
 * time so large files stream out), then emits header, pairs, tensor directory, zero
 * padding to the alignment and each tensor's data padded to the alignment — the layout
 * ggml and gguf-py write, so a file read and rewritten comes out byte-identical. Validates
 * what it is given (unique non-empty names, known types, sizes without overflow) so it never
 * writes a file the reader would reject. Does not read files (gguf_read.c). Spec §1.1. */
#include "gguf/gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wtensor {
    char *name;
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
    int64_t rows;           /* n_elems / ne[0] (0 if empty) */
    gguf_rows_fn fill;      /* non-NULL: data produced at write time, row chunks */
    void *user;
} wtensor;

struct gguf_writer {
    uint8_t *meta;          /* serialized pairs, file order */
    size_t meta_len, meta_cap;
    char **keys;            /* copies, for the duplicate check */
    size_t n_kv, keys_cap;
    wtensor *t;
    size_t n_t, t_cap;
    uint32_t alignment;
    int rc;                 /* first error (0: none) */
    ds4_error err;
};

/* ---- building ---------------------------------------------------------------------------- */

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->keys);
    free(w->t);
    free(w->meta);
    free(w);
}

/* Records the first error and returns code. */
__attribute__((format(printf, 3, 4)))
static int wfail(gguf_writer *w, int code, const char *fmt, ...)
{
    if (!w->rc) {
        char what[480];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        w->rc = ds4_error_set(&w->err, code, "gguf writer: %s", what);
    }
    return code;
}

/* Grows *buf (elements of size sz) to hold at least need; false on overflow/exhaustion. */
static bool grow(void **buf, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 16, bytes;
    while (c < need)
        if (__builtin_mul_overflow(c, (size_t)2, &c))
            return false;
    if (__builtin_mul_overflow(c, sz, &bytes))
        return false;
    void *p = realloc(*buf, bytes);
    if (!p)
        return false;
    *buf = p;
    *cap = c;
    return true;
}

static int put(gguf_writer *w, const void *p, size_t n)
{
    size_t need;
    if (__builtin_add_overflow(w->meta_len, n, &need) ||
        !grow((void **)&w->meta, &w->meta_cap, need, 1))
        return wfail(w, DS4_E_NOMEM, "out of memory for metadata (%zu bytes)", w->meta_len);
    if (n)
        memcpy(w->meta + w->meta_len, p, n);
    w->meta_len = need;
    return 0;
}

static int put_u32(gguf_writer *w, uint32_t v) { return put(w, &v, 4); }
static int put_u64(gguf_writer *w, uint64_t v) { return put(w, &v, 8); }

static int put_str(gguf_writer *w, const char *s, uint64_t len)
{
    if (len > SIZE_MAX / 2)
        return wfail(w, DS4_E_ARG, "string of %" PRIu64 " bytes too long", len);
    int rc = put_u64(w, len);
    return rc ? rc : put(w, s, (size_t)len);
}

/* Checks key, remembers it, and serializes "key, type". Returns 0 or the (sticky) error. */
static int begin_kv(gguf_writer *w, const char *key, gguf_type type)
{
    if (w->rc)
        return w->rc;
    if (!key || !*key)
        return wfail(w, DS4_E_ARG, "empty key");
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return wfail(w, DS4_E_ARG, "key '%s' added twice", key);
    if (strcmp(key, GGUF_KEY_ALIGNMENT) == 0 && type != GGUF_TYPE_U32)
        return wfail(w, DS4_E_ARG, "%s must be u32, not %s", key, gguf_type_name(type));
    size_t klen = strlen(key);
    char *copy = malloc(klen + 1);
    if (!copy || !grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof *w->keys)) {
        free(copy);
        return wfail(w, DS4_E_NOMEM, "out of memory adding key '%s'", key);
    }
    memcpy(copy, key, klen + 1);
    w->keys[w->n_kv++] = copy;
    int rc = put_str(w, key, klen);
    return rc ? rc : put_u32(w, (uint32_t)type);
}

static int add_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v)
{
    if (!w)
        return DS4_E_ARG;
    if (type == GGUF_TYPE_BOOL && *(const uint8_t *)v > 1)
        return wfail(w, DS4_E_ARG, "key '%s': bool value %u", key ? key : "", *(const uint8_t *)v);
    uint32_t a = 0;
    bool is_alignment = key && strcmp(key, GGUF_KEY_ALIGNMENT) == 0 && type == GGUF_TYPE_U32;
    if (is_alignment) {
        memcpy(&a, v, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return wfail(w, DS4_E_ARG, "%s = %u is not a power of two", key, a);
    }
    int rc = begin_kv(w, key, type);
    if (!rc)
        rc = put(w, v, gguf_type_size(type));
    if (!rc && is_alignment)
        w->alignment = a;
    return rc;
}

#define ADDER(fn, ctype, tag)                                                               \
    int fn(gguf_writer *w, const char *key, ctype v) { return add_scalar(w, key, tag, &v); }

ADDER(gguf_writer_add_u8, uint8_t, GGUF_TYPE_U8)
ADDER(gguf_writer_add_i8, int8_t, GGUF_TYPE_I8)
ADDER(gguf_writer_add_u16, uint16_t, GGUF_TYPE_U16)
ADDER(gguf_writer_add_i16, int16_t, GGUF_TYPE_I16)
ADDER(gguf_writer_add_u32, uint32_t, GGUF_TYPE_U32)
ADDER(gguf_writer_add_i32, int32_t, GGUF_TYPE_I32)
ADDER(gguf_writer_add_u64, uint64_t, GGUF_TYPE_U64)
ADDER(gguf_writer_add_i64, int64_t, GGUF_TYPE_I64)
ADDER(gguf_writer_add_f32, float, GGUF_TYPE_F32)
ADDER(gguf_writer_add_f64, double, GGUF_TYPE_F64)

#undef ADDER

int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len)
{
    if (!w)
        return DS4_E_ARG;
    if (!s && len)
        return wfail(w, DS4_E_ARG, "key '%s': NULL string", key ? key : "");
    int rc = begin_kv(w, key, GGUF_TYPE_STR);
    return rc ? rc : put_str(w, s, len);
}

int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s)
{
    return gguf_writer_add_strn(w, key, s, s ? strlen(s) : 0);
}

int gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type t, const void *data,
                        uint64_t count)
{
    if (!w)
        return DS4_E_ARG;
    size_t esz = gguf_type_size(t);
    uint64_t bytes;
    if (esz == 0)
        return wfail(w, DS4_E_ARG, "key '%s': array element type %d is not a fixed-size type",
                     key ? key : "", (int)t);
    if (__builtin_mul_overflow(count, (uint64_t)esz, &bytes) || bytes > SIZE_MAX / 2)
        return wfail(w, DS4_E_ARG, "key '%s': array of %" PRIu64 " elements too large",
                     key ? key : "", count);
    if (!data && count)
        return wfail(w, DS4_E_ARG, "key '%s': NULL array data", key ? key : "");
    if (t == GGUF_TYPE_BOOL)
        for (uint64_t j = 0; j < count; j++)
            if (((const uint8_t *)data)[j] > 1)
                return wfail(w, DS4_E_ARG, "key '%s': bool element %" PRIu64 " is %u",
                             key ? key : "", j, ((const uint8_t *)data)[j]);
    int rc = begin_kv(w, key, GGUF_TYPE_ARR);
    if (!rc)
        rc = put_u32(w, (uint32_t)t);
    if (!rc)
        rc = put_u64(w, count);
    return rc ? rc : put(w, data, (size_t)bytes);
}

/* A string array given either with lengths (strs) or NUL-terminated (cstrs, strs NULL). */
static int add_arr_str(gguf_writer *w, const char *key, const gguf_str *strs,
                       const char *const *cstrs, uint64_t count)
{
    if (!w)
        return DS4_E_ARG;
    if (!strs && !cstrs && count)
        return wfail(w, DS4_E_ARG, "key '%s': NULL string array", key ? key : "");
    for (uint64_t j = 0; j < count; j++)
        if (strs ? !strs[j].s && strs[j].len : !cstrs[j])
            return wfail(w, DS4_E_ARG, "key '%s': NULL string %" PRIu64, key ? key : "", j);
    int rc = begin_kv(w, key, GGUF_TYPE_ARR);
    if (!rc)
        rc = put_u32(w, GGUF_TYPE_STR);
    if (!rc)
        rc = put_u64(w, count);
    for (uint64_t j = 0; j < count && !rc; j++)
        rc = strs ? put_str(w, strs[j].s, strs[j].len) : put_str(w, cstrs[j], strlen(cstrs[j]));
    return rc;
}

int gguf_writer_add_arr_strn(gguf_writer *w, const char *key, const gguf_str *strs,
                             uint64_t count)
{
    return add_arr_str(w, key, strs, NULL, count);
}

int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t count)
{
    return add_arr_str(w, key, NULL, strs, count);
}

int gguf_writer_add_kv(gguf_writer *w, const gguf_kv *kv)
{
    if (!w || !kv)
        return DS4_E_ARG;
    switch (kv->type) {
    case GGUF_TYPE_STR:
        return gguf_writer_add_strn(w, kv->key, kv->v.str.s, kv->v.str.len);
    case GGUF_TYPE_ARR:
        if (kv->arr_type == GGUF_TYPE_STR)
            return gguf_writer_add_arr_strn(w, kv->key, kv->v.arr_str, kv->arr_count);
        return gguf_writer_add_arr(w, kv->key, kv->arr_type, kv->v.arr_data, kv->arr_count);
    default:
        if (gguf_type_size(kv->type) == 0)
            return wfail(w, DS4_E_ARG, "key '%s': unknown value type %d", kv->key ? kv->key : "",
                         (int)kv->type);
        return add_scalar(w, kv->key, kv->type, &kv->v);
    }
}

static int add_tensor(gguf_writer *w, const char *name, ds4_type type, uint32_t n_dims,
                      const int64_t *ne, const void *data, gguf_rows_fn fill, void *user)
{
    if (!w)
        return DS4_E_ARG;
    if (w->rc)
        return w->rc;
    if (!name || !*name)
        return wfail(w, DS4_E_ARG, "empty tensor name");
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return wfail(w, DS4_E_ARG, "tensor '%s' added twice", name);
    const quant_traits *tr = (unsigned)type < DS4_TYPE_COUNT ? quant_get_traits(type) : NULL;
    if (!tr || tr->block_elems <= 0 || tr->block_bytes == 0)
        return wfail(w, DS4_E_ARG, "tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return wfail(w, DS4_E_ARG, "tensor '%s': n_dims %u not in 1..%d", name, n_dims,
                     GGUF_MAX_DIMS);
    wtensor t = {.type = type, .n_dims = n_dims, .data = data, .fill = fill, .user = user};
    int64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t.ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (t.ne[d] < 0 || __builtin_mul_overflow(n, t.ne[d], &n))
            return wfail(w, DS4_E_ARG, "tensor '%s': bad or overflowing ne[%u] = %" PRId64,
                         name, d, t.ne[d]);
    if (t.ne[0] % tr->block_elems != 0)
        return wfail(w, DS4_E_ARG, "tensor '%s': ne[0] = %" PRId64 " not a multiple of the %s"
                     " block size %" PRId64, name, t.ne[0], tr->name, tr->block_elems);
    if (n > 0 && (__builtin_mul_overflow((uint64_t)(t.ne[0] / tr->block_elems),
                                         (uint64_t)tr->block_bytes, &t.nbytes) ||
                  __builtin_mul_overflow(t.nbytes, (uint64_t)(n / t.ne[0]), &t.nbytes)))
        return wfail(w, DS4_E_ARG, "tensor '%s': byte size overflows", name);
    t.rows = t.ne[0] ? n / t.ne[0] : 0;
    if (t.nbytes && !data && !fill)
        return wfail(w, DS4_E_ARG, "tensor '%s': NULL data", name);
    size_t len = strlen(name);
    if (!(t.name = malloc(len + 1)) || !grow((void **)&w->t, &w->t_cap, w->n_t + 1, sizeof t)) {
        free(t.name);
        return wfail(w, DS4_E_NOMEM, "out of memory adding tensor '%s'", name);
    }
    memcpy(t.name, name, len + 1);
    w->t[w->n_t++] = t;
    return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, ds4_type type, uint32_t n_dims,
                           const int64_t *ne, const void *data)
{
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_rows(gguf_writer *w, const char *name, ds4_type type,
                                uint32_t n_dims, const int64_t *ne, gguf_rows_fn fn,
                                void *user)
{
    if (w && !w->rc && !fn)
        return wfail(w, DS4_E_ARG, "tensor '%s': NULL row producer", name ? name : "");
    return add_tensor(w, name, type, n_dims, ne, NULL, fn, user);
}

/* ---- layout and output ------------------------------------------------------------------ */

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Size of the directory (header, pairs, tensor entries) before the data padding. */
static uint64_t dir_bytes(const gguf_writer *w)
{
    uint64_t n = 24 + w->meta_len;
    for (size_t i = 0; i < w->n_t; i++)
        n += 8 + strlen(w->t[i].name) + 4 + 8ull * w->t[i].n_dims + 4 + 8;
    return n;
}

/* Total file size, or 0 on overflow. */
static uint64_t total_bytes(const gguf_writer *w)
{
    uint64_t n = pad_to(dir_bytes(w), w->alignment);
    for (size_t i = 0; i < w->n_t; i++)
        if (__builtin_add_overflow(n, pad_to(w->t[i].nbytes, w->alignment), &n))
            return 0;
    return n;
}

uint64_t gguf_writer_size(const gguf_writer *w)
{
    return w && !w->rc ? total_bytes(w) : 0;
}

/* Output goes to a FILE or to a buffer of the exact size. */
typedef struct sink {
    FILE *fp;
    uint8_t *buf;
    uint64_t pos;
    bool failed;
    int fill_rc;            /* a row producer's error (0: none) */
    ds4_error fill_err;
} sink;


static void emit(sink *s, const void *p, uint64_t n)
{
    if (s->failed || n == 0)
        return;
    if (s->fp) {
        if (fwrite(p, 1, (size_t)n, s->fp) != n)
            s->failed = true;
    } else {
        memcpy(s->buf + s->pos, p, (size_t)n);
    }
    s->pos += n;
}

static void emit_u32(sink *s, uint32_t v) { emit(s, &v, 4); }
static void emit_u64(sink *s, uint64_t v) { emit(s, &v, 8); }

static void emit_pad(sink *s, uint64_t a)
{
    static const uint8_t zeros[4096];
    uint64_t n = pad_to(s->pos, a) - s->pos;
    while (n > 0) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;
        emit(s, zeros, k);
        n -= k;
    }
}

#define FILL_CHUNK_BYTES (8u << 20)  /* rows a producer fills per call, at most (>= 1 row) */

/* Emits a producer tensor chunk by chunk: straight into the buffer, or through a scratch
 * buffer to the file. */
static void emit_rows(sink *s, const wtensor *t)
{
    if (s->failed || t->nbytes == 0)
        return;
    const int64_t rows = t->rows;
    const uint64_t row_bytes = t->nbytes / (uint64_t)rows;
    int64_t per = (int64_t)(FILL_CHUNK_BYTES / row_bytes);
    if (per < 1)
        per = 1;
    uint8_t *scratch = NULL;
    if (s->fp && !(scratch = malloc((size_t)(row_bytes * (uint64_t)(per < rows ? per : rows))))) {
        s->failed = true;
        s->fill_rc = ds4_error_set(&s->fill_err, DS4_E_NOMEM, "gguf writer: tensor '%s': out of"
                                   " memory for its row buffer", t->name);
        return;
    }
    for (int64_t r = 0; r < rows && !s->failed; r += per) {
        int64_t n = rows - r < per ? rows - r : per;
        uint8_t *dst = scratch ? scratch : s->buf + s->pos;
        int rc = t->fill(t->user, r, n, dst, &s->fill_err);
        if (rc) {
            if (s->fill_err.code != rc)
                ds4_error_set(&s->fill_err, rc, "gguf writer: tensor '%s': row producer failed"
                              " at row %lld", t->name, (long long)r);
            s->fill_rc = rc;
            s->failed = true;
            break;
        }
        if (scratch) {
            emit(s, scratch, row_bytes * (uint64_t)n);
        } else {
            s->pos += row_bytes * (uint64_t)n;
        }
    }
    free(scratch);
}

static void emit_all(const gguf_writer *w, sink *s)
{
    emit_u32(s, GGUF_MAGIC);
    emit_u32(s, GGUF_VERSION);
    emit_u64(s, w->n_t);
    emit_u64(s, w->n_kv);
    emit(s, w->meta, w->meta_len);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        emit_u64(s, len);
        emit(s, t->name, len);
        emit_u32(s, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            emit_u64(s, (uint64_t)t->ne[d]);
        emit_u32(s, (uint32_t)t->type);
        emit_u64(s, off);
        off += pad_to(t->nbytes, w->alignment);
    }
    emit_pad(s, w->alignment);
    for (size_t i = 0; i < w->n_t; i++) {
        if (w->t[i].fill)
            emit_rows(s, &w->t[i]);
        else
            emit(s, w->t[i].data, w->t[i].nbytes);
        emit_pad(s, w->alignment);
    }
}

/* Checks the writer is ready; returns the file size in *total. */
static int ready(gguf_writer *w, uint64_t *total, ds4_error *err)
{
    if (!w)
        return ds4_error_set(err, DS4_E_ARG, "gguf writer: NULL writer");
    if (w->rc)
        return ds4_error_set(err, w->rc, "%s", w->err.msg);
    *total = total_bytes(w);
    if (*total == 0)
        return ds4_error_set(err, DS4_E_RANGE, "gguf writer: file size overflows");
    return 0;
}

int gguf_writer_write(gguf_writer *w, const char *path, ds4_error *err)
{
    uint64_t total;
    int rc = ready(w, &total, err);
    if (rc)
        return rc;
    if (!path)
        return ds4_error_set(err, DS4_E_ARG, "gguf writer: NULL path");
    sink s = {.fp = fopen(path, "wb")};
    if (!s.fp)
        return ds4_error_set(err, DS4_E_IO, "%s: cannot create: %s", path, strerror(errno));
    emit_all(w, &s);
    bool bad = s.failed || fflush(s.fp) != 0;
    int e = errno;
    bad = (fclose(s.fp) != 0) || bad;
    if (s.fill_rc) {
        remove(path);
        return ds4_error_set(err, s.fill_rc, "%s", s.fill_err.msg);
    }
    if (bad || s.pos != total) {
        remove(path);
        return ds4_error_set(err, DS4_E_IO, "%s: offset %" PRIu64 ": write failed: %s", path,
                             s.pos, strerror(e ? e : EIO));
    }
    return 0;
}

int gguf_writer_write_memory(gguf_writer *w, void **out, size_t *size, ds4_error *err)
{
    uint64_t total;
    int rc = ready(w, &total, err);
    if (rc)
        return rc;
    if (!out || !size)
        return ds4_error_set(err, DS4_E_ARG, "gguf writer: NULL output");
    if (total > SIZE_MAX / 2)
        return ds4_error_set(err, DS4_E_NOMEM, "gguf writer: %" PRIu64 " bytes too large",
                             total);
    sink s = {.buf = malloc((size_t)total)};
    if (!s.buf)
        return ds4_error_set(err, DS4_E_NOMEM, "gguf writer: out of memory for %" PRIu64
                             " bytes", total);
    emit_all(w, &s);
    if (s.fill_rc) {
        free(s.buf);
        return ds4_error_set(err, s.fill_rc, "%s", s.fill_err.msg);
    }
    *out = s.buf;
    *size = (size_t)total;
    return 0;
}
