/* blocks.h — the ggml block layouts ds4 computes with, declared once for C and CUDA.
 * Each struct matches the on-disk GGUF bytes exactly (checked by a static assert on its size);
 * the meaning of every field is in ds4-architecture.md §1.5. Owns layouts only: no functions.
 * Invariant: plain structs of fixed-width integers, no padding; f16 values are raw IEEE bits. */
#ifndef DS4_QUANT_BLOCKS_H
#define DS4_QUANT_BLOCKS_H

#include <stdint.h>

#ifdef __cplusplus
#define QUANT_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define QUANT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define QUANT_QK8_0 32  /* elements per Q8_0 block */
#define QUANT_QK_K 256  /* elements per K-quant / IQ super-block */

typedef uint16_t quant_f16; /* IEEE binary16 bits */
typedef uint16_t quant_bf16; /* bfloat16 bits */

/* Q8_0: w = d * qs[i]. */
typedef struct {
    quant_f16 d;
    int8_t qs[QUANT_QK8_0];
} quant_block_q8_0;
QUANT_STATIC_ASSERT(sizeof(quant_block_q8_0) == 34, "q8_0 block is 34 bytes");

/* Q2_K: 16 sub-blocks of 16; scales[j] low nibble = scale, high nibble = min.
 * w = d * scale * q - dmin * min, q in 0..3. */
typedef struct {
    uint8_t scales[QUANT_QK_K / 16];
    uint8_t qs[QUANT_QK_K / 4];
    quant_f16 d;
    quant_f16 dmin;
} quant_block_q2_k;
QUANT_STATIC_ASSERT(sizeof(quant_block_q2_k) == 84, "q2_K block is 84 bytes");

/* Q4_K: 8 sub-blocks of 32 with 6-bit scale/min pairs packed in scales[12].
 * w = d * sc * q - dmin * m, q in 0..15. */
typedef struct {
    quant_f16 d;
    quant_f16 dmin;
    uint8_t scales[12];
    uint8_t qs[QUANT_QK_K / 2];
} quant_block_q4_k;
QUANT_STATIC_ASSERT(sizeof(quant_block_q4_k) == 144, "q4_K block is 144 bytes");

/* IQ2_XXS: 8 sub-blocks of 32, each 8 bytes: 4 grid indices (u8) then a u32 holding four
 * 7-bit sign indices and a 4-bit scale. w = d * (2s+1)/8 * grid * sign. */
typedef struct {
    quant_f16 d;
    uint16_t qs[QUANT_QK_K / 8];
} quant_block_iq2_xxs;
QUANT_STATIC_ASSERT(sizeof(quant_block_iq2_xxs) == 66, "iq2_xxs block is 66 bytes");

/* Q8_K (activations only): f32 scale, 256 int8, and the sum of each 16 consecutive qs. */
typedef struct {
    float d;
    int8_t qs[QUANT_QK_K];
    int16_t bsums[QUANT_QK_K / 16];
} quant_block_q8_k;
QUANT_STATIC_ASSERT(sizeof(quant_block_q8_k) == 292, "q8_K block is 292 bytes");

#endif
