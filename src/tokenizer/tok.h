/* tok.h — the DS4 tokenizer: a GPT-2-style byte-level BPE vocabulary read from a GGUF
 * (tokenizer.ggml.tokens, tokenizer.ggml.merges), the JoyAI pre-tokenizer as one PCRE2
 * regex, encoding and decoding, and the special tokens of the chat format.
 * Invariants: tok_encode never produces a special token, whatever the text holds (only the
 * chat renderer inserts control tokens, through tok_encode_template or tok_special_id);
 * decode(encode(bytes)) == bytes for every byte string, invalid UTF-8 included; a tok_vocab
 * is immutable after creation, so it may be shared by threads.
 * Implements ds4-architecture.md §5.1. Chat rendering is chat.h, tool-call parsing dsml.h. */
#ifndef DS4_TOK_H
#define DS4_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "gguf/gguf.h"

/* The special tokens of the chat format (§5.1), looked up by string in the vocabulary. */
typedef enum tok_special {
    TOK_BOS = 0,      /* <｜begin▁of▁sentence｜> */
    TOK_EOS,          /* <｜end▁of▁sentence｜> */
    TOK_USER,         /* <｜User｜> */
    TOK_ASSISTANT,    /* <｜Assistant｜> */
    TOK_THINK,        /* <think> */
    TOK_THINK_END,    /* </think> */
    TOK_DSML,         /* ｜DSML｜ */
    TOK_N_SPECIAL
} tok_special;

/* GGUF token types (tokenizer.ggml.token_type), as llama.cpp writes them. */
enum { TOK_TYPE_NORMAL = 1, TOK_TYPE_CONTROL = 3, TOK_TYPE_UNUSED = 5 };

/* The UTF-8 text of special token s (U+FF5C "｜" and U+2581 "▁" included), or NULL. */
const char *tok_special_text(tok_special s);

typedef struct tok_vocab tok_vocab;

/* Builds a vocabulary from token strings (index = id, in the byte-level alphabet, specials
 * verbatim) and merges ("left right", index = rank). Every merge's two sides and their
 * concatenation must be tokens, and the 256 byte symbols must all be present (else no text
 * could round-trip): DS4_E_FORMAT naming the first offender otherwise. A pair listed twice
 * keeps its first rank. Returns 0 or DS4_E_*; *out is NULL on failure. */
int tok_vocab_new(tok_vocab **out, const gguf_str *tokens, uint32_t n_tokens,
                  const gguf_str *merges, uint32_t n_merges, ds4_error *err);

/* The same from a GGUF's tokenizer.ggml.tokens and tokenizer.ggml.merges (string arrays;
 * merges may be absent). The vocabulary copies what it needs: f may be closed afterwards. */
int tok_vocab_from_gguf(tok_vocab **out, const gguf_file *f, ds4_error *err);

void tok_vocab_free(tok_vocab *v);  /* NULL is a no-op */

uint32_t tok_n_vocab(const tok_vocab *v);
uint32_t tok_n_merges(const tok_vocab *v);

/* Id of special token s, or -1 when the vocabulary lacks it. */
int32_t tok_special_id(const tok_vocab *v, tok_special s);

/* Whether id is one of the special tokens above. */
bool tok_is_special(const tok_vocab *v, int32_t id);

/* Id of the token whose vocabulary string is s[0..len), or -1. */
int32_t tok_lookup(const tok_vocab *v, const char *s, size_t len);

/* The vocabulary string of id (NUL-terminated; *len its length if non-NULL), or NULL. */
const char *tok_token_text(const tok_vocab *v, int32_t id, size_t *len);

/* The bytes id stands for (§5.1 detokenisation: a token holding U+FF5C verbatim, any other
 * mapped back code point -> byte; a code point outside the byte table verbatim), and their
 * count in *len. NULL for an id outside the vocabulary. */
const char *tok_token_bytes(const tok_vocab *v, int32_t id, size_t *len);

/* ---- id lists ---- */

typedef struct tok_ids {
    int32_t *ids;
    size_t n, cap;
} tok_ids;

/* Appends one id; 0 or DS4_E_NOMEM. */
int tok_ids_push(tok_ids *t, int32_t id, ds4_error *err);
void tok_ids_free(tok_ids *t);  /* frees the array and zeroes t */

/* ---- encoding and decoding ---- */

/* Appends the ids of text[0..len) to out: pre-tokenizer pieces, then BPE merges by lowest
 * rank (leftmost first on ties). Special-token strings in text are plain text. Any bytes
 * are accepted (invalid UTF-8 goes through as bytes). Returns 0 or DS4_E_NOMEM/DS4_E_FORMAT. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, tok_ids *out,
               ds4_error *err);

/* Like tok_encode, but every occurrence of a special token string becomes that token (when
 * the vocabulary has it). For text the chat renderer itself writes, never for user text. */
int tok_encode_template(const tok_vocab *v, const char *text, size_t len, tok_ids *out,
                        ds4_error *err);

/* Appends the bytes of ids[0..n) to a malloc'ed buffer *out (NUL-terminated, *len bytes
 * without it). Returns 0, DS4_E_ARG for an id outside the vocabulary, or DS4_E_NOMEM. */
int tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, char **out, size_t *len,
               ds4_error *err);

/* ---- pre-tokenizer ---- */

/* The pre-tokenizer regex (PCRE2/Oniguruma syntax, UTF-8, Unicode properties): the
 * alternatives of §5.1 in priority order, with \s spelled out as the Unicode White_Space
 * set so that every regex engine reads it alike. Text between matches is one piece too. */
const char *tok_pretok_regex(void);

/* Calls fn(user, piece, n) for each pre-tokenizer piece of text[0..len) in order; the pieces
 * tile the text. Stops at fn's first nonzero return and returns it; else 0, or a negative
 * DS4_E_* code if the regex engine fails. Thread-safe. */
typedef int (*tok_piece_fn)(void *user, const char *piece, size_t n);
int tok_pretok_split(const char *text, size_t len, tok_piece_fn fn, void *user,
                     ds4_error *err);

#endif
