/* bpe_train.h — a byte-level BPE trainer and the vocabulary it makes for generated models:
 * the DS4 special tokens (ids 0..6, BOS = 0, EOS = 1), the 256 byte symbols, then the tokens
 * of merges learned from a text, then unused padding up to the requested size, written as
 * the tokenizer.ggml.* keys of a GGUF. Deterministic: the result depends only on the text
 * and the size. The built-in text is data/bpe_text.txt (public domain; data/README.md).
 * Used by the model maker (src/model/mkmodel.c) and tools/ds4-tok. */
#ifndef DS4_TOK_BPE_TRAIN_H
#define DS4_TOK_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "gguf/gguf.h"

/* A vocabulary as GGUF arrays: token strings in the byte-level alphabet (specials
 * verbatim), their TOK_TYPE_* types, and "left right" merges by rank. */
typedef struct tok_vocab_spec {
    char **tokens;      /* [n_tokens] NUL-terminated */
    int32_t *types;     /* [n_tokens] */
    uint32_t n_tokens;
    char **merges;      /* [n_merges] NUL-terminated */
    uint32_t n_merges;
} tok_vocab_spec;

/* Smallest vocabulary tok_train accepts: the special tokens and the 256 byte symbols. */
#define TOK_TRAIN_MIN_VOCAB 263u

/* Learns merges from text[0..len) (pre-tokenized like tok_encode; pieces counted once per
 * distinct piece) until the vocabulary holds n_vocab tokens or no pair occurs twice; the
 * most frequent pair first, ties to the lowest (left, right) ids. A merge never creates a
 * special token's string, and no pair is listed twice. Fills *out (free with
 * tok_vocab_spec_free). Returns 0, DS4_E_ARG (n_vocab < TOK_TRAIN_MIN_VOCAB) or
 * DS4_E_NOMEM. */
int tok_train(tok_vocab_spec *out, const char *text, size_t len, uint32_t n_vocab,
              ds4_error *err);

/* tok_train on the built-in text (tok_train_text). */
int tok_train_default(tok_vocab_spec *out, uint32_t n_vocab, ds4_error *err);

/* The built-in training text (data/bpe_text.txt, embedded at build time) and its length. */
const char *tok_train_text(size_t *len);

void tok_vocab_spec_free(tok_vocab_spec *s);  /* frees and zeroes; NULL is a no-op */

/* Adds tokenizer.ggml.{model = "gpt2", pre = "joyai-llm", tokens, token_type, merges,
 * bos_token_id, eos_token_id} to w. Returns 0 or the writer's DS4_E_* code. */
int tok_vocab_spec_write(const tok_vocab_spec *s, gguf_writer *w, ds4_error *err);

#endif
