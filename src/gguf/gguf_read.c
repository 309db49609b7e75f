/* gguf_read.c — opening a GGUF v3 file: mmap (or caller memory), then strict validation of
 * the header, every metadata pair, the tensor directory and the data section, building the
 * immutable gguf_file that gguf_meta.c reads. The directory is walked twice by one parser:
 * the first pass checks every bound and type and measures the strings, the second copies
 * keys/names/strings into one arena. Every size is computed with overflow checks; every
 * failure names file, offset and problem. Owns the injected-failure hooks (allocations and
 * the system calls of gguf_open). Implements ds4-architecture.md §1.1. */
#include "gguf/gguf_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Smallest possible encodings, used to reject absurd header counts before any work:
 * a pair is key length (8) + 1 key byte + type (4) + a u8 value (1); a tensor entry is
 * name length (8) + 1 name byte + n_dims (4) + one dim (8) + type (4) + offset (8). */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_BYTES 33u
#define HEADER_BYTES 24u

/* ---- injected failures ------------------------------------------------------------------ */

static _Thread_local long fail_alloc_at, alloc_count, fail_io_at, io_count;

void gguf_debug_fail_alloc(long k) { fail_alloc_at = k; alloc_count = 0; }
long gguf_debug_alloc_count(void) { return alloc_count; }
void gguf_debug_fail_io(long k) { fail_io_at = k; io_count = 0; }
long gguf_debug_io_count(void) { return io_count; }

/* Every allocation of the reader: zeroed n * size bytes (at least one), NULL on overflow,
 * on real exhaustion, or when the injected failure says so. */
static void *xcalloc(uint64_t n, size_t size)
{
    alloc_count++;
    if (fail_alloc_at > 0 && alloc_count == fail_alloc_at)
        return NULL;
    uint64_t bytes;
    if (__builtin_mul_overflow(n, (uint64_t)size, &bytes) || bytes > SIZE_MAX / 2)
        return NULL;
    return calloc(n ? (size_t)n : 1, size);
}

/* True when the next system call of gguf_open must fail (errno is then EIO). */
static bool io_fails(void)
{
    io_count++;
    if (fail_io_at > 0 && io_count == fail_io_at) {
        errno = EIO;
        return true;
    }
    return false;
}

/* ---- the cursor and its failures -------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;     /* file bytes */
    uint64_t size;
    uint64_t off;         /* cursor; always <= size */
    const char *name;     /* file name for messages */
    ds4_error *err;
    gguf_file *f;         /* NULL in the measuring pass, the file being filled otherwise */
    uint64_t str_bytes;   /* arena bytes needed (measure) or used (fill) */
    uint64_t n_arr_strs;  /* string array elements counted (measure) or stored (fill) */
} rd;

/* Formats "<file>: offset <off>: <what>" into the error; returns code. */
__attribute__((format(printf, 4, 5)))
static int fail_at(const rd *r, uint64_t off, int code, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ds4_error_set(r->err, code, "%s: offset %" PRIu64 ": %s", r->name, off, what);
}

/* A printable, bounded copy of a name taken from the file, for messages. */
static const char *show(char *buf, size_t cap, const char *s, uint64_t len)
{
    size_t n = 0;
    for (uint64_t i = 0; i < len && n + 4 < cap; i++)
        buf[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (len > n && n + 4 >= cap)
        buf[n++] = '.', buf[n++] = '.', buf[n++] = '.';
    buf[n] = 0;
    return buf;
}

static int need(rd *r, uint64_t n, const char *what)
{
    if (n > r->size - r->off)
        return fail_at(r, r->off, DS4_E_FORMAT,
                       "unexpected end of file reading %s (need %" PRIu64 " bytes, %" PRIu64
                       " left)", what, n, r->size - r->off);
    return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);
    if (rc)
        return rc;
    memcpy(v, r->p + r->off, 4);
    r->off += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *what)
{
    int rc = need(r, 8, what);
    if (rc)
        return rc;
    memcpy(v, r->p + r->off, 8);
    r->off += 8;
    return 0;
}

/* Reads a string (u64 length + bytes). raw gets a view into the file; in the fill pass
 * *stored gets the NUL-terminated arena copy. Names (keys, tensor names) must be non-empty
 * and free of NUL bytes. */
static int rd_str(rd *r, gguf_str *raw, gguf_str *stored, bool is_name, const char *what)
{
    uint64_t at = r->off, len;
    int rc = rd_u64(r, &len, what);
    if (rc)
        return rc;
    if (len > r->size - r->off)
        return fail_at(r, at, DS4_E_FORMAT,
                       "%s length %" PRIu64 " past end of file (%" PRIu64 " bytes left)",
                       what, len, r->size - r->off);
    const char *s = (const char *)r->p + r->off;
    if (is_name && len == 0)
        return fail_at(r, at, DS4_E_FORMAT, "empty %s", what);
    if (is_name && memchr(s, 0, len))
        return fail_at(r, at, DS4_E_FORMAT, "%s contains a NUL byte", what);
    r->off += len;
    raw->s = s;
    raw->len = len;
    if (!r->f) {
        r->str_bytes += len + 1;
    } else {
        char *d = r->f->arena + r->str_bytes;
        memcpy(d, s, len);
        d[len] = 0;
        r->str_bytes += len + 1;
        stored->s = d;
        stored->len = len;
    }
    return 0;
}

/* ---- metadata pairs --------------------------------------------------------------------- */

/* Reads an array value (after its type field): element type, count, elements. */
static int rd_array(rd *r, gguf_kv *kv, const char *key)
{
    uint64_t at = r->off;
    uint32_t et;
    uint64_t count;
    int rc = rd_u32(r, &et, "array element type");
    if (rc)
        return rc;
    if (et >= GGUF_TYPE_COUNT)
        return fail_at(r, at, DS4_E_FORMAT, "key '%s': unknown array element type %u", key, et);
    if (et == GGUF_TYPE_ARR)
        return fail_at(r, at, DS4_E_FORMAT, "key '%s': nested arrays are not supported", key);
    if ((rc = rd_u64(r, &count, "array count")))
        return rc;
    kv->arr_type = (gguf_type)et;
    kv->arr_count = count;
    if (et == GGUF_TYPE_STR) {
        if (count > (r->size - r->off) / 8)
            return fail_at(r, at + 4, DS4_E_FORMAT,
                           "key '%s': array of %" PRIu64 " strings past end of file", key, count);
        gguf_str *dst = r->f ? r->f->arr_strs + r->n_arr_strs : NULL;
        kv->v.arr_str = dst;
        for (uint64_t j = 0; j < count; j++) {
            gguf_str raw, tmp;
            if ((rc = rd_str(r, &raw, dst ? &dst[j] : &tmp, false, "array string")))
                return rc;
        }
        r->n_arr_strs += count;
        return 0;
    }
    uint64_t esz = gguf_type_size((gguf_type)et), bytes;
    if (__builtin_mul_overflow(count, esz, &bytes) || bytes > r->size - r->off)
        return fail_at(r, at + 4, DS4_E_FORMAT,
                       "key '%s': array of %" PRIu64 " %s past end of file (%" PRIu64
                       " bytes left)", key, count, gguf_type_name((gguf_type)et),
                       r->size - r->off);
    const uint8_t *data = r->p + r->off;
    if (et == GGUF_TYPE_BOOL)
        for (uint64_t j = 0; j < count; j++)
            if (data[j] > 1)
                return fail_at(r, r->off + j, DS4_E_FORMAT,
                               "key '%s': bool array element %" PRIu64 " is %u, not 0 or 1",
                               key, j, data[j]);
    kv->v.arr_data = data;
    r->off += bytes;
    return 0;
}

/* Reads the name of entry i (what: "key of pair", "name of tensor"): *stored gets the arena
 * copy (NULL in the measuring pass), *shown a printable form of it in buf for messages. */
static int rd_name(rd *r, const char *what, uint64_t i, const char **stored, char *buf,
                   size_t cap, const char **shown)
{
    char w[64];
    gguf_str raw, st = {0};
    snprintf(w, sizeof w, "%s %" PRIu64, what, i);
    int rc = rd_str(r, &raw, &st, true, w);
    if (rc)
        return rc;
    *stored = st.s;
    *shown = show(buf, cap, raw.s, raw.len);
    return 0;
}

/* Reads one pair into kv (a scratch struct in the measuring pass). */
static int rd_kv(rd *r, gguf_kv *kv, uint64_t i)
{
    char kbuf[80];
    const char *key;
    kv->offset = r->off;
    int rc = rd_name(r, "key of pair", i, &kv->key, kbuf, sizeof kbuf, &key);
    if (rc)
        return rc;
    uint64_t at = r->off;
    uint32_t type;
    if ((rc = rd_u32(r, &type, "value type")))
        return rc;
    if (type >= GGUF_TYPE_COUNT)
        return fail_at(r, at, DS4_E_FORMAT, "key '%s': unknown value type %u", key, type);
    kv->type = (gguf_type)type;
    if (type == GGUF_TYPE_ARR)
        return rd_array(r, kv, key);
    if (type == GGUF_TYPE_STR) {
        gguf_str raw;
        return rd_str(r, &raw, &kv->v.str, false, "string value");
    }
    size_t sz = gguf_type_size(kv->type);
    if ((rc = need(r, sz, "value")))
        return rc;
    const uint8_t *p = r->p + r->off;
    if (type == GGUF_TYPE_BOOL) {
        if (*p > 1)
            return fail_at(r, r->off, DS4_E_FORMAT, "key '%s': bool value is %u, not 0 or 1",
                           key, *p);
        kv->v.b = *p != 0;
    } else {
        memcpy(&kv->v, p, sz);  /* little-endian host: every member starts at byte 0 */
    }
    r->off += sz;
    return 0;
}

/* ---- tensor directory ------------------------------------------------------------------- */

/* Reads one directory entry into t and derives n_elems and nbytes. */
static int rd_tensor(rd *r, gguf_tensor *t, uint64_t i)
{
    char nbuf[80];
    const char *name;
    t->info_offset = r->off;
    int rc = rd_name(r, "name of tensor", i, &t->name, nbuf, sizeof nbuf, &name);
    if (rc)
        return rc;
    uint64_t at = r->off;
    if ((rc = rd_u32(r, &t->n_dims, "n_dims")))
        return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail_at(r, at, DS4_E_FORMAT, "tensor '%s': n_dims %u not in 1..%d", name,
                       t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        at = r->off;
        if ((rc = rd_u64(r, &ne, "dimension")))
            return rc;
        if (ne > (uint64_t)INT64_MAX)
            return fail_at(r, at, DS4_E_FORMAT, "tensor '%s': ne[%u] = %" PRIu64 " too large",
                           name, d, ne);
        t->ne[d] = (int64_t)ne;
    }
    at = r->off;
    uint32_t type;
    if ((rc = rd_u32(r, &type, "tensor type")))
        return rc;
    const quant_traits *tr = type < DS4_TYPE_COUNT ? quant_get_traits((ds4_type)type) : NULL;
    if (!tr || tr->block_elems <= 0 || tr->block_bytes == 0)
        return fail_at(r, at, DS4_E_FORMAT, "tensor '%s': unknown tensor type %u", name, type);
    t->type = (ds4_type)type;
    if ((rc = rd_u64(r, &t->offset, "tensor data offset")))
        return rc;

    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        if (__builtin_mul_overflow(n, t->ne[d], &n))
            return fail_at(r, t->info_offset, DS4_E_FORMAT,
                           "tensor '%s': element count overflows (ne[%u] = %" PRId64 ")",
                           name, d, t->ne[d]);
    t->n_elems = n;
    if (t->ne[0] % tr->block_elems != 0)
        return fail_at(r, t->info_offset, DS4_E_FORMAT,
                       "tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block"
                       " size %" PRId64, name, t->ne[0], tr->name, tr->block_elems);
    /* n > 0 bounds every partial product of ne[1..] by n; n == 0 means no bytes. */
    uint64_t nbytes = 0;
    if (n > 0) {
        uint64_t rows = (uint64_t)(n / t->ne[0]);
        if (__builtin_mul_overflow((uint64_t)(t->ne[0] / tr->block_elems),
                                   (uint64_t)tr->block_bytes, &nbytes) ||
            __builtin_mul_overflow(nbytes, rows, &nbytes))
            return fail_at(r, t->info_offset, DS4_E_FORMAT, "tensor '%s': byte size overflows",
                           name);
    }
    t->nbytes = nbytes;
    return 0;
}

/* Walks header, pairs and directory; r->f NULL measures, otherwise fills r->f. */
static int walk(rd *r, uint64_t *n_kv, uint64_t *n_tensors)
{
    uint32_t magic, version;
    int rc;
    r->off = 0;
    r->str_bytes = 0;
    r->n_arr_strs = 0;
    if ((rc = rd_u32(r, &magic, "magic")))
        return rc;
    if (magic != GGUF_MAGIC)
        return fail_at(r, 0, DS4_E_FORMAT, "bad magic 0x%08x (expected 0x%08x, \"GGUF\")",
                       magic, GGUF_MAGIC);
    if ((rc = rd_u32(r, &version, "version")))
        return rc;
    if (version != GGUF_VERSION)
        return fail_at(r, 4, DS4_E_FORMAT, "unsupported GGUF version %u (only %u is read)",
                       version, GGUF_VERSION);
    if ((rc = rd_u64(r, n_tensors, "tensor count")) || (rc = rd_u64(r, n_kv, "kv count")))
        return rc;
    uint64_t room = r->size - HEADER_BYTES;
    if (*n_tensors > room / MIN_TENSOR_BYTES)
        return fail_at(r, 8, DS4_E_FORMAT,
                       "tensor count %" PRIu64 " too large for a file of %" PRIu64 " bytes",
                       *n_tensors, r->size);
    if (*n_kv > room / MIN_KV_BYTES)
        return fail_at(r, 16, DS4_E_FORMAT,
                       "kv count %" PRIu64 " too large for a file of %" PRIu64 " bytes",
                       *n_kv, r->size);
    for (uint64_t i = 0; i < *n_kv; i++) {
        gguf_kv scratch;
        memset(&scratch, 0, sizeof scratch);
        if ((rc = rd_kv(r, r->f ? &r->f->kv[i] : &scratch, i)))
            return rc;
    }
    for (uint64_t i = 0; i < *n_tensors; i++) {
        gguf_tensor scratch;
        memset(&scratch, 0, sizeof scratch);
        if ((rc = rd_tensor(r, r->f ? &r->f->tensors[i] : &scratch, i)))
            return rc;
    }
    return 0;
}

/* ---- checks after the directory --------------------------------------------------------- */

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t c = 1;
    while (c < n)
        c <<= 1;
    return c;
}

/* Builds an open-addressing table over n names; a duplicate is a format error. */
static int build_hash(rd *r, uint64_t **table, uint64_t *cap, uint64_t n, bool tensors)
{
    *cap = pow2_at_least(2 * n + 1);
    if (!(*table = xcalloc(*cap, sizeof **table)))
        return ds4_error_set(r->err, DS4_E_NOMEM, "%s: out of memory for the %s index", r->name,
                             tensors ? "tensor" : "key");
    for (uint64_t i = 0; i < n; i++) {
        const char *name = tensors ? r->f->tensors[i].name : r->f->kv[i].key;
        uint64_t h = gguf_impl_hash(name) & (*cap - 1);
        for (; (*table)[h]; h = (h + 1) & (*cap - 1)) {
            uint64_t j = (*table)[h] - 1;
            const char *other = tensors ? r->f->tensors[j].name : r->f->kv[j].key;
            if (strcmp(other, name) == 0) {
                char nbuf[80];
                uint64_t at = tensors ? r->f->tensors[i].info_offset : r->f->kv[i].offset;
                uint64_t first = tensors ? r->f->tensors[j].info_offset : r->f->kv[j].offset;
                return fail_at(r, at, DS4_E_FORMAT, "duplicate %s '%s' (first at offset %" PRIu64
                               ")", tensors ? "tensor" : "key",
                               show(nbuf, sizeof nbuf, name, strlen(name)), first);
            }
        }
        (*table)[h] = i + 1;
    }
    return 0;
}

/* general.alignment, if present, must be a u32 power of two. */
static int check_alignment(rd *r)
{
    gguf_file *f = r->f;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(f, GGUF_KEY_ALIGNMENT);
    if (i < 0)
        return 0;
    const gguf_kv *kv = &f->kv[i];
    if (kv->type != GGUF_TYPE_U32)
        return fail_at(r, kv->offset, DS4_E_FORMAT, "%s has type %s, expected u32",
                       GGUF_KEY_ALIGNMENT, gguf_type_name(kv->type));
    uint32_t a = kv->v.u32;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail_at(r, kv->offset, DS4_E_FORMAT,
                       "%s = %u is not a power of two", GGUF_KEY_ALIGNMENT, a);
    f->alignment = a;
    return 0;
}

typedef struct span {
    uint64_t start, end, idx;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* Every tensor's data: aligned, inside the file, disjoint from the others. */
static int check_data(rd *r, uint64_t dir_end)
{
    gguf_file *f = r->f;
    uint64_t a = f->alignment;
    f->data_offset = (dir_end + a - 1) / a * a;  /* dir_end <= size < 2^63: no overflow */
    span *spans = xcalloc(f->n_tensors, sizeof *spans);
    if (!spans)
        return ds4_error_set(r->err, DS4_E_NOMEM, "%s: out of memory checking tensor data",
                             r->name);
    uint64_t n = 0;
    int rc = 0;
    char nbuf[80], obuf[80];
    for (uint64_t i = 0; i < f->n_tensors && !rc; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t start, end;
        if (t->offset % a != 0) {
            rc = fail_at(r, t->info_offset, DS4_E_FORMAT,
                         "tensor '%s': data offset %" PRIu64 " not a multiple of the alignment"
                         " %" PRIu64, show(nbuf, sizeof nbuf, t->name, strlen(t->name)),
                         t->offset, a);
        } else if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
                   __builtin_add_overflow(start, t->nbytes, &end) || end > r->size) {
            rc = fail_at(r, t->info_offset, DS4_E_FORMAT,
                         "tensor '%s': data at %" PRIu64 " + %" PRIu64 " (%" PRIu64 " bytes)"
                         " past end of file (size %" PRIu64 ")",
                         show(nbuf, sizeof nbuf, t->name, strlen(t->name)), f->data_offset,
                         t->offset, t->nbytes, r->size);
        } else {
            t->data = r->p + start;
            if (t->nbytes)
                spans[n++] = (span){start, end, i};
        }
    }
    if (!rc && n > 1) {
        qsort(spans, n, sizeof *spans, span_cmp);
        for (uint64_t k = 1; k < n && !rc; k++) {
            if (spans[k].start < spans[k - 1].end) {
                const gguf_tensor *t = &f->tensors[spans[k].idx];
                const gguf_tensor *o = &f->tensors[spans[k - 1].idx];
                rc = fail_at(r, t->info_offset, DS4_E_FORMAT,
                             "tensor '%s': data [%" PRIu64 ", %" PRIu64 ") overlaps tensor '%s'"
                             " data [%" PRIu64 ", %" PRIu64 ")",
                             show(nbuf, sizeof nbuf, t->name, strlen(t->name)), spans[k].start,
                             spans[k].end, show(obuf, sizeof obuf, o->name, strlen(o->name)),
                             spans[k - 1].start, spans[k - 1].end);
            }
        }
    }
    free(spans);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------------- */

/* Builds a gguf_file over size bytes at base; takes ownership of map (munmapped on failure). */
static int build(gguf_file **out, const uint8_t *base, size_t size, const char *path,
                 void *map, ds4_error *err)
{
    const char *name = path ? path : "<memory>";
    rd r = {.p = base, .size = size, .name = name, .err = err};
    uint64_t n_kv = 0, n_tensors = 0;
    int rc;
    if ((rc = walk(&r, &n_kv, &n_tensors))) {
        if (map)
            munmap(map, size);
        return rc;
    }

    gguf_file *f = xcalloc(1, sizeof *f);
    if (!f) {
        if (map)
            munmap(map, size);
        return ds4_error_set(err, DS4_E_NOMEM, "%s: out of memory", name);
    }
    f->map = map;
    f->base = base;
    f->size = size;
    f->version = GGUF_VERSION;
    f->n_kv = n_kv;
    f->n_tensors = n_tensors;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    uint64_t dir_end = r.off;
    if ((path && !(f->path = xcalloc(strlen(path) + 1, 1))) ||
        !(f->kv = xcalloc(n_kv, sizeof *f->kv)) ||
        !(f->tensors = xcalloc(n_tensors, sizeof *f->tensors)) ||
        !(f->arr_strs = xcalloc(r.n_arr_strs, sizeof *f->arr_strs)) ||
        !(f->arena = xcalloc(r.str_bytes, 1))) {
        rc = ds4_error_set(err, DS4_E_NOMEM, "%s: out of memory for the directory (%" PRIu64
                           " pairs, %" PRIu64 " tensors, %" PRIu64 " string bytes)", name,
                           n_kv, n_tensors, r.str_bytes);
        goto fail;
    }
    if (path)
        memcpy(f->path, path, strlen(path) + 1);
    r.f = f;
    if ((rc = walk(&r, &n_kv, &n_tensors)) ||
        (rc = build_hash(&r, &f->kv_hash, &f->kv_hash_cap, n_kv, false)) ||
        (rc = check_alignment(&r)) ||
        (rc = build_hash(&r, &f->t_hash, &f->t_hash_cap, n_tensors, true)) ||
        (rc = check_data(&r, dir_end)))
        goto fail;
    *out = f;
    return 0;
fail:
    gguf_close(f);
    return rc;
}

int gguf_open_memory(gguf_file **out, const void *data, size_t size, ds4_error *err)
{
    if (!out)
        return ds4_error_set(err, DS4_E_ARG, "gguf_open_memory: out is NULL");
    *out = NULL;
    if (!data && size)
        return ds4_error_set(err, DS4_E_ARG, "gguf_open_memory: data is NULL");
    static const uint8_t none[1];
    return build(out, data ? data : none, size, NULL, NULL, err);
}

int gguf_open(gguf_file **out, const char *path, ds4_error *err)
{
    if (!out)
        return ds4_error_set(err, DS4_E_ARG, "gguf_open: out is NULL");
    *out = NULL;
    if (!path)
        return ds4_error_set(err, DS4_E_ARG, "gguf_open: path is NULL");
    int fd = io_fails() ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ds4_error_set(err, DS4_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (io_fails() || fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ds4_error_set(err, DS4_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ds4_error_set(err, DS4_E_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return build(out, (const uint8_t *)"", 0, path, NULL, err);
    }
    void *map = io_fails() ? MAP_FAILED : mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return ds4_error_set(err, DS4_E_IO, "%s: cannot mmap %zu bytes: %s", path, size,
                             strerror(e));
    return build(out, map, size, path, map, err);
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->size);
    free(f->path);
    free(f->kv);
    free(f->tensors);
    free(f->arr_strs);
    free(f->arena);
    free(f->kv_hash);
    free(f->t_hash);
    free(f);
}
