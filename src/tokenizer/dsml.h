/* dsml.h — the streaming parser of generated assistant text (ds4-architecture.md §5.2):
 * reasoning up to </think>, content, and DSML tool-call blocks turned back into calls, from
 * bytes fed in chunks of any size. Every split of the same bytes gives the same events once
 * adjacent data events are joined; bytes that may still become a tag are held back until
 * they decide. Accepts the `<｜DSML｜…>` tags, the variant missing the first bar
 * (`<DSML｜…>`), and plain `<tool_calls>` blocks; a block opened inside reasoning ends the
 * reasoning (the "tool call before </think>" recovery). Rendering calls is chat.h. */
#ifndef DS4_DSML_H
#define DS4_DSML_H

#include <stdbool.h>
#include <stddef.h>

#include "ds4.h"

typedef enum chat_dsml_kind {
    CHAT_DSML_TEXT = 0,     /* content bytes (data, len) */
    CHAT_DSML_REASONING,    /* reasoning bytes (data, len) */
    CHAT_DSML_CALLS_BEGIN,  /* a tool-call block opened */
    CHAT_DSML_CALL_BEGIN,   /* <invoke name="...">: the unescaped name in (data, len) */
    CHAT_DSML_PARAM_BEGIN,  /* <parameter name="..." string="...">: name, is_string */
    CHAT_DSML_PARAM_DATA,   /* value bytes (unescaped: "&lt;/…parameter>" back to "</…") */
    CHAT_DSML_PARAM_END,
    CHAT_DSML_CALL_END,
    CHAT_DSML_CALLS_END,    /* the block closed; text may follow */
} chat_dsml_kind;

typedef struct chat_dsml_event {
    chat_dsml_kind kind;
    const char *data;  /* valid during the callback only */
    size_t len;
    bool is_string;    /* CHAT_DSML_PARAM_BEGIN: string="true" (or the attribute missing) */
} chat_dsml_event;

typedef void (*chat_dsml_fn)(void *user, const chat_dsml_event *ev);

typedef struct chat_dsml_parser chat_dsml_parser;

/* A parser for one generated answer; thinking: the text starts inside <think> (the prompt
 * ended with <think>). Returns 0 or DS4_E_NOMEM. */
int chat_dsml_parser_new(chat_dsml_parser **out, bool thinking, chat_dsml_fn fn, void *user,
                         ds4_error *err);
void chat_dsml_parser_free(chat_dsml_parser *p);  /* NULL is a no-op */

/* Feeds n more bytes; calls fn for every event they decide. Returns 0, or DS4_E_FORMAT for
 * malformed DSML inside a block (the error is sticky: later feeds return it and emit
 * nothing), or DS4_E_NOMEM. */
int chat_dsml_feed(chat_dsml_parser *p, const char *bytes, size_t n, ds4_error *err);

/* Ends the stream: emits what was held back. DS4_E_FORMAT if it ends inside a tool-call
 * block (an incomplete call must not reach a client), or the sticky error. */
int chat_dsml_finish(chat_dsml_parser *p, ds4_error *err);

/* Whether the next bytes are DSML structure (inside a block but outside a parameter value,
 * or in the middle of a tag): where a server samples greedily. */
bool chat_dsml_in_structure(const chat_dsml_parser *p);

/* Whether the parser is inside reasoning (before </think>). */
bool chat_dsml_in_reasoning(const chat_dsml_parser *p);

/* ---- a collector of whole answers, for servers and tests ---- */

typedef struct chat_dsml_param {
    char *name;
    char *value;       /* NUL-terminated; value_len bytes */
    size_t value_len;
    bool is_string;
} chat_dsml_param;

typedef struct chat_dsml_call {
    char *name;
    chat_dsml_param *params;
    size_t n_params;
} chat_dsml_call;

typedef struct chat_dsml_answer {
    char *content, *reasoning;       /* NUL-terminated (never NULL after chat_dsml_collect) */
    size_t content_len, reasoning_len;
    chat_dsml_call *calls;
    size_t n_calls;
    bool oom;                        /* an allocation failed: the answer is incomplete */
} chat_dsml_answer;

/* A chat_dsml_fn that accumulates events into the chat_dsml_answer passed as user. */
void chat_dsml_collect(void *user, const chat_dsml_event *ev);

void chat_dsml_answer_free(chat_dsml_answer *a);  /* frees and zeroes */

/* Parses a whole answer in one call: chat_dsml_parser_new + feed + finish into *a. */
int chat_dsml_parse_all(const char *bytes, size_t n, bool thinking, chat_dsml_answer *a,
                        ds4_error *err);

#endif
