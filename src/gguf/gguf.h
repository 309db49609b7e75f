/* gguf.h — GGUF v3 container API: a strict read-only reader (mmap or caller memory, no copy
 * of tensor data), typed metadata accessors, and a deterministic writer.
 * Invariants: every function that can fail returns 0 or a negative DS4_E_* code and fills
 * a ds4_error naming the file, the byte offset and what was wrong; a gguf_file is immutable
 * after open, so its accessors are safe from many threads. Little-endian hosts only.
 * Implements ds4-architecture.md §1.1 (file layout) and the typed access §1.3 needs.
 * Owns the container only: tensor names/shapes of the model are checked in src/model/. */
#ifndef DS4_GGUF_H
#define DS4_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "quant/quant.h"

#define GGUF_MAGIC 0x46554747u      /* "GGUF" read as a little-endian u32 */
#define GGUF_VERSION 3u             /* the only version accepted */
#define GGUF_MAX_DIMS 8             /* tensor n_dims is 1..GGUF_MAX_DIMS (spec §1.1) */
#define GGUF_DEFAULT_ALIGNMENT 32u  /* data alignment when general.alignment is absent */
#define GGUF_KEY_ALIGNMENT "general.alignment"

/* Metadata value types; the numbers are the GGUF ids. */
typedef enum gguf_type {
    GGUF_TYPE_U8 = 0,
    GGUF_TYPE_I8 = 1,
    GGUF_TYPE_U16 = 2,
    GGUF_TYPE_I16 = 3,
    GGUF_TYPE_U32 = 4,
    GGUF_TYPE_I32 = 5,
    GGUF_TYPE_F32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STR = 8,
    GGUF_TYPE_ARR = 9,
    GGUF_TYPE_U64 = 10,
    GGUF_TYPE_I64 = 11,
    GGUF_TYPE_F64 = 12,
    GGUF_TYPE_COUNT = 13
} gguf_type;

/* A string value: s is a NUL-terminated copy owned by the file (or writer input); len
 * counts its bytes without the terminator. String values may contain NUL bytes (use len);
 * keys and tensor names never do (the reader rejects them). */
typedef struct gguf_str {
    const char *s;
    uint64_t len;
} gguf_str;

/* One metadata key/value pair as read from the file. */
typedef struct gguf_kv {
    const char *key;       /* NUL-terminated, non-empty, unique in the file */
    gguf_type type;        /* value type; GGUF_TYPE_ARR for arrays */
    gguf_type arr_type;    /* element type when type == GGUF_TYPE_ARR (never ARR: no nesting) */
    uint64_t arr_count;    /* element count when type == GGUF_TYPE_ARR */
    uint64_t offset;       /* file offset of the pair (its key length field) */
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        bool b;            /* the file byte was 0 or 1 (anything else is rejected) */
        uint64_t u64;
        int64_t i64;
        double f64;
        gguf_str str;
        const void *arr_data;    /* numeric/bool arrays: raw little-endian elements inside
                                    the file, possibly unaligned: read with memcpy */
        const gguf_str *arr_str; /* string arrays: arr_count entries */
    } v;
} gguf_kv;

/* One tensor directory entry with its derived size and data pointer. */
typedef struct gguf_tensor {
    const char *name;            /* NUL-terminated, non-empty, unique in the file */
    uint32_t n_dims;             /* 1..GGUF_MAX_DIMS */
    int64_t ne[GGUF_MAX_DIMS];   /* ne[0] fastest; entries past n_dims are 1 */
    ds4_type type;               /* a known GGUF type id (may lack a dequantizer) */
    int64_t n_elems;             /* product of ne */
    uint64_t offset;             /* data offset relative to the data section (aligned) */
    uint64_t nbytes;             /* (ne[0] / block_elems) * block_bytes * ne[1] * ... */
    const void *data;            /* the bytes inside the mapping / caller memory */
    uint64_t info_offset;        /* file offset of this directory entry */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* ---- opening (gguf_read.c) ---- */

/* Maps path read-only (MAP_PRIVATE) and validates the whole container: header, every
 * metadata value, the tensor directory, alignment, and that every tensor's data lies inside
 * the file without overlapping another. On success *out owns the mapping; on failure *out
 * is NULL, nothing leaks, and err says file, offset and problem. Returns 0 or DS4_E_*. */
int gguf_open(gguf_file **out, const char *path, ds4_error *err);

/* Same as gguf_open on size bytes the caller owns; they are not copied and must outlive the
 * returned file. Messages name the file "<memory>". */
int gguf_open_memory(gguf_file **out, const void *data, size_t size, ds4_error *err);

/* Unmaps and frees everything; NULL is a no-op. Pointers obtained from f die with it. */
void gguf_close(gguf_file *f);

/* Test hooks for injected failures, per thread: the k-th (1-based) allocation made by the
 * reader after this call fails (k = 0: none fails). gguf_debug_alloc_count returns how many
 * allocations the reader made since the last gguf_debug_fail_alloc call. The same for the
 * system calls of gguf_open (open, fstat, mmap) with the _io pair. */
void gguf_debug_fail_alloc(long k);
long gguf_debug_alloc_count(void);
void gguf_debug_fail_io(long k);
long gguf_debug_io_count(void);

/* ---- file facts and metadata (gguf_meta.c) ---- */

const char *gguf_path(const gguf_file *f);        /* the path given to open, or "<memory>" */
size_t gguf_size(const gguf_file *f);             /* file size in bytes */
const void *gguf_base(const gguf_file *f);        /* first byte of the file */
uint32_t gguf_alignment(const gguf_file *f);      /* general.alignment or 32 */
uint64_t gguf_data_offset(const gguf_file *f);    /* file offset of the data section */

/* Number of metadata pairs, and pair i (0 <= i < count, else NULL), in file order. */
int64_t gguf_kv_count(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i);

/* Index of key, or -1 if absent. O(1) (hash table built at open). */
int64_t gguf_find_key(const gguf_file *f, const char *key);

/* Typed getters: store the value of key in *out and return 0; DS4_E_NOTFOUND if the key is
 * absent, DS4_E_TYPE if its stored type differs from the one asked for. No conversion. */
int gguf_get_u8(const gguf_file *f, const char *key, uint8_t *out, ds4_error *err);
int gguf_get_i8(const gguf_file *f, const char *key, int8_t *out, ds4_error *err);
int gguf_get_u16(const gguf_file *f, const char *key, uint16_t *out, ds4_error *err);
int gguf_get_i16(const gguf_file *f, const char *key, int16_t *out, ds4_error *err);
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, ds4_error *err);
int gguf_get_i32(const gguf_file *f, const char *key, int32_t *out, ds4_error *err);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, ds4_error *err);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, ds4_error *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, ds4_error *err);
int gguf_get_f64(const gguf_file *f, const char *key, double *out, ds4_error *err);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, ds4_error *err);
/* *out gets the NUL-terminated string; *len (if non-NULL) its byte length. */
int gguf_get_str(const gguf_file *f, const char *key, const char **out, uint64_t *len,
                 ds4_error *err);

/* Converting getters for keys the spec lets carry several types (§1.3):
 * _f64_any accepts any integer or float scalar (not bool); _u64_any any integer scalar whose
 * value is >= 0 (DS4_E_RANGE if negative). Same errors as above otherwise. */
int gguf_get_f64_any(const gguf_file *f, const char *key, double *out, ds4_error *err);
int gguf_get_u64_any(const gguf_file *f, const char *key, uint64_t *out, ds4_error *err);

/* Arrays: *out gets the pair of key if it is an array (DS4_E_TYPE otherwise); read its
 * arr_type and arr_count, then the elements with the gguf_arr_* getters below. */
int gguf_get_arr(const gguf_file *f, const char *key, const gguf_kv **out, ds4_error *err);

/* Element j of an array pair: _f64 converts any numeric element (not bool); _i64 any
 * integer element (DS4_E_RANGE for a u64 above INT64_MAX); _str a string element.
 * DS4_E_RANGE if j >= arr_count, DS4_E_TYPE if the element type does not fit the getter. */
int gguf_arr_f64(const gguf_file *f, const gguf_kv *kv, uint64_t j, double *out,
                 ds4_error *err);
int gguf_arr_i64(const gguf_file *f, const gguf_kv *kv, uint64_t j, int64_t *out,
                 ds4_error *err);
int gguf_arr_str(const gguf_file *f, const gguf_kv *kv, uint64_t j, const gguf_str **out,
                 ds4_error *err);

/* ggml/GGUF spelling of a value type ("u32", "str", "arr"...), "?" if unknown; and the byte
 * size of a fixed-size type (0 for str, arr and unknown ids). */
const char *gguf_type_name(gguf_type t);
size_t gguf_type_size(gguf_type t);

/* ---- tensors (gguf_meta.c) ---- */

/* Number of tensors, and tensor i (0 <= i < count, else NULL), in directory order. */
int64_t gguf_tensor_count(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);

/* The tensor called name, or NULL. O(1). */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Like gguf_find_tensor, but a missing tensor is DS4_E_NOTFOUND with a message. */
int gguf_get_tensor(const gguf_file *f, const char *name, const gguf_tensor **out,
                    ds4_error *err);

/* ---- writing (gguf_write.c) ---- */

/* Collects metadata and tensors, then writes them in insertion order: header, pairs, tensor
 * directory, zero padding to the alignment, each tensor's data padded to the alignment (the
 * ggml/gguf-py layout). Output bytes depend only on the calls made. Tensor data is
 * referenced, not copied: it must stay valid until the last write call. Keys, strings and
 * arrays are copied. A failing add returns its DS4_E_* code and the writer keeps the first
 * error, which every later write call reports; the writer stays usable for freeing. */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);  /* NULL if out of memory */
void gguf_writer_free(gguf_writer *w);  /* NULL is a no-op */

/* Scalar pairs. A key must be non-empty and not already added (DS4_E_ARG). Adding
 * general.alignment (u32, a power of two) sets the data alignment; any other type or value
 * for that key is DS4_E_ARG. */
int gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s);  /* NUL-terminated */
int gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len);

/* Array pairs. _arr: count fixed-size elements of type t (not str/arr) laid out as in the
 * file (little-endian, packed; bools must be 0 or 1). _arr_str: count NUL-terminated
 * strings; _arr_strn: count strings with explicit lengths. Empty arrays are allowed. */
int gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type t, const void *data,
                        uint64_t count);
int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t count);
int gguf_writer_add_arr_strn(gguf_writer *w, const char *key, const gguf_str *strs,
                             uint64_t count);

/* Adds a copy of a pair read by the reader (same key, type and value). */
int gguf_writer_add_kv(gguf_writer *w, const gguf_kv *kv);

/* Adds a tensor: name non-empty and new; type a known GGUF id; 1 <= n_dims <= GGUF_MAX_DIMS;
 * every ne >= 0, ne[0] a multiple of the type's block, sizes without overflow; data holds
 * the tensor's nbytes (may be NULL only when that is 0). DS4_E_ARG otherwise. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, ds4_type type, uint32_t n_dims,
                           const int64_t *ne, const void *data);

/* Produces rows [row0, row0 + n_rows) of a tensor's data into dst (n_rows whole rows in the
 * tensor's type, rows of ne[0] elements); returns 0, or a negative DS4_E_* code (and may fill
 * err) to abort the write. */
typedef int (*gguf_rows_fn)(void *user, int64_t row0, int64_t n_rows, void *dst,
                            ds4_error *err);

/* Adds a tensor whose data is produced at write time by fn, in chunks of whole rows of at
 * most a few MiB, in row order, so a file larger than memory can be streamed out. Same
 * checks as gguf_writer_add_tensor; user must stay valid until the last write call. */
int gguf_writer_add_tensor_rows(gguf_writer *w, const char *name, ds4_type type,
                                uint32_t n_dims, const int64_t *ne, gguf_rows_fn fn,
                                void *user);

/* Total size in bytes of the file the writer would write now (0 if it holds an error). */
uint64_t gguf_writer_size(const gguf_writer *w);

/* Writes the file to path (replaced if present; removed again if writing fails). */
int gguf_writer_write(gguf_writer *w, const char *path, ds4_error *err);

/* Writes the file into a new malloc'ed buffer: *out (free with free()) and *size. */
int gguf_writer_write_memory(gguf_writer *w, void **out, size_t *size, ds4_error *err);

#endif
