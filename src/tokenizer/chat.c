/* chat.c — DS4 prompt rendering (ds4-architecture.md §5.2): the prompt buffer that keeps
 * rendered bytes and token ids together, the conversation layout (BOS, Think-Max prefix,
 * system block with the tools preamble, user / tool-result / assistant turns, generation
 * prompt) and the DSML tool-call writer with its escapes. Plain text and renderer text
 * share one pending run between control tokens, so the ids equal tokenizing the rendered
 * string with specials matched only where the renderer put them. Parsing is dsml.c. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat.h"

/* ---- thinking modes ---------------------------------------------------------------------- */

static const char think_max_prefix[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n";

const char *chat_think_max_prefix(void) { return think_max_prefix; }

int chat_effort_parse(const char *name)
{
    static const char *const high[] = {"xhigh", "high", "medium", "low", "minimal"};
    if (name == NULL)
        return -1;
    if (!strcmp(name, "max"))
        return CHAT_THINK_MAX;
    if (!strcmp(name, "none"))
        return CHAT_THINK_NONE;
    for (size_t i = 0; i < sizeof high / sizeof high[0]; i++)
        if (!strcmp(name, high[i]))
            return CHAT_THINK_HIGH;
    return -1;
}

chat_think chat_think_for_ctx(chat_think t, uint32_t n_ctx)
{
    return t == CHAT_THINK_MAX && n_ctx < CHAT_THINK_MAX_MIN_CTX ? CHAT_THINK_HIGH : t;
}

/* ---- the prompt buffer ------------------------------------------------------------------- */

void chat_buf_init(chat_buf *b, const tok_vocab *v)
{
    memset(b, 0, sizeof *b);
    b->v = v;
}

void chat_buf_free(chat_buf *b)
{
    tok_ids_free(&b->ids);
    free(b->text);
    memset(b, 0, sizeof *b);
}

static void put(chat_buf *b, const char *s, size_t n)
{
    if (b->rc)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *t = realloc(b->text, cap);
        if (t == NULL) {
            b->rc = ds4_error_set(&b->err, DS4_E_NOMEM, "chat: out of memory for %zu bytes",
                                  cap);
            return;
        }
        b->text = t;
        b->cap = cap;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = 0;
}

static void puts_(chat_buf *b, const char *s) { put(b, s, strlen(s)); }

static void flush_pending(chat_buf *b)
{
    if (b->rc || b->flushed == b->len)
        return;
    b->rc = tok_encode(b->v, b->text + b->flushed, b->len - b->flushed, &b->ids, &b->err);
    b->flushed = b->len;
}

void chat_buf_text(chat_buf *b, const char *s, size_t n) { put(b, s, n); }

void chat_buf_special(chat_buf *b, tok_special s)
{
    if (b->rc)
        return;
    int32_t id = tok_special_id(b->v, s);
    if (id < 0) {
        b->rc = ds4_error_set(&b->err, DS4_E_NOTFOUND, "chat: the vocabulary has no %s token",
                              tok_special_text(s));
        return;
    }
    flush_pending(b);
    puts_(b, tok_special_text(s));
    b->flushed = b->len;
    if (b->rc == 0)
        b->rc = tok_ids_push(&b->ids, id, &b->err);
}

void chat_buf_template(chat_buf *b, const char *s)
{
    size_t n = strlen(s), start = 0;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < TOK_N_SPECIAL; k++) {
            const char *st = tok_special_text((tok_special)k);
            size_t sl = strlen(st);
            if (tok_special_id(b->v, (tok_special)k) < 0 || sl > n - i ||
                memcmp(s + i, st, sl) != 0)
                continue;
            put(b, s + start, i - start);
            chat_buf_special(b, (tok_special)k);
            i += sl - 1;
            start = i + 1;
            break;
        }
    }
    put(b, s + start, n - start);
}

int chat_buf_flush(chat_buf *b, ds4_error *err)
{
    flush_pending(b);
    if (b->rc && err)
        *err = b->err;
    return b->rc;
}

/* ---- DSML tool calls --------------------------------------------------------------------- */

#define DSML "\xef\xbd\x9c" "DSML\xef\xbd\x9c"
#define PARAM_CLOSE "</" DSML "parameter>"

/* Attribute values escape & < > " (§5.2). */
static void put_attr(chat_buf *b, const char *s)
{
    for (const char *p = s; p && *p; p++) {
        const char *e = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;"
                      : *p == '"' ? "&quot;" : NULL;
        if (e)
            puts_(b, e);
        else
            put(b, p, 1);
    }
}

/* Parameter bodies are raw except the exact closing tag: "&lt;/..." in string bodies,
 * "\u003c/..." in JSON bodies (§5.2). */
static void put_body(chat_buf *b, const char *s, size_t n, bool is_string)
{
    const size_t cl = strlen(PARAM_CLOSE);
    size_t start = 0;
    for (size_t i = 0; i + cl <= n; i++) {
        if (memcmp(s + i, PARAM_CLOSE, cl) != 0)
            continue;
        chat_buf_text(b, s + start, i - start);
        chat_buf_text(b, is_string ? "&lt;" : "\\u003c", is_string ? 4 : 6);
        start = i + 1;
    }
    chat_buf_text(b, s + start, n - start);
}

void chat_buf_dsml(chat_buf *b, const chat_call *calls, size_t n)
{
    chat_buf_template(b, "\n\n<" DSML "tool_calls>\n");
    for (size_t i = 0; i < n; i++) {
        chat_buf_template(b, "<" DSML "invoke name=\"");
        put_attr(b, calls[i].name);
        chat_buf_template(b, "\">\n");
        for (size_t j = 0; j < calls[i].n_params; j++) {
            const chat_param *p = &calls[i].params[j];
            chat_buf_template(b, "<" DSML "parameter name=\"");
            put_attr(b, p->name);
            chat_buf_template(b, p->is_string ? "\" string=\"true\">" : "\" string=\"false\">");
            size_t vl = p->value_len ? p->value_len : (p->value ? strlen(p->value) : 0);
            put_body(b, p->value ? p->value : "", vl, p->is_string);
            chat_buf_template(b, PARAM_CLOSE "\n");
        }
        chat_buf_template(b, "</" DSML "invoke>\n");
    }
    chat_buf_template(b, "</" DSML "tool_calls>");
}

/* ---- the conversation -------------------------------------------------------------------- */

static const char tools_intro[] =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke "
    "tools by writing a \"<" DSML "tool_calls>\" block like the following:\n\n"
    "<" DSML "tool_calls>\n"
    "<" DSML "invoke name=\"$TOOL_NAME\">\n"
    "<" DSML "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
    PARAM_CLOSE "\n"
    "...\n"
    "</" DSML "invoke>\n"
    "<" DSML "invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</" DSML "invoke>\n"
    "</" DSML "tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other "
    "types (numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete "
    "reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";

static const char tools_outro[] =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls. Use the exact parameter names from the schemas.";

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* Tool results escape only the exact "</tool_result>" (its '<' becomes "&lt;"). */
static void put_tool_result(chat_buf *b, const char *s)
{
    static const char close[] = "</tool_result>";
    const char *p = str_or_empty(s), *q;
    while ((q = strstr(p, close)) != NULL) {
        chat_buf_text(b, p, (size_t)(q - p));
        chat_buf_text(b, "&lt;", 4);
        p = q + 1;
    }
    chat_buf_text(b, p, strlen(p));
}

static void render_system(chat_buf *b, const chat_msg *msgs, size_t n, const chat_opts *o)
{
    bool first = true;
    if (o->n_tools > 0) {
        chat_buf_template(b, tools_intro);
        for (size_t i = 0; i < o->n_tools; i++) {
            if (i > 0)
                chat_buf_text(b, "\n", 1);
            chat_buf_text(b, o->tools[i], strlen(o->tools[i]));
        }
        chat_buf_template(b, tools_outro);
        first = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role != CHAT_SYSTEM)
            continue;
        if (!first)
            chat_buf_text(b, "\n\n", 2);
        chat_buf_text(b, str_or_empty(msgs[i].content), strlen(str_or_empty(msgs[i].content)));
        first = false;
    }
}

int chat_render(chat_buf *b, const chat_msg *msgs, size_t n, const chat_opts *o,
                ds4_error *err)
{
    bool thinking = o->think != CHAT_THINK_NONE;
    bool tools = o->n_tools > 0;
    size_t last_input = 0; /* index after the last user / tool message */
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role == CHAT_USER || msgs[i].role == CHAT_TOOL)
            last_input = i + 1;
        tools |= msgs[i].role == CHAT_TOOL || msgs[i].n_calls > 0 || msgs[i].raw_dsml;
    }
    chat_buf_special(b, TOK_BOS);
    if (o->think == CHAT_THINK_MAX)
        chat_buf_template(b, think_max_prefix);
    render_system(b, msgs, n, o);
    chat_role prev = CHAT_SYSTEM;
    for (size_t i = 0; i < n; i++) {
        const chat_msg *m = &msgs[i];
        const char *content = str_or_empty(m->content);
        switch (m->role) {
        case CHAT_SYSTEM:
            continue;
        case CHAT_USER:
            chat_buf_special(b, TOK_USER);
            chat_buf_text(b, content, strlen(content));
            break;
        case CHAT_TOOL:
            if (prev != CHAT_TOOL)
                chat_buf_special(b, TOK_USER);
            chat_buf_text(b, "<tool_result>", 13);
            put_tool_result(b, content);
            chat_buf_text(b, "</tool_result>", 14);
            break;
        case CHAT_ASSISTANT:
            chat_buf_special(b, TOK_ASSISTANT);
            if (thinking && (tools || i >= last_input)) {
                chat_buf_special(b, TOK_THINK);
                chat_buf_text(b, str_or_empty(m->reasoning), strlen(str_or_empty(m->reasoning)));
            }
            chat_buf_special(b, TOK_THINK_END);
            chat_buf_text(b, content, strlen(content));
            if (m->raw_dsml)
                chat_buf_template(b, m->raw_dsml);
            else if (m->n_calls > 0)
                chat_buf_dsml(b, m->calls, m->n_calls);
            chat_buf_special(b, TOK_EOS);
            break;
        }
        prev = m->role;
    }
    if (o->generation_prompt) {
        chat_buf_special(b, TOK_ASSISTANT);
        chat_buf_special(b, thinking ? TOK_THINK : TOK_THINK_END);
    }
    return chat_buf_flush(b, err);
}
