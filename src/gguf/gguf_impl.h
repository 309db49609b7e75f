/* gguf_impl.h — private to src/gguf/: the layout of an opened gguf_file shared by the reader
 * (gguf_read.c, which builds it) and the accessors (gguf_meta.c, which only read it), and
 * the name hash both use. Not for other modules: they use gguf.h.
 * Invariant: after gguf_open* returns, nothing in a gguf_file changes until gguf_close. */
#ifndef DS4_GGUF_IMPL_H
#define DS4_GGUF_IMPL_H

#include "gguf/gguf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ds4 reads GGUF (little-endian) in place: a little-endian host is required"
#endif

struct gguf_file {
    char *path;               /* copy of the path, or NULL for memory ("<memory>") */
    const uint8_t *base;      /* first byte of the file */
    size_t size;              /* file size */
    void *map;                /* mmap'ed region (NULL for gguf_open_memory) */
    uint32_t version;
    uint32_t alignment;       /* general.alignment or GGUF_DEFAULT_ALIGNMENT */
    uint64_t data_offset;     /* start of the data section */
    uint64_t n_kv;
    uint64_t n_tensors;
    gguf_kv *kv;              /* n_kv pairs, file order */
    gguf_tensor *tensors;     /* n_tensors entries, file order */
    gguf_str *arr_strs;       /* elements of every string array, back to back */
    char *arena;              /* NUL-terminated copies of all keys, names and strings */
    uint64_t *kv_hash;        /* open addressing: index + 1, 0 = empty; kv_hash_cap slots */
    uint64_t kv_hash_cap;     /* a power of two >= 2 * n_kv (at least 1) */
    uint64_t *t_hash;         /* the same for tensor names */
    uint64_t t_hash_cap;
};

/* FNV-1a over a NUL-terminated name. */
static inline uint64_t gguf_impl_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

#endif
