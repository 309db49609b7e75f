/* dsml.c — the streaming parser of generated text (dsml.h): a state machine over a buffer
 * of undecided bytes. States: reasoning, content, inside a tool-call block, inside an
 * invoke, inside a parameter value. Bytes leave the buffer as soon as no tag can start with
 * them; a possible tag prefix ('<' in text, "</" or "&lt;/" in a value, an unfinished tag in
 * a block) waits for more bytes or for chat_dsml_finish. Up to two newlines before a block are
 * held too: they belong to the block's "\n\n" opening, not to the content.
 * Implements the DSML syntax of ds4-architecture.md §5.2; rendering is chat.c. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/dsml.h"

#define BAR "\xef\xbd\x9c" /* U+FF5C */
#define MAX_TAG 4096       /* a structural tag longer than this is malformed */

enum { S_THINK, S_TEXT, S_CALLS, S_INVOKE, S_BODY };
enum { ST_FULL, ST_HALF, ST_PLAIN }; /* "<｜DSML｜x>", "<DSML｜x>", "<x>" */

struct chat_dsml_parser {
    chat_dsml_fn fn;
    void *user;
    int state, style;
    bool is_string;      /* the open parameter's string attribute */
    char *buf;           /* undecided bytes */
    size_t len, cap;
    int nl;              /* newlines held back in reasoning / content (0..2) */
    int rc;
    ds4_error err;
};

static const char *const opens[] = {"<" BAR "DSML" BAR "tool_calls>", "<DSML" BAR "tool_calls>",
                                    "<tool_calls>"};
static const char *const closes_dsml[] = {"</" BAR "DSML" BAR "parameter>",
                                          "</DSML" BAR "parameter>"};
static const char *const closes_plain[] = {"</parameter>"};

/* ---- events ------------------------------------------------------------------------------- */

static void emit(chat_dsml_parser *p, chat_dsml_kind k, const char *d, size_t n)
{
    chat_dsml_event ev = {k, d, n, p->is_string};
    p->fn(p->user, &ev);
}

static void emit_data(chat_dsml_parser *p, chat_dsml_kind k, const char *d, size_t n)
{
    if (n > 0)
        emit(p, k, d, n);
}

static chat_dsml_kind text_kind(const chat_dsml_parser *p)
{
    return p->state == S_THINK ? CHAT_DSML_REASONING : CHAT_DSML_TEXT;
}

static void flush_nl(chat_dsml_parser *p)
{
    emit_data(p, text_kind(p), "\n\n", (size_t)p->nl);
    p->nl = 0;
}

/* Reasoning or content bytes, keeping up to two trailing newlines back. */
static void emit_text(chat_dsml_parser *p, const char *s, size_t n)
{
    size_t k = n;
    while (k > 0 && s[k - 1] == '\n')
        k--;
    if (k > 0) {
        flush_nl(p);
        emit(p, text_kind(p), s, k);
    }
    size_t total = (size_t)p->nl + (n - k), keep = total < 2 ? total : 2;
    for (size_t e = total - keep; e > 0;) {
        size_t c = e < 4 ? e : 4;
        emit(p, text_kind(p), "\n\n\n\n", c);
        e -= c;
    }
    p->nl = (int)keep;
}

static int fail(chat_dsml_parser *p, const char *what, const char *at, size_t n)
{
    p->rc = ds4_error_set(&p->err, DS4_E_FORMAT, "DSML: %s: '%.*s'", what,
                          (int)(n > 80 ? 80 : n), at);
    return 0;
}

/* 1: s[0..n) starts with lit; -1: s is a proper prefix of lit (more bytes may decide);
 * 0: neither. */
static int starts(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n >= l)
        return memcmp(s, lit, l) == 0;
    return memcmp(s, lit, n) == 0 ? -1 : 0;
}

/* ---- reasoning and content ----------------------------------------------------------------- */

/* Handles buf[*i..len) in S_THINK / S_TEXT; returns true if the state changed. */
static bool step_text(chat_dsml_parser *p, size_t *i, bool final)
{
    const char *b = p->buf;
    while (*i < p->len) {
        const char *lt = memchr(b + *i, '<', p->len - *i);
        size_t j = lt ? (size_t)(lt - b) : p->len;
        emit_text(p, b + *i, j - *i);
        *i = j;
        if (lt == NULL)
            return false;
        int partial = 0;
        for (int s = 0; s < 3; s++) {
            int r = starts(b + j, p->len - j, opens[s]);
            if (r == 1) {
                p->nl = 0; /* the block's own "\n\n" */
                p->style = s;
                p->state = S_CALLS;
                *i = j + strlen(opens[s]);
                emit(p, CHAT_DSML_CALLS_BEGIN, NULL, 0);
                return true;
            }
            partial |= r < 0;
        }
        if (p->state == S_THINK) {
            int r = starts(b + j, p->len - j, "</think>");
            if (r == 1) {
                flush_nl(p);
                p->state = S_TEXT;
                *i = j + 8;
                return true;
            }
            partial |= r < 0;
        }
        if (partial && !final)
            return false;
        emit_text(p, "<", 1);
        *i = j + 1;
    }
    return false;
}

/* ---- tags inside a block ------------------------------------------------------------------- */

typedef struct tag {
    bool closing;
    const char *name;
    size_t name_len;
    char *attr_name;   /* unescaped value of name="..." (malloc'ed) or NULL */
    int string;        /* string="...": 1 true, 0 false, -1 absent */
} tag;

static size_t word(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && ((s[k] >= 'a' && s[k] <= 'z') || s[k] == '_'))
        k++;
    return k;
}

/* Unescapes &amp; &lt; &gt; &quot; of s[0..n) into a new string. */
static char *unescape(const char *s, size_t n)
{
    static const char *const from[] = {"&amp;", "&lt;", "&gt;", "&quot;"};
    static const char to[] = "&<>\"";
    char *o = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; o && i < n;) {
        int hit = -1;
        for (int e = 0; e < 4 && hit < 0; e++)
            if (starts(s + i, n - i, from[e]) == 1)
                hit = e;
        o[k++] = hit < 0 ? s[i] : to[hit];
        i += hit < 0 ? 1 : strlen(from[hit]);
    }
    if (o)
        o[k] = 0;
    return o;
}

/* Parses the tag s[0..n) ('<' ... '>'); false if malformed. */
static bool parse_tag(const char *s, size_t n, tag *t)
{
    memset(t, 0, sizeof *t);
    t->string = -1;
    size_t i = 1;
    t->closing = i < n && s[i] == '/';
    i += t->closing;
    if (starts(s + i, n - i, BAR "DSML" BAR) == 1)
        i += 10;
    else if (starts(s + i, n - i, "DSML" BAR) == 1)
        i += 7;
    t->name = s + i;
    t->name_len = word(s + i, n - i);
    i += t->name_len;
    while (i < n && s[i] != '>') {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
            i++;
            continue;
        }
        size_t an = word(s + i, n - i);
        const char *a = s + i;
        i += an;
        if (an == 0 || starts(s + i, n - i, "=\"") != 1)
            return false;
        i += 2;
        const char *q = memchr(s + i, '"', n - i);
        if (q == NULL)
            return false;
        size_t vn = (size_t)(q - (s + i));
        if (an == 4 && !memcmp(a, "name", 4)) {
            free(t->attr_name);
            if ((t->attr_name = unescape(s + i, vn)) == NULL)
                return false;
        } else if (an == 6 && !memcmp(a, "string", 6)) {
            t->string = !(vn == 5 && !memcmp(s + i, "false", 5));
        }
        i += vn + 1;
    }
    return t->name_len > 0;
}

static bool is(const tag *t, bool closing, const char *name)
{
    return t->closing == closing && t->name_len == strlen(name) &&
           !memcmp(t->name, name, t->name_len);
}

/* Handles one tag in S_CALLS / S_INVOKE; returns true when it consumed one. */
static bool step_tag(chat_dsml_parser *p, size_t *i, bool final)
{
    const char *b = p->buf;
    while (*i < p->len && (b[*i] == ' ' || b[*i] == '\n' || b[*i] == '\r' || b[*i] == '\t'))
        (*i)++;
    if (*i == p->len)
        return false;
    if (b[*i] != '<')
        return fail(p, "text inside a tool-call block", b + *i, p->len - *i);
    const char *gt = memchr(b + *i, '>', p->len - *i);
    if (gt == NULL) {
        if (p->len - *i > MAX_TAG)
            return fail(p, "unterminated tag", b + *i, p->len - *i);
        return final ? fail(p, "unterminated tag", b + *i, p->len - *i) : false;
    }
    size_t n = (size_t)(gt - (b + *i)) + 1;
    tag t;
    bool ok = parse_tag(b + *i, n, &t);
    if (ok && p->state == S_CALLS && is(&t, false, "invoke") && t.attr_name) {
        emit(p, CHAT_DSML_CALL_BEGIN, t.attr_name, strlen(t.attr_name));
        p->state = S_INVOKE;
    } else if (ok && p->state == S_CALLS && is(&t, true, "tool_calls")) {
        emit(p, CHAT_DSML_CALLS_END, NULL, 0);
        p->state = S_TEXT;
    } else if (ok && p->state == S_INVOKE && is(&t, false, "parameter") && t.attr_name) {
        p->is_string = t.string != 0;
        emit(p, CHAT_DSML_PARAM_BEGIN, t.attr_name, strlen(t.attr_name));
        p->state = S_BODY;
    } else if (ok && p->state == S_INVOKE && is(&t, true, "invoke")) {
        emit(p, CHAT_DSML_CALL_END, NULL, 0);
        p->state = S_CALLS;
    } else {
        ok = false;
    }
    free(t.attr_name);
    if (!ok)
        return fail(p, p->state == S_CALLS ? "expected <invoke> or </tool_calls>"
                                           : "expected <parameter> or </invoke>",
                    b + *i, n);
    *i += n;
    return true;
}

/* ---- parameter values ---------------------------------------------------------------------- */

/* Handles value bytes in S_BODY; returns true when the parameter closed. */
static bool step_body(chat_dsml_parser *p, size_t *i, bool final)
{
    const char *b = p->buf;
    const char *const *cl = p->style == ST_PLAIN ? closes_plain : closes_dsml;
    int ncl = p->style == ST_PLAIN ? 1 : 2;
    size_t start = *i;
    for (size_t j = *i; j < p->len; j++) {
        if (b[j] != '<' && !(b[j] == '&' && p->is_string))
            continue;
        int partial = 0;
        for (int c = 0; c < ncl; c++) {
            /* '<': the closing tag; '&': its escaped form "&lt;" + closing minus '<' */
            int r;
            size_t used;
            if (b[j] == '<') {
                r = starts(b + j, p->len - j, cl[c]);
                used = strlen(cl[c]);
            } else {
                r = starts(b + j, p->len - j, "&lt;");
                if (r == 1)
                    r = starts(b + j + 4, p->len - j - 4, cl[c] + 1);
                used = 4 + strlen(cl[c] + 1);
            }
            if (r == 1) {
                emit_data(p, CHAT_DSML_PARAM_DATA, b + start, j - start);
                if (b[j] == '<') {
                    emit(p, CHAT_DSML_PARAM_END, NULL, 0);
                    p->state = S_INVOKE;
                    *i = j + used;
                    return true;
                }
                emit(p, CHAT_DSML_PARAM_DATA, cl[c], strlen(cl[c]));
                start = j + used;
                j = start - 1;
                partial = 0;
                break;
            }
            partial |= r < 0;
        }
        if (partial && !final) {
            emit_data(p, CHAT_DSML_PARAM_DATA, b + start, j - start);
            *i = j;
            return false;
        }
    }
    emit_data(p, CHAT_DSML_PARAM_DATA, b + start, p->len - start);
    *i = p->len;
    return false;
}

/* ---- driving --------------------------------------------------------------------------- */

static void run(chat_dsml_parser *p, bool final)
{
    size_t i = 0;
    bool more = true;
    while (more && p->rc == 0) {
        switch (p->state) {
        case S_THINK: case S_TEXT: more = step_text(p, &i, final); break;
        case S_CALLS: case S_INVOKE: more = step_tag(p, &i, final); break;
        default: more = step_body(p, &i, final); break;
        }
    }
    if (i > 0 && i < p->len)
        memmove(p->buf, p->buf + i, p->len - i);
    p->len -= i;
}

int chat_dsml_parser_new(chat_dsml_parser **out, bool thinking, chat_dsml_fn fn, void *user,
                         ds4_error *err)
{
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return ds4_error_set(err, DS4_E_NOMEM, "DSML: out of memory");
    (*out)->fn = fn;
    (*out)->user = user;
    (*out)->state = thinking ? S_THINK : S_TEXT;
    return 0;
}

void chat_dsml_parser_free(chat_dsml_parser *p)
{
    if (p) {
        free(p->buf);
        free(p);
    }
}

int chat_dsml_feed(chat_dsml_parser *p, const char *bytes, size_t n, ds4_error *err)
{
    if (p->rc == 0 && p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->len + n)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (b == NULL)
            p->rc = ds4_error_set(&p->err, DS4_E_NOMEM, "DSML: out of memory");
        else
            p->buf = b, p->cap = cap;
    }
    if (p->rc == 0 && n > 0) {
        memcpy(p->buf + p->len, bytes, n);
        p->len += n;
        run(p, false);
    }
    if (p->rc && err)
        *err = p->err;
    return p->rc;
}

int chat_dsml_finish(chat_dsml_parser *p, ds4_error *err)
{
    if (p->rc == 0)
        run(p, true);
    if (p->rc == 0 && p->state >= S_CALLS)
        p->rc = ds4_error_set(&p->err, DS4_E_FORMAT, "DSML: the text ended inside a tool-call "
                              "block (incomplete tool call)");
    if (p->rc == 0)
        flush_nl(p);
    if (p->rc && err)
        *err = p->err;
    return p->rc;
}

bool chat_dsml_in_structure(const chat_dsml_parser *p)
{
    if (p->state == S_CALLS || p->state == S_INVOKE)
        return true;
    return p->len >= 1 && p->buf[0] == '<';
}

bool chat_dsml_in_reasoning(const chat_dsml_parser *p) { return p->state == S_THINK; }

/* ---- the collector ------------------------------------------------------------------------ */

static bool append(char **s, size_t *n, const char *d, size_t k)
{
    char *t = realloc(*s, *n + k + 1);
    if (t == NULL)
        return false;
    if (k)
        memcpy(t + *n, d, k);
    *n += k;
    t[*n] = 0;
    *s = t;
    return true;
}

static char *dup_n(const char *d, size_t k)
{
    char *s = NULL;
    size_t n = 0;
    return append(&s, &n, d, k) ? s : NULL;
}

void chat_dsml_collect(void *user, const chat_dsml_event *ev)
{
    chat_dsml_answer *a = user;
    chat_dsml_call *c = a->n_calls ? &a->calls[a->n_calls - 1] : NULL;
    chat_dsml_param *pa = c && c->n_params ? &c->params[c->n_params - 1] : NULL;
    bool ok = true;
    switch (ev->kind) {
    case CHAT_DSML_TEXT: ok = append(&a->content, &a->content_len, ev->data, ev->len); break;
    case CHAT_DSML_REASONING:
        ok = append(&a->reasoning, &a->reasoning_len, ev->data, ev->len);
        break;
    case CHAT_DSML_CALL_BEGIN: {
        chat_dsml_call *cs = realloc(a->calls, (a->n_calls + 1) * sizeof *cs);
        char *name = dup_n(ev->data, ev->len);
        ok = cs && name;
        if (cs)
            a->calls = cs;
        if (ok)
            a->calls[a->n_calls++] = (chat_dsml_call){name, NULL, 0};
        else
            free(name);
        break;
    }
    case CHAT_DSML_PARAM_BEGIN: {
        if (c == NULL)
            break;
        chat_dsml_param *ps = realloc(c->params, (c->n_params + 1) * sizeof *ps);
        char *name = dup_n(ev->data, ev->len), *value = dup_n("", 0);
        ok = ps && name && value;
        if (ps)
            c->params = ps;
        if (ok)
            c->params[c->n_params++] = (chat_dsml_param){name, value, 0, ev->is_string};
        else
            free(name), free(value);
        break;
    }
    case CHAT_DSML_PARAM_DATA:
        if (pa)
            ok = append(&pa->value, &pa->value_len, ev->data, ev->len);
        break;
    default:
        break;
    }
    a->oom |= !ok;
}

void chat_dsml_answer_free(chat_dsml_answer *a)
{
    for (size_t i = 0; i < a->n_calls; i++) {
        for (size_t j = 0; j < a->calls[i].n_params; j++) {
            free(a->calls[i].params[j].name);
            free(a->calls[i].params[j].value);
        }
        free(a->calls[i].params);
        free(a->calls[i].name);
    }
    free(a->calls);
    free(a->content);
    free(a->reasoning);
    memset(a, 0, sizeof *a);
}

int chat_dsml_parse_all(const char *bytes, size_t n, bool thinking, chat_dsml_answer *a,
                        ds4_error *err)
{
    memset(a, 0, sizeof *a);
    chat_dsml_parser *p;
    int rc = chat_dsml_parser_new(&p, thinking, chat_dsml_collect, a, err);
    if (rc == 0)
        rc = chat_dsml_feed(p, bytes, n, err);
    if (rc == 0)
        rc = chat_dsml_finish(p, err);
    chat_dsml_parser_free(p);
    if (rc == 0 && (!append(&a->content, &a->content_len, "", 0) ||
                    !append(&a->reasoning, &a->reasoning_len, "", 0)))
        a->oom = true;
    if (rc == 0 && a->oom)
        rc = ds4_error_set(err, DS4_E_NOMEM, "DSML: out of memory");
    return rc;
}
