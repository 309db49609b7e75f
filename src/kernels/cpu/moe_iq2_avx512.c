/* moe_iq2_avx512.c — IQ2_XXS routed-expert kernels (gate/up of the q2 mix), AVX-512 with VNNI,
 * VBMI and GFNI. A block is decoded in "group-major" order: vector p (p = 0..3) holds, for
 * each sub-block s, its 8 elements of grid group p (elements 32s + 8p .. +7) in qword s, so
 * int32 lanes 2s, 2s+1 belong to sub-block s in all four vectors and one vpmulld applies the
 * sub-block scales 2s+1 to their sum. Grid rows come from 64-bit gathers; the 7-bit sign
 * fields are cut out by vpmultishiftqb and get their parity bit from one GF(2) affine
 * transform (the ksigns_iq2xs rule). Activations are stored in the same order (prep_*).
 * GEMV: signs applied to the activation, vpdpbusd(grid, signed x). Mini-GEMM: blocks decoded
 * into signed weights, tokens as x+128 (u8) with the 128*sum(w) correction; up to
 * MOE_SMALL_N tokens row by row (16 blocks' sums per token reduced at once), more in 16-row tiles
 * transposed so that lanes are rows (no reductions). All give the exact per-block sums of
 * cpu_dot_iq2_xxs_q8_k_ref and combine them in its float order (moe_kern.h). */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,f16c,fma")
#include "kernels/cpu/moe_avx512.h"

/* ======== activations ================================================================== */

/* Group-major order of one block's 256 q8 values: out qword 8p + s = in qword 4s + p. */
static void permute_block(const quant_block_q8_k *x, quant_block_q8_k *o, uint64_t flip)
{
    uint64_t in[32], out[32];
    memcpy(in, x->qs, sizeof in);
    for (int p = 0; p < 4; p++)
        for (int s = 0; s < 8; s++)
            out[8 * p + s] = in[4 * s + p] ^ flip;
    memcpy(o->qs, out, sizeof out);
    o->d = x->d;
    memcpy(o->bsums, x->bsums, sizeof o->bsums);
}

void cpu_moe_iq2_prep_gemv_avx512(const quant_block_q8_k *x, quant_block_q8_k *out, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++)
        permute_block(x + b, out + b, 0);
}

/* Mini-GEMM: x + 128 as u8 (the sign bit flipped), group-major as well. */
void cpu_moe_iq2_prep_gemm_avx512(const quant_block_q8_k *x, quant_block_q8_k *out, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++)
        permute_block(x + b, out + b, 0x8080808080808080ull);
}

/* ======== block decoding =============================================================== */

typedef struct iq2_dec {
    __m512i grid[4]; /* magnitudes (u8), group-major */
    __mmask64 neg[4]; /* elements to negate */
    __m512i scale;   /* int32 lanes 2s, 2s+1: 2 * scale_s + 1 */
} iq2_dec;

/* The constant vectors of the decoder, built once per kernel call. */
typedef struct iq2_consts {
    __m512i field_ctl; /* multishift: bytes 0..3 of qword s <- sign fields 0..3 of sub-block s */
    __m512i parity;    /* GF(2) matrix: bits 0-6 kept, bit 7 = parity of bits 0-6 */
    __m512i tr_ctl;    /* byte 8p + s <- byte 8s + p: masks of vector p */
    __m512i idx_ctl[4]; /* byte 8s <- byte 8s + p: grid index p of sub-block s */
    __m512i one;
} iq2_consts;

static inline void iq2_consts_init(iq2_consts *c)
{
    uint8_t f[64], t[64], ix[4][64];
    for (int i = 0; i < 64; i++) {
        f[i] = (uint8_t)((i & 7) < 4 ? 32 + 7 * (i & 7) : 0);
        t[i] = (uint8_t)(i < 32 ? 8 * (i % 8) + i / 8 : 0);
        for (int p = 0; p < 4; p++)
            ix[p][i] = (uint8_t)((i & ~7) + p);
    }
    c->field_ctl = _mm512_loadu_si512(f);
    c->tr_ctl = _mm512_loadu_si512(t);
    for (int p = 0; p < 4; p++)
        c->idx_ctl[p] = _mm512_loadu_si512(ix[p]);
    c->parity = _mm512_set1_epi64(0x010204081020407fll);
    c->one = _mm512_set1_epi32(1);
}

static inline void iq2_decode(const iq2_consts *c, const quant_block_iq2_xxs *b, iq2_dec *o)
{
    const __m512i raw = _mm512_loadu_si512(b->qs);
    const __m512i fields = _mm512_multishift_epi64_epi8(c->field_ctl, raw);
    const __m512i signs = _mm512_gf2p8affine_epi64_epi8(fields, c->parity, 0);
    /* the masks go through memory: kmovq from memory is a load, moving them out of a vector
     * register costs shuffle-port uops (dot_avx512.c measured 5%) */
    __mmask64 m[8];
    _mm512_storeu_si512(m, _mm512_permutexvar_epi8(c->tr_ctl, signs));
    __asm__ volatile("" ::: "memory");
    for (int p = 0; p < 4; p++)
        o->neg[p] = _load_mask64(&m[p]);
    /* (aux1 >> 27) | 1 = 2s + 1 in the low dword of qword s, copied to the high dword */
    const __m512i sc = _mm512_srli_epi64(raw, 59);
    o->scale = _mm512_or_si512(_mm512_shuffle_epi32(sc, _MM_PERM_CCAA), c->one);
    for (int p = 0; p < 4; p++) {
        const __m512i idx = _mm512_maskz_permutexvar_epi8(0x0101010101010101ull, c->idx_ctl[p], raw);
        o->grid[p] = _mm512_i64gather_epi64(idx, (const void *)quant_iq2xxs_grid, 8);
    }
}

/* Scaled sub-block sums of one decoded block against one GEMV-prepared activation block. */
static inline __m512i iq2_dot_gemv(const iq2_dec *d, const int8_t *xq)
{
    __m512i acc = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++) {
        __m512i y = _mm512_loadu_si512(xq + 64 * p);
        y = _mm512_mask_sub_epi8(y, d->neg[p], _mm512_setzero_si512(), y);
        acc = _mm512_dpbusd_epi32(acc, d->grid[p], y);
    }
    return _mm512_mullo_epi32(acc, d->scale);
}

/* ======== GEMV ========================================================================= */

/* y = 0.125 * sum_b (d_w d_x) I_b over nb blocks, two rows sharing the activation loads. */
static inline void gemv_rows(const quant_block_iq2_xxs *const *w, int nr,
                             const quant_block_q8_k *x, int64_t nb, float *out)
{
    iq2_consts c;
    iq2_consts_init(&c);
    float acc[2] = {0.0f, 0.0f};
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int m = nb - b0 < 16 ? (int)(nb - b0) : 16;
        __m512i v[2][16];
        _Alignas(64) float dx[16] = {0}, dw[2][16] = {{0}}, t[16];
        for (int i = 0; i < m; i++) {
            const int64_t b = b0 + i;
            dx[i] = x[b].d;
            for (int r = 0; r < nr; r++) {
                prefetch_ahead(&w[r][b], (int)sizeof w[r][b]);
                iq2_dec d;
                iq2_decode(&c, &w[r][b], &d);
                v[r][i] = iq2_dot_gemv(&d, x[b].qs);
                dw[r][i] = f16(w[r][b].d);
            }
        }
        for (int r = 0; r < nr; r++) {
            const __m512i I = moe_reduce_n(v[r], m);
            const __m512 d = _mm512_mul_ps(_mm512_load_ps(dw[r]), _mm512_load_ps(dx));
            _mm512_store_ps(t, _mm512_mul_ps(d, _mm512_cvtepi32_ps(I)));
            acc[r] = moe_add_seq(acc[r], t, m);
        }
    }
    for (int r = 0; r < nr; r++)
        out[r] = 0.125f * acc[r];
}

float cpu_moe_iq2_gemv_avx512(const void *w, const quant_block_q8_k *x, int64_t nb)
{
    const quant_block_iq2_xxs *rows[1] = {w};
    float o;
    gemv_rows(rows, 1, x, nb, &o);
    return o;
}

void cpu_moe_iq2_gemv2_avx512(const void *w0, const void *w1, const quant_block_q8_k *x,
                              int64_t nb, float out[2])
{
    const quant_block_iq2_xxs *rows[2] = {w0, w1};
    gemv_rows(rows, 2, x, nb, out);
}

/* ======== mini-GEMM ==================================================================== */

/* Up to MOE_SMALL_N tokens (moe_avx512.h), one row: its blocks decoded once for the few
 * tokens, 16 blocks' scaled sums per token reduced at once (moe_reduce16) and combined in
 * the reference's float order. */
static void iq2_row_small(const void *ctx, const uint8_t *row, const moe_tile *T, int64_t nb,
                          float *out)
{
    (void)ctx;
    const quant_block_iq2_xxs *w = (const quant_block_iq2_xxs *)(const void *)row;
    iq2_consts c;
    iq2_consts_init(&c);
    const int n = T->n;
    const __m512i k128 = _mm512_set1_epi8((char)0x80);
    float acc[MOE_TILE_TOK] = {0};
    __m512i v[MOE_TILE_TOK][16];
    for (int64_t b0 = 0; b0 < nb; b0 += 16) {
        const int m = nb - b0 < 16 ? (int)(nb - b0) : 16;
        _Alignas(64) float dw[16] = {0}, t[16];
        for (int i = 0; i < m; i++) {
            const quant_block_iq2_xxs *bw = &w[b0 + i];
            prefetch_ahead(bw, (int)sizeof *bw);
            dw[i] = f16(bw->d);
            iq2_dec d;
            iq2_decode(&c, bw, &d);
            __m512i ws[4], corr = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++) {
                ws[p] = _mm512_mask_sub_epi8(d.grid[p], d.neg[p], _mm512_setzero_si512(), d.grid[p]);
                corr = _mm512_dpbusd_epi32(corr, k128, ws[p]);
            }
            const __m512i neg_corr = _mm512_sub_epi32(_mm512_setzero_si512(), corr);
            for (int j = 0; j < n; j++) {
                const int8_t *xq = T->x[j][b0 + i].qs;
                __m512i a = neg_corr;
                for (int p = 0; p < 4; p++)
                    a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(xq + 64 * p), ws[p]);
                v[j][i] = _mm512_mullo_epi32(a, d.scale);
            }
        }
        const __m512 dwv = _mm512_load_ps(dw);
        for (int j = 0; j < n; j++) {
            const __m512i I = moe_reduce_n(v[j], m);
            const __m512 dd = _mm512_mul_ps(dwv, _mm512_loadu_ps(&T->dx[j][b0]));
            _mm512_store_ps(t, _mm512_mul_ps(dd, _mm512_cvtepi32_ps(I)));
            acc[j] = moe_add_seq(acc[j], t, m);
        }
    }
    for (int j = 0; j < n; j++)
        out[j] = 0.125f * acc[j];
}

/* nr <= 16 rows against the tile's tokens (more than MOE_SMALL_N of them). Per block: each row
 * decoded (group-major, signs applied) and the 16 rows transposed so that vector d holds
 * dword d of every row, lanes = rows; then per sub-block s its 8 vectors (dwords 16p + 2s,
 * 16p + 2s + 1) stay in registers while every token's 8 matching activation dwords (x + 128)
 * are broadcast against them, the sums scaled by 2s+1 per lane. The 128 * sum(w) the offset
 * adds is taken off once per block (K), so each lane ends with the block's exact I_b of its
 * row, combined in the float order of the reference. */
static void iq2_rows(const uint8_t *w, size_t rb, int nr, const moe_tile *T, int64_t nb,
                     float *out)
{
    iq2_consts c;
    iq2_consts_init(&c);
    const int n = T->n;
    const __m512i k128 = _mm512_set1_epi8((char)0x80), offs = moe_row_offsets(rb, nr);
    __m512 acc[MOE_TILE_TOK];
    for (int t = 0; t < n; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i rowv[4][16], sc1[16], W[64], SC[16], I[MOE_TILE_TOK];
        for (int r = 0; r < 16; r++) {
            const quant_block_iq2_xxs *blk =
                (const quant_block_iq2_xxs *)(w + (size_t)(r < nr ? r : nr - 1) * rb) + b;
            moe_prefetch_next_tile(blk, rb, (int)sizeof *blk);
            iq2_dec d;
            iq2_decode(&c, blk, &d);
            for (int z = 0; z < 4; z++)
                rowv[z][r] = _mm512_mask_sub_epi8(d.grid[z], d.neg[z], _mm512_setzero_si512(), d.grid[z]);
            sc1[r] = d.scale; /* dwords 2s, 2s+1: 2 scale_s + 1 */
        }
        for (int z = 0; z < 4; z++)
            moe_transpose16(rowv[z], &W[16 * z]);
        moe_transpose16(sc1, SC); /* SC[2s] lane r: 2 scale_s + 1 of row r */
        __m512i K = _mm512_setzero_si512();
        for (int s8 = 0; s8 < 8; s8++) {
            __m512i cs = _mm512_setzero_si512();
            for (int k = 0; k < 8; k++)
                cs = _mm512_dpbusd_epi32(cs, k128, W[16 * (k / 2) + 2 * s8 + k % 2]);
            K = _mm512_add_epi32(K, _mm512_mullo_epi32(cs, SC[2 * s8]));
        }
        const __m512i negK = _mm512_sub_epi32(_mm512_setzero_si512(), K);
        for (int t = 0; t < n; t++)
            I[t] = negK;
        for (int s8 = 0; s8 < 8; s8++) {
            __m512i Wr[8];
            for (int k = 0; k < 8; k++)
                Wr[k] = W[16 * (k / 2) + 2 * s8 + k % 2];
            for (int t = 0; t < n; t++) {
                const int32_t *xd = (const int32_t *)(const void *)T->x[t][b].qs + 2 * s8;
                __m512i a = _mm512_setzero_si512();
                for (int k = 0; k < 8; k++)
                    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(xd[16 * (k / 2) + k % 2]), Wr[k]);
                I[t] = _mm512_add_epi32(I[t], _mm512_mullo_epi32(a, SC[2 * s8]));
            }
        }
        __m512 dw;
        moe_row_scales(w + b * sizeof(quant_block_iq2_xxs), offs, &dw, NULL);
        for (int t = 0; t < n; t++) {
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(T->dx[t][b]));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(dd, _mm512_cvtepi32_ps(I[t])));
        }
    }
    for (int t = 0; t < n; t++)
        _mm512_storeu_ps(out + t * MOE_TILE_ROWS, _mm512_mul_ps(_mm512_set1_ps(0.125f), acc[t]));
}

void cpu_moe_iq2_gemm_avx512(const void *w, size_t rb, int nr, const void *tile, int64_t nb,
                             float *out)
{
    if (((const moe_tile *)tile)->n <= MOE_SMALL_N)
        moe_rows_each(iq2_row_small, NULL, w, rb, nr, tile, nb, out);
    else
        iq2_rows(w, rb, nr, tile, nb, out);
}

void cpu_moe_iq2_gemm2_avx512(const void *w0, size_t rb0, const void *w1, size_t rb1, int nr,
                              const void *tile, int64_t nb, float *out0, float *out1)
{
    cpu_moe_iq2_gemm_avx512(w0, rb0, nr, tile, nb, out0);
    cpu_moe_iq2_gemm_avx512(w1, rb1, nr, tile, nb, out1);
}
