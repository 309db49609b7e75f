/* ds4-logits.c — runs the forward pass on a token list and writes the logits:
 *   ds4-logits -m MODEL.gguf --tokens 1,2,3 --out FILE.npy [--decode] [--fast] [--ctx N]
 *              [--backend cpu|cuda] [--gpu N] [--n-cpu-moe N]
 * FILE.npy: float32 [n_tokens, n_vocab] (NPY v1.0, C order); row p = the logits after token
 * p. Default: the reference forward (f32 activations), order prefill (layer-major,
 * model_prefill_ref); --decode feeds the tokens one at a time (model_forward_ref): both give
 * the same numbers. --fast: the optimized forward instead (model_forward: activations
 * quantized per ds4-architecture.md §4.1, threads from DS4_THREADS), --decode then one token
 * per call. --backend (implies --fast): the routed experts on that backend (model/offload.h;
 * --gpu, --n-cpu-moe as ds4's, and imply cuda), the placement line on stderr. --ctx: context of the state (default: the token count). Env DS4_NO_QAT_SIM=1:
 * reference mode without the FP8/FP4/F16 simulations (§3.8). Any error: one line on stderr,
 * exit code 2. Owns argument parsing and the NPY writer; the computation is
 * src/model/forward_ref.c and src/model/forward.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/forward_ref.h"
#include "model/model.h"
#include "model/offload.h"
#include "model/state.h"

__attribute__((format(printf, 1, 2)))
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ds4-logits: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

static int usage(void)
{
    fprintf(stderr, "usage: ds4-logits -m MODEL.gguf --tokens ID,ID,... --out FILE.npy "
                    "[--decode] [--fast] [--ctx N]\n"
                    "                  [--backend cpu|cuda] [--gpu N] [--n-cpu-moe N]\n"
                    "  --fast           the optimized forward (else the reference)\n"
                    "  --backend B      the routed experts on backend B (implies --fast): cpu, or\n"
                    "                   cuda in a `make cuda` build (build/cuda/bin/ds4-logits)\n"
                    "  --gpu N          CUDA device (default DS4_CUDA_DEVICE, else 0); implies cuda\n"
                    "  --n-cpu-moe N    experts of the first N layers stay on the CPU (default: as\n"
                    "                   many of the last layers as fit in free VRAM); implies cuda\n");
    return 2;
}

/* Parses "1,2,3" into a new array; returns the count, or -1 (message in *why). */
static long parse_tokens(const char *s, int32_t **out, const char **why)
{
    long n = 1, k = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    int32_t *t = malloc((size_t)n * sizeof *t);
    if (t == NULL) {
        *why = "out of memory";
        return -1;
    }
    const char *p = s;
    for (; k < n; k++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end != ',' && *end != '\0')) {
            free(t);
            *why = "bad token list (want comma-separated non-negative integers)";
            return -1;
        }
        t[k] = (int32_t)v;
        p = end + (*end == ',');
    }
    *out = t;
    return n;
}

/* Writes a float32 C-order [rows, cols] array as NPY v1.0: magic, version 1.0, u16 header
 * length, a dict padded with spaces to a multiple of 64 bytes (newline last), the data. */
static int write_npy(const char *path, const float *x, uint64_t rows, uint64_t cols)
{
    char dict[128];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%llu, %llu), }",
                     (unsigned long long)rows, (unsigned long long)cols);
    size_t header = 10 + (size_t)n + 1; /* magic 6 + version 2 + length 2, dict, '\n' */
    size_t pad = (64 - header % 64) % 64;
    uint16_t hlen = (uint16_t)(n + pad + 1);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                              (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8) };
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && fwrite(x, sizeof(float), rows * cols, f) == rows * cols; /* little-endian host */
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        remove(path);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *mpath = NULL, *toks = NULL, *out = NULL, *why = NULL;
    int decode = 0, fast = 0;
    long ctx = 0, gpu = -1, n_cpu_moe = -1;
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--decode"))
            decode = 1;
        else if (!strcmp(a, "--fast"))
            fast = 1;
        else if (i + 1 < argc && (!strcmp(a, "-m") || !strcmp(a, "--model")))
            mpath = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--tokens"))
            toks = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--out"))
            out = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--ctx")) {
            char *end;
            ctx = strtol(argv[++i], &end, 10);
            if (*end || ctx <= 0 || ctx > UINT32_MAX)
                return fail("bad --ctx '%s'", argv[i]);
        } else if (i + 1 < argc && !strcmp(a, "--backend")) {
            backend = argv[++i];
        } else if (i + 1 < argc && (!strcmp(a, "--gpu") || !strcmp(a, "--n-cpu-moe"))) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || !*argv[i] || v < 0 || v > 1023)
                return fail("bad %s '%s'", a, argv[i]);
            *(!strcmp(a, "--gpu") ? &gpu : &n_cpu_moe) = v;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return usage();
        else
            return fail("unknown or incomplete argument '%s'", a);
    }
    if (!mpath || !toks || !out)
        return usage();
    if (!backend && (gpu >= 0 || n_cpu_moe >= 0))
        backend = "cuda";
    if (backend)
        fast = 1;

    int32_t *tokens = NULL;
    long n = parse_tokens(toks, &tokens, &why);
    if (n < 0)
        return fail("%s", why);
    if (ctx == 0)
        ctx = n;
    if (ctx < n) {
        free(tokens);
        return fail("%ld tokens do not fit in --ctx %ld", n, ctx);
    }

    ds4_error err = { 0 };
    model *m = NULL;
    model_state *s = NULL;
    model_offload *off = NULL;
    float *logits = NULL;
    int rc = model_load(&m, mpath, &err);
    if (rc == 0 && backend) {
        const model_offload_opts oo = { backend, (int)gpu, (int)n_cpu_moe };
        if ((rc = model_offload_new(&off, m, &oo, &err)) == 0)
            fprintf(stderr, "ds4-logits: %s\n", off->desc);
    }
    if (rc == 0)
        rc = model_state_new(&s, m, (uint32_t)ctx, &err);
    if (rc == 0) {
        logits = malloc((size_t)n * m->hp.n_vocab * sizeof(float));
        if (logits == NULL)
            rc = ds4_error_set(&err, DS4_E_NOMEM, "out of memory for %ld x %u logits", n,
                               m->hp.n_vocab);
    }
    if (rc == 0 && fast && decode) {
        for (long i = 0; rc == 0 && i < n; i++)
            rc = model_forward_offload(model_forward_default_pool(), off, m, s, tokens + i, 1,
                                       logits + (size_t)i * m->hp.n_vocab, &err);
    } else if (rc == 0 && fast) {
        rc = model_forward_offload(model_forward_default_pool(), off, m, s, tokens,
                                   (uint32_t)n, logits, &err);
    } else if (rc == 0) {
        rc = (decode ? model_forward_ref : model_prefill_ref)(m, s, tokens, (uint32_t)n, logits,
                                                              &err);
    }
    if (rc == 0 && write_npy(out, logits, (uint64_t)n, m->hp.n_vocab) != 0)
        rc = ds4_error_set(&err, DS4_E_IO, "%s: cannot write: %s", out, strerror(errno));
    free(logits);
    free(tokens);
    model_state_free(s);
    model_offload_free(off);
    model_free(m);
    if (rc)
        return fail("%s", err.msg);
    return 0;
}
