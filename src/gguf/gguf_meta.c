/* gguf_meta.c — read-only access to an opened gguf_file: file facts, metadata pairs by
 * index or key with typed and converting getters, array elements, tensors by index or name.
 * Owns the value-type table (names and sizes). Does not parse or validate: gguf_read.c did
 * that at open, so every accessor here trusts the structure and only checks the caller's
 * request (key present, type asked, index in range). Serves ds4-architecture.md §1.3. */
#include "gguf/gguf_impl.h"

#include <inttypes.h>
#include <string.h>

/* ---- value types ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
} type_info[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_U8] = {"u8", 1},     [GGUF_TYPE_I8] = {"i8", 1},
    [GGUF_TYPE_U16] = {"u16", 2},   [GGUF_TYPE_I16] = {"i16", 2},
    [GGUF_TYPE_U32] = {"u32", 4},   [GGUF_TYPE_I32] = {"i32", 4},
    [GGUF_TYPE_F32] = {"f32", 4},   [GGUF_TYPE_BOOL] = {"bool", 1},
    [GGUF_TYPE_STR] = {"str", 0},   [GGUF_TYPE_ARR] = {"arr", 0},
    [GGUF_TYPE_U64] = {"u64", 8},   [GGUF_TYPE_I64] = {"i64", 8},
    [GGUF_TYPE_F64] = {"f64", 8},
};

const char *gguf_type_name(gguf_type t)
{
    return (unsigned)t < GGUF_TYPE_COUNT ? type_info[t].name : "?";
}

size_t gguf_type_size(gguf_type t)
{
    return (unsigned)t < GGUF_TYPE_COUNT ? type_info[t].size : 0;
}

/* ---- file facts and pairs --------------------------------------------------------------- */

const char *gguf_path(const gguf_file *f) { return f->path ? f->path : "<memory>"; }
size_t gguf_size(const gguf_file *f) { return f->size; }
const void *gguf_base(const gguf_file *f) { return f->base; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
uint64_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
int64_t gguf_kv_count(const gguf_file *f) { return (int64_t)f->n_kv; }

const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i)
{
    return i >= 0 && (uint64_t)i < f->n_kv ? &f->kv[i] : NULL;
}

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    if (!key || !f->kv_hash)
        return -1;
    uint64_t mask = f->kv_hash_cap - 1;
    for (uint64_t h = gguf_impl_hash(key) & mask; f->kv_hash[h]; h = (h + 1) & mask)
        if (strcmp(f->kv[f->kv_hash[h] - 1].key, key) == 0)
            return (int64_t)(f->kv_hash[h] - 1);
    return -1;
}

/* The pair of key, or NULL with DS4_E_NOTFOUND in err. */
static const gguf_kv *lookup(const gguf_file *f, const char *key, ds4_error *err)
{
    int64_t i = gguf_find_key(f, key);
    if (i < 0) {
        ds4_error_set(err, DS4_E_NOTFOUND, "%s: key '%s' not found", gguf_path(f),
                      key ? key : "(null)");
        return NULL;
    }
    return &f->kv[i];
}

static int wrong_type(const gguf_file *f, const gguf_kv *kv, const char *want, ds4_error *err)
{
    if (kv->type == GGUF_TYPE_ARR)
        return ds4_error_set(err, DS4_E_TYPE, "%s: offset %" PRIu64 ": key '%s' is an array of"
                             " %s, expected %s", gguf_path(f), kv->offset, kv->key,
                             gguf_type_name(kv->arr_type), want);
    return ds4_error_set(err, DS4_E_TYPE, "%s: offset %" PRIu64 ": key '%s' has type %s,"
                         " expected %s", gguf_path(f), kv->offset, kv->key,
                         gguf_type_name(kv->type), want);
}

/* One exact-type getter per scalar type. */
#define GETTER(fn, ctype, tag, member)                                                      \
    int fn(const gguf_file *f, const char *key, ctype *out, ds4_error *err)                \
    {                                                                                       \
        const gguf_kv *kv = lookup(f, key, err);                                            \
        if (!kv)                                                                            \
            return DS4_E_NOTFOUND;                                                          \
        if (kv->type != (tag))                                                              \
            return wrong_type(f, kv, gguf_type_name(tag), err);                             \
        *out = kv->v.member;                                                                \
        return 0;                                                                           \
    }

GETTER(gguf_get_u8, uint8_t, GGUF_TYPE_U8, u8)
GETTER(gguf_get_i8, int8_t, GGUF_TYPE_I8, i8)
GETTER(gguf_get_u16, uint16_t, GGUF_TYPE_U16, u16)
GETTER(gguf_get_i16, int16_t, GGUF_TYPE_I16, i16)
GETTER(gguf_get_u32, uint32_t, GGUF_TYPE_U32, u32)
GETTER(gguf_get_i32, int32_t, GGUF_TYPE_I32, i32)
GETTER(gguf_get_u64, uint64_t, GGUF_TYPE_U64, u64)
GETTER(gguf_get_i64, int64_t, GGUF_TYPE_I64, i64)
GETTER(gguf_get_f32, float, GGUF_TYPE_F32, f32)
GETTER(gguf_get_f64, double, GGUF_TYPE_F64, f64)
GETTER(gguf_get_bool, bool, GGUF_TYPE_BOOL, b)

#undef GETTER

int gguf_get_str(const gguf_file *f, const char *key, const char **out, uint64_t *len,
                 ds4_error *err)
{
    const gguf_kv *kv = lookup(f, key, err);
    if (!kv)
        return DS4_E_NOTFOUND;
    if (kv->type != GGUF_TYPE_STR)
        return wrong_type(f, kv, "str", err);
    *out = kv->v.str.s;
    if (len)
        *len = kv->v.str.len;
    return 0;
}

/* ---- conversions shared by scalars and array elements ----------------------------------- */

/* Reads one fixed-size value of type t at p; false if t is not an integer type. Signed
 * types fill *s (and set *is_signed), unsigned ones fill *u. */
static bool read_int(gguf_type t, const void *p, int64_t *s, uint64_t *u, bool *is_signed)
{
    *is_signed = true;
    switch (t) {
    case GGUF_TYPE_U8: { uint8_t v; memcpy(&v, p, 1); *u = v; *is_signed = false; break; }
    case GGUF_TYPE_U16: { uint16_t v; memcpy(&v, p, 2); *u = v; *is_signed = false; break; }
    case GGUF_TYPE_U32: { uint32_t v; memcpy(&v, p, 4); *u = v; *is_signed = false; break; }
    case GGUF_TYPE_U64: { uint64_t v; memcpy(&v, p, 8); *u = v; *is_signed = false; break; }
    case GGUF_TYPE_I8: { int8_t v; memcpy(&v, p, 1); *s = v; break; }
    case GGUF_TYPE_I16: { int16_t v; memcpy(&v, p, 2); *s = v; break; }
    case GGUF_TYPE_I32: { int32_t v; memcpy(&v, p, 4); *s = v; break; }
    case GGUF_TYPE_I64: { int64_t v; memcpy(&v, p, 8); *s = v; break; }
    default: return false;
    }
    return true;
}

/* Reads one numeric value (integer or float, not bool) as double; false if not numeric. */
static bool read_f64(gguf_type t, const void *p, double *out)
{
    int64_t s;
    uint64_t u;
    bool is_signed;
    if (t == GGUF_TYPE_F32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
    } else if (t == GGUF_TYPE_F64) {
        memcpy(out, p, 8);
    } else if (read_int(t, p, &s, &u, &is_signed)) {
        *out = is_signed ? (double)s : (double)u;
    } else {
        return false;
    }
    return true;
}

int gguf_get_f64_any(const gguf_file *f, const char *key, double *out, ds4_error *err)
{
    const gguf_kv *kv = lookup(f, key, err);
    if (!kv)
        return DS4_E_NOTFOUND;
    if (kv->type == GGUF_TYPE_ARR || !read_f64(kv->type, &kv->v, out))
        return wrong_type(f, kv, "a number", err);
    return 0;
}

int gguf_get_u64_any(const gguf_file *f, const char *key, uint64_t *out, ds4_error *err)
{
    const gguf_kv *kv = lookup(f, key, err);
    if (!kv)
        return DS4_E_NOTFOUND;
    int64_t s;
    uint64_t u;
    bool is_signed;
    if (kv->type == GGUF_TYPE_ARR || !read_int(kv->type, &kv->v, &s, &u, &is_signed))
        return wrong_type(f, kv, "an integer", err);
    if (is_signed && s < 0)
        return ds4_error_set(err, DS4_E_RANGE, "%s: offset %" PRIu64 ": key '%s' = %" PRId64
                             " is negative", gguf_path(f), kv->offset, kv->key, s);
    *out = is_signed ? (uint64_t)s : u;
    return 0;
}

/* ---- arrays ----------------------------------------------------------------------------- */

int gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, ds4_error *err)
{
    const gguf_kv *kv = lookup(f, key, err);
    if (!kv)
        return DS4_E_NOTFOUND;
    if (kv->type != GGUF_TYPE_ARR)
        return wrong_type(f, kv, "an array", err);
    *out = kv;
    return 0;
}

/* Checks that kv is an array and j is inside it. */
static int arr_check(const gguf_file *f, const gguf_kv *kv, uint64_t j, ds4_error *err)
{
    if (kv->type != GGUF_TYPE_ARR)
        return wrong_type(f, kv, "an array", err);
    if (j >= kv->arr_count)
        return ds4_error_set(err, DS4_E_RANGE, "%s: offset %" PRIu64 ": key '%s': index %"
                             PRIu64 " outside the array of %" PRIu64, gguf_path(f), kv->offset,
                             kv->key, j, kv->arr_count);
    return 0;
}

static const void *arr_elem(const gguf_kv *kv, uint64_t j)
{
    return (const uint8_t *)kv->v.arr_data + j * gguf_type_size(kv->arr_type);
}

int gguf_arr_f64(const gguf_file *f, const gguf_kv *kv, uint64_t j, double *out,
                 ds4_error *err)
{
    int rc = arr_check(f, kv, j, err);
    if (rc)
        return rc;
    if (kv->arr_type == GGUF_TYPE_STR || !read_f64(kv->arr_type, arr_elem(kv, j), out))
        return wrong_type(f, kv, "an array of numbers", err);
    return 0;
}

int gguf_arr_i64(const gguf_file *f, const gguf_kv *kv, uint64_t j, int64_t *out,
                 ds4_error *err)
{
    int rc = arr_check(f, kv, j, err);
    if (rc)
        return rc;
    int64_t s;
    uint64_t u;
    bool is_signed;
    if (kv->arr_type == GGUF_TYPE_STR ||
        !read_int(kv->arr_type, arr_elem(kv, j), &s, &u, &is_signed))
        return wrong_type(f, kv, "an array of integers", err);
    if (!is_signed && u > (uint64_t)INT64_MAX)
        return ds4_error_set(err, DS4_E_RANGE, "%s: offset %" PRIu64 ": key '%s': element %"
                             PRIu64 " = %" PRIu64 " does not fit i64", gguf_path(f),
                             kv->offset, kv->key, j, u);
    *out = is_signed ? s : (int64_t)u;
    return 0;
}

int gguf_arr_str(const gguf_file *f, const gguf_kv *kv, uint64_t j, const gguf_str **out,
                 ds4_error *err)
{
    int rc = arr_check(f, kv, j, err);
    if (rc)
        return rc;
    if (kv->arr_type != GGUF_TYPE_STR)
        return wrong_type(f, kv, "an array of str", err);
    *out = &kv->v.arr_str[j];
    return 0;
}

/* ---- tensors ---------------------------------------------------------------------------- */

int64_t gguf_tensor_count(const gguf_file *f) { return (int64_t)f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i)
{
    return i >= 0 && (uint64_t)i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!name || !f->t_hash)
        return NULL;
    uint64_t mask = f->t_hash_cap - 1;
    for (uint64_t h = gguf_impl_hash(name) & mask; f->t_hash[h]; h = (h + 1) & mask)
        if (strcmp(f->tensors[f->t_hash[h] - 1].name, name) == 0)
            return &f->tensors[f->t_hash[h] - 1];
    return NULL;
}

int gguf_get_tensor(const gguf_file *f, const char *name, const gguf_tensor **out,
                    ds4_error *err)
{
    *out = gguf_find_tensor(f, name);
    if (!*out)
        return ds4_error_set(err, DS4_E_NOTFOUND, "%s: tensor '%s' not found", gguf_path(f),
                             name ? name : "(null)");
    return 0;
}
