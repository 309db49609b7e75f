/* ds4-tok.c — the tokenizer from the command line, for tests and measurements:
 *   ds4-tok vocab OUT.gguf [--n-vocab N] [--text FILE]   train a vocabulary, write it as GGUF
 *   ds4-tok encode MODEL.gguf [--lines] [--template] [FILE]   ids of FILE (default stdin)
 *   ds4-tok decode MODEL.gguf ID...                       the bytes of the ids, to stdout
 *   ds4-tok regex                                         the pre-tokenizer regex
 *   ds4-tok bench MODEL.gguf FILE [--seconds S]           encoding speed in MB/s
 * encode prints the ids space-separated, one line for the whole input, or with --lines one
 * line per input line (each line encoded with its newline). Errors: one line on stderr,
 * exit code 2. Owns argument handling only; the tokenizer is src/tokenizer/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/bpe_train.h"
#include "tokenizer/tok.h"

static int fail(const char *msg)
{
    fprintf(stderr, "ds4-tok: %s\n", msg);
    return 2;
}

static int usage(void)
{
    fprintf(stderr, "usage: ds4-tok vocab OUT.gguf [--n-vocab N] [--text FILE]\n"
                    "       ds4-tok encode MODEL.gguf [--lines] [--template] [FILE]\n"
                    "       ds4-tok decode MODEL.gguf ID...\n"
                    "       ds4-tok regex\n"
                    "       ds4-tok bench MODEL.gguf FILE [--seconds S]\n");
    return 2;
}

/* Reads a whole file (or stdin for NULL / "-") into a malloc'ed buffer. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = (!path || !strcmp(path, "-")) ? stdin : fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (b == NULL)
                free(buf);
            buf = b;
        }
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

static int open_vocab(const char *path, tok_vocab **v, ds4_error *err)
{
    gguf_file *f;
    int rc = gguf_open(&f, path, err);
    if (rc == 0) {
        rc = tok_vocab_from_gguf(v, f, err);
        gguf_close(f);
    }
    return rc;
}

static int cmd_vocab(int argc, char **argv)
{
    const char *out = NULL, *text_path = NULL;
    unsigned long n_vocab = 4096;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--n-vocab") && i + 1 < argc) {
            char *end;
            n_vocab = strtoul(argv[++i], &end, 10);
            if (*end || n_vocab > (1ul << 24))
                return fail("bad --n-vocab");
        } else if (!strcmp(argv[i], "--text") && i + 1 < argc) {
            text_path = argv[++i];
        } else if (argv[i][0] != '-' && !out) {
            out = argv[i];
        } else {
            return usage();
        }
    }
    if (!out)
        return usage();
    ds4_error err = {0};
    tok_vocab_spec spec;
    int rc;
    if (text_path) {
        size_t len;
        char *text = read_all(text_path, &len);
        if (text == NULL)
            return fail("cannot read the --text file");
        rc = tok_train(&spec, text, len, (uint32_t)n_vocab, &err);
        free(text);
    } else {
        rc = tok_train_default(&spec, (uint32_t)n_vocab, &err);
    }
    if (rc)
        return fail(err.msg);
    gguf_writer *w = gguf_writer_new();
    rc = w ? 0 : DS4_E_NOMEM;
    if (rc == 0)
        rc = gguf_writer_add_str(w, "general.architecture", "deepseek4");
    if (rc == 0)
        rc = tok_vocab_spec_write(&spec, w, &err);
    if (rc == 0)
        rc = gguf_writer_write(w, out, &err);
    printf("%s: %u tokens, %u merges\n", out, spec.n_tokens, spec.n_merges);
    gguf_writer_free(w);
    tok_vocab_spec_free(&spec);
    return rc ? fail(err.msg[0] ? err.msg : "cannot write the vocabulary") : 0;
}

static void print_ids(const tok_ids *t, size_t from)
{
    for (size_t i = from; i < t->n; i++)
        printf(i > from ? " %d" : "%d", t->ids[i]);
    putchar('\n');
}

static int cmd_encode(int argc, char **argv)
{
    const char *model = NULL, *path = NULL;
    int lines = 0, templ = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--lines"))
            lines = 1;
        else if (!strcmp(argv[i], "--template"))
            templ = 1;
        else if (!model)
            model = argv[i];
        else if (!path)
            path = argv[i];
        else
            return usage();
    }
    if (!model)
        return usage();
    ds4_error err = {0};
    tok_vocab *v;
    if (open_vocab(model, &v, &err))
        return fail(err.msg);
    size_t len;
    char *text = read_all(path, &len);
    if (text == NULL) {
        tok_vocab_free(v);
        return fail("cannot read the input");
    }
    tok_ids ids = {0};
    int rc = 0;
    for (size_t a = 0; a < len && rc == 0;) {
        size_t b = len;
        if (lines) {
            const char *nl = memchr(text + a, '\n', len - a);
            b = nl ? (size_t)(nl - text) + 1 : len;
        }
        size_t from = ids.n;
        rc = (templ ? tok_encode_template : tok_encode)(v, text + a, b - a, &ids, &err);
        if (rc == 0)
            print_ids(&ids, from);
        a = b;
    }
    free(text);
    tok_ids_free(&ids);
    tok_vocab_free(v);
    return rc ? fail(err.msg) : 0;
}

static int cmd_decode(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    ds4_error err = {0};
    tok_vocab *v;
    if (open_vocab(argv[0], &v, &err))
        return fail(err.msg);
    tok_ids ids = {0};
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        char *end;
        errno = 0;
        long id = strtol(argv[i], &end, 10);
        rc = (*end || errno || id < 0 || id > INT32_MAX) ? DS4_E_ARG
                                                         : tok_ids_push(&ids, (int32_t)id, &err);
    }
    char *out = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = tok_decode(v, ids.ids, ids.n, &out, &len, &err);
    if (rc == 0)
        fwrite(out, 1, len, stdout);
    free(out);
    tok_ids_free(&ids);
    tok_vocab_free(v);
    return rc ? fail(err.msg[0] ? err.msg : "bad id") : 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmd_bench(int argc, char **argv)
{
    double seconds = 2;
    if (argc < 2)
        return usage();
    if (argc == 4 && !strcmp(argv[2], "--seconds"))
        seconds = atof(argv[3]);
    ds4_error err = {0};
    tok_vocab *v;
    if (open_vocab(argv[0], &v, &err))
        return fail(err.msg);
    size_t len;
    char *text = read_all(argv[1], &len);
    if (text == NULL || len == 0) {
        tok_vocab_free(v);
        free(text);
        return fail("cannot read the input (or it is empty)");
    }
    tok_ids ids = {0};
    double t0 = now(), t;
    long reps = 0;
    int rc = 0;
    do {
        ids.n = 0;
        rc = tok_encode(v, text, len, &ids, &err);
        reps++;
        t = now();
    } while (rc == 0 && t - t0 < seconds);
    if (rc == 0)
        printf("%zu bytes -> %zu tokens (%.2f bytes/token), %u tokens %u merges: %.2f MB/s\n",
               len, ids.n, (double)len / (double)(ids.n ? ids.n : 1), tok_n_vocab(v),
               tok_n_merges(v), (double)len * (double)reps / (t - t0) / 1e6);
    free(text);
    tok_ids_free(&ids);
    tok_vocab_free(v);
    return rc ? fail(err.msg) : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "vocab"))
        return cmd_vocab(argc - 2, argv + 2);
    if (!strcmp(cmd, "encode"))
        return cmd_encode(argc - 2, argv + 2);
    if (!strcmp(cmd, "decode"))
        return cmd_decode(argc - 2, argv + 2);
    if (!strcmp(cmd, "regex")) {
        printf("%s\n", tok_pretok_regex());
        return 0;
    }
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    return usage();
}
