/* quant.h — tensor element types (GGUF ids) and the one traits table that describes them:
 * block geometry, byte sizes, reference row dequantizer and quantizer, and the activation
 * type that dot products pair each weight type with. Code asks this table instead of
 * switching on types. Implements ds4-architecture.md §1.5. Kernels live in src/kernels/. */
#ifndef DS4_QUANT_H
#define DS4_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/blocks.h"

/* GGUF / ggml type ids. Types ds4 cannot compute with still have a traits row with their
 * block sizes so tensor byte sizes can be validated for any file. */
typedef enum {
    DS4_TYPE_NONE = -1, /* "no type": vec_dot_type of types without a dot product */
    DS4_TYPE_F32 = 0,
    DS4_TYPE_F16 = 1,
    DS4_TYPE_Q4_0 = 2,
    DS4_TYPE_Q4_1 = 3,
    DS4_TYPE_Q5_0 = 6,
    DS4_TYPE_Q5_1 = 7,
    DS4_TYPE_Q8_0 = 8,
    DS4_TYPE_Q8_1 = 9,
    DS4_TYPE_Q2_K = 10,
    DS4_TYPE_Q3_K = 11,
    DS4_TYPE_Q4_K = 12,
    DS4_TYPE_Q5_K = 13,
    DS4_TYPE_Q6_K = 14,
    DS4_TYPE_Q8_K = 15,
    DS4_TYPE_IQ2_XXS = 16,
    DS4_TYPE_IQ2_XS = 17,
    DS4_TYPE_IQ3_XXS = 18,
    DS4_TYPE_IQ1_S = 19,
    DS4_TYPE_IQ4_NL = 20,
    DS4_TYPE_IQ3_S = 21,
    DS4_TYPE_IQ2_S = 22,
    DS4_TYPE_IQ4_XS = 23,
    DS4_TYPE_I8 = 24,
    DS4_TYPE_I16 = 25,
    DS4_TYPE_I32 = 26,
    DS4_TYPE_I64 = 27,
    DS4_TYPE_F64 = 28,
    DS4_TYPE_IQ1_M = 29,
    DS4_TYPE_BF16 = 30,
    DS4_TYPE_TQ1_0 = 34,
    DS4_TYPE_TQ2_0 = 35,
    DS4_TYPE_MXFP4 = 39,
    DS4_TYPE_NVFP4 = 40,
    DS4_TYPE_Q1_0 = 41,
    DS4_TYPE_COUNT = 42 /* one past the largest id */
} ds4_type;

/* Converts n elements of a row from its storage format to f32. n is a multiple of the
 * block size. Bit-exact with ggml / the gguf Python package. */
typedef void (*quant_dequant_row_fn)(const void *src, float *dst, int64_t n);

/* Quantizes n f32 values (a multiple of the block size) into blocks. */
typedef void (*quant_quant_row_fn)(const float *src, void *dst, int64_t n);

typedef struct quant_traits {
    const char *name;          /* ggml spelling: "q4_K", "iq2_xxs", ... */
    int64_t block_elems;       /* elements per block */
    size_t block_bytes;        /* bytes per block */
    bool is_quantized;         /* block-quantized (not a plain scalar type) */
    quant_dequant_row_fn dequant_row; /* NULL: ds4 cannot compute with this type */
    quant_quant_row_fn quant_row;     /* NULL: no quantizer */
    ds4_type vec_dot_type;     /* activation type of this weight type's dot product, or
                                * DS4_TYPE_NONE (no dot product: Q8_K, I32, size-only types) */
} quant_traits;

/* Returns the traits row of a type, or NULL if t is not a known GGUF type id (retired ids
 * 4, 5, 31-33, 36-38 included). */
const quant_traits *quant_get_traits(ds4_type t);

/* Looks a type up by its ggml name ("q2_K"; case-insensitive); returns -1 if unknown. */
int quant_type_from_name(const char *name);

/* Bytes for a row of n elements; 0 if t is unknown, n is negative or not a multiple of the
 * block, or the size does not fit in size_t. */
size_t quant_row_bytes(ds4_type t, int64_t n);

/* Types ds4 computes with (have a dequantizer): F32 F16 BF16 Q8_0 Q8_K Q2_K Q4_K IQ2_XXS I32. */
bool quant_type_supported(ds4_type t);

/* ---- scalar conversions (quant/fp16.c) ---- */
float quant_f16_to_f32(quant_f16 h);
quant_f16 quant_f32_to_f16(float f);   /* round to nearest even, like numpy/F16C */
float quant_bf16_to_f32(quant_bf16 h);
quant_bf16 quant_f32_to_bf16(float f); /* round to nearest even, NaN kept quiet */

/* ---- reference row dequantizers (quant/dequant_ref.c) ---- */
void quant_dequant_row_f32(const void *src, float *dst, int64_t n);
void quant_dequant_row_f16(const void *src, float *dst, int64_t n);
void quant_dequant_row_bf16(const void *src, float *dst, int64_t n);
void quant_dequant_row_i32(const void *src, float *dst, int64_t n);
void quant_dequant_row_q8_0(const void *src, float *dst, int64_t n);
void quant_dequant_row_q8_k(const void *src, float *dst, int64_t n);
void quant_dequant_row_q2_k(const void *src, float *dst, int64_t n);
void quant_dequant_row_q4_k(const void *src, float *dst, int64_t n);
void quant_dequant_row_iq2_xxs(const void *src, float *dst, int64_t n);

/* ---- reference quantizers (quant/quantize_*.c) ----
 * Deterministic and defined for any input; the block types read NaN as 0. Q8_0 is ggml's
 * reference, bit-identical to gguf.quants.quantize: x*(1/d) rounded half away from zero.
 * Q8_K is §4.1 (lrintf: ties to even). Q2_K, Q4_K, IQ2_XXS are searches. */
void quant_quant_row_f32(const float *src, void *dst, int64_t n);
void quant_quant_row_f16(const float *src, void *dst, int64_t n);
void quant_quant_row_bf16(const float *src, void *dst, int64_t n);
void quant_quant_row_q8_0(const float *src, void *dst, int64_t n);   /* activations + weights */
void quant_quant_row_q8_k(const float *src, void *dst, int64_t n);   /* activations */
void quant_quant_row_q2_k(const float *src, void *dst, int64_t n);   /* weights */
void quant_quant_row_q4_k(const float *src, void *dst, int64_t n);   /* weights */
void quant_quant_row_iq2_xxs(const float *src, void *dst, int64_t n);/* weights */

/* IQ2_XXS lookup tables (quant/iq2_tables.c): 256 grid rows of 8 magnitudes in {8,25,43}
 * packed one byte each into a u64, and 128 even-parity sign masks. */
extern const uint64_t quant_iq2xxs_grid[256];
extern const uint8_t quant_ksigns_iq2xs[128];

/* Q4_K 6-bit scale/min unpacking of sub-block j (0..7). */
void quant_q4_k_scale_min(const uint8_t scales[12], int j, uint8_t *sc, uint8_t *m);

#endif
