/* chat.h — DS4 chat rendering (ds4-architecture.md §5.2): a conversation (system, user,
 * assistant, tool messages; thinking or not; tool schemas and DSML tool calls) turned into
 * the prompt's token ids and its rendered bytes, side by side.
 * Invariant: control tokens come only from the renderer's own text; every byte that a user,
 * a tool or a previous answer supplied is tokenized as plain text, so `<｜User｜>` typed by
 * a user stays text. Text between two control tokens is encoded in one piece, exactly as
 * tokenizing the rendered string with specials matched only at the renderer's positions.
 * Parsing generated tool calls back is dsml.h. */
#ifndef DS4_CHAT_H
#define DS4_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok.h"

/* ---- thinking modes and reasoning effort ---- */

typedef enum chat_think {
    CHAT_THINK_NONE = 0,  /* non-thinking: the assistant turn opens with </think> */
    CHAT_THINK_HIGH,      /* thinking: <think> */
    CHAT_THINK_MAX,       /* Think Max: thinking plus the reasoning-effort prefix */
} chat_think;

/* Think Max needs this much context; below it Think Max becomes normal thinking (§5.2). */
#define CHAT_THINK_MAX_MIN_CTX 393216u

/* Reasoning effort name -> mode: "max" -> MAX; "xhigh", "high", "medium", "low", "minimal"
 * -> HIGH; "none" -> NONE. -1 for any other name. */
int chat_effort_parse(const char *name);

/* t, with MAX downgraded to HIGH when n_ctx < CHAT_THINK_MAX_MIN_CTX. */
chat_think chat_think_for_ctx(chat_think t, uint32_t n_ctx);

/* The Think-Max prefix text (inserted right after BOS). */
const char *chat_think_max_prefix(void);

/* ---- messages ---- */

typedef enum chat_role { CHAT_SYSTEM = 0, CHAT_USER, CHAT_ASSISTANT, CHAT_TOOL } chat_role;

/* One tool-call argument: value is raw text when is_string, else JSON text. */
typedef struct chat_param {
    const char *name;
    const char *value;
    size_t value_len;   /* 0 with a non-empty value: strlen(value) */
    bool is_string;
} chat_param;

typedef struct chat_call {
    const char *name;
    const chat_param *params;
    size_t n_params;
} chat_call;

typedef struct chat_msg {
    chat_role role;
    const char *content;    /* NULL: empty */
    const char *reasoning;  /* assistant: the thinking text, or NULL */
    const chat_call *calls; /* assistant: tool calls, rendered as a DSML block */
    size_t n_calls;
    const char *raw_dsml;   /* assistant: the exact sampled DSML block to replay instead of
                               rendering calls (its control-token strings become tokens) */
} chat_msg;

typedef struct chat_opts {
    chat_think think;
    const char *const *tools;  /* tool schemas: one JSON object each (name, description,
                                  parameters), placed one per line; NULL/0: no tools */
    size_t n_tools;
    bool generation_prompt;    /* end with <｜Assistant｜> and <think> or </think> */
} chat_opts;

/* ---- the prompt under construction ---- */

/* Rendered bytes and token ids, built together. Errors are sticky: the first failure is
 * kept and returned by chat_buf_flush. */
typedef struct chat_buf {
    const tok_vocab *v;
    tok_ids ids;
    char *text;       /* rendered bytes, NUL-terminated */
    size_t len, cap;
    size_t flushed;   /* text[0..flushed) is tokenized; the rest is pending plain text */
    int rc;
    ds4_error err;
} chat_buf;

void chat_buf_init(chat_buf *b, const tok_vocab *v);
void chat_buf_free(chat_buf *b);

/* Appends plain text (never becomes control tokens). */
void chat_buf_text(chat_buf *b, const char *s, size_t n);

/* Appends renderer-owned text: special-token strings in it become the special tokens. */
void chat_buf_template(chat_buf *b, const char *s);

/* Appends special token s (DS4_E_NOTFOUND, sticky, if the vocabulary lacks it). */
void chat_buf_special(chat_buf *b, tok_special s);

/* Tokenizes pending text; after it b->ids is the prompt of b->text. Returns the first error
 * of any call on b (0 if none), with its message in *err. */
int chat_buf_flush(chat_buf *b, ds4_error *err);

/* Appends the whole conversation: BOS, Think-Max prefix, the system block (tools preamble,
 * then every system message, joined by blank lines), the turns, and the generation prompt
 * if asked. Then flushes. Returns 0 or the first error. */
int chat_render(chat_buf *b, const chat_msg *msgs, size_t n, const chat_opts *o,
                ds4_error *err);

/* Appends one DSML tool-call block (§5.2 layout and escapes) for calls[0..n). */
void chat_buf_dsml(chat_buf *b, const chat_call *calls, size_t n);

#endif
