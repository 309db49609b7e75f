/* bpe_train.c — learns byte-level BPE merges from a text and lays out the vocabulary of a
 * generated model (bpe_train.h). Classic word-count training made incremental: distinct
 * pre-tokenizer pieces with their counts, a pair table holding each pair's count and the
 * pieces it occurs in, and a max-heap of pairs (stale entries skipped when popped), so a
 * merge only touches the pieces that hold its pair. Deterministic (no hash order leaks into
 * the result). Does not encode (bpe.c) and owns no GGUF layout beyond the tokenizer keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/bpe_train.h"
#include "tokenizer/tok_impl.h"

/* ---- growable arrays and a byte-string set ------------------------------------------- */

#define GROW(p, n, cap, fail)                                                            \
    do {                                                                                 \
        if ((n) >= (cap)) {                                                              \
            size_t c_ = (cap) ? 2 * (cap) : 16;                                          \
            void *q_ = realloc((p), c_ * sizeof *(p));                                   \
            if (q_ == NULL)                                                              \
                goto fail;                                                               \
            (p) = q_;                                                                    \
            (cap) = c_;                                                                  \
        }                                                                                \
    } while (0)

typedef struct strset {   /* byte strings -> index, for pieces and learned tokens */
    char *blob;
    size_t blob_n, blob_cap;
    size_t *off;          /* [n + 1] */
    size_t n, off_cap;
    int32_t *slot;        /* open addressing, -1 empty */
    size_t mask;
} strset;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static const char *set_str(const strset *s, size_t i, size_t *len)
{
    *len = s->off[i + 1] - s->off[i];
    return s->blob + s->off[i];
}

static void set_free(strset *s)
{
    free(s->blob);
    free(s->off);
    free(s->slot);
}

/* Index of p[0..n) in s, added if new (*added = 1); -1 when out of memory. */
static long set_add(strset *s, const char *p, size_t n, int *added)
{
    *added = 0;
    if (s->slot == NULL || 2 * (s->n + 1) > s->mask + 1) {
        size_t cap = s->slot ? 2 * (s->mask + 1) : 1024;
        int32_t *slot = malloc(cap * sizeof *slot);
        if (slot == NULL)
            return -1;
        memset(slot, 0xff, cap * sizeof *slot);
        for (size_t i = 0; i < s->n; i++) {
            size_t l;
            const char *q = set_str(s, i, &l);
            size_t h = (size_t)hash_bytes(q, l) & (cap - 1);
            while (slot[h] >= 0)
                h = (h + 1) & (cap - 1);
            slot[h] = (int32_t)i;
        }
        free(s->slot);
        s->slot = slot;
        s->mask = cap - 1;
    }
    size_t h = (size_t)hash_bytes(p, n) & s->mask;
    for (; s->slot[h] >= 0; h = (h + 1) & s->mask) {
        size_t l;
        const char *q = set_str(s, (size_t)s->slot[h], &l);
        if (l == n && memcmp(q, p, n) == 0)
            return s->slot[h];
    }
    while (s->blob_n + n > s->blob_cap) {
        size_t c = s->blob_cap ? 2 * s->blob_cap : 4096;
        char *b = realloc(s->blob, c);
        if (b == NULL)
            return -1;
        s->blob = b;
        s->blob_cap = c;
    }
    GROW(s->off, s->n + 2, s->off_cap, oom);
    if (s->n == 0)
        s->off[0] = 0;
    memcpy(s->blob + s->blob_n, p, n);
    s->blob_n += n;
    s->off[s->n + 1] = s->blob_n;
    s->slot[h] = (int32_t)s->n;
    *added = 1;
    return (long)s->n++;
oom:
    return -1;
}

/* ---- training state ------------------------------------------------------------------- */

typedef struct pair {
    int32_t a, b;          /* token ids (trainer-local: 0..255 bytes, then learned) */
    int64_t count;         /* occurrences weighted by piece counts */
    int32_t *words;        /* pieces it may occur in (duplicates and stale ones allowed) */
    uint32_t n_words, cap_words;
    uint32_t stamp;        /* last merge that visited it */
    int done;              /* merged or forbidden: never a candidate again */
} pair;

typedef struct heap_ent { int64_t count; int32_t pair; } heap_ent;

typedef struct trainer {
    strset pieces;          /* distinct pieces */
    int64_t *piece_count;   /* [pieces.n] */
    size_t piece_cap;
    int32_t *sym;           /* symbols of every piece, at pieces.off (piece i has at most
                               its byte length of symbols) */
    uint32_t *n_sym;        /* [pieces.n] current symbol count */
    uint32_t *word_stamp;   /* [pieces.n] */
    strset toks;            /* learned token bytes (ids 0..255 are the bytes) */
    pair *pairs;
    size_t n_pairs, cap_pairs;
    uint64_t *pkey;         /* pair hash: (a << 32 | b), UINT64_MAX empty */
    int32_t *pslot;
    size_t pmask;
    heap_ent *heap;
    size_t n_heap, cap_heap;
    int32_t *touched;
    size_t n_touched, cap_touched;
} trainer;

static int count_piece(void *user, const char *p, size_t n)
{
    trainer *t = user;
    int added;
    long i = set_add(&t->pieces, p, n, &added);
    if (i < 0)
        return DS4_E_NOMEM;
    if (added) {
        GROW(t->piece_count, (size_t)i, t->piece_cap, oom);
        t->piece_count[i] = 0;
    }
    t->piece_count[i]++;
    return 0;
oom:
    return DS4_E_NOMEM;
}

static long pair_index(trainer *t, int32_t a, int32_t b)
{
    if (t->pslot == NULL || 2 * (t->n_pairs + 1) > t->pmask + 1) {
        size_t cap = t->pslot ? 2 * (t->pmask + 1) : 4096;
        int32_t *slot = malloc(cap * sizeof *slot);
        uint64_t *key = malloc(cap * sizeof *key);
        if (!slot || !key) {
            free(slot);
            free(key);
            return -1;
        }
        memset(key, 0xff, cap * sizeof *key);
        for (size_t i = 0; i < t->n_pairs; i++) {
            uint64_t k = (uint64_t)(uint32_t)t->pairs[i].a << 32 | (uint32_t)t->pairs[i].b;
            size_t h = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
            while (key[h] != UINT64_MAX)
                h = (h + 1) & (cap - 1);
            key[h] = k;
            slot[h] = (int32_t)i;
        }
        free(t->pslot);
        free(t->pkey);
        t->pslot = slot;
        t->pkey = key;
        t->pmask = cap - 1;
    }
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t h = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & t->pmask;
    for (; t->pkey[h] != UINT64_MAX; h = (h + 1) & t->pmask)
        if (t->pkey[h] == k)
            return t->pslot[h];
    GROW(t->pairs, t->n_pairs, t->cap_pairs, oom);
    t->pairs[t->n_pairs] = (pair){.a = a, .b = b};
    t->pkey[h] = k;
    t->pslot[h] = (int32_t)t->n_pairs;
    return (long)t->n_pairs++;
oom:
    return -1;
}

static bool heap_above(const trainer *t, heap_ent x, heap_ent y)
{
    if (x.count != y.count)
        return x.count > y.count;
    const pair *p = &t->pairs[x.pair], *q = &t->pairs[y.pair];
    return p->a != q->a ? p->a < q->a : p->b < q->b;
}

static int heap_push(trainer *t, int32_t pi)
{
    GROW(t->heap, t->n_heap, t->cap_heap, oom);
    heap_ent x = {t->pairs[pi].count, pi};
    size_t i = t->n_heap++;
    while (i > 0 && heap_above(t, x, t->heap[(i - 1) / 2])) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = x;
    return 0;
oom:
    return DS4_E_NOMEM;
}

static heap_ent heap_pop(trainer *t)
{
    heap_ent top = t->heap[0], x = t->heap[--t->n_heap];
    size_t i = 0, n = t->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_above(t, t->heap[c + 1], t->heap[c]))
            c++;
        if (!heap_above(t, t->heap[c], x))
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n > 0)
        t->heap[i] = x;
    return top;
}

/* Adds delta to the count of every adjacent pair of piece w; a pair gaining this piece
 * records it. Pairs changed by a merge are noted in touched (once per merge stamp). */
static int count_pairs(trainer *t, int32_t w, int64_t delta, uint32_t stamp)
{
    int32_t *s = t->sym + t->pieces.off[w];
    for (uint32_t i = 0; i + 1 < t->n_sym[w]; i++) {
        long pi = pair_index(t, s[i], s[i + 1]);
        if (pi < 0)
            return DS4_E_NOMEM;
        pair *p = &t->pairs[pi];
        p->count += delta;
        if (delta > 0) {
            GROW(p->words, p->n_words, p->cap_words, oom);
            p->words[p->n_words++] = w;
        }
        if (p->stamp != stamp) {
            p->stamp = stamp;
            GROW(t->touched, t->n_touched, t->cap_touched, oom);
            t->touched[t->n_touched++] = (int32_t)pi;
        }
    }
    return 0;
oom:
    return DS4_E_NOMEM;
}

/* Replaces every (a, b) in piece w by c, left to right. */
static bool replace_pair(trainer *t, int32_t w, int32_t a, int32_t b, int32_t c)
{
    int32_t *s = t->sym + t->pieces.off[w];
    uint32_t n = t->n_sym[w], k = 0;
    bool hit = false;
    for (uint32_t i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            s[k++] = c;
            i++;
            hit = true;
        } else {
            s[k++] = s[i];
        }
    }
    t->n_sym[w] = k;
    return hit;
}

static bool piece_has(const trainer *t, int32_t w, int32_t a, int32_t b)
{
    const int32_t *s = t->sym + t->pieces.off[w];
    for (uint32_t i = 0; i + 1 < t->n_sym[w]; i++)
        if (s[i] == a && s[i + 1] == b)
            return true;
    return false;
}

static void trainer_free(trainer *t)
{
    set_free(&t->pieces);
    set_free(&t->toks);
    free(t->piece_count);
    free(t->sym);
    free(t->n_sym);
    free(t->word_stamp);
    for (size_t i = 0; i < t->n_pairs; i++)
        free(t->pairs[i].words);
    free(t->pairs);
    free(t->pkey);
    free(t->pslot);
    free(t->heap);
    free(t->touched);
}

/* ---- the vocabulary layout ------------------------------------------------------------- */

/* Byte-level text of raw bytes p[0..n): each byte's GPT-2 symbol. Malloc'ed. */
static char *byte_text(const char *p, size_t n)
{
    char *s = malloc(2 * n + 1), sym[2];
    if (s == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int l = tok_byte_symbol((uint8_t)p[i], sym);
        memcpy(s + o, sym, (size_t)l);
        o += (size_t)l;
    }
    s[o] = 0;
    return s;
}

void tok_vocab_spec_free(tok_vocab_spec *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; s->tokens && i < s->n_tokens; i++)
        free(s->tokens[i]);
    for (uint32_t i = 0; s->merges && i < s->n_merges; i++)
        free(s->merges[i]);
    free(s->tokens);
    free(s->types);
    free(s->merges);
    memset(s, 0, sizeof *s);
}

#define N_SPECIAL ((uint32_t)TOK_N_SPECIAL)

static bool is_special_text(const char *s)
{
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (strcmp(s, tok_special_text((tok_special)k)) == 0)
            return true;
    return false;
}

/* Writes the layout of bpe_train.h from the learned tokens and merges. */
static int layout(tok_vocab_spec *out, const trainer *t, const int32_t *ma, const int32_t *mb,
                  uint32_t n_merges, uint32_t n_vocab)
{
    out->n_tokens = n_vocab;
    out->tokens = calloc(n_vocab, sizeof *out->tokens);
    out->types = malloc(n_vocab * sizeof *out->types);
    out->merges = calloc(n_merges ? n_merges : 1, sizeof *out->merges);
    if (!out->tokens || !out->types || !out->merges)
        return DS4_E_NOMEM;
    uint32_t id = 0;
    for (; id < N_SPECIAL; id++) {
        out->tokens[id] = strdup(tok_special_text((tok_special)id));
        out->types[id] = TOK_TYPE_CONTROL;
    }
    for (size_t i = 0; i < t->toks.n; i++, id++) {
        size_t l;
        const char *p = set_str(&t->toks, i, &l);
        out->tokens[id] = byte_text(p, l);
        out->types[id] = TOK_TYPE_NORMAL;
    }
    for (; id < n_vocab; id++) {
        char pad[24];
        snprintf(pad, sizeof pad, "[PAD%u]", id);
        out->tokens[id] = strdup(pad);
        out->types[id] = TOK_TYPE_UNUSED;
    }
    for (uint32_t i = 0; i < n_vocab; i++)
        if (out->tokens[i] == NULL)
            return DS4_E_NOMEM;
    for (uint32_t r = 0; r < n_merges; r++, out->n_merges++) {
        const char *a = out->tokens[N_SPECIAL + ma[r]], *b = out->tokens[N_SPECIAL + mb[r]];
        size_t la = strlen(a), lb = strlen(b);
        char *m = malloc(la + lb + 2);
        if (m == NULL)
            return DS4_E_NOMEM;
        memcpy(m, a, la);
        m[la] = ' ';
        memcpy(m + la + 1, b, lb + 1);
        out->merges[r] = m;
    }
    return 0;
}

int tok_train(tok_vocab_spec *out, const char *text, size_t len, uint32_t n_vocab,
              ds4_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_vocab < TOK_TRAIN_MIN_VOCAB)
        return ds4_error_set(err, DS4_E_ARG, "tokenizer: a vocabulary of %u tokens cannot hold "
                             "the %u special and 256 byte tokens", n_vocab, N_SPECIAL);
    trainer t = {0};
    int32_t *ma = NULL, *mb = NULL;
    size_t n_merges = 0, cap_ma = 0, cap_mb = 0;
    char *buf = NULL;
    int rc = 0, added;
    for (int b = 0; b < 256 && rc == 0; b++) {
        char c = (char)b;
        if (set_add(&t.toks, &c, 1, &added) < 0)
            rc = DS4_E_NOMEM;
    }
    if (rc == 0 && (rc = tok_pretok_split(text, len, count_piece, &t, err)) != 0)
        goto done;
    size_t np = t.pieces.n;
    t.sym = malloc((t.pieces.blob_n + 1) * sizeof *t.sym);
    t.n_sym = malloc((np + 1) * sizeof *t.n_sym);
    t.word_stamp = calloc(np + 1, sizeof *t.word_stamp);
    buf = malloc(t.pieces.blob_n + 1);
    if (!t.sym || !t.n_sym || !t.word_stamp || !buf) {
        rc = DS4_E_NOMEM;
        goto done;
    }
    for (size_t w = 0; w < np; w++) {
        size_t l;
        const char *p = set_str(&t.pieces, w, &l);
        for (size_t i = 0; i < l; i++)
            t.sym[t.pieces.off[w] + i] = (uint8_t)p[i];
        t.n_sym[w] = (uint32_t)l;
        if ((rc = count_pairs(&t, (int32_t)w, t.piece_count[w], 0)))
            goto done;
    }
    for (size_t i = 0; i < t.n_pairs && rc == 0; i++)
        if (t.pairs[i].count >= 2)
            rc = heap_push(&t, (int32_t)i);
    uint32_t budget = n_vocab - N_SPECIAL, stamp = 0;
    while (rc == 0 && t.n_heap > 0 && t.toks.n < budget) {
        heap_ent e = heap_pop(&t);
        pair *p = &t.pairs[e.pair];
        if (p->done || p->count != e.count)
            continue;
        if (p->count < 2)
            break;
        p->done = 1;
        int32_t a = p->a, b = p->b;
        size_t la, lb;
        const char *sa = set_str(&t.toks, (size_t)a, &la), *sb = set_str(&t.toks, (size_t)b, &lb);
        memcpy(buf, sa, la);
        memcpy(buf + la, sb, lb);
        char *txt = byte_text(buf, la + lb);
        if (txt == NULL) {
            rc = DS4_E_NOMEM;
            break;
        }
        bool forbidden = is_special_text(txt);
        free(txt);
        if (forbidden)
            continue;
        long c = set_add(&t.toks, buf, la + lb, &added);
        GROW(ma, n_merges, cap_ma, oom);
        GROW(mb, n_merges, cap_mb, oom);
        if (c < 0)
            goto oom;
        ma[n_merges] = a;
        mb[n_merges++] = b;
        stamp++;
        t.n_touched = 0;
        for (uint32_t k = 0; k < t.pairs[e.pair].n_words && rc == 0; k++) {
            int32_t w = t.pairs[e.pair].words[k];
            if (t.word_stamp[w] == stamp || !piece_has(&t, w, a, b))
                continue;
            t.word_stamp[w] = stamp;
            rc = count_pairs(&t, w, -t.piece_count[w], stamp);
            replace_pair(&t, w, a, b, (int32_t)c);
            if (rc == 0)
                rc = count_pairs(&t, w, t.piece_count[w], stamp);
        }
        free(t.pairs[e.pair].words);
        t.pairs[e.pair].words = NULL;
        t.pairs[e.pair].n_words = t.pairs[e.pair].cap_words = 0;
        for (size_t k = 0; k < t.n_touched && rc == 0; k++) {
            const pair *q = &t.pairs[t.touched[k]];
            if (!q->done && q->count >= 2)
                rc = heap_push(&t, t.touched[k]);
        }
    }
    if (rc == 0)
        rc = layout(out, &t, ma, mb, (uint32_t)n_merges, n_vocab);
    goto done;
oom:
    rc = DS4_E_NOMEM;
done:
    if (rc == DS4_E_NOMEM)
        ds4_error_set(err, rc, "tokenizer: out of memory while training %u tokens", n_vocab);
    if (rc)
        tok_vocab_spec_free(out);
    trainer_free(&t);
    free(ma);
    free(mb);
    free(buf);
    return rc;
}

int tok_train_default(tok_vocab_spec *out, uint32_t n_vocab, ds4_error *err)
{
    size_t len;
    const char *text = tok_train_text(&len);
    return tok_train(out, text, len, n_vocab, err);
}

int tok_vocab_spec_write(const tok_vocab_spec *s, gguf_writer *w, ds4_error *err)
{
    int rc = gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (rc == 0)
        rc = gguf_writer_add_str(w, "tokenizer.ggml.pre", "joyai-llm");
    if (rc == 0)
        rc = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)s->tokens,
                                     s->n_tokens);
    if (rc == 0)
        rc = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_I32, s->types,
                                 s->n_tokens);
    if (rc == 0)
        rc = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)s->merges,
                                     s->n_merges);
    if (rc == 0)
        rc = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", TOK_BOS);
    if (rc == 0)
        rc = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", TOK_EOS);
    if (rc)
        ds4_error_set(err, rc, "tokenizer: cannot add the vocabulary to the GGUF writer");
    return rc;
}
