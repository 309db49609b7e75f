/* gguf_bytes.h — a byte builder for the GGUF tests: assembles files field by field, with no
 * help from src/gguf/, so tests can make exactly the malformed inputs they need (bad counts,
 * lengths, types, offsets). Header-only; aborts on out-of-memory (tests only). */
#ifndef DS4_TEST_GGUF_BYTES_H
#define DS4_TEST_GGUF_BYTES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
} gb;

__attribute__((unused))
static void gb_bytes(gb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n)
            c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            fprintf(stderr, "gguf_bytes: out of memory\n");
            abort();
        }
        b->p = q;
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

__attribute__((unused)) static void gb_u8(gb *b, uint8_t v) { gb_bytes(b, &v, 1); }
__attribute__((unused)) static void gb_u32(gb *b, uint32_t v) { gb_bytes(b, &v, 4); }
__attribute__((unused)) static void gb_u64(gb *b, uint64_t v) { gb_bytes(b, &v, 8); }

/* A GGUF string: u64 length, then the bytes. */
__attribute__((unused))
static void gb_str(gb *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_bytes(b, s, strlen(s));
}

/* Header: magic, version, tensor count, kv count. */
__attribute__((unused))
static void gb_header(gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    gb_u32(b, 0x46554747u);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* A tensor directory entry (dims given in ggml order). */
__attribute__((unused))
static void gb_tensor(gb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

/* Zero bytes up to the next multiple of a. */
__attribute__((unused))
static void gb_pad(gb *b, size_t a)
{
    while (b->n % a)
        gb_u8(b, 0);
}

__attribute__((unused))
static void gb_free(gb *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

#endif
