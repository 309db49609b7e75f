/* traits.c — the one type-traits table: a row per GGUF type id with its ggml name, block
 * geometry, byte size, reference dequantizer and quantizer, and the activation type of its
 * dot product; plus the lookups built on it (by id, by name, row byte sizes). Owns no math.
 * Invariants: rows are indexed by GGUF id; ids that ggml retired (4, 5, 31-33, 36-38) have no
 * row; every size equals gguf.constants.GGML_QUANT_SIZES (tests/reference checks it).
 * Implements ds4-architecture.md §1.5 and the table rule of style.md §5. */
#include <string.h>
#include <strings.h>

#include "quant/quant.h"

/* A type ds4 computes with: dequantizer, quantizer and dot-product activation type. */
#define ROW(id, nm, elems, bytes, q, deq, qnt, dot) \
    [id] = { .name = nm, .block_elems = elems, .block_bytes = bytes, .is_quantized = q, \
             .dequant_row = deq, .quant_row = qnt, .vec_dot_type = dot }
/* A type known only by its size. */
#define SIZE_ONLY(id, nm, elems, bytes) \
    ROW(id, nm, elems, bytes, (elems) > 1, NULL, NULL, DS4_TYPE_NONE)

static const quant_traits traits_table[DS4_TYPE_COUNT] = {
    ROW(DS4_TYPE_F32, "f32", 1, 4, false,
        quant_dequant_row_f32, quant_quant_row_f32, DS4_TYPE_F32),
    ROW(DS4_TYPE_F16, "f16", 1, 2, false,
        quant_dequant_row_f16, quant_quant_row_f16, DS4_TYPE_F32),
    SIZE_ONLY(DS4_TYPE_Q4_0, "q4_0", 32, 18),
    SIZE_ONLY(DS4_TYPE_Q4_1, "q4_1", 32, 20),
    SIZE_ONLY(DS4_TYPE_Q5_0, "q5_0", 32, 22),
    SIZE_ONLY(DS4_TYPE_Q5_1, "q5_1", 32, 24),
    ROW(DS4_TYPE_Q8_0, "q8_0", QUANT_QK8_0, sizeof(quant_block_q8_0), true,
        quant_dequant_row_q8_0, quant_quant_row_q8_0, DS4_TYPE_Q8_0),
    SIZE_ONLY(DS4_TYPE_Q8_1, "q8_1", 32, 36),
    ROW(DS4_TYPE_Q2_K, "q2_K", QUANT_QK_K, sizeof(quant_block_q2_k), true,
        quant_dequant_row_q2_k, quant_quant_row_q2_k, DS4_TYPE_Q8_K),
    SIZE_ONLY(DS4_TYPE_Q3_K, "q3_K", 256, 110),
    ROW(DS4_TYPE_Q4_K, "q4_K", QUANT_QK_K, sizeof(quant_block_q4_k), true,
        quant_dequant_row_q4_k, quant_quant_row_q4_k, DS4_TYPE_Q8_K),
    SIZE_ONLY(DS4_TYPE_Q5_K, "q5_K", 256, 176),
    SIZE_ONLY(DS4_TYPE_Q6_K, "q6_K", 256, 210),
    /* activation-only: never the weight side of a dot product */
    ROW(DS4_TYPE_Q8_K, "q8_K", QUANT_QK_K, sizeof(quant_block_q8_k), true,
        quant_dequant_row_q8_k, quant_quant_row_q8_k, DS4_TYPE_NONE),
    ROW(DS4_TYPE_IQ2_XXS, "iq2_xxs", QUANT_QK_K, sizeof(quant_block_iq2_xxs), true,
        quant_dequant_row_iq2_xxs, quant_quant_row_iq2_xxs, DS4_TYPE_Q8_K),
    SIZE_ONLY(DS4_TYPE_IQ2_XS, "iq2_xs", 256, 74),
    SIZE_ONLY(DS4_TYPE_IQ3_XXS, "iq3_xxs", 256, 98),
    SIZE_ONLY(DS4_TYPE_IQ1_S, "iq1_s", 256, 50),
    SIZE_ONLY(DS4_TYPE_IQ4_NL, "iq4_nl", 32, 18),
    SIZE_ONLY(DS4_TYPE_IQ3_S, "iq3_s", 256, 110),
    SIZE_ONLY(DS4_TYPE_IQ2_S, "iq2_s", 256, 82),
    SIZE_ONLY(DS4_TYPE_IQ4_XS, "iq4_xs", 256, 136),
    SIZE_ONLY(DS4_TYPE_I8, "i8", 1, 1),
    SIZE_ONLY(DS4_TYPE_I16, "i16", 1, 2),
    /* I32 (the token hash table) dequantizes to float for inspection; no quantizer */
    ROW(DS4_TYPE_I32, "i32", 1, 4, false, quant_dequant_row_i32, NULL, DS4_TYPE_NONE),
    SIZE_ONLY(DS4_TYPE_I64, "i64", 1, 8),
    SIZE_ONLY(DS4_TYPE_F64, "f64", 1, 8),
    SIZE_ONLY(DS4_TYPE_IQ1_M, "iq1_m", 256, 56),
    ROW(DS4_TYPE_BF16, "bf16", 1, 2, false,
        quant_dequant_row_bf16, quant_quant_row_bf16, DS4_TYPE_F32),
    SIZE_ONLY(DS4_TYPE_TQ1_0, "tq1_0", 256, 54),
    SIZE_ONLY(DS4_TYPE_TQ2_0, "tq2_0", 256, 66),
    SIZE_ONLY(DS4_TYPE_MXFP4, "mxfp4", 32, 17),
    SIZE_ONLY(DS4_TYPE_NVFP4, "nvfp4", 64, 36),
    SIZE_ONLY(DS4_TYPE_Q1_0, "q1_0", 128, 18),
};

const quant_traits *quant_get_traits(ds4_type t)
{
    if ((int)t < 0 || (int)t >= DS4_TYPE_COUNT || traits_table[t].name == NULL)
        return NULL;
    return &traits_table[t];
}

int quant_type_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int t = 0; t < DS4_TYPE_COUNT; t++)
        if (traits_table[t].name && strcasecmp(traits_table[t].name, name) == 0)
            return t;
    return -1;
}

size_t quant_row_bytes(ds4_type t, int64_t n)
{
    const quant_traits *tr = quant_get_traits(t);
    if (tr == NULL || n < 0 || n % tr->block_elems != 0)
        return 0;
    const uint64_t blocks = (uint64_t)(n / tr->block_elems);
    if (blocks > SIZE_MAX / tr->block_bytes)
        return 0;
    return (size_t)blocks * tr->block_bytes;
}

bool quant_type_supported(ds4_type t)
{
    const quant_traits *tr = quant_get_traits(t);
    return tr != NULL && tr->dequant_row != NULL;
}
