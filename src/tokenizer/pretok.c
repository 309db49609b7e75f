/* pretok.c — the JoyAI pre-tokenizer of ds4-architecture.md §5.1 as one PCRE2 regex with
 * Unicode properties (compiled once, JIT when available), and the splitter that tiles a text
 * into pieces: each match is a piece, and so is any run of text between two matches (the
 * `Split(..., behavior="isolated")` semantics of the tokenizers package).
 * Invalid UTF-8 is accepted (PCRE2_MATCH_INVALID_UTF): such bytes never match, so they land
 * in the between-match pieces and reach BPE as plain bytes. Owns no vocabulary (vocab.c). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/tok.h"

/* \s as the Unicode White_Space set, so PCRE2 and Oniguruma (tokenizers) agree; \S is its
 * complement. The CJK class is the spec's U+4E00-9FA5, Hiragana and Katakana. */
#define WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
           "\\x{202F}\\x{205F}\\x{3000}"
static const char regex[] =
    "\\p{N}{1,3}"
    "|[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"
    "|[\\p{P}\\p{S}][A-Za-z]+"
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+";

const char *tok_pretok_regex(void) { return regex; }

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pcre2_code *code;
static char compile_msg[160];
static bool jit; /* JIT compiled: match through pcre2_jit_match (less per-call work) */

static void compile_once(void)
{
    int errcode;
    PCRE2_SIZE erroff;
    code = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode, &erroff,
                         NULL);
    if (code == NULL) {
        PCRE2_UCHAR buf[120];
        pcre2_get_error_message(errcode, buf, sizeof buf);
        snprintf(compile_msg, sizeof compile_msg, "pre-tokenizer regex at %zu: %s",
                 (size_t)erroff, (const char *)buf);
        return;
    }
    jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0; /* else the interpreter */
}

/* JIT stack sizes: the default machine-stack 32 KiB first, then a heap stack on demand. */
#define JIT_STACK_START (64u << 10)
#define JIT_STACK_MAX (64u << 20)

int tok_pretok_split(const char *text, size_t len, tok_piece_fn fn, void *user,
                     ds4_error *err)
{
    pthread_once(&once, compile_once);
    if (code == NULL)
        return ds4_error_set(err, DS4_E_FORMAT, "%s", compile_msg);
    if (len == 0)
        return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    if (md == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "pre-tokenizer: out of memory");
    pcre2_match_context *mc = NULL;
    pcre2_jit_stack *js = NULL;
    const PCRE2_SPTR s = (PCRE2_SPTR)text;
    size_t off = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        int m = jit ? pcre2_jit_match(code, s, len, off, 0, md, mc)
                    : pcre2_match(code, s, len, off, 0, md, mc);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT && js == NULL) {
            /* a long run overflowed the JIT stack: retry with a bigger heap one */
            js = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
            mc = pcre2_match_context_create(NULL);
            if (js == NULL || mc == NULL) {
                rc = ds4_error_set(err, DS4_E_NOMEM, "pre-tokenizer: out of memory");
                break;
            }
            pcre2_jit_stack_assign(mc, NULL, js);
            continue;
        }
        if (m == PCRE2_ERROR_NOMATCH) {
            rc = fn(user, text + off, len - off);
            break;
        }
        if (m < 0) {
            PCRE2_UCHAR buf[120];
            pcre2_get_error_message(m, buf, sizeof buf);
            rc = ds4_error_set(err, DS4_E_FORMAT, "pre-tokenizer: match failed at byte %zu: %s",
                               off, (const char *)buf);
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b <= a || a < off) { /* cannot happen: no alternative matches empty */
            rc = ds4_error_set(err, DS4_E_FORMAT, "pre-tokenizer: empty match at byte %zu", a);
            break;
        }
        if (a > off)
            rc = fn(user, text + off, a - off);
        if (rc == 0)
            rc = fn(user, text + a, b - a);
        off = b;
    }
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
    pcre2_match_data_free(md);
    return rc;
}
