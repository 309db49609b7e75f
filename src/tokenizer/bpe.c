/* bpe.c — encoding and decoding with a tok_vocab: text -> pre-tokenizer pieces -> byte
 * symbols -> greedy merges by lowest rank (leftmost first on ties) -> ids, and ids -> bytes.
 * The merge loop keeps one cached rank per adjacent pair (a piece of up to LONG_PIECE bytes
 * is an array; longer ones use linked symbols and a binary heap), so each merge costs one
 * or two table lookups. Special tokens come only from tok_encode_template. Owns no tables
 * (vocab.c) and no regex (pretok.c). Implements ds4-architecture.md §5.1. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

/* ---- id lists -------------------------------------------------------------------------- */

static int ids_reserve(tok_ids *t, size_t extra, ds4_error *err)
{
    if (t->n + extra <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < t->n + extra)
        cap *= 2;
    int32_t *p = realloc(t->ids, cap * sizeof *p);
    if (p == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory for %zu ids", cap);
    t->ids = p;
    t->cap = cap;
    return 0;
}

int tok_ids_push(tok_ids *t, int32_t id, ds4_error *err)
{
    int rc = ids_reserve(t, 1, err);
    if (rc == 0)
        t->ids[t->n++] = id;
    return rc;
}

void tok_ids_free(tok_ids *t)
{
    free(t->ids);
    memset(t, 0, sizeof *t);
}

/* ---- the merge loop ---------------------------------------------------------------------- */

#define LONG_PIECE 128 /* longer pieces (CJK runs, long words) use the heap path */

typedef struct heap_ent {
    uint32_t rank;
    uint32_t pos;      /* left symbol; lower first among equal ranks */
} heap_ent;

typedef struct enc {
    const tok_vocab *v;
    tok_ids *out;
    ds4_error *err;
    size_t cap;        /* symbols the scratch below holds */
    int32_t *id;       /* [cap] symbol ids */
    uint32_t *rank;    /* [cap] rank of (i, next) (array path) */
    int32_t *res;      /* [cap] result of (i, next) (array path) */
    int32_t *prev, *next; /* [cap] linked symbols (heap path), -1 at the ends */
    heap_ent *heap;    /* [2 * cap] */
} enc;

static int enc_reserve(enc *e, size_t n)
{
    if (n <= e->cap)
        return 0;
    size_t cap = e->cap ? e->cap : 256;
    while (cap < n)
        cap *= 2;
    int32_t *id = realloc(e->id, cap * sizeof *id);
    if (id) e->id = id;
    uint32_t *rank = realloc(e->rank, cap * sizeof *rank);
    if (rank) e->rank = rank;
    int32_t *res = realloc(e->res, cap * sizeof *res);
    if (res) e->res = res;
    int32_t *prev = realloc(e->prev, cap * sizeof *prev);
    if (prev) e->prev = prev;
    int32_t *next = realloc(e->next, cap * sizeof *next);
    if (next) e->next = next;
    heap_ent *heap = realloc(e->heap, 2 * cap * sizeof *heap);
    if (heap) e->heap = heap;
    if (!id || !rank || !res || !prev || !next || !heap)
        return ds4_error_set(e->err, DS4_E_NOMEM, "tokenizer: out of memory for a piece of "
                             "%zu bytes", n);
    e->cap = cap;
    return 0;
}

static void enc_free(enc *e)
{
    free(e->id);
    free(e->rank);
    free(e->res);
    free(e->prev);
    free(e->next);
    free(e->heap);
}

static void set_pair(enc *e, size_t i)
{
    tok_merge m = tok_merge_find(e->v, e->id[i], e->id[i + 1]);
    e->rank[i] = m.rank;
    e->res[i] = m.result;
}

/* Short pieces: symbols in an array, rank[i] caching the pair (i, i + 1). */
static size_t merge_array(enc *e, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        set_pair(e, i);
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (e->rank[i] < e->rank[best])
                best = i;
        if (e->rank[best] == TOK_NO_RANK)
            break;
        e->id[best] = e->res[best];
        memmove(e->id + best + 1, e->id + best + 2, (n - best - 2) * sizeof *e->id);
        memmove(e->rank + best + 1, e->rank + best + 2, (n - best - 2) * sizeof *e->rank);
        memmove(e->res + best + 1, e->res + best + 2, (n - best - 2) * sizeof *e->res);
        n--;
        if (best > 0)
            set_pair(e, best - 1);
        if (best + 1 < n)
            set_pair(e, best);
    }
    return n;
}

static bool heap_less(heap_ent a, heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent x)
{
    size_t i = (*n)++;
    while (i > 0 && heap_less(x, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static heap_ent heap_pop(heap_ent *h, size_t *n)
{
    heap_ent top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c]))
            c++;
        if (!heap_less(h[c], x))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = x;
    return top;
}

static void push_pair(enc *e, size_t *hn, int32_t left)
{
    if (left < 0 || e->next[left] < 0)
        return;
    tok_merge m = tok_merge_find(e->v, e->id[left], e->id[e->next[left]]);
    if (m.rank != TOK_NO_RANK)
        heap_push(e->heap, hn, (heap_ent){m.rank, (uint32_t)left});
}

/* Long pieces: linked symbols and a heap of candidate pairs validated when popped (a pair
 * whose symbols changed since it was pushed no longer has that rank). The heap holds at
 * most 2n entries: n - 1 initial pairs, and each of the at most n - 1 merges pops one entry
 * and pushes at most two. */
static size_t merge_heap(enc *e, size_t n)
{
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(e, &hn, (int32_t)i);
    while (hn > 0) {
        heap_ent t = heap_pop(e->heap, &hn);
        int32_t l = (int32_t)t.pos, r = e->next[l];
        if (e->id[l] < 0 || r < 0)
            continue;
        tok_merge m = tok_merge_find(e->v, e->id[l], e->id[r]);
        if (m.rank != t.rank)
            continue;
        e->id[l] = m.result;
        e->id[r] = -1;
        e->next[l] = e->next[r];
        if (e->next[r] >= 0)
            e->prev[e->next[r]] = l;
        push_pair(e, &hn, e->prev[l]);
        push_pair(e, &hn, l);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = e->next[i])
        e->id[k++] = e->id[i];
    return k;
}

/* BPE of one pre-tokenizer piece, appended to e->out. */
static int encode_piece(void *user, const char *piece, size_t n)
{
    enc *e = user;
    int rc = enc_reserve(e, n);
    if (rc == 0)
        rc = ids_reserve(e->out, n, e->err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        e->id[i] = e->v->byte_id[(uint8_t)piece[i]];
    size_t k = n <= LONG_PIECE ? merge_array(e, n) : merge_heap(e, n);
    memcpy(e->out->ids + e->out->n, e->id, k * sizeof *e->id);
    e->out->n += k;
    return 0;
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, tok_ids *out,
               ds4_error *err)
{
    enc e = {.v = v, .out = out, .err = err};
    int rc = tok_pretok_split(text, len, encode_piece, &e, err);
    enc_free(&e);
    return rc;
}

/* ---- template text: special strings become their tokens ---------------------------------- */

int tok_encode_template(const tok_vocab *v, const char *text, size_t len, tok_ids *out,
                        ds4_error *err)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '<' && text[i] != '\xef')
            continue;
        for (int s = 0; s < TOK_N_SPECIAL; s++) {
            const char *st = tok_special_text((tok_special)s);
            size_t sl = strlen(st);
            if (v->special[s] < 0 || sl > len - i || memcmp(text + i, st, sl) != 0)
                continue;
            int rc = tok_encode(v, text + start, i - start, out, err);
            if (rc == 0)
                rc = tok_ids_push(out, v->special[s], err);
            if (rc)
                return rc;
            i += sl - 1;
            start = i + 1;
            break;
        }
    }
    return tok_encode(v, text + start, len - start, out, err);
}

/* ---- decoding ---------------------------------------------------------------------------- */

int tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, char **out, size_t *len,
               ds4_error *err)
{
    *out = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= v->n)
            return ds4_error_set(err, DS4_E_ARG, "tokenizer: id %d at %zu is outside the "
                                 "vocabulary of %u", ids[i], i, v->n);
        total += v->bytes_off[ids[i] + 1] - v->bytes_off[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (buf == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *b = tok_token_bytes(v, ids[i], &l);
        memcpy(buf + o, b, l);
        o += l;
    }
    buf[o] = 0;
    *out = buf;
    *len = o;
    return 0;
}
