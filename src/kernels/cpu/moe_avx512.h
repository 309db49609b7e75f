/* moe_avx512.h — private to src/kernels/cpu/moe_*_avx512.c: what the AVX-512 routed-expert
 * kernels share: the token tile of the mini-GEMM (the tokens' activations and block scales,
 * built once per token group), the transposing reduction that turns 16 int32 vectors into one
 * vector of their 16 sums (per-block exact totals of many blocks at once), the 16 x 16 int32
 * transpose of the row tiles, per-row f16 scales as lanes, the row-at-a-time loop of the
 * few-token mini-GEMM, and the kernel declarations. Prefetch and f16 come from
 * simd_avx512.h. Include after the file's target pragma. */
#ifndef DS4_KERNELS_CPU_MOE_AVX512_H
#define DS4_KERNELS_CPU_MOE_AVX512_H

#include "kernels/cpu/moe_kern.h"
#include "kernels/cpu/simd_avx512.h"

/* Lane j = the sum of the 16 int32 lanes of v[j], for j < 16 (a transpose-and-add tree:
 * 45 instructions for 16 sums). */
static inline __m512i moe_reduce16(const __m512i v[16])
{
    __m512i t[8], u[4], w[2];
    for (int i = 0; i < 8; i++) /* per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 */
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) /* per 128-bit lane: the lane sums of 4 vectors */
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    for (int i = 0; i < 2; i++) /* halves: lanes 0+1 and 2+3 of 8 vectors */
        w[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The same for 8 vectors: lane j < 8 of the result = the sum of v[j]. */
static inline __m256i moe_reduce8(const __m512i v[8])
{
    __m512i t[4], u[2];
    for (int i = 0; i < 4; i++)
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    __m512i w = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    w = _mm512_add_epi32(_mm512_shuffle_i32x4(w, w, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_i32x4(w, w, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_castsi512_si256(w);
}

/* Lane j = the sum of v[j] for j < n (n <= 16); other lanes 0. */
static inline __m512i moe_reduce_n(__m512i v[16], int n)
{
    for (int i = n; i < 16; i++)
        v[i] = _mm512_setzero_si512();
    if (n <= 8)
        return _mm512_zextsi256_si512(moe_reduce8(v));
    return moe_reduce16(v);
}

/* acc + sum of t[0..n) in order, one f32 addition at a time (the canonical block order). */
static inline float moe_add_seq(float acc, const float *t, int n)
{
    for (int i = 0; i < n; i++)
        acc += t[i];
    return acc;
}

/* c[j] lane i = r[i] lane j: a 16 x 16 transpose of int32 (64 shuffles). */
static inline void moe_transpose16(const __m512i r[16], __m512i c[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* u[4g + j], 128-bit lane L: rows 4g..4g+3 of column 4L+j */
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int j = 0; j < 4; j++) {
        const __m512i a = _mm512_shuffle_i32x4(u[j], u[4 + j], _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i b = _mm512_shuffle_i32x4(u[j], u[4 + j], _MM_SHUFFLE(3, 1, 3, 1));
        const __m512i cc = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i d = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], _MM_SHUFFLE(3, 1, 3, 1));
        c[j] = _mm512_shuffle_i32x4(a, cc, _MM_SHUFFLE(2, 0, 2, 0));
        c[8 + j] = _mm512_shuffle_i32x4(a, cc, _MM_SHUFFLE(3, 1, 3, 1));
        c[4 + j] = _mm512_shuffle_i32x4(b, d, _MM_SHUFFLE(2, 0, 2, 0));
        c[12 + j] = _mm512_shuffle_i32x4(b, d, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

/* Row tiles: prefetches block b of the row 16 rows further (the next tile of the same
 * expert, which its own pass will then find in cache); one line per 64 bytes. */
static inline void moe_prefetch_next_tile(const void *blk, size_t rb, int bytes)
{
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)blk + 16 * rb + o, _MM_HINT_T0);
}

/* Byte offsets of the 16 rows of a tile, rb apart (missing rows repeat the last). */
static inline __m512i moe_row_offsets(size_t rb, int nr)
{
    _Alignas(64) int32_t o[16];
    for (int r = 0; r < 16; r++)
        o[r] = (int32_t)((size_t)(r < nr ? r : nr - 1) * rb);
    return _mm512_load_si512(o);
}

/* The two f16 values at p + row offset (d, then dmin for the K-quants) as f32 lanes. */
static inline void moe_row_scales(const uint8_t *p, __m512i offs, __m512 *lo, __m512 *hi)
{
    const __m512i v = _mm512_i32gather_epi32(offs, p, 1);
    *lo = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    if (hi)
        *hi = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
}

/* ---- the kernels of each type (moe_kern.h's table rows, assembled in moe_avx512.c) ------ */

#define MOE_AVX512_KERNELS(T)                                                                 \
    void cpu_moe_##T##_prep_gemv_avx512(const quant_block_q8_k *x, quant_block_q8_k *out,      \
                                        int64_t nb);                                          \
    void cpu_moe_##T##_prep_gemm_avx512(const quant_block_q8_k *x, quant_block_q8_k *out,      \
                                        int64_t nb);                                          \
    float cpu_moe_##T##_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb);    \
    void cpu_moe_##T##_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x, \
                                    int64_t nb, float out[2]);                                \
    void cpu_moe_##T##_gemm_avx512(const void *w, size_t rb, int nr, const void *tile,        \
                                   int64_t nb, float *out);                                   \
    void cpu_moe_##T##_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1,   \
                                    int nr, const void *tile, int64_t nb, float *out0,        \
                                    float *out1);
MOE_AVX512_KERNELS(iq2)
MOE_AVX512_KERNELS(q2k)
MOE_AVX512_KERNELS(q4k)

/* The token tile of every type (moe_tile_init). */
void cpu_moe_tile_avx512(void *tile, const quant_block_q8_k *const *x, int n, int64_t nb);

/* ---- the token tile of the mini-GEMM ---------------------------------------------------- */

typedef struct moe_tile {
    int n;                                   /* tokens */
    const quant_block_q8_k *x[MOE_TILE_TOK]; /* their prepared activations */
    float dx[MOE_TILE_TOK][MOE_MAX_NB + 16]; /* block scale d per token, block (0 padded) */
} moe_tile;
_Static_assert(sizeof(moe_tile) <= MOE_TILE_BYTES, "the AVX-512 tile fits MOE_TILE_BYTES");

/* Fills the tile of x[0..n) (blocks 0..nb-1). */
static inline void moe_tile_init(moe_tile *T, const quant_block_q8_k *const *x, int n,
                                 int64_t nb)
{
    T->n = n;
    for (int i = 0; i < n; i++) {
        T->x[i] = x[i];
        for (int64_t b = 0; b < nb + 16; b++)
            T->dx[i][b] = b < nb ? x[i][b].d : 0.0f;
    }
}

/* Up to MOE_SMALL_N tokens a 16-row tile's transposes cost more than they save: the gemm
 * kernels then take the rows one at a time (each block decoded once for the few tokens). */
#define MOE_SMALL_N 4

/* nr rows, rb bytes apart, one at a time through row(ctx, row, T, nb, o) (o[t] = row . x[t])
 * into out[t * MOE_TILE_ROWS + r]. */
static inline __attribute__((always_inline)) void
moe_rows_each(void (*row)(const void *ctx, const uint8_t *w, const moe_tile *T, int64_t nb,
                          float *o),
              const void *ctx, const void *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
              float *out)
{
    float o[MOE_TILE_TOK];
    for (int r = 0; r < nr; r++) {
        row(ctx, (const uint8_t *)w + (size_t)r * rb, T, nb, o);
        for (int t = 0; t < T->n; t++)
            out[t * MOE_TILE_ROWS + r] = o[t];
    }
}

#endif
