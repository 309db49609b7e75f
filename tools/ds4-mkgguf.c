/* ds4-mkgguf.c — writes a small sample GGUF: `ds4-mkgguf OUT [--seed N]`.
 * Metadata: one pair of every value type (0..12), arrays of every fixed-size type and of
 * strings, general.architecture = "deepseek4", general.alignment = 64, and a few deepseek4.*
 * keys shaped like the real ones. Tensors: one small tensor per type ds4 computes with
 * (F32 F16 BF16 Q8_0 Q2_K Q4_K IQ2_XXS I32), filled from a seeded smooth + random function
 * and quantized with the traits table's quant_row. Same seed, same bytes. Under 64 KB.
 * Owns nothing reusable: the writer is src/gguf/, the quantizers src/quant/. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

/* splitmix64 */
static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(next(s) >> 11) * 0x1p-53; }

static void add_metadata(gguf_writer *w, uint64_t seed)
{
    gguf_writer_add_str(w, "general.architecture", "deepseek4");
    gguf_writer_add_str(w, "general.name", "ds4 sample");
    gguf_writer_add_u32(w, GGUF_KEY_ALIGNMENT, 64);
    gguf_writer_add_u64(w, "sample.seed", seed);

    /* one scalar of every type, at the edges of its range */
    gguf_writer_add_u8(w, "sample.u8", 200);
    gguf_writer_add_i8(w, "sample.i8", -100);
    gguf_writer_add_u16(w, "sample.u16", 60000);
    gguf_writer_add_i16(w, "sample.i16", -30000);
    gguf_writer_add_u32(w, "sample.u32", 4000000000u);
    gguf_writer_add_i32(w, "sample.i32", -2000000000);
    gguf_writer_add_f32(w, "sample.f32", 3.14159274f);
    gguf_writer_add_bool(w, "sample.bool", true);
    gguf_writer_add_str(w, "sample.str", "h\xc3\xa9llo \"gguf\"\tv3");
    gguf_writer_add_u64(w, "sample.u64", UINT64_MAX);
    gguf_writer_add_i64(w, "sample.i64", INT64_MIN);
    gguf_writer_add_f64(w, "sample.f64", 2.718281828459045);

    /* arrays of every fixed-size type and of strings */
    static const uint8_t a_u8[] = {0, 1, 255};
    static const int8_t a_i8[] = {-128, 0, 127};
    static const uint16_t a_u16[] = {0, 65535};
    static const int16_t a_i16[] = {-32768, 32767};
    static const uint32_t a_u32[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    static const int32_t a_i32[] = {-1, 0, 1};
    static const float a_f32[] = {0.5f, -1.25f, 1e-6f};
    static const uint8_t a_bool[] = {1, 0, 1};
    static const uint64_t a_u64[] = {0, UINT64_MAX};
    static const int64_t a_i64[] = {INT64_MIN, INT64_MAX};
    static const double a_f64[] = {0.1, -2.5e300};
    gguf_writer_add_arr(w, "sample.arr_u8", GGUF_TYPE_U8, a_u8, 3);
    gguf_writer_add_arr(w, "sample.arr_i8", GGUF_TYPE_I8, a_i8, 3);
    gguf_writer_add_arr(w, "sample.arr_u16", GGUF_TYPE_U16, a_u16, 2);
    gguf_writer_add_arr(w, "sample.arr_i16", GGUF_TYPE_I16, a_i16, 2);
    gguf_writer_add_arr(w, "sample.arr_u32", GGUF_TYPE_U32, a_u32, 10);
    gguf_writer_add_arr(w, "sample.arr_i32", GGUF_TYPE_I32, a_i32, 3);
    gguf_writer_add_arr(w, "sample.arr_f32", GGUF_TYPE_F32, a_f32, 3);
    gguf_writer_add_arr(w, "sample.arr_bool", GGUF_TYPE_BOOL, a_bool, 3);
    gguf_writer_add_arr(w, "sample.arr_u64", GGUF_TYPE_U64, a_u64, 2);
    gguf_writer_add_arr(w, "sample.arr_i64", GGUF_TYPE_I64, a_i64, 2);
    gguf_writer_add_arr(w, "sample.arr_f64", GGUF_TYPE_F64, a_f64, 2);
    static const char *const tokens[] = {"<bos>", "<eos>", "hello", " world", "\xe2\x96\x81x"};
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, 5);

    /* a few keys shaped like the real model's (values are not the real ones) */
    static const uint32_t ratios[] = {0, 0, 4, 128};
    static const float clamp[] = {10.0f, 10.0f, 10.0f, 10.0f};
    gguf_writer_add_u32(w, "deepseek4.block_count", 4);
    gguf_writer_add_arr(w, "deepseek4.attention.compress_ratios", GGUF_TYPE_U32, ratios, 4);
    gguf_writer_add_arr(w, "deepseek4.swiglu_clamp_exp", GGUF_TYPE_F32, clamp, 4);
    gguf_writer_add_f32(w, "deepseek4.rope.freq_base", 10000.0f);
    gguf_writer_add_bool(w, "deepseek4.expert_weights_norm", true);
}

/* One tensor of the sample: name, type, shape. */
typedef struct sample_tensor {
    const char *name;
    ds4_type type;
    uint32_t n_dims;
    int64_t ne[3];
} sample_tensor;

static const sample_tensor samples[] = {
    {"sample.f32", DS4_TYPE_F32, 2, {256, 3, 1}},
    {"sample.f16", DS4_TYPE_F16, 3, {64, 2, 2}},
    {"sample.bf16", DS4_TYPE_BF16, 2, {128, 2, 1}},
    {"sample.q8_0", DS4_TYPE_Q8_0, 2, {96, 4, 1}},
    {"sample.q2_K", DS4_TYPE_Q2_K, 2, {256, 4, 1}},
    {"sample.q4_K", DS4_TYPE_Q4_K, 2, {512, 2, 1}},
    {"sample.iq2_xxs", DS4_TYPE_IQ2_XXS, 3, {256, 2, 2}},
    {"sample.i32", DS4_TYPE_I32, 2, {6, 16, 1}},
};
#define N_SAMPLES (sizeof samples / sizeof samples[0])

/* Fills and quantizes one tensor into a new buffer (*out); returns 0 or 2 on failure. */
static int make_tensor(const sample_tensor *s, uint64_t *rng, void **out)
{
    const quant_traits *tr = quant_get_traits(s->type);
    int64_t n = s->ne[0] * s->ne[1] * s->ne[2], rows = n / s->ne[0];
    size_t row_bytes = quant_row_bytes(s->type, s->ne[0]);
    uint8_t *dst = malloc(row_bytes * (size_t)rows);
    float *src = malloc((size_t)s->ne[0] * sizeof *src);
    if (!dst || !src || !tr) {
        free(dst);
        free(src);
        fprintf(stderr, "ds4-mkgguf: out of memory or unknown type for '%s'\n", s->name);
        return 2;
    }
    if (s->type == DS4_TYPE_I32) {  /* expert ids, like ffn_gate_tid2eid */
        for (int64_t i = 0; i < n; i++) {
            int32_t v = (int32_t)(next(rng) % 256);
            memcpy(dst + 4 * i, &v, 4);
        }
    } else if (!tr->quant_row) {
        fprintf(stderr, "ds4-mkgguf: type %s has no quantizer\n", tr->name);
        free(dst);
        free(src);
        return 2;
    } else {
        double phase = 6.283185307179586 * uniform(rng);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t i = 0; i < s->ne[0]; i++) {
                double smooth = sin(0.07 * (double)i + phase + 0.5 * (double)r);
                double noise = 2.0 * uniform(rng) - 1.0;
                src[i] = (float)(0.8 * smooth + 0.2 * noise);
            }
            tr->quant_row(src, dst + (size_t)r * row_bytes, s->ne[0]);
        }
    }
    free(src);
    *out = dst;
    return 0;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 0);
            if (*end) {
                fprintf(stderr, "ds4-mkgguf: bad seed '%s'\n", argv[i]);
                return 2;
            }
        } else if (!out && argv[i][0] != '-') {
            out = argv[i];
        } else {
            out = NULL;
            break;
        }
    }
    if (!out) {
        fprintf(stderr, "usage: ds4-mkgguf OUT [--seed N]\n");
        return 2;
    }
    gguf_writer *w = gguf_writer_new();
    if (!w) {
        fprintf(stderr, "ds4-mkgguf: out of memory\n");
        return 2;
    }
    add_metadata(w, seed);
    void *data[N_SAMPLES] = {0};
    uint64_t rng = seed;
    int rc = 0;
    for (size_t i = 0; i < N_SAMPLES && !rc; i++) {
        rc = make_tensor(&samples[i], &rng, &data[i]);
        if (!rc)
            gguf_writer_add_tensor(w, samples[i].name, samples[i].type, samples[i].n_dims,
                                   samples[i].ne, data[i]);
    }
    ds4_error err;
    if (!rc && gguf_writer_write(w, out, &err)) {
        fprintf(stderr, "ds4-mkgguf: %s\n", err.msg);
        rc = 2;
    }
    for (size_t i = 0; i < N_SAMPLES; i++)
        free(data[i]);
    gguf_writer_free(w);
    return rc;
}
