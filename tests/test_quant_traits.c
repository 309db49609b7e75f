/* test_quant_traits.c — the traits table of quant/traits.c: a row for exactly the GGUF ids
 * ggml defines, block sizes equal to the block structs for computed types, names that look
 * themselves up, overflow-safe row sizes, the activation type of each dot product, and
 * which types ds4 supports. `--list` prints `id name block_elems block_bytes` per row for
 * tests/reference, which checks every size against gguf.constants.GGML_QUANT_SIZES. */
#include <stdio.h>
#include <string.h>

#include "quant/quant.h"
#include "test_util.h"

static const int retired_ids[] = { 4, 5, 31, 32, 33, 36, 37, 38 };

static bool is_retired(int t)
{
    for (size_t i = 0; i < sizeof retired_ids / sizeof retired_ids[0]; i++)
        if (retired_ids[i] == t)
            return true;
    return false;
}

static void test_rows(void)
{
    int bad_presence = 0, bad_shape = 0, bad_name = 0;
    for (int t = -2; t < DS4_TYPE_COUNT + 3; t++) {
        const quant_traits *tr = quant_get_traits((ds4_type)t);
        const bool want = t >= 0 && t < DS4_TYPE_COUNT && !is_retired(t);
        bad_presence += (tr != NULL) != want;
        if (!tr)
            continue;
        bad_shape += tr->block_elems < 1 || tr->block_bytes < 1 ||
                     tr->is_quantized != (tr->block_elems > 1) ||
                     (tr->quant_row && !tr->dequant_row);
        char upper[32];
        snprintf(upper, sizeof upper, "%s", tr->name);
        for (char *p = upper; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        bad_name += quant_type_from_name(tr->name) != t || quant_type_from_name(upper) != t;
    }
    t_check(bad_presence == 0, "a row for every GGUF id 0..%d except retired 4,5,31-33,36-38 "
                               "(%d wrong)", DS4_TYPE_COUNT - 1, bad_presence);
    t_check(bad_shape == 0, "every row: sizes >= 1, quantized iff block > 1, quantizer "
                            "implies dequantizer (%d wrong)", bad_shape);
    t_check(bad_name == 0, "every name looks up its own id, case-insensitively (%d wrong)",
            bad_name);
    t_check(quant_type_from_name("q2_k") == DS4_TYPE_Q2_K && quant_type_from_name("nope") == -1 &&
                quant_type_from_name("") == -1 && quant_type_from_name(NULL) == -1,
            "name lookup: q2_k found; unknown, empty and NULL give -1");
}

static void test_struct_sizes(void)
{
    static const struct { ds4_type t; size_t bytes; int64_t elems; } computed[] = {
        { DS4_TYPE_F32, sizeof(float), 1 },
        { DS4_TYPE_F16, sizeof(quant_f16), 1 },
        { DS4_TYPE_BF16, sizeof(quant_bf16), 1 },
        { DS4_TYPE_I32, sizeof(int32_t), 1 },
        { DS4_TYPE_Q8_0, sizeof(quant_block_q8_0), QUANT_QK8_0 },
        { DS4_TYPE_Q8_K, sizeof(quant_block_q8_k), QUANT_QK_K },
        { DS4_TYPE_Q2_K, sizeof(quant_block_q2_k), QUANT_QK_K },
        { DS4_TYPE_Q4_K, sizeof(quant_block_q4_k), QUANT_QK_K },
        { DS4_TYPE_IQ2_XXS, sizeof(quant_block_iq2_xxs), QUANT_QK_K },
    };
    int n_supported = 0;
    for (int t = 0; t < DS4_TYPE_COUNT; t++)
        n_supported += quant_type_supported((ds4_type)t);
    for (size_t i = 0; i < sizeof computed / sizeof computed[0]; i++) {
        const quant_traits *tr = quant_get_traits(computed[i].t);
        t_check(tr && tr->block_bytes == computed[i].bytes &&
                    tr->block_elems == computed[i].elems && quant_type_supported(computed[i].t),
                "%s: supported, block of %lld elements = sizeof its struct (%zu bytes)",
                tr ? tr->name : "?", (long long)computed[i].elems, computed[i].bytes);
    }
    t_check(n_supported == (int)(sizeof computed / sizeof computed[0]),
            "exactly the 9 computed types are supported (%d)", n_supported);
    t_check(!quant_type_supported(DS4_TYPE_Q4_0) && !quant_type_supported(DS4_TYPE_NONE) &&
                !quant_type_supported((ds4_type)4) && !quant_type_supported(DS4_TYPE_COUNT),
            "size-only, NONE, retired and out-of-range types are not supported");
}

static void test_vec_dot(void)
{
    static const struct { ds4_type w, act; } pairs[] = {
        { DS4_TYPE_Q8_0, DS4_TYPE_Q8_0 },    { DS4_TYPE_Q2_K, DS4_TYPE_Q8_K },
        { DS4_TYPE_Q4_K, DS4_TYPE_Q8_K },    { DS4_TYPE_IQ2_XXS, DS4_TYPE_Q8_K },
        { DS4_TYPE_F16, DS4_TYPE_F32 },      { DS4_TYPE_F32, DS4_TYPE_F32 },
        { DS4_TYPE_BF16, DS4_TYPE_F32 },     { DS4_TYPE_Q8_K, DS4_TYPE_NONE },
        { DS4_TYPE_I32, DS4_TYPE_NONE },     { DS4_TYPE_Q4_0, DS4_TYPE_NONE },
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const quant_traits *tr = quant_get_traits(pairs[i].w);
        t_check(tr && tr->vec_dot_type == pairs[i].act, "vec_dot_type of %s is %s",
                tr ? tr->name : "?",
                pairs[i].act == DS4_TYPE_NONE ? "none" : quant_get_traits(pairs[i].act)->name);
    }
}

static void test_row_bytes(void)
{
    t_check(quant_row_bytes(DS4_TYPE_Q2_K, 4096) == 16 * 84 &&
                quant_row_bytes(DS4_TYPE_IQ2_XXS, 2048) == 8 * 66 &&
                quant_row_bytes(DS4_TYPE_Q8_0, 4096) == 128 * 34 &&
                quant_row_bytes(DS4_TYPE_F16, 7) == 14 && quant_row_bytes(DS4_TYPE_Q4_K, 0) == 0,
            "row bytes: q2_K 4096 -> 1344, iq2_xxs 2048 -> 528, q8_0 4096 -> 4352, f16 7 -> 14");
    t_check(quant_row_bytes(DS4_TYPE_Q2_K, 255) == 0 && quant_row_bytes(DS4_TYPE_Q8_0, 33) == 0 &&
                quant_row_bytes(DS4_TYPE_F32, -4) == 0 && quant_row_bytes((ds4_type)4, 32) == 0 &&
                quant_row_bytes(DS4_TYPE_NONE, 1) == 0,
            "row bytes 0 for partial blocks, negative n, retired and NONE types");
    /* 2^63-1 elements of 8 bytes overflow 64 bits; the largest that fits does not */
    const int64_t fits = (int64_t)(SIZE_MAX / 8);
    t_check(quant_row_bytes(DS4_TYPE_F64, INT64_MAX) == 0 &&
                quant_row_bytes(DS4_TYPE_I64, fits) == (size_t)fits * 8 &&
                quant_row_bytes(DS4_TYPE_I64, fits + 1) == 0,
            "row bytes overflow-safe: 0 past SIZE_MAX, exact just below");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int t = 0; t < DS4_TYPE_COUNT; t++) {
            const quant_traits *tr = quant_get_traits((ds4_type)t);
            if (tr)
                printf("%d %s %lld %zu\n", t, tr->name, (long long)tr->block_elems,
                       tr->block_bytes);
        }
        return 0;
    }
    test_rows();
    test_struct_sizes();
    test_vec_dot();
    test_row_bytes();
    return t_summary();
}
