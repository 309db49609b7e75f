/* ds4-mkmodel.c — writes a DS4-layout GGUF of any size with random weights:
 *   ds4-mkmodel OUT.gguf [--preset tiny|small|flash-shape] [--layers N] [--quant q2|q4|f16|f32]
 *                        [--dialect ds4|llamacpp] [--seed S] [--fill auto|quantize|random]
 *                        [--threads N] [dimension flags, see usage]
 * Deterministic for given options (the thread count never changes the bytes). Streams the
 * file, so flash-shape models larger than memory are fine. Bad options: one line on stderr,
 * exit code 2. Owns argument parsing and printing only; the generator is src/model/mkmodel.c. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/mkmodel.h"
#include "model/names.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: ds4-mkmodel OUT.gguf [--preset tiny|small|flash-shape] [--layers N]\n"
            "         [--quant q2|q4|f16|f32] [--dialect ds4|llamacpp] [--seed S]\n"
            "         [--fill auto|quantize|random] [--threads N] [--name S]\n"
            "  dimensions: --embd --vocab --heads --head-dim --rot --q-rank --o-rank --o-groups\n"
            "    --experts --top-k (experts per token) --ff --shared --hash-layers --window\n"
            "    --idx-heads --idx-dim --idx-top-k --hc --sinkhorn --ctx N\n"
            "    --ratios R0,R1,... (per layer) --swiglu X\n"
            "  presets: tiny (6 layers, every feature), small (8 layers, d=1024),\n"
            "    flash-shape (published DS4 Flash dims, --layers of 43; default 4)\n");
    return 2;
}

static int fail(const char *msg)
{
    fprintf(stderr, "ds4-mkmodel: %s\n", msg);
    return 2;
}

/* Parses a non-negative integer option value; false if malformed. */
static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return false;
    unsigned long long x = strtoull(s, &end, 0);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* Dimension flags: name -> field. */
typedef struct dim_flag {
    const char *flag;
    size_t off;
} dim_flag;

#define F(flag, field) {flag, offsetof(model_hparams, field)}
static const dim_flag dims[] = {
    F("--embd", n_embd), F("--vocab", n_vocab), F("--heads", n_head),
    F("--head-dim", head_dim), F("--rot", n_rot), F("--q-rank", q_lora_rank),
    F("--o-rank", o_lora_rank), F("--o-groups", n_out_group), F("--experts", n_expert),
    F("--top-k", n_expert_used), F("--ff", n_ff_exp), F("--shared", n_expert_shared),
    F("--hash-layers", n_hash_layer), F("--window", n_swa), F("--idx-heads", n_indexer_head),
    F("--idx-dim", indexer_head_dim), F("--idx-top-k", indexer_top_k), F("--hc", n_hc),
    F("--sinkhorn", hc_sinkhorn_iters),
};
#undef F

static int parse_ratios(model_hparams *hp, const char *s, char *msg, size_t n)
{
    uint32_t il = 0;
    const char *p = s;
    while (*p && il < MODEL_MAX_LAYERS) {
        char *end;
        unsigned long r = strtoul(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            snprintf(msg, n, "--ratios: '%s' is not a comma-separated list of integers", s);
            return -1;
        }
        hp->compress_ratio[il++] = (uint32_t)r;
        p = *end ? end + 1 : end;
    }
    if (il != hp->n_layer) {
        snprintf(msg, n, "--ratios has %u entries, the model has %u layers", il, hp->n_layer);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return usage();
    const char *out = argv[1], *preset = "tiny", *ratios = NULL;
    char msg[600];
    ds4_error err = {0};
    model_mk_opts o;
    /* the preset first, since every other option overrides it */
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "--preset") == 0)
            preset = argv[i + 1];
    if (model_mk_preset(&o, preset, &err))
        return fail(err.msg);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x = 0;
        bool num = parse_u64(v, &x);
        if (!v) {
            snprintf(msg, sizeof msg, "option %s needs a value", a);
            return fail(msg);
        }
        i++;
        if (strcmp(a, "--preset") == 0) {
            continue;
        } else if (strcmp(a, "--layers") == 0 && num && x >= 1 && x <= MODEL_MAX_LAYERS) {
            model_mk_set_layers(&o, (uint32_t)x);
        } else if (strcmp(a, "--quant") == 0 && model_mk_quant_from_name(v) >= 0) {
            o.quant = (model_mk_quant)model_mk_quant_from_name(v);
        } else if (strcmp(a, "--dialect") == 0 && model_dialect_from_name(v) >= 0) {
            o.dialect = (model_dialect)model_dialect_from_name(v);
        } else if (strcmp(a, "--seed") == 0 && num) {
            o.seed = x;
        } else if (strcmp(a, "--fill") == 0 && (!strcmp(v, "auto") || !strcmp(v, "quantize") ||
                                                 !strcmp(v, "random"))) {
            o.fill = !strcmp(v, "auto") ? MODEL_MK_FILL_AUTO
                     : !strcmp(v, "quantize") ? MODEL_MK_FILL_QUANTIZE : MODEL_MK_FILL_RANDOM;
        } else if (strcmp(a, "--threads") == 0 && num && x <= 1024) {
            o.n_threads = (int)x;
        } else if (strcmp(a, "--name") == 0) {
            snprintf(o.name, sizeof o.name, "%s", v);
        } else if (strcmp(a, "--ctx") == 0 && num) {
            o.hp.context_length = x;
        } else if (strcmp(a, "--ratios") == 0) {
            ratios = v;
        } else if (strcmp(a, "--swiglu") == 0) {
            float c = strtof(v, NULL);
            for (uint32_t il = 0; il < MODEL_MAX_LAYERS; il++)
                o.hp.swiglu_clamp[il] = c;
        } else {
            size_t k = 0;
            while (k < sizeof dims / sizeof dims[0] && strcmp(a, dims[k].flag))
                k++;
            if (k == sizeof dims / sizeof dims[0] || !num || x > UINT32_MAX) {
                snprintf(msg, sizeof msg, "bad option or value: %s %s", a, v);
                return fail(msg);
            }
            *(uint32_t *)((char *)&o.hp + dims[k].off) = (uint32_t)x;
        }
    }
    if (ratios && parse_ratios(&o.hp, ratios, msg, sizeof msg))
        return fail(msg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t bytes = 0;
    if (model_mk_write(&o, out, &bytes, &err))
        return fail(err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("wrote %s: preset %s, %u layers, quant %s, dialect %s, fill %s, seed %" PRIu64
           ", %" PRIu64 " bytes (%.2f GiB) in %.2f s (%.0f MB/s)\n", out, preset, o.hp.n_layer,
           model_mk_quant_name(o.quant), model_dialect_name(o.dialect),
           o.quant == MODEL_MK_F16 || o.quant == MODEL_MK_F32 ? "float"
           : model_mk_uses_random_blocks(&o)                 ? "random-blocks"
                                                             : "quantize",
           o.seed, bytes,
           (double)bytes / (1 << 30), s, s > 0 ? (double)bytes / s / 1e6 : 0.0);
    return 0;
}
