/* test_tokenizer.c — the tokenizer (src/tokenizer/: vocab.c, bpe.c, pretok.c, bpe_train.c):
 * pre-tokenizer pieces of the §5.1 examples; encode against a naive string BPE written here
 * (short pieces, and long ones that take the heap path); decode(encode(x)) == x for random
 * bytes, random UTF-8, invalid UTF-8 and the corpus files; special-token strings stay plain
 * text except through tok_encode_template; the trainer's guarantees (size, determinism, no
 * special produced, no pair twice); the GGUF round trip; malformed vocabularies rejected. */
#include <string.h>

#include "test_util.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tok.h"
#include "tokenizer/tok_impl.h"

static tok_vocab *vocab_of(const tok_vocab_spec *s, ds4_error *err)
{
    gguf_str *t = malloc(s->n_tokens * sizeof *t), *m = malloc((s->n_merges + 1) * sizeof *m);
    for (uint32_t i = 0; i < s->n_tokens; i++)
        t[i] = (gguf_str){s->tokens[i], strlen(s->tokens[i])};
    for (uint32_t i = 0; i < s->n_merges; i++)
        m[i] = (gguf_str){s->merges[i], strlen(s->merges[i])};
    tok_vocab *v = NULL;
    tok_vocab_new(&v, t, s->n_tokens, m, s->n_merges, err);
    free(t);
    free(m);
    return v;
}

/* ---- pre-tokenizer ---- */

typedef struct pieces { char s[1024]; size_t n; } pieces;

static int join_piece(void *user, const char *p, size_t n)
{
    pieces *ps = user;
    if (ps->n + n + 2 < sizeof ps->s) {
        memcpy(ps->s + ps->n, p, n);
        ps->n += n;
        ps->s[ps->n++] = '|';
        ps->s[ps->n] = 0;
    }
    return 0;
}

static void check_split(const char *text, const char *want)
{
    pieces ps = {{0}, 0};
    ds4_error err;
    tok_pretok_split(text, strlen(text), join_piece, &ps, &err);
    char name[128];
    size_t k = 0;
    for (const char *p = text; *p && k + 5 < sizeof name; p++)
        k += (size_t)snprintf(name + k, sizeof name - k, (unsigned char)*p < 0x20 ||
                              (unsigned char)*p == 0x7f ? "\\x%02x" : "%c", (unsigned char)*p);
    name[k] = 0;
    if (!t_check(!strcmp(ps.s, want), "pre-tokenizer pieces of \"%s\"", name))
        printf("#   got  %s\n#   want %s\n", ps.s, want);
}

/* ---- a naive BPE on strings: the reference for the merge loop ---- */

/* Encodes one piece: symbols as strings, merge the lowest-rank adjacent pair (leftmost on
 * ties) by looking "left right" up in the merges list. O(n^2 * merges): short inputs only. */
static size_t naive_bpe(const tok_vocab_spec *s, const tok_vocab *v, const char *piece,
                        size_t n, int32_t *out)
{
    char **sym = malloc(n * sizeof *sym);
    size_t k = n;
    for (size_t i = 0; i < n; i++) {
        char b[3] = {0};
        tok_byte_symbol((uint8_t)piece[i], b);
        sym[i] = strdup(b);
    }
    for (;;) {
        long best = -1;
        uint32_t best_rank = UINT32_MAX;
        for (size_t i = 0; i + 1 < k; i++) {
            size_t la = strlen(sym[i]), lb = strlen(sym[i + 1]);
            for (uint32_t r = 0; r < s->n_merges && r < best_rank; r++) {
                const char *m = s->merges[r];
                if (strlen(m) == la + lb + 1 && !strncmp(m, sym[i], la) && m[la] == ' ' &&
                    !strcmp(m + la + 1, sym[i + 1])) {
                    best_rank = r;
                    best = (long)i;
                }
            }
        }
        if (best < 0)
            break;
        char *j = malloc(strlen(sym[best]) + strlen(sym[best + 1]) + 1);
        strcpy(j, sym[best]);
        strcat(j, sym[best + 1]);
        free(sym[best]);
        free(sym[best + 1]);
        sym[best] = j;
        memmove(sym + best + 1, sym + best + 2, (k - (size_t)best - 2) * sizeof *sym);
        k--;
    }
    for (size_t i = 0; i < k; i++) {
        out[i] = tok_lookup(v, sym[i], strlen(sym[i]));
        free(sym[i]);
    }
    free(sym);
    return k;
}

typedef struct naive_ctx { const tok_vocab_spec *s; const tok_vocab *v; tok_ids *out; } naive_ctx;

static int naive_piece(void *user, const char *p, size_t n)
{
    naive_ctx *c = user;
    for (size_t i = 0; i < n; i++)
        tok_ids_push(c->out, 0, NULL);
    c->out->n -= n;
    c->out->n += naive_bpe(c->s, c->v, p, n, c->out->ids + c->out->n);
    return 0;
}

static bool same_ids(const tok_ids *a, const tok_ids *b)
{
    return a->n == b->n && !memcmp(a->ids, b->ids, a->n * sizeof *a->ids);
}

static bool round_trip(const tok_vocab *v, const char *s, size_t n, size_t *n_ids)
{
    tok_ids ids = {0};
    ds4_error err;
    char *back = NULL;
    size_t len = 0;
    bool ok = tok_encode(v, s, n, &ids, &err) == 0 &&
              tok_decode(v, ids.ids, ids.n, &back, &len, &err) == 0 && len == n &&
              !memcmp(back, s, n);
    for (size_t i = 0; i < ids.n; i++)
        ok &= !tok_is_special(v, ids.ids[i]);
    if (n_ids)
        *n_ids = ids.n;
    free(back);
    tok_ids_free(&ids);
    return ok;
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* ---- cases ---- */

static void pretok_cases(void)
{
    check_split("    int x", "   | int| x|");
    check_split("abc12345def", "abc|123|45|def|");
    check_split("\xe4\xb8\xad\xe6\x96\x87" "English", "\xe4\xb8\xad\xe6\x96\x87|English|");
    check_split("a>;\n\nb", "a|>;\n\n|b|");
    check_split("(hello) world!!", "(hello|)| world|!!|");
    check_split("x  \n  y", "x|  \n| | y|");
    check_split("end   ", "end|   |");
    check_split("<\xef\xbd\x9cUser\xef\xbd\x9c>", "<\xef\xbd\x9c|User|\xef\xbd\x9c>|");
    check_split("a\x80\xff" "b", "a|\x80\xff|b|"); /* invalid UTF-8: its own piece */
}

static void encode_cases(const tok_vocab_spec *spec, const tok_vocab *v, t_rng *r)
{
    static const char *const texts[] = {
        "Alice was beginning to get very tired of sitting by her sister on the bank.",
        "Perch\xc3\xa9 \xc3\xa8 cos\xc3\xac difficile? l'universit\xc3\xa0",
        "int main(void) {\n    return 0;\n}\n",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    };
    ds4_error err;
    int bad = 0, n = 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++, n++) {
        tok_ids a = {0}, b = {0};
        naive_ctx c = {spec, v, &b};
        tok_encode(v, texts[i], strlen(texts[i]), &a, &err);
        tok_pretok_split(texts[i], strlen(texts[i]), naive_piece, &c, &err);
        bad += !same_ids(&a, &b);
        tok_ids_free(&a);
        tok_ids_free(&b);
    }
    /* long pieces (heap path): letter runs drawn from frequent letters */
    for (int k = 0; k < 20; k++, n++) {
        size_t len = 130 + t_next(r) % 200;
        char *s = malloc(len + 1);
        for (size_t i = 0; i < len; i++)
            s[i] = "etaoinshrdlu"[t_next(r) % 12];
        s[0] = ' ';
        s[len] = 0;
        tok_ids a = {0}, b = {0};
        naive_ctx c = {spec, v, &b};
        tok_encode(v, s, len, &a, &err);
        tok_pretok_split(s, len, naive_piece, &c, &err);
        bad += !same_ids(&a, &b);
        tok_ids_free(&a);
        tok_ids_free(&b);
        free(s);
    }
    t_check(bad == 0, "encode = naive string BPE on %d texts incl. long pieces (%d differ)", n,
            bad);
}

static void roundtrip_cases(const tok_vocab *v, t_rng *r)
{
    int bad = 0;
    for (int k = 0; k < 2000; k++) {
        size_t n = t_next(r) % 64;
        char s[64];
        int mode = k % 3;
        for (size_t i = 0; i < n; i++) {
            uint64_t x = t_next(r);
            s[i] = mode == 0 ? (char)x : mode == 1 ? " \n\taeiou<>|\xef\xbd\x9c"[x % 14]
                                                   : (char)(0x80 | (x & 0x7f));
        }
        bad += !round_trip(v, s, n, NULL);
    }
    t_check(bad == 0, "decode(encode(x)) == x for 2000 random byte strings (%d bad)", bad);
    static const char *const odd[] = {"", "\xff", "\xc3", "\xe4\xb8", "\xf0\x9f\x98",
                                      "\xed\xa0\x80", "\xc0\xaf", "a\0b", "\r\n\r\n",
                                      "\xef\xbb\xbf" "bom"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        t_check(round_trip(v, odd[i], i == 7 ? 3 : strlen(odd[i]), NULL),
                "round trip of odd input %zu (invalid UTF-8, NUL, BOM)", i);
    /* long runs: spaces, one CJK run, one letter */
    size_t big = 1 << 20;
    char *s = malloc(big);
    memset(s, ' ', big);
    t_check(round_trip(v, s, big, NULL), "round trip of 1 MiB of spaces");
    for (size_t i = 0; i + 3 <= big; i += 3)
        memcpy(s + i, "\xe4\xb8\xad", 3);
    t_check(round_trip(v, s, big - big % 3, NULL), "round trip of a 1 MiB CJK run");
    memset(s, 'e', big);
    t_check(round_trip(v, s, big, NULL), "round trip of 1 MiB of one letter");
    free(s);
    static const char *const files[] = {"tests/data/tokenizer_corpus.txt", "data/bpe_text.txt"};
    for (size_t i = 0; i < 2; i++) {
        size_t n, n_ids = 0;
        char *text = read_file(files[i], &n);
        if (!text) {
            t_skip("file not found (run from the repository root)", "round trip of %s", files[i]);
            continue;
        }
        t_check(round_trip(v, text, n, &n_ids), "round trip of %s (%zu bytes, %zu ids)",
                files[i], n, n_ids);
        free(text);
    }
}

static void special_cases(const tok_vocab *v)
{
    ds4_error err;
    tok_ids a = {0}, b = {0};
    char text[512] = "say ";
    for (int s = 0; s < TOK_N_SPECIAL; s++) {
        strcat(text, tok_special_text((tok_special)s));
        strcat(text, " x");
    }
    tok_encode(v, text, strlen(text), &a, &err);
    int plain = 0, templ = 0;
    for (size_t i = 0; i < a.n; i++)
        plain += tok_is_special(v, a.ids[i]);
    tok_encode_template(v, text, strlen(text), &b, &err);
    for (size_t i = 0; i < b.n; i++)
        templ += tok_is_special(v, b.ids[i]);
    t_check(plain == 0, "special-token strings in text encode as plain text");
    t_check(templ == TOK_N_SPECIAL, "tok_encode_template turns them into the %d specials (%d)",
            TOK_N_SPECIAL, templ);
    for (int s = 0; s < TOK_N_SPECIAL; s++) {
        size_t len;
        const char *bytes = tok_token_bytes(v, tok_special_id(v, (tok_special)s), &len);
        if (!t_check(bytes && len == strlen(tok_special_text((tok_special)s)) &&
                         !memcmp(bytes, tok_special_text((tok_special)s), len),
                     "special %d decodes verbatim", s))
            break;
    }
    char *out;
    size_t len;
    int32_t badid = (int32_t)tok_n_vocab(v);
    t_check(tok_decode(v, &badid, 1, &out, &len, &err) == DS4_E_ARG,
            "decode of an id outside the vocabulary: %s", err.msg);
    tok_ids_free(&a);
    tok_ids_free(&b);
}

static void trainer_cases(const tok_vocab_spec *spec)
{
    ds4_error err;
    tok_vocab_spec again;
    tok_train_default(&again, spec->n_tokens, &err);
    bool same = again.n_tokens == spec->n_tokens && again.n_merges == spec->n_merges;
    for (uint32_t i = 0; same && i < spec->n_tokens; i++)
        same = !strcmp(again.tokens[i], spec->tokens[i]) && again.types[i] == spec->types[i];
    for (uint32_t i = 0; same && i < spec->n_merges; i++)
        same = !strcmp(again.merges[i], spec->merges[i]);
    t_check(same, "trainer is deterministic (%u tokens, %u merges)", spec->n_tokens,
            spec->n_merges);
    tok_vocab_spec_free(&again);
    bool layout = spec->types[0] == TOK_TYPE_CONTROL && !strcmp(spec->tokens[0],
                  tok_special_text(TOK_BOS)) && !strcmp(spec->tokens[1], tok_special_text(TOK_EOS));
    int dup = 0;
    for (uint32_t i = 0; i < spec->n_merges && i < 3000; i++)
        for (uint32_t j = i + 1; j < spec->n_merges && j < 3000; j++)
            dup += !strcmp(spec->merges[i], spec->merges[j]);
    for (uint32_t i = TOK_N_SPECIAL; i < spec->n_tokens; i++)
        for (int s = 0; s < TOK_N_SPECIAL; s++)
            layout &= strcmp(spec->tokens[i], tok_special_text((tok_special)s)) != 0;
    t_check(layout && dup == 0, "layout: specials first (BOS 0, EOS 1), none learned again, no "
            "merge listed twice (%d)", dup);
    tok_vocab_spec small;
    t_check(tok_train_default(&small, 262, &err) == DS4_E_ARG, "262 tokens rejected: %s",
            err.msg);
    t_check(tok_train_default(&small, 263, &err) == 0 && small.n_merges == 0 &&
                small.n_tokens == 263, "263 tokens: specials and bytes, no merge");
    tok_vocab_spec_free(&small);
    tok_train(&small, "", 0, 300, &err);
    t_check(small.n_tokens == 300 && small.n_merges == 0 && small.types[299] == TOK_TYPE_UNUSED,
            "empty text: padding only");
    tok_vocab_spec_free(&small);
}

static void gguf_cases(const tok_vocab_spec *spec, const tok_vocab *v)
{
    ds4_error err;
    gguf_writer *w = gguf_writer_new();
    void *buf = NULL;
    size_t size = 0;
    gguf_file *f = NULL;
    tok_vocab *g = NULL;
    int rc = tok_vocab_spec_write(spec, w, &err);
    if (rc == 0)
        rc = gguf_writer_write_memory(w, &buf, &size, &err);
    if (rc == 0)
        rc = gguf_open_memory(&f, buf, size, &err);
    if (rc == 0)
        rc = tok_vocab_from_gguf(&g, f, &err);
    const char *t = "GGUF round trip: the same ids for the same text.";
    tok_ids a = {0}, b = {0};
    if (rc == 0) {
        tok_encode(v, t, strlen(t), &a, &err);
        tok_encode(g, t, strlen(t), &b, &err);
    }
    t_check(rc == 0 && same_ids(&a, &b) && tok_n_merges(g) == tok_n_merges(v),
            "vocabulary through a GGUF gives the same ids (%s)", rc ? err.msg : "ok");
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_vocab_free(g);
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);

    /* malformed vocabularies */
    gguf_str toks[300], merges[2];
    char byte_syms[256][3];
    for (int i = 0; i < 256; i++) {
        memset(byte_syms[i], 0, 3);
        tok_byte_symbol((uint8_t)i, byte_syms[i]);
        toks[i] = (gguf_str){byte_syms[i], strlen(byte_syms[i])};
    }
    toks[256] = (gguf_str){"ab", 2};
    merges[0] = (gguf_str){"a b", 3};
    tok_vocab *x = NULL;
    t_check(tok_vocab_new(&x, toks, 257, merges, 1, &err) == 0, "bytes + one merge accepted");
    tok_vocab_free(x);
    merges[0] = (gguf_str){"a c", 3};
    merges[1] = (gguf_str){"ab", 2};
    t_check(tok_vocab_new(&x, toks, 257, merges, 1, &err) == DS4_E_FORMAT && !x,
            "merge result not in the vocabulary: %s", err.msg);
    t_check(tok_vocab_new(&x, toks, 257, merges + 1, 1, &err) == DS4_E_FORMAT,
            "merge without a space: %s", err.msg);
    t_check(tok_vocab_new(&x, toks + 1, 256, NULL, 0, &err) == DS4_E_FORMAT,
            "missing byte symbol: %s", err.msg);
    toks[10] = (gguf_str){"", 0};
    t_check(tok_vocab_new(&x, toks, 257, NULL, 0, &err) == DS4_E_FORMAT, "empty token: %s",
            err.msg);
}

int main(void)
{
    t_rng r = {t_seed(3)};
    ds4_error err;
    tok_vocab_spec spec;
    if (tok_train_default(&spec, 4096, &err)) {
        printf("FAIL  train: %s\n", err.msg);
        return 1;
    }
    tok_vocab *v = vocab_of(&spec, &err);
    if (!v) {
        printf("FAIL  vocabulary: %s\n", err.msg);
        return 1;
    }
    pretok_cases();
    encode_cases(&spec, v, &r);
    roundtrip_cases(v, &r);
    special_cases(v);
    trainer_cases(&spec);
    gguf_cases(&spec, v);
    tok_vocab_free(v);
    tok_vocab_spec_free(&spec);
    return t_summary();
}
