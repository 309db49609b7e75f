/* moe_k_avx512.c — Q2_K and Q4_K routed-expert kernels (down of the q2 mix, everything of the
 * q4 mix), AVX-512 with VNNI and VBMI, on plain Q8_K activations (natural element order).
 * GEMV: per block, the scaled sums by vpmaddubsw + vpdpwssd (sub-block scales as int16 lanes)
 * and the min term mins x bsums by vpmaddwd, as dot_avx512.c; 8 blocks' Q and M vectors are
 * reduced to 16 exact totals at once (moe_reduce16). Mini-GEMM, up to MOE_SMALL_N tokens: the
 * same per row, each block decoded once for the tokens (Q2_K: scale x quant folded into one
 * u8 by a 64-entry vpermb table, one vpdpbusd per 64 elements). More tokens: 16-row tiles,
 * the raw quants of the 16 rows transposed so that lanes are rows (no reductions at all), 8
 * weight vectors in registers against broadcast activation dwords, sub-block scales per lane
 * (Q2_K folded), the min term by vpdpwssd of per-row min pairs and broadcast bsums pairs.
 * All give the exact per-block Q_b and M_b of cpu_dot_q*_k_q8_k_ref, combined in its float
 * order (moe_kern.h). The GEMV and few-token loops are written once for both types (k_type:
 * the per-block steps of a type, inlined into each type's kernels). */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,f16c,fma")
#include "kernels/cpu/moe_avx512.h"

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

/* ======== the per-type steps ========================================================== */

/* A K-quant block decoded once for the tokens of the few-token mini-GEMM. */
typedef struct k_dec {
    __m512i w[4];  /* the quants (Q2_K: scale x quant folded into one u8) */
    __m512i s[4];  /* Q4_K: the sub-block scales as int16 lanes facing vpmaddubsw's sums */
    __m256i mins;  /* the 16 int16 mins facing the bsums */
} k_dec;

/* Constants of a type, built once per kernel call (each type's own struct, in one union). */
typedef union k_consts k_consts;

/* One K-quant type: its block size and the per-block steps of the loops below. Every
 * function here is static inline and reached through a constant k_type, so each kernel is
 * compiled with its type's steps inlined (no indirect calls remain). */
typedef struct k_type {
    size_t block_bytes;
    void (*init)(k_consts *c);
    /* GEMV: the scaled sums (Q lanes), the min products (M lanes 0..7) and the f32 d, dmin of
     * block w against x */
    void (*block)(const k_consts *c, const void *w, const quant_block_q8_k *x, __m512i *Q,
                  __m512i *M, float *dw, float *dmin);
    void (*init_small)(k_consts *c);
    /* few-token mini-GEMM: block w decoded (and its d, dmin), then its scaled sums vs x */
    void (*decode)(const k_consts *c, const void *w, k_dec *d, float *dw, float *dmin);
    __m512i (*dot)(const k_consts *c, const k_dec *d, const quant_block_q8_k *x);
} k_type;

#define K_INLINE static inline __attribute__((always_inline))

/* constants of each type, built once per kernel call */

typedef struct q2k_consts {
    __m512i m3, sh_even, sh_odd, sel[4];
} q2k_consts;

/* The few-token path's: scale x quant of 2 + 4 bits -> their product (vpermb table), and
 * the byte controls that spread the 4-bit scales of run j over its 64 elements. */
typedef struct q2k_small_consts {
    q2k_consts q;
    __m512i vlut, ctl[4];
} q2k_small_consts;

typedef struct q4k_consts {
    __m512i m4, sh, sel[4];
    __m128i mins_ctl;
} q4k_consts;

union k_consts {
    q2k_consts q2;
    q2k_small_consts q2s;
    q4k_consts q4;
};

/* ---- Q2_K's steps ---- */

static inline void q2k_init(k_consts *kc)
{
    q2k_consts *c = &kc->q2;
    c->m3 = _mm512_set1_epi8(3);
    /* q8 run j (elements 64j..) reads qs[32(j/2)..] shifted by 4(j%2), then 4(j%2)+2 */
    c->sh_even = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
    c->sh_odd = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    for (int j = 0; j < 4; j++)
        c->sel[j] = idx16x4((short)(4 * j), (short)(4 * j + 1), (short)(4 * j + 2),
                            (short)(4 * j + 3));
}

static inline void q2k_init_small(k_consts *kc)
{
    q2k_init(kc);
    uint8_t lut[64], ctl[4][64];
    for (int i = 0; i < 64; i++) {
        lut[i] = (uint8_t)((i >> 2) * (i & 3));
        for (int j = 0; j < 4; j++)
            ctl[j][i] = (uint8_t)(4 * j + i / 16);
    }
    kc->q2s.vlut = _mm512_loadu_si512(lut);
    for (int j = 0; j < 4; j++)
        kc->q2s.ctl[j] = _mm512_loadu_si512(ctl[j]);
}

/* The 2-bit quants of run j (elements 64j..64j+63) as bytes. */
static inline __m512i q2k_quants(const q2k_consts *c, const quant_block_q2_k *w, int j)
{
    __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * (j / 2))));
    return _mm512_and_si512(_mm512_srlv_epi16(v, j % 2 ? c->sh_odd : c->sh_even), c->m3);
}

static inline void q2k_block(const k_consts *kc, const void *wv, const quant_block_q8_k *x,
                             __m512i *Q, __m512i *M, float *dw, float *dmin)
{
    const q2k_consts *c = &kc->q2;
    const quant_block_q2_k *w = wv;
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
    *dw = f16(w->d);
    *dmin = f16(w->dmin);
}

/* Scale x quant folded into one u8 per element by the 64-entry table: one vpdpbusd per 64. */
static inline void q2k_decode(const k_consts *kc, const void *wv, k_dec *d, float *dw,
                              float *dmin)
{
    const q2k_small_consts *c = &kc->q2s;
    const quant_block_q2_k *w = wv;
    const __m128i m4 = _mm_set1_epi8(15);
    *dw = f16(w->d);
    *dmin = f16(w->dmin);
    const __m128i raw = _mm_loadu_si128((const __m128i *)w->scales);
    const __m512i sc4 = _mm512_castsi128_si512(_mm_slli_epi16(_mm_and_si128(raw, m4), 2));
    d->mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    for (int j = 0; j < 4; j++) {
        const __m512i s4 = _mm512_permutexvar_epi8(c->ctl[j], sc4);
        d->w[j] = _mm512_permutexvar_epi8(_mm512_or_si512(s4, q2k_quants(&c->q, w, j)), c->vlut);
    }
}

static inline __m512i q2k_dot(const k_consts *kc, const k_dec *d, const quant_block_q8_k *x)
{
    (void)kc;
    __m512i a = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++)
        a = _mm512_dpbusd_epi32(a, d->w[j], _mm512_loadu_si512(x->qs + 64 * j));
    return a;
}

static const k_type k_q2k = {sizeof(quant_block_q2_k), q2k_init, q2k_block, q2k_init_small,
                             q2k_decode, q2k_dot};

/* ---- Q4_K's steps ---- */

static inline void q4k_init(k_consts *kc)
{
    q4k_consts *c = &kc->q4;
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

static inline void q4k_block(const k_consts *kc, const void *wv, const quant_block_q8_k *x,
                             __m512i *Q, __m512i *M, float *dw, float *dmin)
{
    const q4k_consts *c = &kc->q4;
    const quant_block_q4_k *w = wv;
    const __m128i scm = q4_k_scales_mins(w->scales);
    *M = _mm512_zextsi256_si512(_mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, c->mins_ctl)),
                                                  _mm256_loadu_si256((const __m256i *)x->bsums)));
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
    __m512i isum = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) {
        __m512i p = _mm512_maddubs_epi16(q4k_quants(c, w, k), _mm512_loadu_si512(x->qs + 64 * k));
        isum = _mm512_dpwssd_epi32(isum, p, _mm512_permutexvar_epi16(c->sel[k], sc));
    }
    *Q = isum;
    *dw = f16(w->d);
    *dmin = f16(w->dmin);
}

static inline void q4k_decode(const k_consts *kc, const void *wv, k_dec *d, float *dw,
                              float *dmin)
{
    const q4k_consts *c = &kc->q4;
    const quant_block_q4_k *w = wv;
    *dw = f16(w->d);
    *dmin = f16(w->dmin);
    const __m128i scm = q4_k_scales_mins(w->scales);
    d->mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, c->mins_ctl));
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm));
    for (int k = 0; k < 4; k++) {
        d->w[k] = q4k_quants(c, w, k);
        d->s[k] = _mm512_permutexvar_epi16(c->sel[k], sc);
    }
}

static inline __m512i q4k_dot(const k_consts *kc, const k_dec *d, const quant_block_q8_k *x)
{
    (void)kc;
    __m512i a = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++)
        a = _mm512_dpwssd_epi32(a, _mm512_maddubs_epi16(d->w[k], _mm512_loadu_si512(x->qs + 64 * k)), d->s[k]);
    return a;
}

static const k_type k_q4k = {sizeof(quant_block_q4_k), q4k_init, q4k_block, q4k_init,
                             q4k_decode, q4k_dot};


/* ======== the loops both types share ================================================= */

/* GEMV of nr <= 2 rows (sharing the activation loads): 8 blocks' Q and M at a time, reduced
 * at once and combined in the reference's float order. */
K_INLINE void k_gemv_rows(const k_type *k, const uint8_t *const *w, int nr,
                          const quant_block_q8_k *x, int64_t nb, float *out)
{
    k_consts c;
    k->init(&c);
    float acc[2] = {0.0f, 0.0f};
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        _Alignas(32) float dx[8] = {0}, dw[8] = {0}, dmin[8] = {0};
        for (int i = 0; i < m; i++)
            dx[i] = x[b0 + i].d;
        for (int r = 0; r < nr; r++) {
            __m512i v[16];
            for (int i = 0; i < m; i++) {
                const uint8_t *bw = w[r] + (size_t)(b0 + i) * k->block_bytes;
                prefetch_ahead(bw, (int)k->block_bytes);
                k->block(&c, bw, &x[b0 + i], &v[i], &v[8 + i], &dw[i], &dmin[i]);
            }
            for (int i = m; i < 8; i++)
                v[i] = v[8 + i] = _mm512_setzero_si512();
            acc[r] = k_combine(acc[r], moe_reduce16(v), dx, dw, dmin, m);
        }
    }
    for (int r = 0; r < nr; r++)
        out[r] = acc[r];
}

K_INLINE float k_gemv(const k_type *k, const void *w, const quant_block_q8_k *x, int64_t nb)
{
    const uint8_t *rows[1] = {w};
    float o;
    k_gemv_rows(k, rows, 1, x, nb, &o);
    return o;
}

K_INLINE void k_gemv2(const k_type *k, const void *w0, const void *w1,
                      const quant_block_q8_k *x, int64_t nb, float out[2])
{
    const uint8_t *rows[2] = {w0, w1};
    k_gemv_rows(k, rows, 2, x, nb, out);
}

/* Up to MOE_SMALL_N tokens (moe_avx512.h), one row: its blocks decoded once for the few
 * tokens, 8 blocks' Q and M vectors per token reduced at once, combined as the GEMV. */
K_INLINE void k_row_small(const k_type *k, const uint8_t *w, const moe_tile *T, int64_t nb,
                          float *out)
{
    k_consts c;
    k->init_small(&c);
    const int n = T->n;
    float acc[MOE_TILE_TOK] = {0};
    __m512i v[MOE_TILE_TOK][16];
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        _Alignas(32) float dw[8] = {0}, dmin[8] = {0};
        for (int i = 0; i < m; i++) {
            const uint8_t *bw = w + (size_t)(b0 + i) * k->block_bytes;
            prefetch_ahead(bw, (int)k->block_bytes);
            k_dec d;
            k->decode(&c, bw, &d, &dw[i], &dmin[i]);
            for (int t = 0; t < n; t++) {
                const quant_block_q8_k *x = &T->x[t][b0 + i];
                v[t][i] = k->dot(&c, &d, x);
                v[t][8 + i] = _mm512_zextsi256_si512(
                    _mm256_madd_epi16(d.mins, _mm256_loadu_si256((const __m256i *)x->bsums)));
            }
        }
        for (int t = 0; t < n; t++) {
            for (int i = m; i < 8; i++)
                v[t][i] = v[t][8 + i] = _mm512_setzero_si512();
            acc[t] = k_combine(acc[t], moe_reduce16(v[t]), &T->dx[t][b0], dw, dmin, m);
        }
    }
    memcpy(out, acc, sizeof(float) * (size_t)n);
}

/* ======== the kernels ================================================================== */

/* ---- GEMV ---- */

float cpu_moe_q2k_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb)
{
    return k_gemv(&k_q2k, w, x, nb);
}

void cpu_moe_q2k_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x,
                              int64_t nb, float out[2])
{
    k_gemv2(&k_q2k, w0, w1, x, nb, out);
}

float cpu_moe_q4k_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb)
{
    return k_gemv(&k_q4k, w, x, nb);
}

void cpu_moe_q4k_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x,
                              int64_t nb, float out[2])
{
    k_gemv2(&k_q4k, w0, w1, x, nb, out);
}

/* ---- mini-GEMM: more than MOE_SMALL_N tokens in 16-row tiles, fewer row by row ---- */

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
            sm[r] = _mm512_zextsi128_si512(q4_k_scales_mins(blk->scales));
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

static void q2k_row_small(const void *k, const uint8_t *w, const moe_tile *T, int64_t nb,
                          float *out)
{
    (void)k;
    k_row_small(&k_q2k, w, T, nb, out);
}

static void q4k_row_small(const void *k, const uint8_t *w, const moe_tile *T, int64_t nb,
                          float *out)
{
    (void)k;
    k_row_small(&k_q4k, w, T, nb, out);
}

void cpu_moe_q2k_gemm_avx512(const void *w, size_t rb, int nr, const void *tile, int64_t nb,
                             float *out)
{
    if (((const moe_tile *)tile)->n <= MOE_SMALL_N)
        moe_rows_each(q2k_row_small, NULL, w, rb, nr, tile, nb, out);
    else
        q2k_rows(w, rb, nr, tile, nb, out);
}

void cpu_moe_q2k_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                              const void *tile, int64_t nb, float *out0, float *out1)
{
    cpu_moe_q2k_gemm_avx512(w0, rb0, nr, tile, nb, out0);
    cpu_moe_q2k_gemm_avx512(w1, rb1, nr, tile, nb, out1);
}

void cpu_moe_q4k_gemm_avx512(const void *w, size_t rb, int nr, const void *tile, int64_t nb,
                             float *out)
{
    if (((const moe_tile *)tile)->n <= MOE_SMALL_N)
        moe_rows_each(q4k_row_small, NULL, w, rb, nr, tile, nb, out);
    else
        q4k_rows(w, rb, nr, tile, nb, out);
}

void cpu_moe_q4k_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                              const void *tile, int64_t nb, float *out0, float *out1)
{
    cpu_moe_q4k_gemm_avx512(w0, rb0, nr, tile, nb, out0);
    cpu_moe_q4k_gemm_avx512(w1, rb1, nr, tile, nb, out1);
}
