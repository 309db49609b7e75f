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

typedef enum dsml_kind {
    DSML_TEXT = 0,     /* content bytes (data, len) */
    DSML_REASONING,    /* reasoning bytes (data, len) */
    DSML_CALLS_BEGIN,  /* a tool-call block opened */
    DSML_CALL_BEGIN,   /* <invoke name="...">: the unescaped name in (data, len) */
    DSML_PARAM_BEGIN,  /* <parameter name="..." string="...">: name, is_string */
    DSML_PARAM_DATA,   /* value bytes (unescaped: "&lt;/…parameter>" back to "</…") */
    DSML_PARAM_END,
    DSML_CALL_END,
    DSML_CALLS_END,    /* the block closed; text may follow */
} dsml_kind;

typedef struct dsml_event {
    dsml_kind kind;
    const char *data;  /* valid during the callback only */
    size_t len;
    bool is_string;    /* DSML_PARAM_BEGIN: string="true" (or the attribute missing) */
} dsml_event;

typedef void (*dsml_fn)(void *user, const dsml_event *ev);

typedef struct dsml_parser dsml_parser;

/* A parser for one generated answer; thinking: the text starts inside <think> (the prompt
 * ended with <think>). Returns 0 or DS4_E_NOMEM. */
int dsml_parser_new(dsml_parser **out, bool thinking, dsml_fn fn, void *user, ds4_error *err);
void dsml_parser_free(dsml_parser *p);  /* NULL is a no-op */

/* Feeds n more bytes; calls fn for every event they decide. Returns 0, or DS4_E_FORMAT for
 * malformed DSML inside a block (the error is sticky: later feeds return it and emit
 * nothing), or DS4_E_NOMEM. */
int dsml_feed(dsml_parser *p, const char *bytes, size_t n, ds4_error *err);

/* Ends the stream: emits what was held back. DS4_E_FORMAT if it ends inside a tool-call
 * block (an incomplete call must not reach a client), or the sticky error. */
int dsml_finish(dsml_parser *p, ds4_error *err);

/* Whether the next bytes are DSML structure (inside a block but outside a parameter value,
 * or in the middle of a tag): where a server samples greedily. */
bool dsml_in_structure(const dsml_parser *p);

/* Whether the parser is inside reasoning (before </think>). */
bool dsml_in_reasoning(const dsml_parser *p);

/* ---- a collector of whole answers, for servers and tests ---- */

typedef struct dsml_param {
    char *name;
    char *value;       /* NUL-terminated; value_len bytes */
    size_t value_len;
    bool is_string;
} dsml_param;

typedef struct dsml_call {
    char *name;
    dsml_param *params;
    size_t n_params;
} dsml_call;

typedef struct dsml_answer {
    char *content, *reasoning;       /* NUL-terminated (never NULL after dsml_collect) */
    size_t content_len, reasoning_len;
    dsml_call *calls;
    size_t n_calls;
    bool oom;                        /* an allocation failed: the answer is incomplete */
} dsml_answer;

/* A dsml_fn that accumulates events into the dsml_answer passed as user. */
void dsml_collect(void *user, const dsml_event *ev);

void dsml_answer_free(dsml_answer *a);  /* frees and zeroes */

/* Parses a whole answer in one call: dsml_parser_new + feed + finish into *a. */
int dsml_parse_all(const char *bytes, size_t n, bool thinking, dsml_answer *a, ds4_error *err);

#endif
