/* moe_k_avx512.c — Q2_K and Q4_K routed-expert kernels (down of the q2 mix, everything of the
 * q4 mix), AVX-512 with VNNI and VBMI, on plain Q8_K activations (natural element order).
 * GEMV: per block, the scaled sums by vpmaddubsw + vpdpwssd (sub-block scales as int16 lanes)
 * and the min term mins x bsums by vpmaddwd, as dot_avx512.c; 8 blocks' Q and M vectors are
 * reduced to 16 exact totals at once (moe_reduce16). Mini-GEMM, up to SMALL_N tokens: the
 * same per row, each block decoded once for the tokens (Q2_K: scale x quant folded into one
 * u8 by a 64-entry vpermb table, one vpdpbusd per 64 elements). More tokens: 16-row tiles,
 * the raw quants of the 16 rows transposed so that lanes are rows (no reductions at all), 8
 * weight vectors in registers against broadcast activation dwords, sub-block scales per lane
 * (Q2_K folded), the min term by vpdpwssd of per-row min pairs and broadcast bsums pairs.
 * All give the exact per-block Q_b and M_b of cpu_dot_q*_k_q8_k_ref, combined in its float
 * order (moe_kern.h). */
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

/* Up to SMALL_N tokens a 16-row tile's transposes cost more than they save: each row alone,
 * its blocks decoded once for the few tokens (Q2_K: scale x quant folded by a 64-entry
 * table), 8 blocks' Q and M vectors per token reduced at once, combined as the GEMV. */
#define SMALL_N 4

/* The min products of a block (M lanes 0..7) against one token, as q2k_block. */
static inline __m512i q2k_mins(__m256i mins, const quant_block_q8_k *x)
{
    return _mm512_zextsi256_si512(
        _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x->bsums)));
}

static inline void q2k_rows_small(const quant_block_q2_k *const *w, int nr, const moe_tile *T,
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

/* The 16 rows' blocks b (missing rows repeat the last). */
#define ROW_BLOCK(type, w, rb, nr, r, b) \
    ((const type *)((w) + (size_t)((r) < (nr) ? (r) : (nr) - 1) * (rb)) + (b))

/* One block of nr <= 16 rows against the tile's tokens, lanes = rows: Q (exact scaled sums)
 * and M (min terms) of every token, the canonical combination added to acc[t]. W holds the
 * 64 dword vectors (elements 4d..4d+3 of every row); sc[j] the int32 scale of the 8 vectors
 * of sub-block j (NULL: already folded into W); mp[j] the mins of bsums pair j (int16 pairs).
 * Per group of 8 vectors the weights stay in registers while each token's 8 activation
 * dwords are broadcast against them. */
static inline void k_rows_block(const __m512i W[64], const __m512i *sc, const __m512i mp[8],
                                const moe_tile *T, int64_t b, __m512 dw, __m512 dmin,
                                __m512 acc[MOE_TILE_TOK])
{
    const int n = T->n;
    __m512i Q[MOE_TILE_TOK];
    for (int t = 0; t < n; t++)
        Q[t] = _mm512_setzero_si512();
    for (int g = 0; g < 8; g++) {
        __m512i Wr[8];
        for (int k = 0; k < 8; k++)
            Wr[k] = W[8 * g + k];
        for (int t = 0; t < n; t++) {
            const int32_t *xd = (const int32_t *)(const void *)T->x[t][b].qs + 8 * g;
            __m512i a = _mm512_setzero_si512();
            for (int k = 0; k < 8; k++)
                a = _mm512_dpbusd_epi32(a, Wr[k], _mm512_set1_epi32(xd[k]));
            Q[t] = _mm512_add_epi32(Q[t], sc ? _mm512_mullo_epi32(a, sc[g]) : a);
        }
    }
    for (int t = 0; t < n; t++) {
        const int32_t *bs = (const int32_t *)(const void *)T->x[t][b].bsums;
        __m512i M = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++)
            M = _mm512_dpwssd_epi32(M, mp[j], _mm512_set1_epi32(bs[j]));
        const __m512 dx = _mm512_set1_ps(T->dx[t][b]);
        const __m512 q = _mm512_mul_ps(_mm512_mul_ps(dx, dw), _mm512_cvtepi32_ps(Q[t]));
        const __m512 m = _mm512_mul_ps(_mm512_mul_ps(dx, dmin), _mm512_cvtepi32_ps(M));
        acc[t] = _mm512_add_ps(acc[t], _mm512_sub_ps(q, m));
    }
}

/* pshufb control: in every dword lane, byte i <- byte sel[i] of the same lane (0x80: zero). */
static inline __m512i lane_ctl(int s0, int s1, int s2, int s3)
{
    uint8_t c[64];
    const int sel[4] = {s0, s1, s2, s3};
    for (int i = 0; i < 64; i++)
        c[i] = (uint8_t)(sel[i % 4] < 0 ? 0x80 : (i & ~3) % 16 + sel[i % 4]);
    return _mm512_loadu_si512(c);
}

/* Q2_K rows: per block, the 16 rows' qs (16 dwords each) transposed once, each dword split
 * into its four 2-bit fields (shift 2s gives elements 128h + 32s + 4(k%8).., a natural dword)
 * and scale x quant folded into one u8 by a 64-entry vpermb table, so a block is 64 vpdpbusd
 * per token with no scaling; the mins as int16 pairs per row against the bsums pairs. */
static void q2k_rows(const uint8_t *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
                     float *out)
{
    uint8_t lut[64];
    for (int i = 0; i < 64; i++)
        lut[i] = (uint8_t)((i >> 2) * (i & 3));
    const __m512i vlut = _mm512_loadu_si512(lut), m3 = _mm512_set1_epi8(3);
    const __m512i offs = moe_row_offsets(rb, nr);
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i rep[4], pair[2];
    for (int i = 0; i < 4; i++)
        rep[i] = lane_ctl(i, i, i, i);
    for (int i = 0; i < 2; i++)
        pair[i] = lane_ctl(2 * i, -1, 2 * i + 1, -1);
    const int n = T->n;
    __m512 acc[MOE_TILE_TOK];
    for (int t = 0; t < n; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i q[16], sm[16], Tq[16], S[16], W[64], mp[8];
        for (int r = 0; r < 16; r++) {
            const quant_block_q2_k *blk = ROW_BLOCK(quant_block_q2_k, w, rb, nr, r, b);
            moe_prefetch_next_tile(blk, rb, (int)sizeof *blk);
            q[r] = _mm512_loadu_si512(blk->qs);
            sm[r] = _mm512_zextsi128_si512(_mm_loadu_si128((const __m128i *)blk->scales));
        }
        moe_transpose16(q, Tq);
        moe_transpose16(sm, S); /* S[k] lane r: scales 4k..4k+3 of row r */
        for (int j = 0; j < 16; j++) { /* sub-block j = natural dwords 4j..4j+3 */
            const __m512i sc4 = _mm512_slli_epi32(
                _mm512_and_si512(_mm512_shuffle_epi8(S[j / 4], rep[j % 4]), m4), 2);
            for (int i = 0; i < 4; i++) {
                const int d = 4 * j + i, h = d / 32, s2 = (d / 8) % 4, k = 8 * h + d % 8;
                const __m512i qv = _mm512_srli_epi32(Tq[k], 2 * s2);
                W[d] = _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(qv, m3, sc4, 0xEA), vlut);
            }
        }
        for (int j = 0; j < 8; j++) /* mins 2j, 2j+1 as an int16 pair */
            mp[j] = _mm512_srli_epi16(_mm512_shuffle_epi8(S[j / 2], pair[j % 2]), 4);
        __m512 dw, dmin;
        moe_row_scales(w + b * sizeof(quant_block_q2_k) + 80, offs, &dw, &dmin);
        k_rows_block(W, NULL, mp, T, b, dw, dmin, acc);
    }
    for (int t = 0; t < n; t++)
        _mm512_storeu_ps(out + t * MOE_TILE_ROWS, acc[t]);
}

/* nr rows through a per-row kernel into out[t * MOE_TILE_ROWS + r]. */
#define SMALL_ROWS(fn, type)                                                                  \
    do {                                                                                      \
        float o[MOE_TILE_TOK];                                                                \
        for (int r = 0; r < nr; r++) {                                                        \
            const type *row = (const type *)((const uint8_t *)w + (size_t)r * rb);            \
            float *po[1] = {o};                                                               \
            fn(&row, 1, T, nb, po);                                                           \
            for (int t = 0; t < T->n; t++)                                                    \
                out[t * MOE_TILE_ROWS + r] = o[t];                                            \
        }                                                                                     \
    } while (0)

static void q2k_small(const void *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
                      float *out)
{
    SMALL_ROWS(q2k_rows_small, quant_block_q2_k);
}

void cpu_moe_q2k_gemm_avx512(const void *w, size_t rb, int nr, const void *tile, int64_t nb,
                             float *out)
{
    if (((const moe_tile *)tile)->n <= SMALL_N)
        q2k_small(w, rb, nr, tile, nb, out);
    else
        q2k_rows(w, rb, nr, tile, nb, out);
}

void cpu_moe_q2k_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                              const void *tile, int64_t nb, float *out0, float *out1)
{
    cpu_moe_q2k_gemm_avx512(w0, rb0, nr, tile, nb, out0);
    cpu_moe_q2k_gemm_avx512(w1, rb1, nr, tile, nb, out1);
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

static inline void q4k_rows_small(const quant_block_q4_k *const *w, int nr, const moe_tile *T,
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

static void q4k_small(const void *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
                      float *out)
{
    SMALL_ROWS(q4k_rows_small, quant_block_q4_k);
}

/* Q4_K rows: per block, the 16 rows' qs (32 dwords each) transposed once and split into
 * nibbles (chunk c's dword k': low nibbles are elements 64c + 4k'.., high ones 64c + 32 +
 * 4k'..); per sub-block its 8 vectors and an int32 scale per row; the mins as int16 pairs. */
static void q4k_rows(const uint8_t *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
                     float *out)
{
    const __m512i m4 = _mm512_set1_epi8(15), mff = _mm512_set1_epi32(0xff);
    const __m512i offs = moe_row_offsets(rb, nr);
    const int n = T->n;
    __m512 acc[MOE_TILE_TOK];
    for (int t = 0; t < n; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i qa[16], qb[16], sm[16], Ta[16], Tb[16], S[16], W[64], sc[8], mp[8];
        for (int r = 0; r < 16; r++) {
            const quant_block_q4_k *blk = ROW_BLOCK(quant_block_q4_k, w, rb, nr, r, b);
            moe_prefetch_next_tile(blk, rb, (int)sizeof *blk);
            qa[r] = _mm512_loadu_si512(blk->qs);
            qb[r] = _mm512_loadu_si512(blk->qs + 64);
            sm[r] = _mm512_zextsi128_si512(q4k_scales_mins(blk->scales));
        }
        moe_transpose16(qa, Ta);
        moe_transpose16(qb, Tb);
        moe_transpose16(sm, S); /* S[0], S[1]: scales 0-3, 4-7; S[2], S[3]: mins */
        for (int k = 0; k < 32; k++) {
            const __m512i v = k < 16 ? Ta[k] : Tb[k - 16];
            const int c = k / 8, kk = k % 8;
            W[16 * c + kk] = _mm512_and_si512(v, m4);
            W[16 * c + 8 + kk] = _mm512_and_si512(_mm512_srli_epi32(v, 4), m4);
        }
        for (int j = 0; j < 8; j++) {
            sc[j] = _mm512_and_si512(_mm512_srli_epi32(S[j / 4], 8 * (j % 4)), mff);
            const __m512i m = _mm512_and_si512(_mm512_srli_epi32(S[2 + j / 4], 8 * (j % 4)), mff);
            mp[j] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
        }
        __m512 dw, dmin;
        moe_row_scales(w + b * sizeof(quant_block_q4_k), offs, &dw, &dmin);
        k_rows_block(W, sc, mp, T, b, dw, dmin, acc);
    }
    for (int t = 0; t < n; t++)
        _mm512_storeu_ps(out + t * MOE_TILE_ROWS, acc[t]);
}

void cpu_moe_q4k_gemm_avx512(const void *w, size_t rb, int nr, const void *tile, int64_t nb,
                             float *out)
{
    if (((const moe_tile *)tile)->n <= SMALL_N)
        q4k_small(w, rb, nr, tile, nb, out);
    else
        q4k_rows(w, rb, nr, tile, nb, out);
}

void cpu_moe_q4k_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                              const void *tile, int64_t nb, float *out0, float *out1)
{
    cpu_moe_q4k_gemm_avx512(w0, rb0, nr, tile, nb, out0);
    cpu_moe_q4k_gemm_avx512(w1, rb1, nr, tile, nb, out1);
}
