/* moe_k_avx512.c — Q2_K and Q4_K routed-expert kernels (down of the q2 mix, everything of the
 * q4 mix), AVX-512 with VNNI and VBMI, on plain Q8_K activations (natural element order).
 * GEMV: per block, the scaled sums by vpmaddubsw + vpdpwssd (sub-block scales as int16 lanes)
 * and the min term mins x bsums by vpmaddwd, as dot_avx512.c; 8 blocks' Q and M vectors are
 * reduced to 16 exact totals at once (moe_reduce16). Mini-GEMM: each block decoded once per
 * row (Q2_K: scale x quant folded into one u8 by a 64-entry vpermb table, dotted by vpdpbusd;
 * Q4_K: nibbles and int16 scale vectors), the min term of all tile tokens at once from the
 * tile's bsums pairs (tokens in lanes). Exact per-block Q_b and M_b of cpu_dot_q*_k_q8_k_ref,
 * combined in its float order (moe_kern.h). */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,f16c,fma")
#include "kernels/cpu/moe_avx512.h"

/* 32 int16 lane indices: lanes 0-7 -> a, 8-15 -> b, 16-23 -> c, 24-31 -> d. */
static inline __m512i idx16x4(short a, short b, short c, short d)
{
    __m256i lo = _mm256_setr_epi16(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
    __m256i hi = _mm256_setr_epi16(c, c, c, c, c, c, c, c, d, d, d, d, d, d, d, d);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* Block sums combined as cpu_dot_q*_k_q8_k_ref: acc + sum_b (dx dw Q_b - dx dmin M_b) over
 * the m blocks of a chunk (Q in lanes 0..7, M in lanes 8..15 of I). */
static inline float k_combine(float acc, __m512i I, const float *dx, const float *dw,
                              const float *dmin, int m)
{
    _Alignas(32) float t[8];
    const __m256 dxv = _mm256_loadu_ps(dx);
    const __m256 q = _mm256_cvtepi32_ps(_mm512_castsi512_si256(I));
    const __m256 mm = _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(I, 1));
    const __m256 d = _mm256_mul_ps(dxv, _mm256_load_ps(dw));
    const __m256 dm = _mm256_mul_ps(dxv, _mm256_load_ps(dmin));
    _mm256_store_ps(t, _mm256_sub_ps(_mm256_mul_ps(d, q), _mm256_mul_ps(dm, mm)));
    return moe_add_seq(acc, t, m);
}

/* ======== Q2_K ========================================================================= */

typedef struct q2k_consts {
    __m512i m3, sh_even, sh_odd, sel[4];
} q2k_consts;

static inline void q2k_consts_init(q2k_consts *c)
{
    c->m3 = _mm512_set1_epi8(3);
    /* q8 run j (elements 64j..) reads qs[32(j/2)..] shifted by 4(j%2), then 4(j%2)+2 */
    c->sh_even = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    c->sh_odd = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    for (int j = 0; j < 4; j++)
        c->sel[j] = idx16x4((short)(4 * j), (short)(4 * j + 1), (short)(4 * j + 2),
                            (short)(4 * j + 3));
}

/* The 2-bit quants of run j (elements 64j..64j+63) as bytes. */
static inline __m512i q2k_quants(const q2k_consts *c, const quant_block_q2_k *w, int j)
{
    __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * (j / 2))));
    return _mm512_and_si512(_mm512_srlv_epi16(v, j % 2 ? c->sh_odd : c->sh_even), c->m3);
}

/* GEMV: the scaled sums (Q lanes) and the min products (M lanes 0..7) of one block. */
static inline void q2k_block(const q2k_consts *c, const quant_block_q2_k *w,
                             const quant_block_q8_k *x, __m512i *Q, __m512i *M)
{
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i raw = _mm_loadu_si128((const __m128i *)w->scales);
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    *M = _mm512_zextsi256_si512(
        _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x->bsums)));
    __m512i isum = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m512i p = _mm512_maddubs_epi16(q2k_quants(c, w, j), _mm512_loadu_si512(x->qs + 64 * j));
        isum = _mm512_dpwssd_epi32(isum, p, _mm512_permutexvar_epi16(c->sel[j], sc));
    }
    *Q = isum;
}

static inline void q2k_gemv_rows(const quant_block_q2_k *const *w, int nr,
                                 const quant_block_q8_k *x, int64_t nb, float *out)
{
    q2k_consts c;
    q2k_consts_init(&c);
    float acc[2] = {0.0f, 0.0f};
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        _Alignas(32) float dx[8] = {0}, dw[8] = {0}, dmin[8] = {0};
        for (int i = 0; i < m; i++)
            dx[i] = x[b0 + i].d;
        for (int r = 0; r < nr; r++) {
            __m512i v[16];
            for (int i = 0; i < m; i++) {
                const quant_block_q2_k *bw = &w[r][b0 + i];
                moe_prefetch(bw, (int)sizeof *bw);
                q2k_block(&c, bw, &x[b0 + i], &v[i], &v[8 + i]);
                dw[i] = moe_f16(bw->d);
                dmin[i] = moe_f16(bw->dmin);
            }
            for (int i = m; i < 8; i++)
                v[i] = v[8 + i] = _mm512_setzero_si512();
            acc[r] = k_combine(acc[r], moe_reduce16(v), dx, dw, dmin, m);
        }
    }
    for (int r = 0; r < nr; r++)
        out[r] = acc[r];
}

float cpu_moe_q2k_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb)
{
    const quant_block_q2_k *rows[1] = {w};
    float o;
    q2k_gemv_rows(rows, 1, x, nb, &o);
    return o;
}

void cpu_moe_q2k_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x,
                              int64_t nb, float out[2])
{
    const quant_block_q2_k *rows[2] = {w0, w1};
    q2k_gemv_rows(rows, 2, x, nb, out);
}

/* ---- mini-GEMM ---- */

void cpu_moe_q2k_tile_avx512(void *tile, const quant_block_q8_k *const *x, int n, int64_t nb)
{
    moe_tile_init(tile, x, n, nb);
}

/* The min products of a block (M lanes 0..7) against one token, as q2k_block. */
static inline __m512i q2k_mins(__m256i mins, const quant_block_q8_k *x)
{
    return _mm512_zextsi256_si512(
        _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x->bsums)));
}

/* Rows w[0..nr) against the tile's tokens, chunks of 8 blocks: each block decoded once
 * (scale x quant folded into one u8 <= 45 by a 64-entry table, so one vpdpbusd per 64
 * elements), its Q and M vectors kept per token, then reduced and combined per token as the
 * GEMV does. */
static inline void q2k_gemm_rows(const quant_block_q2_k *const *w, int nr, const moe_tile *T,
                                 int64_t nb, float *const *out)
{
    q2k_consts c;
    q2k_consts_init(&c);
    uint8_t lut[64], ctl[4][64];
    for (int i = 0; i < 64; i++) {
        lut[i] = (uint8_t)((i >> 2) * (i & 3));
        for (int j = 0; j < 4; j++)
            ctl[j][i] = (uint8_t)(4 * j + i / 16);
    }
    const __m512i vlut = _mm512_loadu_si512(lut);
    const __m128i m4 = _mm_set1_epi8(15);
    const int n = T->n;
    float acc[2][MOE_TILE_TOK] = {{0}};
    __m512i v[MOE_TILE_TOK][16];
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        for (int r = 0; r < nr; r++) {
            _Alignas(32) float dw[8] = {0}, dmin[8] = {0};
            for (int i = 0; i < m; i++) {
                const quant_block_q2_k *bw = &w[r][b0 + i];
                moe_prefetch(bw, (int)sizeof *bw);
                dw[i] = moe_f16(bw->d);
                dmin[i] = moe_f16(bw->dmin);
                const __m128i raw = _mm_loadu_si128((const __m128i *)bw->scales);
                const __m512i sc4 = _mm512_castsi128_si512(_mm_slli_epi16(_mm_and_si128(raw, m4), 2));
                const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
                __m512i wq[4];
                for (int j = 0; j < 4; j++) {
                    const __m512i s4 = _mm512_permutexvar_epi8(_mm512_loadu_si512(ctl[j]), sc4);
                    wq[j] = _mm512_permutexvar_epi8(_mm512_or_si512(s4, q2k_quants(&c, bw, j)), vlut);
                }
                for (int t = 0; t < n; t++) {
                    const quant_block_q8_k *x = &T->x[t][b0 + i];
                    __m512i a = _mm512_setzero_si512();
                    for (int j = 0; j < 4; j++)
                        a = _mm512_dpbusd_epi32(a, wq[j], _mm512_loadu_si512(x->qs + 64 * j));
                    v[t][i] = a;
                    v[t][8 + i] = q2k_mins(mins, x);
                }
            }
            for (int t = 0; t < n; t++) {
                for (int i = m; i < 8; i++)
                    v[t][i] = v[t][8 + i] = _mm512_setzero_si512();
                acc[r][t] = k_combine(acc[r][t], moe_reduce16(v[t]), &T->dx[t][b0], dw, dmin, m);
            }
        }
    }
    for (int r = 0; r < nr; r++)
        memcpy(out[r], acc[r], sizeof(float) * (size_t)n);
}

void cpu_moe_q2k_gemm_avx512(const void *w, const void *tile, int64_t nb, float *out)
{
    const quant_block_q2_k *rows[1] = {w};
    float *o[1] = {out};
    q2k_gemm_rows(rows, 1, tile, nb, o);
}

void cpu_moe_q2k_gemm2_avx512(const void *w0, const void *w1, const void *tile, int64_t nb,
                              float *out0, float *out1)
{
    const quant_block_q2_k *rows[2] = {w0, w1};
    float *o[2] = {out0, out1};
    q2k_gemm_rows(rows, 2, tile, nb, o);
}

/* ======== Q4_K ========================================================================= */

/* The 8 six-bit scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K block in one xmm (the
 * packing of quant_q4_k_scale_min). Reads 16 bytes: the 4 after scales[12] are qs. */
static inline __m128i q4k_scales_mins(const uint8_t *scales)
{
    __m128i v = _mm_loadu_si128((const __m128i *)scales);
    __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x3f));
    __m128i c = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2)),
                               _mm_setr_epi32(0, 4, 0, 0));
    __m128i hi = _mm_or_si128(_mm_and_si128(c, _mm_set1_epi8(0x0f)),
                              _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi8(0x30)));
    return _mm_unpacklo_epi32(lo, hi); /* sc 0-3, sc 4-7, m 0-3, m 4-7 */
}

typedef struct q4k_consts {
    __m512i m4, sh, sel[4];
    __m128i mins_ctl;
} q4k_consts;

static inline void q4k_consts_init(q4k_consts *c)
{
    c->m4 = _mm512_set1_epi8(15);
    /* chunk c (qs[32c..]) is elements 64c..: low nibbles, then high nibbles */
    c->sh = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(4), 1);
    for (int k = 0; k < 4; k++)
        c->sel[k] = idx16x4((short)(2 * k), (short)(2 * k), (short)(2 * k + 1), (short)(2 * k + 1));
    c->mins_ctl = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
}

static inline __m512i q4k_quants(const q4k_consts *c, const quant_block_q4_k *w, int k)
{
    __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * k)));
    return _mm512_and_si512(_mm512_srlv_epi16(v, c->sh), c->m4);
}

static inline void q4k_block(const q4k_consts *c, const quant_block_q4_k *w,
                             const quant_block_q8_k *x, __m512i *Q, __m512i *M)
{
    const __m128i scm = q4k_scales_mins(w->scales);
    *M = _mm512_zextsi256_si512(_mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, c->mins_ctl)),
                                                  _mm256_loadu_si256((const __m256i *)x->bsums)));
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
    __m512i isum = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        __m512i p = _mm512_maddubs_epi16(q4k_quants(c, w, k), _mm512_loadu_si512(x->qs + 64 * k));
        isum = _mm512_dpwssd_epi32(isum, p, _mm512_permutexvar_epi16(c->sel[k], sc));
    }
    *Q = isum;
}

static inline void q4k_gemv_rows(const quant_block_q4_k *const *w, int nr,
                                 const quant_block_q8_k *x, int64_t nb, float *out)
{
    q4k_consts c;
    q4k_consts_init(&c);
    float acc[2] = {0.0f, 0.0f};
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        _Alignas(32) float dx[8] = {0}, dw[8] = {0}, dmin[8] = {0};
        for (int i = 0; i < m; i++)
            dx[i] = x[b0 + i].d;
        for (int r = 0; r < nr; r++) {
            __m512i v[16];
            for (int i = 0; i < m; i++) {
                const quant_block_q4_k *bw = &w[r][b0 + i];
                moe_prefetch(bw, (int)sizeof *bw);
                q4k_block(&c, bw, &x[b0 + i], &v[i], &v[8 + i]);
                dw[i] = moe_f16(bw->d);
                dmin[i] = moe_f16(bw->dmin);
            }
            for (int i = m; i < 8; i++)
                v[i] = v[8 + i] = _mm512_setzero_si512();
            acc[r] = k_combine(acc[r], moe_reduce16(v), dx, dw, dmin, m);
        }
    }
    for (int r = 0; r < nr; r++)
        out[r] = acc[r];
}

float cpu_moe_q4k_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb)
{
    const quant_block_q4_k *rows[1] = {w};
    float o;
    q4k_gemv_rows(rows, 1, x, nb, &o);
    return o;
}

void cpu_moe_q4k_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x,
                              int64_t nb, float out[2])
{
    const quant_block_q4_k *rows[2] = {w0, w1};
    q4k_gemv_rows(rows, 2, x, nb, out);
}

void cpu_moe_q4k_tile_avx512(void *tile, const quant_block_q8_k *const *x, int n, int64_t nb)
{
    moe_tile_init(tile, x, n, nb);
}

/* As q2k_gemm_rows: each block's nibbles and int16 scale vectors decoded once per row. */
static inline void q4k_gemm_rows(const quant_block_q4_k *const *w, int nr, const moe_tile *T,
                                 int64_t nb, float *const *out)
{
    q4k_consts c;
    q4k_consts_init(&c);
    const int n = T->n;
    float acc[2][MOE_TILE_TOK] = {{0}};
    __m512i v[MOE_TILE_TOK][16];
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        for (int r = 0; r < nr; r++) {
            _Alignas(32) float dw[8] = {0}, dmin[8] = {0};
            for (int i = 0; i < m; i++) {
                const quant_block_q4_k *bw = &w[r][b0 + i];
                moe_prefetch(bw, (int)sizeof *bw);
                dw[i] = moe_f16(bw->d);
                dmin[i] = moe_f16(bw->dmin);
                const __m128i scm = q4k_scales_mins(bw->scales);
                const __m256i mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, c.mins_ctl));
                const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
                __m512i q[4], s4[4];
                for (int k = 0; k < 4; k++) {
                    q[k] = q4k_quants(&c, bw, k);
                    s4[k] = _mm512_permutexvar_epi16(c.sel[k], sc);
                }
                for (int t = 0; t < n; t++) {
                    const quant_block_q8_k *x = &T->x[t][b0 + i];
                    __m512i a = _mm512_setzero_si512();
                    for (int k = 0; k < 4; k++)
                        a = _mm512_dpwssd_epi32(a, _mm512_maddubs_epi16(q[k], _mm512_loadu_si512(x->qs + 64 * k)), s4[k]);
                    v[t][i] = a;
                    v[t][8 + i] = _mm512_zextsi256_si512(
                        _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x->bsums)));
                }
            }
            for (int t = 0; t < n; t++) {
                for (int i = m; i < 8; i++)
                    v[t][i] = v[t][8 + i] = _mm512_setzero_si512();
                acc[r][t] = k_combine(acc[r][t], moe_reduce16(v[t]), &T->dx[t][b0], dw, dmin, m);
            }
        }
    }
    for (int r = 0; r < nr; r++)
        memcpy(out[r], acc[r], sizeof(float) * (size_t)n);
}

void cpu_moe_q4k_gemm_avx512(const void *w, const void *tile, int64_t nb, float *out)
{
    const quant_block_q4_k *rows[1] = {w};
    float *o[1] = {out};
    q4k_gemm_rows(rows, 1, tile, nb, o);
}

void cpu_moe_q4k_gemm2_avx512(const void *w0, const void *w1, const void *tile, int64_t nb,
                              float *out0, float *out1)
{
    const quant_block_q4_k *rows[2] = {w0, w1};
    float *o[2] = {out0, out1};
    q4k_gemm_rows(rows, 2, tile, nb, o);
}
