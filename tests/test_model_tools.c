/* test_model_tools.c — the model tools as a user runs them (binaries next to this test's
 * build directory): ds4-mkmodel writes the same bytes as the library for any thread count
 * and refuses bad options with one line and exit code 2; `ds4-gguf model` loads its output
 * in both dialects and answers a malformed file with one line naming the tensor and exit
 * code 2; ds4-quantize (convert_hf.py's external quantizer) writes exactly the traits
 * quantizers' blocks; a flash-shape file (1 layer, ~3.4 GB in /tmp) shows the published
 * layout in `ds4-gguf info` (skipped with DS4_SKIP_SLOW=1 or under 8 GiB of free space). */
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model/mkmodel.h"
#include "model/names.h"
#include "test_util.h"

#define FLASH_MIN_FREE (8ull << 30) /* bytes of free space the flash-shape case needs */

static char bin[512], tmp[256];

/* Runs a command line with stdout/stderr captured to tmp/out and tmp/err; returns the
 * exit status (-1 if it did not exit). */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[2048], full[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s >%s/out 2>%s/err", cmd, tmp, tmp);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Contents of tmp/<name> (malloc'ed, NUL-terminated), size in *n. */
static char *slurp(const char *name, size_t *n)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = fread(buf, 1, (size_t)len, f);
    buf[got] = 0;
    fclose(f);
    if (n)
        *n = got;
    return buf;
}

static bool has(const char *file, const char *needle)
{
    char *s = slurp(file, NULL);
    bool ok = strstr(s, needle) != NULL;
    free(s);
    return ok;
}

/* stderr is exactly one line. */
static bool one_line_err(const char *needle)
{
    char *s = slurp("err", NULL);
    char *nl = strchr(s, '\n');
    bool ok = nl && nl[1] == 0 && strstr(s, needle);
    free(s);
    return ok;
}

static void test_mkmodel(void)
{
    /* the quantizing fill (the slow path, kept short: q4 with 8 experts) */
    const char *opts = "--quant q4 --experts 8 --fill quantize --dialect ds4";
    int rc = run("%s/ds4-mkmodel %s/a.gguf %s --threads 1", bin, tmp, opts);
    t_check(rc == 0 && has("out", "fill quantize"), "ds4-mkmodel tiny %s (exit %d)", opts, rc);
    rc = run("%s/ds4-gguf model %s/a.gguf", bin, tmp);
    t_check(rc == 0 && has("out", "dialect    ds4") && has("out", "6 (3 hash-routed)"),
            "ds4-gguf model loads it (exit %d)", rc);
    rc = run("%s/ds4-mkmodel %s/b.gguf %s --threads 2", bin, tmp, opts);
    size_t na, nb;
    char *a = slurp("a.gguf", &na), *b = slurp("b.gguf", &nb);
    t_check(rc == 0 && na == nb && !memcmp(a, b, na), "1 and 2 threads: identical files");
    model_mk_opts o;
    model_mk_preset(&o, "tiny", NULL);
    o.quant = MODEL_MK_Q4, o.hp.n_expert = 8, o.fill = MODEL_MK_FILL_QUANTIZE;
    void *mem = NULL;
    size_t nm = 0;
    ds4_error err = {0};
    model_mk_write_memory(&o, &mem, &nm, &err);
    t_check(nm == na && mem && !memcmp(mem, a, na), "tool output = library output");
    free(mem), free(a), free(b);
    rc = run("%s/ds4-mkmodel %s/c.gguf --quant q4 --dialect llamacpp --layers 4 --experts 8"
             " --fill random", bin, tmp);
    t_check(rc == 0, "ds4-mkmodel tiny q4 llamacpp 4 layers 8 experts (exit %d)", rc);
    rc = run("%s/ds4-gguf model %s/c.gguf", bin, tmp);
    t_check(rc == 0 && has("out", "dialect    llamacpp") && has("out", "16 routed") == 0 &&
            has("out", "8 routed (6 used)"), "ds4-gguf model loads the llama.cpp dialect");
    struct { const char *args, *needle; } bad[] = {
        {"--quant q3", "bad option or value: --quant q3"},
        {"--preset huge", "unknown preset 'huge'"},
        {"--heads 5", "attention.head_count' = 5 is not a multiple"},
        {"--embd 200", "not a multiple of the q8_0 block"},
        {"--quant q4 --ff 128", "not a multiple of the q4_K block"},
        {"--ratios 0,0,4", "--ratios has 3 entries, the model has 6 layers"},
        {"--ratios 0,0,3,128,4,128", "compress_ratios'[2] = 3"},
        {"--vocab 100", "cannot hold the 7 special and 256 byte tokens"},
        {"--layers", "option --layers needs a value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char d[400];
        snprintf(d, sizeof d, "%s/d.gguf", tmp);
        rc = run("%s/ds4-mkmodel %s %s", bin, d, bad[i].args);
        t_check(rc == 2 && one_line_err(bad[i].needle) && access(d, F_OK) != 0,
                "ds4-mkmodel %s: exit 2, one line", bad[i].args);
    }
}

/* A malformed model (one tensor missing / retyped): `ds4-gguf model` says which, exit 2. */
static void test_malformed(void)
{
    model_mk_opts o;
    model_mk_preset(&o, "tiny", NULL);
    o.fill = MODEL_MK_FILL_RANDOM;
    void *mem = NULL;
    size_t n = 0;
    ds4_error err = {0};
    gguf_file *f = NULL;
    if (model_mk_write_memory(&o, &mem, &n, &err) || gguf_open_memory(&f, mem, n, &err)) {
        t_check(false, "malformed: base model: %s", err.msg);
        return;
    }
    for (int variant = 0; variant < 2; variant++) {
        const char *victim = "blk.4.indexer_compressor_kv.weight";
        gguf_writer *w = gguf_writer_new();
        for (int64_t i = 0; i < gguf_kv_count(f); i++)
            gguf_writer_add_kv(w, gguf_kv_at(f, i));
        void *zeros = calloc(1, 1 << 20);
        for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (strcmp(t->name, victim) == 0 && variant == 0)
                continue;
            if (strcmp(t->name, victim) == 0)
                gguf_writer_add_tensor(w, t->name, DS4_TYPE_Q8_0, t->n_dims, t->ne, zeros);
            else
                gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
        }
        char path[400];
        snprintf(path, sizeof path, "%s/bad%d.gguf", tmp, variant);
        gguf_writer_write(w, path, &err);
        gguf_writer_free(w);
        free(zeros);
        int rc = run("%s/ds4-gguf model %s", bin, path);
        const char *want = variant == 0 ? "tensor 'blk.4.indexer_compressor_kv.weight' missing"
                                        : "tensor 'blk.4.indexer_compressor_kv.weight': type"
                                          " q8_0 not allowed";
        t_check(rc == 2 && one_line_err(want) && one_line_err(path),
                "ds4-gguf model on a model %s: exit %d, one line naming file and tensor",
                variant == 0 ? "missing a tensor" : "with a wrong type", rc);
    }
    gguf_close(f);
    free(mem);
}

/* ds4-quantize IN.f32 OUT.bin TYPE ROWS COLS = the traits quantizer row by row. */
static void test_quantize(void)
{
    const int rows = 24, cols = 512;
    float *x = malloc(sizeof *x * rows * cols);
    t_rng r = {7};
    for (int i = 0; i < rows * cols; i++)
        x[i] = (float)t_normal(&r) * (i % 97 == 0 ? 8.0f : 1.0f);
    char path[400];
    snprintf(path, sizeof path, "%s/in.f32", tmp);
    FILE *f = fopen(path, "wb");
    fwrite(x, sizeof *x, (size_t)(rows * cols), f);
    fclose(f);
    const char *types[] = {"q2_K", "q4_K", "iq2_xxs", "q8_0", "f16"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ds4_type t = (ds4_type)quant_type_from_name(types[k]);
        size_t rb = quant_row_bytes(t, cols);
        uint8_t *want = malloc(rb * rows);
        for (int i = 0; i < rows; i++)
            quant_get_traits(t)->quant_row(x + i * cols, want + i * rb, cols);
        int rc = run("DS4_THREADS=3 %s/ds4-quantize %s %s/q.bin %s %d %d", bin, path, tmp,
                     types[k], rows, cols);
        size_t n = 0;
        char *got = slurp("q.bin", &n);
        t_check(rc == 0 && n == rb * rows && !memcmp(got, want, n),
                "ds4-quantize %s: %zu bytes equal to the traits quantizer", types[k], n);
        free(got);
        free(want);
    }
    int rc = run("%s/ds4-quantize %s %s/q.bin q4_K %d %d", bin, path, tmp, rows + 1, cols);
    t_check(rc == 2 && one_line_err("size does not match"), "ds4-quantize: wrong ROWS -> exit 2");
    rc = run("%s/ds4-quantize %s %s/q.bin q4_K %d %d", bin, path, tmp, rows * 4 / 3,
             cols * 3 / 4);
    t_check(rc == 2 && one_line_err("not a multiple of the q4_K block"),
            "ds4-quantize: COLS not a block multiple -> exit 2");
    rc = run("%s/ds4-quantize %s %s/q.bin q9_K %d %d", bin, path, tmp, rows, cols);
    t_check(rc == 2 && one_line_err("unknown or unquantizable"), "ds4-quantize: bad type");
    free(x);
}

/* flash-shape with 1 of its 43 layers, on disk: `ds4-gguf info` shows the published layout. */
static void test_flash_shape(void)
{
    struct statvfs vfs;
    if (getenv("DS4_SKIP_SLOW")) {
        t_skip("DS4_SKIP_SLOW is set", "flash-shape --layers 1 on disk");
        return;
    }
    if (statvfs(tmp, &vfs) || (unsigned long long)vfs.f_bavail * vfs.f_frsize < FLASH_MIN_FREE) {
        t_skip("under 8 GiB free in /tmp", "flash-shape --layers 1 on disk");
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run("%s/ds4-mkmodel %s/flash.gguf --preset flash-shape --layers 1", bin, tmp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    t_case(rc == 0, s, 120, "flash-shape --layers 1 written (seconds)");
    rc = run("%s/ds4-gguf info %s/flash.gguf", bin, tmp);
    struct { const char *name, *type, *shape; } pub[] = {
        {"token_embd.weight ", "f16", "[4096, 129280]"},
        {"output.weight ", "q8_0", "[4096, 129280]"},
        {"output_hc_fn.weight ", "f16", "[16384, 4]"},
        {"blk.0.hc_attn_fn.weight ", "f16", "[16384, 24]"},
        {"blk.0.attn_q_a.weight ", "q8_0", "[4096, 1024]"},
        {"blk.0.attn_q_b.weight ", "q8_0", "[1024, 32768]"},
        {"blk.0.attn_kv.weight ", "q8_0", "[4096, 512]"},
        {"blk.0.attn_output_a.weight ", "q8_0", "[4096, 8192]"},
        {"blk.0.attn_output_b.weight ", "q8_0", "[8192, 4096]"},
        {"blk.0.ffn_gate_inp.weight ", "f16", "[4096, 256]"},
        {"blk.0.ffn_gate_tid2eid.weight ", "i32", "[6, 129280]"},
        {"blk.0.ffn_gate_exps.weight ", "iq2_xxs", "[4096, 2048, 256]"},
        {"blk.0.ffn_up_exps.weight ", "iq2_xxs", "[4096, 2048, 256]"},
        {"blk.0.ffn_down_exps.weight ", "q2_K", "[2048, 4096, 256]"},
        {"blk.0.ffn_down_shexp.weight ", "q8_0", "[2048, 4096]"},
    };
    char *info = slurp("out", NULL);
    int found = 0;
    for (size_t i = 0; i < sizeof pub / sizeof pub[0]; i++) {
        char *line = strstr(info, pub[i].name);
        char *end = line ? strchr(line, '\n') : NULL;
        if (end)
            *end = 0;
        found += line && strstr(line, pub[i].type) && strstr(line, pub[i].shape);
        if (end)
            *end = '\n';
    }
    t_check(rc == 0 && found == (int)(sizeof pub / sizeof pub[0]) &&
            strstr(info, "deepseek4.vocab_size") && strstr(info, "129280"),
            "ds4-gguf info: the published layout (%d of %zu tensors)", found,
            sizeof pub / sizeof pub[0]);
    free(info);
    rc = run("%s/ds4-gguf model %s/flash.gguf", bin, tmp);
    t_check(rc == 0 && has("out", "embedding  4096, vocab 129280") &&
            has("out", "64 heads x 512 (rope 64)") && has("out", "256 routed (6 used)"),
            "ds4-gguf model: flash-shape hyperparameters");
    char path[400];
    snprintf(path, sizeof path, "%s/flash.gguf", tmp);
    remove(path);
}

int main(int argc, char **argv)
{
    (void)argc;
    char self[512];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(bin, sizeof bin, "%s/../bin", dirname(self));
    snprintf(tmp, sizeof tmp, "/tmp/ds4-model-tools-XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_mkmodel();
    test_malformed();
    test_quantize();
    test_flash_shape();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return t_summary();
}
