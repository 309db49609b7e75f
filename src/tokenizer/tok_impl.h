/* tok_impl.h — the inside of a tok_vocab, shared by vocab.c (building, lookup, decoding
 * tables) and bpe.c (the merge loop), plus the GPT-2 byte <-> code point table that the BPE
 * trainer also uses. Private to src/tokenizer/. Invariant: every table is filled at build
 * time and read-only afterwards. */
#ifndef DS4_TOK_IMPL_H
#define DS4_TOK_IMPL_H

#include <stdint.h>

#include "tokenizer/tok.h"

/* One BPE merge, keyed by its (left, right) token ids. */
typedef struct tok_merge {
    uint32_t rank;    /* index in tokenizer.ggml.merges: lower merges first */
    int32_t result;   /* id of left + right */
} tok_merge;

#define TOK_NO_RANK UINT32_MAX

struct tok_vocab {
    uint32_t n;               /* tokens */
    uint32_t n_merges;        /* distinct merge pairs */
    char *text;               /* every token string, NUL-terminated, back to back */
    size_t *text_off;         /* [n + 1] start of token i in text */
    char *bytes;              /* the bytes each token decodes to, back to back */
    size_t *bytes_off;        /* [n + 1] */
    int32_t *str_slot;        /* [str_mask + 1] open-addressing table: token id or -1 */
    uint32_t str_mask;
    uint64_t *merge_key;      /* [merge_mask + 1] (left << 32 | right), UINT64_MAX empty */
    tok_merge *merge_val;     /* [merge_mask + 1] */
    uint32_t merge_mask;
    int32_t byte_id[256];     /* token of each single byte symbol */
    int32_t special[TOK_N_SPECIAL]; /* id or -1 */
};

/* GPT-2 byte-level alphabet: the code point standing for byte b, and the byte a code point
 * stands for (-1 when it stands for none). Code points are below TOK_BYTE_CP_END. */
#define TOK_BYTE_CP_END 324
uint32_t tok_byte_cp(uint8_t b);
int tok_cp_byte(uint32_t cp);

/* Writes the UTF-8 of the byte-level symbol of b into out (1 or 2 bytes); returns its
 * length. */
int tok_byte_symbol(uint8_t b, char out[2]);

/* Rank and result of the pair (left, right), or rank TOK_NO_RANK when it is no merge. */
static inline tok_merge tok_merge_find(const tok_vocab *v, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & v->merge_mask;
    for (;;) {
        uint64_t k = v->merge_key[i];
        if (k == key)
            return v->merge_val[i];
        if (k == UINT64_MAX)
            return (tok_merge){TOK_NO_RANK, -1};
        i = (i + 1) & v->merge_mask;
    }
}

#endif
