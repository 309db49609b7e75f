/* test_dsml.c — the streaming DSML parser (src/tokenizer/dsml.c) against the DSML writer
 * (src/tokenizer/chat.c): random answers (reasoning, content, tool calls whose names and
 * values hold every escape-worthy byte) are rendered, parsed back whole, then re-fed split
 * at every byte and one byte at a time, and every prefix is finished as a truncated stream.
 * The joined events must be identical for every split. Also: the tag variants, a block
 * inside reasoning, malformed blocks, and the structure flag. */
#include <string.h>

#include "test_util.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/chat.h"
#include "tokenizer/dsml.h"

#define BAR "\xef\xbd\x9c"
#define DSML BAR "DSML" BAR

/* ---- events joined into one comparable string ---- */

typedef struct log {
    char *s;
    size_t n, cap;
    int last;  /* kind of the last data event, -1 after a structural one */
} log;

static void log_put(log *l, const char *d, size_t n)
{
    if (l->n + n + 1 > l->cap) {
        l->cap = 2 * (l->n + n + 1);
        l->s = realloc(l->s, l->cap);
    }
    memcpy(l->s + l->n, d, n);
    l->n += n;
    l->s[l->n] = 0;
}

static void log_event(void *user, const chat_dsml_event *ev)
{
    log *l = user;
    static const char *const tags[] = {"T", "R", "CALLS", "CALL", "PARAM", "D", "/PARAM",
                                       "/CALL", "/CALLS"};
    bool data = ev->kind == CHAT_DSML_TEXT || ev->kind == CHAT_DSML_REASONING ||
                ev->kind == CHAT_DSML_PARAM_DATA;
    if (!data || l->last != (int)ev->kind) {
        log_put(l, "\n[", 2);
        log_put(l, tags[ev->kind], strlen(tags[ev->kind]));
        if (ev->kind == CHAT_DSML_PARAM_BEGIN)
            log_put(l, ev->is_string ? " s" : " j", 2);
        log_put(l, "] ", 2);
        if (ev->kind == CHAT_DSML_CALL_BEGIN || ev->kind == CHAT_DSML_PARAM_BEGIN)
            log_put(l, ev->data, ev->len);
    }
    if (data)
        log_put(l, ev->data, ev->len);
    l->last = data ? (int)ev->kind : -1;
}

/* Feeds text in the given pieces (cut points), then finishes if finish; returns the rc;
 * *out the log. */
static int parse_cuts(const char *text, size_t n, bool thinking, const size_t *cuts, int nc,
                      bool finish, log *out)
{
    memset(out, 0, sizeof *out);
    out->last = -1;
    log_put(out, "", 0);
    chat_dsml_parser *p;
    ds4_error err;
    chat_dsml_parser_new(&p, thinking, log_event, out, &err);
    size_t at = 0;
    int rc = 0;
    for (int c = 0; c <= nc && rc == 0; c++) {
        size_t end = c < nc ? cuts[c] : n;
        rc = chat_dsml_feed(p, text + at, end - at, &err);
        (void)chat_dsml_in_structure(p);
        at = end;
    }
    if (rc == 0 && finish)
        rc = chat_dsml_finish(p, &err);
    chat_dsml_parser_free(p);
    return rc;
}

/* A new string: s with every from replaced by to. */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t n = strlen(s), fl = strlen(from), tl = strlen(to), o = 0;
    char *r = malloc(n * (tl > fl ? tl : fl) + 1);
    for (size_t i = 0; i < n;) {
        if (!strncmp(s + i, from, fl)) {
            memcpy(r + o, to, tl);
            o += tl;
            i += fl;
        } else {
            r[o++] = s[i++];
        }
    }
    r[o] = 0;
    return r;
}

/* ---- random answers ---- */

static const char *const pieces[] = {
    "a", "hello world", " ", "\n", "\n\n", "<", ">", "&", "\"", "</", "&lt;", "&lt;/",
    "<think>", "</think", "<table>", DSML, "</" DSML "parameter>", "&lt;/" DSML "parameter>",
    "</" DSML "parameter", "<" DSML, "</parameter>", "<tool_calls", "\xc3\xa8", "\xe4\xb8\xad",
    "\\u003c", "{\"k\": [1, 2]}", "\t", "DSML" BAR, "<DSML" BAR, "x<y",
};
#define N_PIECES (sizeof pieces / sizeof pieces[0])

static char *rand_text(t_rng *r, int max_pieces, bool allow_tags)
{
    int n = (int)(t_next(r) % (uint64_t)(max_pieces + 1));
    char *s = calloc(1, 1);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        const char *p = pieces[t_next(r) % (allow_tags ? N_PIECES : 3)];
        s = realloc(s, len + strlen(p) + 1);
        memcpy(s + len, p, strlen(p) + 1);
        len += strlen(p);
    }
    return s;
}

/* One case: renders an answer with chat_buf_dsml and checks the parse and all splits. */
static void check_case(const tok_vocab *v, t_rng *r, int k, bool verbose)
{
    bool thinking = t_next(r) & 1;
    char *reasoning = rand_text(r, 4, false), *content = rand_text(r, 5, true);
    /* content that ends a turn must not itself open a block or end reasoning */
    if (strstr(content, "tool_calls") || strstr(content, "</think"))
        content[0] = 0;
    size_t nc = t_next(r) % 3;
    chat_call calls[3];
    chat_param params[3][3];
    char *strs[3][8] = {{0}};
    for (size_t c = 0; c < nc; c++) {
        strs[c][0] = rand_text(r, 2, true);
        calls[c].name = strs[c][0];
        calls[c].n_params = t_next(r) % 3;
        calls[c].params = params[c];
        for (size_t j = 0; j < calls[c].n_params; j++) {
            strs[c][1 + 2 * j] = rand_text(r, 2, true);
            strs[c][2 + 2 * j] = rand_text(r, 6, true);
            params[c][j] = (chat_param){strs[c][1 + 2 * j], strs[c][2 + 2 * j], 0,
                                        (t_next(r) & 3) != 0};
        }
    }
    chat_buf b;
    chat_buf_init(&b, v);
    if (thinking) {
        chat_buf_text(&b, reasoning, strlen(reasoning));
        chat_buf_special(&b, TOK_THINK_END);
    }
    chat_buf_text(&b, content, strlen(content));
    if (nc)
        chat_buf_dsml(&b, calls, nc);
    ds4_error err;
    chat_buf_flush(&b, &err);

    chat_dsml_answer a;
    int rc = chat_dsml_parse_all(b.text, b.len, thinking, &a, &err);
    bool ok = rc == 0 && a.n_calls == nc && strcmp(a.content, content) == 0 &&
              strcmp(a.reasoning, thinking ? reasoning : "") == 0;
    for (size_t c = 0; ok && c < nc; c++) {
        ok = strcmp(a.calls[c].name, calls[c].name) == 0 &&
             a.calls[c].n_params == calls[c].n_params;
        for (size_t j = 0; ok && j < calls[c].n_params; j++) {
            const chat_param *p = &calls[c].params[j];
            const chat_dsml_param *q = &a.calls[c].params[j];
            /* JSON values keep the writer's \u003c escape (the same JSON string); a string
             * value holding "&lt;/…parameter>" itself reads back unescaped (the format's one
             * ambiguity, §5.2) */
            const char *close = "</" DSML "parameter>";
            char *want = p->is_string ? replace_all(p->value, "&lt;/" DSML "parameter>", close)
                                      : replace_all(p->value, close, "\\u003c/" DSML "parameter>");
            ok = strcmp(q->name, p->name) == 0 && strcmp(q->value, want) == 0 &&
                 q->is_string == p->is_string;
            free(want);
        }
    }
    if (!t_check(ok, "dsml case %d: parse of the rendered answer (%zu calls)", k, nc) ||
        verbose)
        printf("#   rc %d %s\n#   text: %s\n", rc, rc ? err.msg : "", b.text);
    chat_dsml_answer_free(&a);

    /* every split point, byte-at-a-time, and every truncation */
    log whole, part;
    parse_cuts(b.text, b.len, thinking, NULL, 0, true, &whole);
    int bad_split = -1, bad_trunc = -1;
    for (size_t cut = 0; cut <= b.len && bad_split < 0; cut++) {
        parse_cuts(b.text, b.len, thinking, &cut, 1, true, &part);
        if (strcmp(part.s, whole.s) != 0)
            bad_split = (int)cut;
        free(part.s);
    }
    size_t *all = malloc((b.len + 1) * sizeof *all);
    for (size_t i = 0; i < b.len; i++)
        all[i] = i;
    parse_cuts(b.text, b.len, thinking, all, (int)b.len, true, &part);
    bool bytewise = strcmp(part.s, whole.s) == 0;
    free(part.s);
    for (size_t cut = 0; cut < b.len && bad_trunc < 0; cut++) {
        /* what a prefix emits while streaming never contradicts the whole answer, and
         * finishing it early ends cleanly (0, or an error for a cut inside a block) */
        log lp, lf;
        parse_cuts(b.text, cut, thinking, NULL, 0, false, &lp);
        int frc = parse_cuts(b.text, cut, thinking, NULL, 0, true, &lf);
        if (strncmp(whole.s, lp.s, lp.n) != 0 || (frc != 0 && frc != DS4_E_FORMAT))
            bad_trunc = (int)cut;
        free(lp.s);
        free(lf.s);
    }
    free(all);
    t_check(bad_split < 0 && bytewise && bad_trunc < 0,
            "dsml case %d: %zu split points, byte-wise, truncations (bad split %d, trunc %d)",
            k, b.len + 1, bad_split, bad_trunc);
    free(whole.s);
    chat_buf_free(&b);
    free(reasoning);
    free(content);
    for (size_t c = 0; c < 3; c++)
        for (int j = 0; j < 8; j++)
            free(strs[c][j]);
}

/* ---- fixed cases ---- */

static void fixed_cases(void)
{
    chat_dsml_answer a;
    ds4_error err;
    const char *half = "ok\n\n<DSML" BAR "tool_calls>\n<DSML" BAR "invoke name=\"f\">\n<DSML" BAR
                       "parameter name=\"x\" string=\"false\">42</DSML" BAR "parameter>\n</DSML"
                       BAR "invoke>\n</DSML" BAR "tool_calls>";
    int rc = chat_dsml_parse_all(half, strlen(half), false, &a, &err);
    t_check(rc == 0 && a.n_calls == 1 && !strcmp(a.content, "ok") && a.calls[0].n_params == 1 &&
                !strcmp(a.calls[0].params[0].value, "42") && !a.calls[0].params[0].is_string,
            "variant missing the first bar");
    chat_dsml_answer_free(&a);

    const char *plain = "<tool_calls><invoke name=\"g\"><parameter name=\"p\">a &lt; b"
                        "</parameter></invoke></tool_calls>";
    rc = chat_dsml_parse_all(plain, strlen(plain), false, &a, &err);
    t_check(rc == 0 && a.n_calls == 1 && !strcmp(a.calls[0].name, "g") &&
                !strcmp(a.calls[0].params[0].value, "a &lt; b") && a.calls[0].params[0].is_string,
            "plain <tool_calls> block, string attribute absent");
    chat_dsml_answer_free(&a);

    const char *in_think = "let me call it\n\n<" DSML "tool_calls>\n<" DSML "invoke name=\"h\">\n"
                           "</" DSML "invoke>\n</" DSML "tool_calls>";
    rc = chat_dsml_parse_all(in_think, strlen(in_think), true, &a, &err);
    t_check(rc == 0 && a.n_calls == 1 && !strcmp(a.reasoning, "let me call it") &&
                !strcmp(a.content, ""),
            "tool call before </think> ends the reasoning and is parsed");
    chat_dsml_answer_free(&a);

    const char *nl = "line\n\n\n<b>x</b>\n\n";
    rc = chat_dsml_parse_all(nl, strlen(nl), false, &a, &err);
    t_check(rc == 0 && !strcmp(a.content, nl), "newlines and '<' in content are kept");
    chat_dsml_answer_free(&a);

    static const char *const bad[] = {
        "<" DSML "tool_calls>\nhello",
        "<" DSML "tool_calls>\n<" DSML "parameter name=\"x\">1</" DSML "parameter>",
        "<" DSML "tool_calls>\n<" DSML "invoke>\n",
        "<" DSML "tool_calls>\n<" DSML "invoke name=\"x\">\n<" DSML "parameter name=\"y\">abc",
        "<" DSML "tool_calls>\n<" DSML "invoke name=\"x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = chat_dsml_parse_all(bad[i], strlen(bad[i]), false, &a, &err);
        t_check(rc == DS4_E_FORMAT, "malformed or incomplete block %zu rejected (%s)", i,
                rc ? err.msg : "accepted");
        chat_dsml_answer_free(&a);
    }

    chat_dsml_parser *p;
    log l = {0};
    l.last = -1;
    chat_dsml_parser_new(&p, false, log_event, &l, &err);
    bool s0 = chat_dsml_in_structure(p);
    chat_dsml_feed(p, "text <" DSML "tool", strlen("text <" DSML "tool"), &err);
    bool s1 = chat_dsml_in_structure(p);
    chat_dsml_feed(p, "_calls>\n<" DSML "invoke name=\"f\">\n", 5 + 2 + 10 + 18, &err);
    bool s2 = chat_dsml_in_structure(p);
    const char *pb = "<" DSML "parameter name=\"a\" string=\"true\">va";
    chat_dsml_feed(p, pb, strlen(pb), &err);
    bool s3 = chat_dsml_in_structure(p);
    t_check(!s0 && s1 && s2 && !s3, "structure flag: text %d, partial tag %d, block %d, value %d",
            s0, s1, s2, s3);
    chat_dsml_parser_free(p);
    free(l.s);
}

int main(void)
{
    t_rng r = {t_seed(7)};
    tok_vocab_spec spec;
    ds4_error err;
    if (tok_train_default(&spec, 512, &err)) {
        printf("FAIL  vocabulary: %s\n", err.msg);
        return 1;
    }
    gguf_str *toks = malloc(spec.n_tokens * sizeof *toks);
    gguf_str *merges = malloc(spec.n_merges * sizeof *merges);
    for (uint32_t i = 0; i < spec.n_tokens; i++)
        toks[i] = (gguf_str){spec.tokens[i], strlen(spec.tokens[i])};
    for (uint32_t i = 0; i < spec.n_merges; i++)
        merges[i] = (gguf_str){spec.merges[i], strlen(spec.merges[i])};
    tok_vocab *v;
    if (tok_vocab_new(&v, toks, spec.n_tokens, merges, spec.n_merges, &err)) {
        printf("FAIL  vocabulary: %s\n", err.msg);
        return 1;
    }
    fixed_cases();
    for (int k = 0; k < 300; k++)
        check_case(v, &r, k, false);
    tok_vocab_free(v);
    free(toks);
    free(merges);
    tok_vocab_spec_free(&spec);
    return t_summary();
}
