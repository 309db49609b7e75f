/* ds4.c — the ds4 command: loads a DS4 GGUF, renders the chat prompt (§5.2), prefills it and
 * streams sampled tokens to stdout; prompt and generation speeds go to stderr at the end.
 *   ds4 [-m MODEL] [-p PROMPT | -f FILE] [-n N] [-c N] [--temp T] [--top-p P] [--top-k K]
 *       [--min-p P] [--seed S] [--think | --think-max | --nothink] [-t N] [--system TEXT]
 *       [--verbose-prompt] [--backend cpu|cuda] [--gpu N] [--n-cpu-moe N]
 * Without -p/-f: an interactive chat (libedit line editing, /help, /quit, /reset; Ctrl-C
 * stops the answer being generated). Bad flags, a missing or invalid model, an empty prompt,
 * a prompt longer than the context: one clear line on stderr and a non-zero exit (2 for
 * usage, 1 otherwise). --backend puts the routed experts on a backend (model/offload.h: the
 * CUDA one needs `make cuda`, build/cuda/bin/ds4), everything else stays on the CPU. Owns arguments, the terminal and the generation loop; the engine is
 * src/ (model, tokenizer, chat, sample). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>

#include "kernels/cpu/threadpool.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/offload.h"
#include "model/state.h"
#include "sample/sample.h"
#include "tokenizer/chat.h"
#include "tokenizer/tok.h"

#define DEFAULT_MODEL "models/ds4-tiny.gguf"
#define DEFAULT_SYSTEM "You are a helpful assistant"
#define DEFAULT_CTX 32768u
#define DEFAULT_TOKENS 256
#define PREFILL_STEP 64 /* tokens per forward call during prefill (progress granularity) */

typedef struct opts {
    const char *model, *prompt, *file, *system;
    long n_predict, n_ctx, threads;
    const char *backend;   /* NULL: the CPU forward alone */
    long gpu, n_cpu_moe;   /* -1: default */
    sample_params sp;
    uint64_t seed;
    bool seed_set;
    bool verbose_prompt;
    chat_think think;
} opts;

/* Everything a generation needs. */
typedef struct run {
    model *m;
    tok_vocab *v;
    model_state *s;
    cpu_pool *pool;
    model_offload *off;  /* routed experts on a backend, or NULL */
    sampler *smp;
    float *logits;
    tok_ids hist;      /* tokens in the state */
    int32_t pending;   /* last sampled token not yet run (the -n limit cut it), or -1 */
    double t_prompt, t_gen;
    long n_prompt, n_gen;
} run;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

__attribute__((format(printf, 1, 2)))
static int die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ds4: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ds4 [options]\n"
            "  -m, --model FILE   DS4 GGUF model (default %s, made by `make run`)\n"
            "  -p, --prompt TEXT  answer one prompt and exit (else: interactive chat)\n"
            "  -f, --file FILE    read the prompt from FILE\n"
            "  -n, --tokens N     tokens to generate per answer (default %d)\n"
            "  -c, --ctx N        context size in tokens (default %u, at most the model's)\n"
            "  --temp T           temperature (default 1; 0 = greedy)\n"
            "  --top-p P          nucleus mass in (0, 1] (default 1 = off)\n"
            "  --top-k K          keep the K most likely tokens (default 0 = off)\n"
            "  --min-p P          drop tokens below P x the top one (default 0.05)\n"
            "  --seed S           sampling seed (default: time based)\n"
            "  --think | --think-max | --nothink   thinking mode (default --think)\n"
            "  -t, --threads N    CPU threads (default: DS4_THREADS or all cores)\n"
            "  --system TEXT      system prompt (default \"%s\"; \"\" = none)\n"
            "  --verbose-prompt   print the prompt's token ids to stderr\n"
            "  --backend B        where the routed experts run: cpu (the CPU backend) or cuda\n"
            "                     (a `make cuda` build: build/cuda/bin/ds4); default: the CPU\n"
            "                     forward alone. Everything else runs on the CPU.\n"
            "  --gpu N            CUDA device (default: DS4_CUDA_DEVICE, else 0); implies cuda\n"
            "  --n-cpu-moe N      keep the experts of the first N layers on the CPU, the rest on\n"
            "                     the GPU (default: as many of the last layers as fit in free\n"
            "                     VRAM minus max(1 GiB, 5%%)); implies cuda\n"
            "  -h, --help         this text\n",
            DEFAULT_MODEL, DEFAULT_TOKENS, DEFAULT_CTX, DEFAULT_SYSTEM);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- arguments ------------------------------------------------------------------------- */

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return false;
    *out = (float)v;
    return true;
}

/* Returns 0, or 2 after printing why the arguments are bad. */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.model = DEFAULT_MODEL, .system = DEFAULT_SYSTEM, .n_predict = DEFAULT_TOKENS,
                .sp = SAMPLE_PARAMS_DEFAULT, .think = CHAT_THINK_HIGH, .gpu = -1,
                .n_cpu_moe = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
        bool takes = IS("-m", "--model") || IS("-p", "--prompt") || IS("-f", "--file") ||
                     IS("-n", "--tokens") || IS("-c", "--ctx") || IS("-t", "--threads") ||
                     IS("--temp", "--temperature") || IS("--top-p", "--top_p") ||
                     IS("--top-k", "--top_k") || IS("--min-p", "--min_p") ||
                     IS("--seed", "-s") || IS("--system", "-sys") || !strcmp(a, "--backend") ||
                     IS("--gpu", "--device") || IS("--n-cpu-moe", "-ncmoe");
        if (takes && v == NULL) {
            fprintf(stderr, "ds4: %s needs a value (see ds4 --help)\n", a);
            return 2;
        }
        bool ok = true;
        if (IS("-h", "--help")) {
            usage(stdout);
            exit(0);
        } else if (IS("--think", "--think-high")) {
            o->think = CHAT_THINK_HIGH;
            continue;
        } else if (!strcmp(a, "--think-max")) {
            o->think = CHAT_THINK_MAX;
            continue;
        } else if (IS("--nothink", "--no-think")) {
            o->think = CHAT_THINK_NONE;
            continue;
        } else if (!strcmp(a, "--verbose-prompt")) {
            o->verbose_prompt = true;
            continue;
        } else if (IS("-m", "--model")) {
            o->model = v;
        } else if (IS("-p", "--prompt")) {
            o->prompt = v;
        } else if (IS("-f", "--file")) {
            o->file = v;
        } else if (IS("--system", "-sys")) {
            o->system = v;
        } else if (IS("-n", "--tokens")) {
            ok = parse_long(v, 1, 1L << 30, &o->n_predict);
        } else if (IS("-c", "--ctx")) {
            ok = parse_long(v, 2, UINT32_MAX, &o->n_ctx);
        } else if (!strcmp(a, "--backend")) {
            o->backend = v;
            ok = !strcmp(v, "cpu") || !strcmp(v, "cuda");
        } else if (IS("--gpu", "--device")) {
            ok = parse_long(v, 0, 1023, &o->gpu);
        } else if (IS("--n-cpu-moe", "-ncmoe")) {
            ok = parse_long(v, 0, MODEL_MAX_LAYERS, &o->n_cpu_moe);
        } else if (IS("-t", "--threads")) {
            ok = parse_long(v, 1, CPU_POOL_MAX_THREADS, &o->threads);
        } else if (IS("--temp", "--temperature")) {
            ok = parse_float(v, &o->sp.temp);
        } else if (IS("--top-p", "--top_p")) {
            ok = parse_float(v, &o->sp.top_p);
        } else if (IS("--min-p", "--min_p")) {
            ok = parse_float(v, &o->sp.min_p);
        } else if (IS("--top-k", "--top_k")) {
            long k;
            ok = parse_long(v, 0, INT32_MAX, &k);
            o->sp.top_k = (int32_t)k;
        } else if (IS("--seed", "-s")) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 0);
            ok = *v && *v != '-' && !*end && !errno;
            o->seed_set = true;
        } else {
            fprintf(stderr, "ds4: unknown option '%s' (see ds4 --help)\n", a);
            return 2;
        }
#undef IS
        if (!ok) {
            fprintf(stderr, "ds4: bad value '%s' for %s (see ds4 --help)\n", v, a);
            return 2;
        }
        i++;
    }
    ds4_error err;
    if (sample_params_check(&o->sp, &err)) {
        fprintf(stderr, "ds4: %s\n", err.msg);
        return 2;
    }
    if (o->prompt && o->file) {
        fprintf(stderr, "ds4: give -p or -f, not both\n");
        return 2;
    }
    if (!o->backend && (o->gpu >= 0 || o->n_cpu_moe >= 0))
        o->backend = "cuda";
    if (o->backend && !strcmp(o->backend, "cpu") && (o->gpu >= 0 || o->n_cpu_moe >= 0)) {
        fprintf(stderr, "ds4: --gpu and --n-cpu-moe are for --backend cuda\n");
        return 2;
    }
    return 0;
}

/* ---- progress ------------------------------------------------------------------------- */

static void progress(const char *what, double done, double total, const char *unit)
{
    if (!isatty(STDERR_FILENO))
        return;
    int w = 30, k = total > 0 ? (int)(w * done / total) : w;
    char bar[64];
    for (int i = 0; i < w; i++)
        bar[i] = i < k ? '#' : '-';
    bar[w] = 0;
    fprintf(stderr, "\r%-8s [%s] %3d%% %.0f/%.0f %s", what, bar,
            total > 0 ? (int)(100 * done / total) : 100, done, total, unit);
    if (done >= total)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

/* Reads the mapping once so generation does not stall on page faults, with a bar. */
static void prefault(const model *m)
{
    const volatile unsigned char *p = gguf_base(m->file);
    size_t n = gguf_size(m->file), step = 64u << 20;
    unsigned sum = 0;
    for (size_t a = 0; a < n; a += step) {
        size_t e = a + step < n ? a + step : n;
        for (size_t i = a; i < e; i += 4096)
            sum += p[i];
        progress("loading", (double)e / (1 << 20), (double)n / (1 << 20), "MiB");
    }
    (void)sum;
}

/* ---- generation ------------------------------------------------------------------------- */

/* Runs toks through the model (appending them to the history), leaving the logits of the
 * last one in r->logits. Returns 0, 1 after an error message, or -1 if interrupted. */
static int prefill(run *r, const int32_t *toks, size_t n)
{
    ds4_error err;
    double t0 = now();
    bool bar = n > 2 * PREFILL_STEP;
    for (size_t a = 0; a < n; a += PREFILL_STEP) {
        if (interrupted) {
            if (bar)
                progress("prefill", (double)n, (double)n, "tokens");
            return -1;
        }
        size_t k = n - a < PREFILL_STEP ? n - a : PREFILL_STEP;
        bool last = a + k == n;
        /* only the last token's logits are needed: run it alone */
        size_t body = last ? k - 1 : k;
        int rc = 0;
        if (body)
            rc = model_forward_offload(r->pool, r->off, r->m, r->s, toks + a, (uint32_t)body,
                                       NULL, &err);
        if (rc == 0 && last)
            rc = model_forward_offload(r->pool, r->off, r->m, r->s, toks + a + body, 1,
                                       r->logits, &err);
        if (rc)
            return die("%s", err.msg);
        for (size_t i = 0; i < k; i++)
            tok_ids_push(&r->hist, toks[a + i], NULL);
        if (bar)
            progress("prefill", (double)(a + k), (double)n, "tokens");
    }
    r->t_prompt += now() - t0;
    r->n_prompt += (long)n;
    return 0;
}

/* Samples and streams up to n_predict tokens; stops at EOS, a full context or Ctrl-C.
 * *ended_eos tells whether the model ended its turn. Returns 0 or 1 after an error. */
static int generate(run *r, long n_predict, bool *ended_eos)
{
    ds4_error err;
    int32_t eos = tok_special_id(r->v, TOK_EOS);
    double t0 = now();
    *ended_eos = false;
    for (long i = 0; i < n_predict && !interrupted; i++) {
        int32_t t = sample_next(r->smp, r->logits);
        r->n_gen++;
        if (t == eos) {
            *ended_eos = true;
            break;
        }
        size_t len;
        const char *bytes = tok_token_bytes(r->v, t, &len);
        if (bytes) {
            fwrite(bytes, 1, len, stdout);
            fflush(stdout);
        }
        if (i + 1 == n_predict) {
            r->pending = t;
            break;
        }
        if (model_state_pos(r->s) + 1 > r->s->n_ctx) {
            fprintf(stderr, "\nds4: context full (%u tokens); stopping\n", r->s->n_ctx);
            break;
        }
        if (model_forward_offload(r->pool, r->off, r->m, r->s, &t, 1, r->logits, &err))
            return die("%s", err.msg);
        tok_ids_push(&r->hist, t, NULL);
    }
    r->t_gen += now() - t0;
    return 0;
}

static void print_speeds(const run *r)
{
    fprintf(stderr, "\nds4: prompt %ld tokens in %.2f s (%.2f tok/s), generation %ld tokens in "
                    "%.2f s (%.2f tok/s)\n", r->n_prompt, r->t_prompt,
            r->t_prompt > 0 ? (double)r->n_prompt / r->t_prompt : 0.0, r->n_gen, r->t_gen,
            r->t_gen > 0 ? (double)r->n_gen / r->t_gen : 0.0);
}

/* ---- setup ------------------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    for (size_t k; b && (k = fread(b + n, 1, cap - n, f)) > 0;) {
        n += k;
        if (n == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (nb == NULL)
                free(b);
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[n] = 0;
    *len = n;
    return b;
}

static int setup(run *r, const opts *o)
{
    ds4_error err = {0};
    struct stat st;
    if (stat(o->model, &st) != 0)
        return die("model file '%s' not found (`make run` generates %s; or pass -m FILE)",
                   o->model, DEFAULT_MODEL);
    if (!S_ISREG(st.st_mode))
        return die("model '%s' is not a file", o->model);
    double t0 = now();
    if (model_load(&r->m, o->model, &err))
        return die("cannot load the model: %s", err.msg);
    prefault(r->m);
    if (tok_vocab_from_gguf(&r->v, r->m->file, &err))
        return die("cannot read the vocabulary: %s", err.msg);
    if (tok_n_vocab(r->v) > r->m->hp.n_vocab)
        return die("%s: the vocabulary has %u tokens but the model embeds %u", o->model,
                   tok_n_vocab(r->v), r->m->hp.n_vocab);
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (tok_special_id(r->v, (tok_special)k) < 0 && k != TOK_DSML)
            return die("%s: the vocabulary lacks the %s token", o->model,
                       tok_special_text((tok_special)k));
    uint32_t ctx = o->n_ctx ? (uint32_t)o->n_ctx : DEFAULT_CTX;
    uint64_t train = r->m->hp.context_length;
    if (!o->n_ctx && train && ctx > train)
        ctx = (uint32_t)train;
    if (model_state_new(&r->s, r->m, ctx, &err))
        return die("cannot allocate a context of %u tokens: %s", ctx, err.msg);
    if (cpu_pool_new(&r->pool, (int)o->threads, &err))
        return die("%s", err.msg);
    if (o->backend) {
        model_offload_opts oo = {o->backend, (int)o->gpu, (int)o->n_cpu_moe};
        if (model_offload_new(&r->off, r->m, &oo, &err))
            return die("--backend %s: %s", o->backend, err.msg);
        fprintf(stderr, "ds4: %s\n", r->off->desc);
    }
    uint64_t seed = o->seed_set ? o->seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (sample_new(&r->smp, r->m->hp.n_vocab, &o->sp, seed, &err))
        return die("%s", err.msg);
    r->logits = malloc((size_t)r->m->hp.n_vocab * sizeof *r->logits);
    if (r->logits == NULL)
        return die("out of memory for the logits");
    r->pending = -1;
    fprintf(stderr, "ds4: %s: %u layers, d=%u, %u experts (%u used), vocab %u; ctx %u, "
                    "%d threads, loaded in %.2f s\n", o->model, r->m->hp.n_layer,
            r->m->hp.n_embd, r->m->hp.n_expert, r->m->hp.n_expert_used, r->m->hp.n_vocab, ctx,
            cpu_pool_threads(r->pool), now() - t0);
    return 0;
}

static void teardown(run *r)
{
    free(r->logits);
    sample_free(r->smp);
    model_offload_free(r->off);
    cpu_pool_free(r->pool);
    model_state_free(r->s);
    tok_vocab_free(r->v);
    model_free(r->m);
    tok_ids_free(&r->hist);
}

/* Appends one user turn to b: the whole opening for the first turn, else the end of the
 * previous answer (EOS) and the new turn. */
static void render_turn(chat_buf *b, const run *r, const opts *o, const char *text)
{
    chat_think think = chat_think_for_ctx(o->think, r->s->n_ctx);
    if (r->hist.n == 0) {
        chat_msg msgs[2] = {{.role = CHAT_SYSTEM, .content = o->system},
                            {.role = CHAT_USER, .content = text}};
        bool sys = o->system && *o->system;
        chat_opts co = {.think = think, .generation_prompt = true};
        chat_render(b, msgs + !sys, 2 - !sys, &co, NULL);
        return;
    }
    chat_buf_special(b, TOK_EOS);
    chat_buf_special(b, TOK_USER);
    chat_buf_text(b, text, strlen(text));
    chat_buf_special(b, TOK_ASSISTANT);
    chat_buf_special(b, think != CHAT_THINK_NONE ? TOK_THINK : TOK_THINK_END);
}

/* One turn: render, check the room, prefill, generate. 0, 1 (error) or 2 (did not fit). */
static int turn(run *r, const opts *o, const char *text)
{
    chat_buf b;
    ds4_error err;
    chat_buf_init(&b, r->v);
    if (r->pending >= 0)
        tok_ids_push(&b.ids, r->pending, NULL); /* the token the -n limit left unrun */
    render_turn(&b, r, o, text);
    if (chat_buf_flush(&b, &err)) {
        chat_buf_free(&b);
        return die("%s", err.msg);
    }
    if (o->verbose_prompt) {
        fprintf(stderr, "ds4: prompt tokens (%zu):", b.ids.n);
        for (size_t i = 0; i < b.ids.n; i++)
            fprintf(stderr, " %d", b.ids.ids[i]);
        fputc('\n', stderr);
    }
    size_t have = model_state_pos(r->s), room = r->s->n_ctx - have;
    if (b.ids.n >= room) {
        fprintf(stderr, "ds4: the prompt is %zu tokens but the context has room for %zu more "
                        "(-c %u%s); nothing was run\n", b.ids.n, room > 0 ? room - 1 : 0,
                r->s->n_ctx, have ? ", /reset to start over" : ": raise -c");
        chat_buf_free(&b);
        return 2;
    }
    r->pending = -1;
    int rc = prefill(r, b.ids.ids, b.ids.n);
    chat_buf_free(&b);
    if (rc)
        return rc < 0 ? 0 : rc;
    bool eos;
    rc = generate(r, o->n_predict, &eos);
    fputc('\n', stdout);
    fflush(stdout);
    return rc;
}

/* ---- interactive chat ---------------------------------------------------------------------- */

static void chat_help(void)
{
    printf("Type a message and press Enter. Commands:\n"
           "  /help   this text\n"
           "  /reset  forget the conversation (empty context)\n"
           "  /quit   leave (also Ctrl-D)\n"
           "Ctrl-C stops the answer being generated.\n");
}

static int interactive(run *r, const opts *o)
{
    printf("ds4 chat — /help for commands, /quit or Ctrl-D to leave.\n");
    rl_catch_signals = 0;
    for (;;) {
        interrupted = 0;
        char *line = readline("> ");
        if (line == NULL) {
            if (interrupted) { /* Ctrl-C at the prompt: a fresh line */
                printf("\n");
                continue;
            }
            printf("\n");
            return 0;
        }
        char *t = line;
        while (*t == ' ' || *t == '\t')
            t++;
        if (*t)
            add_history(t);
        if (!strcmp(t, "/quit") || !strcmp(t, "/exit")) {
            free(line);
            return 0;
        } else if (!strcmp(t, "/help")) {
            chat_help();
        } else if (!strcmp(t, "/reset")) {
            model_state_reset(r->s);
            r->hist.n = 0;
            r->pending = -1;
            printf("(context cleared)\n");
        } else if (*t == '/') {
            printf("unknown command '%s' (/help)\n", t);
        } else if (*t) {
            int rc = turn(r, o, t);
            if (rc == 1) {
                free(line);
                return 1;
            }
            if (interrupted)
                printf("(stopped)\n");
            print_speeds(r);
            r->n_prompt = r->n_gen = 0;
            r->t_prompt = r->t_gen = 0;
        }
        free(line);
    }
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    char *file_text = NULL;
    const char *prompt = o.prompt;
    if (o.file) {
        size_t len;
        if ((file_text = read_file(o.file, &len)) == NULL)
            return die("cannot read the prompt file '%s': %s", o.file, strerror(errno));
        if (strlen(file_text) != len) {
            free(file_text);
            return die("the prompt file '%s' contains a NUL byte", o.file);
        }
        prompt = file_text;
    }
    if (prompt) {
        const char *p = prompt;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p) {
            free(file_text);
            fprintf(stderr, "ds4: the prompt is empty\n");
            return 2;
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    run r = {0};
    rc = setup(&r, &o);
    if (rc == 0 && prompt) {
        rc = turn(&r, &o, prompt);
        if (rc == 0)
            print_speeds(&r);
    } else if (rc == 0) {
        rc = interactive(&r, &o);
    }
    teardown(&r);
    free(file_text);
    return rc;
}
