/* vocab.c — a tok_vocab from token and merge strings (or a GGUF's tokenizer.ggml.* arrays):
 * the string -> id table, the (left, right) -> (rank, result) merge table, the byte symbol
 * ids, the special-token ids found by string (§5.1, no hard-coded numbers), and each token's
 * decoded bytes. Owns the GPT-2 byte <-> code point table. Does not own the merge loop
 * (bpe.c) or the pre-tokenizer (pretok.c). Implements ds4-architecture.md §5.1. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

/* ---- the byte-level alphabet -------------------------------------------------------- */

/* Bytes that print as themselves keep their code point; the other 68 take 256, 257, ... in
 * byte order (the GPT-2 table). Built once. */
static uint16_t b2cp[256];
static int16_t cp2b[TOK_BYTE_CP_END];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_table(void)
{
    uint32_t extra = 256;
    for (uint32_t c = 0; c < TOK_BYTE_CP_END; c++)
        cp2b[c] = -1;
    for (uint32_t b = 0; b < 256; b++) {
        bool prints = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        b2cp[b] = (uint16_t)(prints ? b : extra++);
        cp2b[b2cp[b]] = (int16_t)b;
    }
}

uint32_t tok_byte_cp(uint8_t b)
{
    pthread_once(&table_once, build_table);
    return b2cp[b];
}

int tok_cp_byte(uint32_t cp)
{
    pthread_once(&table_once, build_table);
    return cp < TOK_BYTE_CP_END ? cp2b[cp] : -1;
}

int tok_byte_symbol(uint8_t b, char out[2])
{
    uint32_t cp = tok_byte_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 63));
    return 2;
}

static const char *const special_text[TOK_N_SPECIAL] = {
    "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<\xef\xbd\x9cUser\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
    "<think>",
    "</think>",
    "\xef\xbd\x9c" "DSML\xef\xbd\x9c",
};

const char *tok_special_text(tok_special s)
{
    return (unsigned)s < TOK_N_SPECIAL ? special_text[s] : NULL;
}

/* ---- the string table ---------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

int32_t tok_lookup(const tok_vocab *v, const char *s, size_t len)
{
    uint32_t i = (uint32_t)hash_bytes(s, len) & v->str_mask;
    for (;;) {
        int32_t id = v->str_slot[i];
        if (id < 0)
            return -1;
        size_t l = v->text_off[id + 1] - v->text_off[id] - 1;
        if (l == len && memcmp(v->text + v->text_off[id], s, len) == 0)
            return id;
        i = (i + 1) & v->str_mask;
    }
}

/* ---- decoding of one token ----------------------------------------------------------- */

/* Decodes one UTF-8 code point at s (n bytes left); returns its length, 0 if invalid. */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || (size_t)len > n)
        return 0;
    uint32_t c = s[0] & (0x3F >> (len - 1));
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    *cp = c;
    return len;
}

/* Writes the bytes token string s[0..n) stands for into out (at most n bytes); returns the
 * count. §5.1: a string holding U+FF5C is verbatim; else each code point of the byte table
 * is its byte, anything else (other code points, invalid UTF-8) is copied as is. */
static size_t token_to_bytes(const char *s, size_t n, char *out)
{
    if (memmem(s, n, "\xef\xbd\x9c", 3)) {
        memcpy(out, s, n);
        return n;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_next((const unsigned char *)s + i, n - i, &cp);
        int b = l > 0 && cp < TOK_BYTE_CP_END ? tok_cp_byte(cp) : -1;
        if (l == 0)
            l = 1;
        if (b >= 0)
            out[o++] = (char)b;
        else
            memcpy(out + o, s + i, (size_t)l), o += (size_t)l;
        i += (size_t)l;
    }
    return o;
}

/* ---- building -------------------------------------------------------------------------- */

void tok_vocab_free(tok_vocab *v)
{
    if (v == NULL)
        return;
    free(v->text);
    free(v->text_off);
    free(v->bytes);
    free(v->bytes_off);
    free(v->str_slot);
    free(v->merge_key);
    free(v->merge_val);
    free(v);
}

/* Inserts the merge; a pair already present keeps its first rank. */
static void merge_insert(tok_vocab *v, int32_t l, int32_t r, uint32_t rank, int32_t res)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & v->merge_mask;
    while (v->merge_key[i] != UINT64_MAX) {
        if (v->merge_key[i] == key)
            return;
        i = (i + 1) & v->merge_mask;
    }
    v->merge_key[i] = key;
    v->merge_val[i] = (tok_merge){rank, res};
    v->n_merges++;
}

static int build_tokens(tok_vocab *v, const gguf_str *tokens, ds4_error *err)
{
    size_t total = 0;
    for (uint32_t i = 0; i < v->n; i++)
        total += tokens[i].len + 1;
    v->text = malloc(total ? total : 1);
    v->bytes = malloc(total ? total : 1);
    v->text_off = malloc((v->n + 1ull) * sizeof *v->text_off);
    v->bytes_off = malloc((v->n + 1ull) * sizeof *v->bytes_off);
    v->str_mask = pow2_at_least(2ull * v->n) - 1;
    v->str_slot = malloc(((size_t)v->str_mask + 1) * sizeof *v->str_slot);
    if (!v->text || !v->bytes || !v->text_off || !v->bytes_off || !v->str_slot)
        return ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory for %u tokens", v->n);
    memset(v->str_slot, 0xff, ((size_t)v->str_mask + 1) * sizeof *v->str_slot);
    size_t t = 0, b = 0;
    for (uint32_t id = 0; id < v->n; id++) {
        const gguf_str *s = &tokens[id];
        if (s->len == 0)
            return ds4_error_set(err, DS4_E_FORMAT, "tokenizer: token %u is empty", id);
        if (memchr(s->s, 0, s->len))
            return ds4_error_set(err, DS4_E_FORMAT, "tokenizer: token %u holds a NUL byte", id);
        v->text_off[id] = t;
        memcpy(v->text + t, s->s, s->len);
        v->text[t + s->len] = 0;
        t += s->len + 1;
        v->bytes_off[id] = b;
        b += token_to_bytes(s->s, s->len, v->bytes + b);
        /* a string listed twice keeps its first id (later copies are unreachable) */
        uint32_t i = (uint32_t)hash_bytes(s->s, s->len) & v->str_mask;
        for (;; i = (i + 1) & v->str_mask) {
            int32_t o = v->str_slot[i];
            if (o < 0) {
                v->str_slot[i] = (int32_t)id;
                break;
            }
            if (v->text_off[o + 1] - v->text_off[o] - 1 == s->len &&
                memcmp(v->text + v->text_off[o], s->s, s->len) == 0)
                break;
        }
        v->text_off[id + 1] = t; /* provisional end for lookups of later duplicates */
    }
    v->text_off[v->n] = t;
    v->bytes_off[v->n] = b;
    return 0;
}

static int build_merges(tok_vocab *v, const gguf_str *merges, uint32_t n_merges,
                        ds4_error *err)
{
    v->merge_mask = pow2_at_least(2ull * n_merges + 2) - 1;
    size_t cap = (size_t)v->merge_mask + 1;
    v->merge_key = malloc(cap * sizeof *v->merge_key);
    v->merge_val = malloc(cap * sizeof *v->merge_val);
    char *joined = NULL;
    size_t joined_cap = 0;
    if (!v->merge_key || !v->merge_val)
        return ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory for %u merges",
                             n_merges);
    memset(v->merge_key, 0xff, cap * sizeof *v->merge_key);
    int rc = 0;
    for (uint32_t r = 0; r < n_merges && rc == 0; r++) {
        const char *s = merges[r].s;
        size_t n = merges[r].len;
        const char *sp = memchr(s, ' ', n);
        if (sp == NULL || sp == s || sp == s + n - 1) {
            rc = ds4_error_set(err, DS4_E_FORMAT, "tokenizer: merge %u '%.*s' is not 'left "
                               "right'", r, (int)(n > 64 ? 64 : n), s);
            break;
        }
        size_t nl = (size_t)(sp - s), nr = n - nl - 1;
        if (nl + nr > joined_cap) {
            joined_cap = 2 * (nl + nr);
            free(joined);
            joined = malloc(joined_cap);
            if (joined == NULL) {
                rc = ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory");
                break;
            }
        }
        memcpy(joined, s, nl);
        memcpy(joined + nl, sp + 1, nr);
        int32_t l = tok_lookup(v, s, nl), rr = tok_lookup(v, sp + 1, nr);
        int32_t res = tok_lookup(v, joined, nl + nr);
        if (l < 0 || rr < 0 || res < 0)
            rc = ds4_error_set(err, DS4_E_FORMAT, "tokenizer: merge %u '%.*s': '%.*s' is not "
                               "in the vocabulary", r, (int)(n > 64 ? 64 : n), s,
                               (int)(l < 0 ? nl : rr < 0 ? nr : nl + nr),
                               l < 0 ? s : rr < 0 ? sp + 1 : joined);
        else
            merge_insert(v, l, rr, r, res);
    }
    free(joined);
    return rc;
}

int tok_vocab_new(tok_vocab **out, const gguf_str *tokens, uint32_t n_tokens,
                  const gguf_str *merges, uint32_t n_merges, ds4_error *err)
{
    *out = NULL;
    if (n_tokens == 0 || n_tokens > INT32_MAX / 2)
        return ds4_error_set(err, DS4_E_FORMAT, "tokenizer: vocabulary of %u tokens", n_tokens);
    tok_vocab *v = calloc(1, sizeof *v);
    if (v == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "tokenizer: out of memory");
    v->n = n_tokens;
    int rc = build_tokens(v, tokens, err);
    for (int b = 0; b < 256 && rc == 0; b++) {
        char sym[2];
        int n = tok_byte_symbol((uint8_t)b, sym);
        v->byte_id[b] = tok_lookup(v, sym, (size_t)n);
        if (v->byte_id[b] < 0)
            rc = ds4_error_set(err, DS4_E_FORMAT, "tokenizer: the vocabulary lacks the symbol "
                               "of byte 0x%02x ('%.*s'), so text could not round-trip", b, n,
                               sym);
    }
    for (int s = 0; s < TOK_N_SPECIAL && rc == 0; s++)
        v->special[s] = tok_lookup(v, special_text[s], strlen(special_text[s]));
    if (rc == 0)
        rc = build_merges(v, merges, n_merges, err);
    if (rc) {
        tok_vocab_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

int tok_vocab_from_gguf(tok_vocab **out, const gguf_file *f, ds4_error *err)
{
    *out = NULL;
    const gguf_kv *tk, *mk = NULL;
    int rc = gguf_get_arr(f, "tokenizer.ggml.tokens", &tk, err);
    if (rc)
        return ds4_error_set(err, rc, "%s: tokenizer.ggml.tokens: %s", gguf_path(f),
                             rc == DS4_E_NOTFOUND ? "missing (the model has no vocabulary)"
                                                  : "not an array");
    if (tk->arr_type != GGUF_TYPE_STR || tk->arr_count > UINT32_MAX)
        return ds4_error_set(err, DS4_E_TYPE, "%s: tokenizer.ggml.tokens is not an array of "
                             "strings", gguf_path(f));
    if (gguf_find_key(f, "tokenizer.ggml.merges") >= 0) {
        if ((rc = gguf_get_arr(f, "tokenizer.ggml.merges", &mk, err)))
            return rc;
        if (mk->arr_type != GGUF_TYPE_STR || mk->arr_count > UINT32_MAX)
            return ds4_error_set(err, DS4_E_TYPE, "%s: tokenizer.ggml.merges is not an array of"
                                 " strings", gguf_path(f));
    }
    rc = tok_vocab_new(out, tk->v.arr_str, (uint32_t)tk->arr_count, mk ? mk->v.arr_str : NULL,
                       mk ? (uint32_t)mk->arr_count : 0, err);
    if (rc && err) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        ds4_error_set(err, rc, "%s: %s", gguf_path(f), msg);
    }
    return rc;
}

/* ---- queries ----------------------------------------------------------------------------- */

uint32_t tok_n_vocab(const tok_vocab *v) { return v->n; }
uint32_t tok_n_merges(const tok_vocab *v) { return v->n_merges; }

int32_t tok_special_id(const tok_vocab *v, tok_special s)
{
    return (unsigned)s < TOK_N_SPECIAL ? v->special[s] : -1;
}

bool tok_is_special(const tok_vocab *v, int32_t id)
{
    for (int s = 0; s < TOK_N_SPECIAL; s++)
        if (id >= 0 && v->special[s] == id)
            return true;
    return false;
}

const char *tok_token_text(const tok_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= v->n)
        return NULL;
    if (len)
        *len = v->text_off[id + 1] - v->text_off[id] - 1;
    return v->text + v->text_off[id];
}

const char *tok_token_bytes(const tok_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= v->n)
        return NULL;
    if (len)
        *len = v->bytes_off[id + 1] - v->bytes_off[id];
    return v->bytes + v->bytes_off[id];
}
