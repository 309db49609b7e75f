/* moe_fused.cu — the decode MoE of 1 to CUDA_FUSED_MAX_TOK tokens in one cooperative launch
 * (sm_90: bulk copies and mbarriers), one block per SM: 16 consumer warps and one producer
 * warp. The producer lists the block's share of the gate/up rows, then of the down rows, as ring
 * items and copies each into a shared-memory slot (cp.async.bulk, or 16-byte cp.async with
 * CUDA_FUSED_CP_ASYNC) once every consumer has left the slot's previous item (full/empty
 * mbarriers), so the down rows arrive during gate/up and the grid barrier. The consumers
 * quantize h to Q8_K themselves (the rounding of act_quant.cu), compute gate/up + SwiGLU into
 * mid (f32, global), meet the other blocks at a grid barrier, quantize all the mids themselves,
 * then sum their down rows over the experts into y. Batch 1: the items are per (expert) pair;
 * gate/up lane l takes half of block l/2 of a row (4 chunks of 32; the token's chunks stay in
 * registers), down lane l a quarter of block l/4 (2 chunks; the mids are stored lane-major).
 * Batch n >= 2 (k_fused<.., MB = true>): the producer warp first groups the pairs by expert
 * (distinct experts in order of first use, each with its pairs), the items are per distinct
 * expert, so each expert's rows are read once; a gate/up row is decoded once per chunk and
 * dotted with up to FNP pairs' activations (every token's, lane-major in shared memory; with
 * CUDA_FUSED_GU2 the gate and up rows in one pass, each activation chunk read once), down
 * rows with each pair's mids, summed per token in registers (per-token order: the distinct
 * order). IQ2_XXS: a 64 KB shared table of 256 rows x (32 copies of the grid word, 32 of the
 * sign word), lane l reading copy l (conflict-free 4-byte lookups); a grid word has each
 * element's value as a 2-bit code per nibble, a sign word bit 2 of the nibble when the element
 * is negative, so their OR selects the signed bytes with two PRMTs (run15). Does not own the
 * path choice (cuda_moe.cu). Numerics as moe_gemv.cu: integer sums per block, f32 above.
 * Measured: docs/cuda-runs/run13, run15 (batch 1), run17 (batches). */
#include "backend/cuda/moe_fused.cuh"
#include "backend/cuda/tuning.cuh"

#define FW CUDA_FUSED_WARPS
#define FT (FW * 32)
#define F_MAX_ITEMS 64
#define F_TRACE CUDA_FUSED_TRACE
#define F_MAX_SLOTS 8
#define F_OFF_ITEMS (2 * 8 * F_MAX_SLOTS + 16) /* after the full, empty and ready mbarriers */
#define F_FIXED (F_OFF_ITEMS + 16 * F_MAX_ITEMS) /* mbarriers, items */
#define F_MB_ITEMS 192 /* MB (small batch): the item list, then the distinct-expert lists */
#define F_MB_PAIRS 64  /* MB: n_tok * n_used at most */
#define F_OFF_LISTS (F_OFF_ITEMS + 16 * F_MB_ITEMS)
#define F_FIXED_MB (F_OFF_LISTS + 4 * (4 * F_MB_PAIRS + 4))
static_assert(F_MB_PAIRS >= CUDA_FUSED_MAX_TOK * 8 && F_MB_PAIRS <= 64, "the lists: a 64-bit mask of pairs");
static_assert(FT == 512, "the IQ2_XXS table build takes two consumer threads per table row");

struct fused_args {
    moe_wt gate, up, down;
    const uint64_t *grid, *signmask;
    const float *h;
    const int32_t *ids;
    const float *wts;
    int n_tok, n_used, n_expert;
    long long ldh, ldy;
    float clamp;
    float *mid, *y;
    int accumulate, mode;
    int *err;
    unsigned long long *bar;
    unsigned long long *trace; /* NULL, or [gridDim][F_TRACE] clock64 stamps (bench diagnostics) */
    fused_plan p;
};

/* ======== sm_90 primitives ============================================================== */

__device__ __forceinline__ uint32_t saddr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint64_t *b, unsigned n)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(saddr(b)), "r"(n) : "memory");
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(saddr(b)), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t *b, unsigned parity)
{
    uint32_t done;
    do {
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done)
                     : "r"(saddr(b)), "r"(parity)
                     : "memory");
    } while (!done);
}

/* bytes (a multiple of 16, both ends 16-byte aligned) from global to shared, completing on b,
 * as bulk copies of at most CUDA_FUSED_COPY_CHUNK bytes (one copy moves its bytes in order;
 * several move in parallel, so an item lands sooner in pieces) */
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, unsigned bytes, uint64_t *b)
{
    for (unsigned o = 0; o < bytes; o += CUDA_FUSED_COPY_CHUNK) {
        const unsigned n = bytes - o < CUDA_FUSED_COPY_CHUNK ? bytes - o : CUDA_FUSED_COPY_CHUNK;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(saddr((unsigned char *)dst + o)), "l"((const unsigned char *)src + o), "r"(n),
                     "r"(saddr(b))
                     : "memory");
    }
}

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long *p)
{
    unsigned long long v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

/* ======== Q8_K of one 256-block by one warp (act_quant.cu's rounding) ===================== */

/* Loads elements 8*lane .. 8*lane+7 of the block at src (16-byte aligned); CG: through L2
 * only (data written by other blocks of this launch). */
template <bool CG>
__device__ __forceinline__ void load8(const float *src, int lane, float (&v)[8])
{
    const float4 *s4 = (const float4 *)src + 2 * lane;
    const float4 a0 = CG ? __ldcg(s4) : s4[0], a1 = CG ? __ldcg(s4 + 1) : s4[1];
    v[0] = a0.x, v[1] = a0.y, v[2] = a0.z, v[3] = a0.w, v[4] = a1.x, v[5] = a1.y, v[6] = a1.z, v[7] = a1.w;
}

/* v: the lane's elements 8*lane .. 8*lane+7 of the block (load8); qs: where the lane's 8
 * bytes go (8-byte aligned), d and bs: the block's scale and 16 sums. */
__device__ __forceinline__ void quant_block_warp(const float (&v)[8], int8_t *qs, float *d, int16_t *bs,
                                                 int lane)
{
    float a = fabsf(v[0]), sv = v[0];
    int ia = 8 * lane;
#pragma unroll
    for (int i = 1; i < 8; i++)
        if (fabsf(v[i]) > a)
            a = fabsf(v[i]), sv = v[i], ia = 8 * lane + i;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, a, o), os = __shfl_xor_sync(0xffffffffu, sv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, ia, o);
        if (oa > a || (oa == a && oi < ia))
            a = oa, sv = os, ia = oi;
    }
    const float mx = a == 0.0f ? 0.0f : sv;
    uint32_t w0 = 0, w1 = 0;
    int s = 0;
    if (mx != 0.0f) {
        const float iscale = -127.0f / mx;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int q = __float2int_rn(fminf(fmaxf(iscale * v[i], -128.0f), 127.0f));
            s += q;
            if (i < 4)
                w0 |= (uint32_t)(q & 255) << (8 * i);
            else
                w1 |= (uint32_t)(q & 255) << (8 * (i - 4));
        }
        if (lane == 0)
            *d = 1.0f / iscale;
    } else if (lane == 0) {
        *d = 0.0f;
    }
    *(uint2 *)qs = make_uint2(w0, w1);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (!(lane & 1))
        bs[lane >> 1] = (int16_t)s;
}

/* ======== row dots (one warp, one row in shared memory; the lane's share) ================= */

/* prmt.b32 (the selector's 4 low nibbles as PTX reads them: no masking to 3 bits) */
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel)
{
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

__device__ __forceinline__ uint32_t lds32(uint32_t addr)
{
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

__device__ __forceinline__ uint32_t byte_of(uint32_t w, int i) { return (w >> (8 * i)) & 255u; }

/* Q4_K scale (6 bits) and min of chunks 0..3 (hi = 0) or 4..7 (hi = 1), four bytes a word. */
__device__ __forceinline__ void q4k_scales4(uint4 hd, bool hi, uint32_t *sc4, uint32_t *m4)
{
    const uint32_t s0 = hd.y, s1 = hd.z, s2 = hd.w;
    *sc4 = hi ? (s2 & 0x0F0F0F0Fu) | ((s0 >> 2) & 0x30303030u) : s0 & 0x3F3F3F3Fu;
    *m4 = hi ? ((s2 >> 4) & 0x0F0F0F0Fu) | ((s1 >> 2) & 0x30303030u) : s1 & 0x3F3F3F3Fu;
}

/* gate/up: lane = 2*b + hf takes chunks 4hf..4hf+3 of block b (n_embd 4096: 16 blocks).
 * x: those chunks of the token (32 words), xs: their sums (Q4_K min term), dx: block scale. */
template <int T>
__device__ __forceinline__ float dot_gu(const unsigned char *row, const int (&x)[32], const int (&xs)[4],
                                        float dx, int lane, const unsigned char *tab)
{
    const int b = lane >> 1, hf = lane & 1;
    if constexpr (T == WT_IQ2_XXS) {
        const unsigned a = 66u * b + 2u + 32u * hf, sh = (a & 3u) * 8u;
        const uint32_t *w = (const uint32_t *)(row + (a & ~3u));
        uint32_t q[9];
#pragma unroll
        for (int i = 0; i < 8; i++)
            q[i] = w[i];
        q[8] = sh ? w[8] : 0u;
        const float dw = f16f(*(const uint16_t *)(row + 66 * b));
        /* the lane's table offsets: byte 0 grid (4 * lane), byte 1 sign (128 + 4 * lane) */
        const uint32_t L = 4u * (uint32_t)lane | (128u + 4u * (uint32_t)lane) << 8;
        const uint32_t tabs = saddr(tab);
        /* bytes 8, 25, 43 (byte 3, never selected, holds L's byte 0: a per-lane value stays
         * in a register, a constant would be copied from a uniform register before each use) */
        const uint32_t pos = 0x002B1908u | L << 24;
        int sumi = 0;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t q0 = __funnelshift_r(q[2 * c], q[2 * c + 1], sh);
            const uint32_t q1 = __funnelshift_r(q[2 * c + 1], q[2 * c + 2], sh);
            int acc = 0;
#pragma unroll
            for (int g = 0; g < 4; g++) {
                /* row index << 8 | lane offset, one PRMT each: grid index = byte g of q0; the
                 * 7 sign bits of group g are the low bits of byte g of q1 << g (bit 7: the
                 * next field's, ignored: rows r and r ^ 128 hold the same signs) */
                const uint32_t ga = prmt(q0, L, 0x7604u | (uint32_t)g << 4);
                const uint32_t sa = prmt(q1 << g, L, 0x7605u | (uint32_t)g << 4);
                const uint32_t sel = lds32(tabs + ga) | lds32(tabs + sa);
                /* nibble k = selector of element k: 8, 25, 43 (bytes 0..2 of pos) or their
                 * negatives (bytes 4..6) */
                const uint32_t lo = prmt(pos, 0x00D5E7F8u, sel);
                const uint32_t hi = prmt(pos, 0x00D5E7F8u, sel >> 16);
                acc = __dp4a((int)lo, x[8 * c + 2 * g], acc);
                acc = __dp4a((int)hi, x[8 * c + 2 * g + 1], acc);
            }
            sumi += acc * (2 * (int)(q1 >> 28) + 1);
        }
        (void)xs;
        return dx * (0.125f * dw) * (float)sumi;
    } else { /* Q4_K */
        const unsigned char *blk = row + 144 * b;
        const uint4 hd = *(const uint4 *)blk;
        const uint4 *qv = (const uint4 *)(blk + 16 + 64 * hf);
        uint32_t sc4, m4;
        q4k_scales4(hd, hf != 0, &sc4, &m4);
        int sumi = 0, summ = 0;
#pragma unroll
        for (int cp = 0; cp < 2; cp++) {
            const uint4 v0 = qv[2 * cp], v1 = qv[2 * cp + 1];
            const uint32_t v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
            int slo = 0, shi = 0;
#pragma unroll
            for (int w = 0; w < 8; w++) {
                slo = __dp4a((int)(v[w] & 0x0F0F0F0Fu), x[16 * cp + w], slo);
                shi = __dp4a((int)((v[w] >> 4) & 0x0F0F0F0Fu), x[16 * cp + 8 + w], shi);
            }
            sumi += (int)byte_of(sc4, 2 * cp) * slo + (int)byte_of(sc4, 2 * cp + 1) * shi;
            summ += (int)byte_of(m4, 2 * cp) * xs[2 * cp] + (int)byte_of(m4, 2 * cp + 1) * xs[2 * cp + 1];
        }
        const float d = f16f((uint16_t)(hd.x & 0xffffu)), dmin = f16f((uint16_t)(hd.x >> 16));
        (void)tab;
        return dx * (d * (float)sumi - dmin * (float)summ);
    }
}

/* down: lane = 4*b + q takes chunks 2q, 2q+1 of block b (n_ff 2048: 8 blocks). x: those
 * chunks of the pair's mid (16 words), bsum: their four 16-element sums, dx: block scale. */
template <int T>
__device__ __forceinline__ float dot_dn(const unsigned char *row, const int (&x)[16], const int (&bsum)[4],
                                        float dx, int lane)
{
    const int b = lane >> 2, q = lane & 3;
    if constexpr (T == WT_Q2_K) {
        const unsigned char *blk = row + 84 * b;
        const uint32_t *qw = (const uint32_t *)(blk + 16 + 32 * (q >> 1));
        const uint32_t scw = *(const uint32_t *)(blk + 8 * (q >> 1) + 4 * (q & 1));
        const uint32_t dd = *(const uint32_t *)(blk + 80);
        uint32_t v[8];
#pragma unroll
        for (int w = 0; w < 8; w++)
            v[w] = qw[w];
        int sumi = 0, summ = 0;
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            const int shift = 2 * (2 * (q & 1) + kk);
#pragma unroll
            for (int sub = 0; sub < 2; sub++) {
                int s = 0;
#pragma unroll
                for (int w = 0; w < 4; w++)
                    s = __dp4a((int)((v[4 * sub + w] >> shift) & 0x03030303u), x[8 * kk + 4 * sub + w], s);
                const int scb = (int)byte_of(scw, 2 * kk + sub);
                sumi += (scb & 15) * s;
                summ += (scb >> 4) * bsum[2 * kk + sub];
            }
        }
        const float d = f16f((uint16_t)(dd & 0xffffu)), dmin = f16f((uint16_t)(dd >> 16));
        return dx * (d * (float)sumi - dmin * (float)summ);
    } else { /* Q4_K */
        const unsigned char *blk = row + 144 * b;
        const uint4 hd = *(const uint4 *)blk;
        const uint4 *qv = (const uint4 *)(blk + 16 + 32 * q);
        const uint4 v0 = qv[0], v1 = qv[1];
        const uint32_t v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
        uint32_t sc4, m4;
        q4k_scales4(hd, q >= 2, &sc4, &m4);
        const int i0 = 2 * (q & 1);
        int slo = 0, shi = 0;
#pragma unroll
        for (int w = 0; w < 8; w++) {
            slo = __dp4a((int)(v[w] & 0x0F0F0F0Fu), x[w], slo);
            shi = __dp4a((int)((v[w] >> 4) & 0x0F0F0F0Fu), x[8 + w], shi);
        }
        const int sumi = (int)byte_of(sc4, i0) * slo + (int)byte_of(sc4, i0 + 1) * shi;
        const int summ = (int)byte_of(m4, i0) * (bsum[0] + bsum[1]) + (int)byte_of(m4, i0 + 1) * (bsum[2] + bsum[3]);
        const float d = f16f((uint16_t)(hd.x & 0xffffu)), dmin = f16f((uint16_t)(hd.x >> 16));
        return dx * (d * (float)sumi - dmin * (float)summ);
    }
}

/* ======== small batches (n_tok 2..CUDA_FUSED_MAX_TOK): the row decoded once per chunk, dotted
 * with up to FNP tokens' activations read from shared memory ==================================== */

#define FNP 4 /* (pair) entries per decode of a gate/up row */

/* gate/up as dot_gu, for n <= FNP entries: xp[j] the entry's token activation (lane-major:
 * int4 k of lane l at xp[j][32 * k], words 4k..4k+3 of the lane's 32), bs[j] its 8 Q4_K
 * 32-chunk sums (abs_ + 16 * block + 8 * hf), dx[j] its block scale; out[j] the lane's share. */
template <int T>
__device__ __forceinline__ void dot_gu_m(const unsigned char *row, const int4 *const (&xp)[FNP],
                                         const int16_t *const (&bs)[FNP], const float (&dx)[FNP], int n,
                                         int lane, const unsigned char *tab, float (&out)[FNP])
{
    const int b = lane >> 1, hf = lane & 1;
    int sumi[FNP];
#pragma unroll
    for (int j = 0; j < FNP; j++)
        sumi[j] = 0;
    if constexpr (T == WT_IQ2_XXS) {
        const unsigned a = 66u * b + 2u + 32u * hf, sh = (a & 3u) * 8u;
        const uint32_t *w = (const uint32_t *)(row + (a & ~3u));
        uint32_t q[9];
#pragma unroll
        for (int i = 0; i < 8; i++)
            q[i] = w[i];
        q[8] = sh ? w[8] : 0u;
        const float dw = f16f(*(const uint16_t *)(row + 66 * b));
        const uint32_t L = 4u * (uint32_t)lane | (128u + 4u * (uint32_t)lane) << 8;
        const uint32_t tabs = saddr(tab);
        const uint32_t pos = 0x002B1908u | L << 24;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t q0 = __funnelshift_r(q[2 * c], q[2 * c + 1], sh);
            const uint32_t q1 = __funnelshift_r(q[2 * c + 1], q[2 * c + 2], sh);
            uint32_t lo[4], hi[4];
#pragma unroll
            for (int g = 0; g < 4; g++) {
                const uint32_t ga = prmt(q0, L, 0x7604u | (uint32_t)g << 4);
                const uint32_t sa = prmt(q1 << g, L, 0x7605u | (uint32_t)g << 4);
                const uint32_t sel = lds32(tabs + ga) | lds32(tabs + sa);
                lo[g] = prmt(pos, 0x00D5E7F8u, sel);
                hi[g] = prmt(pos, 0x00D5E7F8u, sel >> 16);
            }
            const int sg = 2 * (int)(q1 >> 28) + 1;
#pragma unroll
            for (int j = 0; j < FNP; j++) {
                if (j >= n)
                    break;
                const int4 x0 = xp[j][32 * (2 * c)], x1 = xp[j][32 * (2 * c + 1)];
                int acc = __dp4a((int)lo[0], x0.x, 0);
                acc = __dp4a((int)hi[0], x0.y, acc);
                acc = __dp4a((int)lo[1], x0.z, acc);
                acc = __dp4a((int)hi[1], x0.w, acc);
                acc = __dp4a((int)lo[2], x1.x, acc);
                acc = __dp4a((int)hi[2], x1.y, acc);
                acc = __dp4a((int)lo[3], x1.z, acc);
                acc = __dp4a((int)hi[3], x1.w, acc);
                sumi[j] += acc * sg;
            }
        }
        (void)bs;
#pragma unroll
        for (int j = 0; j < FNP; j++)
            out[j] = dx[j] * (0.125f * dw) * (float)sumi[j];
    } else { /* Q4_K */
        const unsigned char *blk = row + 144 * b;
        const uint4 hd = *(const uint4 *)blk;
        const uint4 *qv = (const uint4 *)(blk + 16 + 64 * hf);
        uint32_t sc4, m4;
        q4k_scales4(hd, hf != 0, &sc4, &m4);
        int summ[FNP];
#pragma unroll
        for (int j = 0; j < FNP; j++)
            summ[j] = 0;
#pragma unroll
        for (int cp = 0; cp < 2; cp++) {
            const uint4 v0 = qv[2 * cp], v1 = qv[2 * cp + 1];
            const uint32_t v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
            for (int j = 0; j < FNP; j++) {
                if (j >= n)
                    break;
                int xw[16];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int4 t = xp[j][32 * (4 * cp + k)];
                    xw[4 * k] = t.x, xw[4 * k + 1] = t.y, xw[4 * k + 2] = t.z, xw[4 * k + 3] = t.w;
                }
                int slo = 0, shi = 0;
#pragma unroll
                for (int w = 0; w < 8; w++) {
                    slo = __dp4a((int)(v[w] & 0x0F0F0F0Fu), xw[w], slo);
                    shi = __dp4a((int)((v[w] >> 4) & 0x0F0F0F0Fu), xw[8 + w], shi);
                }
                const int16_t *s = bs[j] + 4 * cp;
                sumi[j] += (int)byte_of(sc4, 2 * cp) * slo + (int)byte_of(sc4, 2 * cp + 1) * shi;
                summ[j] += (int)byte_of(m4, 2 * cp) * ((int)s[0] + (int)s[1]) +
                           (int)byte_of(m4, 2 * cp + 1) * ((int)s[2] + (int)s[3]);
            }
        }
        const float d = f16f((uint16_t)(hd.x & 0xffffu)), dmin = f16f((uint16_t)(hd.x >> 16));
        (void)tab;
#pragma unroll
        for (int j = 0; j < FNP; j++)
            out[j] = dx[j] * (d * (float)sumi[j] - dmin * (float)summ[j]);
    }
}

/* dot_gu_m for the gate row rg and the up row ru at once: each activation chunk is read from
 * shared memory once for both rows (og: gate, ou: up). */
template <int T>
__device__ __forceinline__ void dot_gu2_m(const unsigned char *rg, const unsigned char *ru,
                                          const int4 *x0p, const int16_t *bs0, const int (&tk)[FNP],
                                          const float (&dx)[FNP], int n, int lane, const unsigned char *tab,
                                          float (&og)[FNP], float (&ou)[FNP])
{
    const int b = lane >> 1, hf = lane & 1;
    int sg_[FNP], su_[FNP];
#pragma unroll
    for (int j = 0; j < FNP; j++)
        sg_[j] = su_[j] = 0;
    if constexpr (T == WT_IQ2_XXS) {
        const unsigned a = 66u * b + 2u + 32u * hf, sh = (a & 3u) * 8u;
        const uint32_t *wg = (const uint32_t *)(rg + (a & ~3u)), *wu = (const uint32_t *)(ru + (a & ~3u));
        const float dwg = f16f(*(const uint16_t *)(rg + 66 * b)), dwu = f16f(*(const uint16_t *)(ru + 66 * b));
        const uint32_t L = 4u * (uint32_t)lane | (128u + 4u * (uint32_t)lane) << 8;
        const uint32_t tabs = saddr(tab);
        const uint32_t pos = 0x002B1908u | L << 24;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            uint32_t lo[2][4], hi[2][4];
            int sgn[2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                /* the chunk's 3 words, read here (fewer live registers than all 9) */
                const uint32_t *w = m ? wu : wg;
                const uint32_t w0 = w[2 * c], w1 = w[2 * c + 1], w2 = c < 3 || sh ? w[2 * c + 2] : 0u;
                const uint32_t q0 = __funnelshift_r(w0, w1, sh);
                const uint32_t q1 = __funnelshift_r(w1, w2, sh);
#pragma unroll
                for (int g = 0; g < 4; g++) {
                    const uint32_t ga = prmt(q0, L, 0x7604u | (uint32_t)g << 4);
                    const uint32_t sa = prmt(q1 << g, L, 0x7605u | (uint32_t)g << 4);
                    const uint32_t sel = lds32(tabs + ga) | lds32(tabs + sa);
                    lo[m][g] = prmt(pos, 0x00D5E7F8u, sel);
                    hi[m][g] = prmt(pos, 0x00D5E7F8u, sel >> 16);
                }
                sgn[m] = 2 * (int)(q1 >> 28) + 1;
            }
#pragma unroll
            for (int j = 0; j < FNP; j++) {
                if (j >= n)
                    continue;
                const int4 x0 = (x0p + 256 * tk[j])[32 * (2 * c)], x1 = (x0p + 256 * tk[j])[32 * (2 * c + 1)];
                const int xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
                int ag = 0, au = 0;
#pragma unroll
                for (int g = 0; g < 4; g++) {
                    ag = __dp4a((int)lo[0][g], xw[2 * g], ag);
                    ag = __dp4a((int)hi[0][g], xw[2 * g + 1], ag);
                    au = __dp4a((int)lo[1][g], xw[2 * g], au);
                    au = __dp4a((int)hi[1][g], xw[2 * g + 1], au);
                }
                sg_[j] += ag * sgn[0];
                su_[j] += au * sgn[1];
            }
        }
#pragma unroll
        for (int j = 0; j < FNP; j++) {
            og[j] = dx[j] * (0.125f * dwg) * (float)sg_[j];
            ou[j] = dx[j] * (0.125f * dwu) * (float)su_[j];
        }
    } else { /* Q4_K */
        const unsigned char *bg = rg + 144 * b, *bu = ru + 144 * b;
        const uint4 hg = *(const uint4 *)bg, hu = *(const uint4 *)bu;
        const uint4 *qvg = (const uint4 *)(bg + 16 + 64 * hf), *qvu = (const uint4 *)(bu + 16 + 64 * hf);
        uint32_t scg, mg, scu, mu;
        q4k_scales4(hg, hf != 0, &scg, &mg);
        q4k_scales4(hu, hf != 0, &scu, &mu);
        int mg_[FNP], mu_[FNP];
#pragma unroll
        for (int j = 0; j < FNP; j++)
            mg_[j] = mu_[j] = 0;
#pragma unroll
        for (int cp = 0; cp < 2; cp++) {
            const uint4 g0 = qvg[2 * cp], g1 = qvg[2 * cp + 1], u0 = qvu[2 * cp], u1 = qvu[2 * cp + 1];
            const uint32_t vg[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
            const uint32_t vu[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
#pragma unroll
            for (int j = 0; j < FNP; j++) {
                if (j >= n)
                    continue;
                int xw[16];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int4 t = (x0p + 256 * tk[j])[32 * (4 * cp + k)];
                    xw[4 * k] = t.x, xw[4 * k + 1] = t.y, xw[4 * k + 2] = t.z, xw[4 * k + 3] = t.w;
                }
                int glo = 0, ghi = 0, ulo = 0, uhi = 0;
#pragma unroll
                for (int w = 0; w < 8; w++) {
                    glo = __dp4a((int)(vg[w] & 0x0F0F0F0Fu), xw[w], glo);
                    ghi = __dp4a((int)((vg[w] >> 4) & 0x0F0F0F0Fu), xw[8 + w], ghi);
                    ulo = __dp4a((int)(vu[w] & 0x0F0F0F0Fu), xw[w], ulo);
                    uhi = __dp4a((int)((vu[w] >> 4) & 0x0F0F0F0Fu), xw[8 + w], uhi);
                }
                const int16_t *s = bs0 + 256 * tk[j] + 4 * cp;
                const int x0 = (int)s[0] + (int)s[1], x1 = (int)s[2] + (int)s[3];
                sg_[j] += (int)byte_of(scg, 2 * cp) * glo + (int)byte_of(scg, 2 * cp + 1) * ghi;
                su_[j] += (int)byte_of(scu, 2 * cp) * ulo + (int)byte_of(scu, 2 * cp + 1) * uhi;
                mg_[j] += (int)byte_of(mg, 2 * cp) * x0 + (int)byte_of(mg, 2 * cp + 1) * x1;
                mu_[j] += (int)byte_of(mu, 2 * cp) * x0 + (int)byte_of(mu, 2 * cp + 1) * x1;
            }
        }
        const float dg = f16f((uint16_t)(hg.x & 0xffffu)), dming = f16f((uint16_t)(hg.x >> 16));
        const float du = f16f((uint16_t)(hu.x & 0xffffu)), dminu = f16f((uint16_t)(hu.x >> 16));
        (void)tab;
#pragma unroll
        for (int j = 0; j < FNP; j++) {
            og[j] = dx[j] * (dg * (float)sg_[j] - dming * (float)mg_[j]);
            ou[j] = dx[j] * (du * (float)su_[j] - dminu * (float)mu_[j]);
        }
    }
}

/* The same as issue(), by the 32 lanes of the producer warp with 16-byte cp.async; each lane
 * then arrives on the slot's barrier when its copies are done (barrier count 32). */
__device__ __forceinline__ void cp16_span(unsigned char *dst, const unsigned char *src, unsigned n, int lane)
{
    for (unsigned o = 16u * lane; o < n; o += 512u)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr(dst + o)), "l"(src + o) : "memory");
}

__device__ __forceinline__ void issue_lanes(const fused_args &a, const int4 *items, int i, unsigned char *ring,
                                            uint64_t *bars, int lane, const int *de)
{
    const int4 it = items[i];
    const int s = i % a.p.n_slots;
    unsigned char *dst = ring + (size_t)s * a.p.slot_bytes;
    if (it.x == 0) {
        const int e = de ? de[it.y] : a.ids[it.y];
        if (e >= 0 && e < a.n_expert) {
            const unsigned n = (unsigned)(it.w * a.gate.row_bytes);
            cp16_span(dst, a.gate.data + (size_t)e * a.gate.expert_bytes + (size_t)it.z * a.gate.row_bytes, n, lane);
            cp16_span(dst + n, a.up.data + (size_t)e * a.up.expert_bytes + (size_t)it.z * a.up.row_bytes, n, lane);
        }
    } else {
        const int nk = it.x >> 8;
        const unsigned n = (unsigned)(it.w * a.down.row_bytes);
        for (int kk = 0; kk < nk; kk++) {
            const int ek = de ? de[it.y + kk] : a.ids[it.y + kk];
            if (ek >= 0 && ek < a.n_expert)
                cp16_span(dst + kk * n, a.down.data + (size_t)ek * a.down.expert_bytes + (size_t)it.z * a.down.row_bytes,
                          n, lane);
        }
    }
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(saddr(&bars[s])) : "memory");
}

/* ======== the kernel ==================================================================== */

/* Item: x = kind (0 gate/up; 1 down, with the expert count << 8), y = (first) pair (batch 1)
 * or distinct expert (de != NULL: de[y] its id, -1 for bad ids), z = first row, w = rows. A
 * down item holds the same rows of experts y .. y+count-1, one after another. */
__device__ __forceinline__ void issue(const fused_args &a, const int4 *items, int i, unsigned char *ring,
                                      uint64_t *bars, const int *de)
{
    const int4 it = items[i];
    const int s = i % a.p.n_slots;
    unsigned char *dst = ring + (size_t)s * a.p.slot_bytes;
    const int e = de ? de[it.y] : a.ids[it.y];
    const bool ok = e >= 0 && e < a.n_expert;
    if (it.x == 0) {
        const unsigned n = (unsigned)(it.w * a.gate.row_bytes);
        mbar_expect_tx(&bars[s], ok ? 2 * n : 0);
        if (ok) {
            bulk_copy(dst, a.gate.data + (size_t)e * a.gate.expert_bytes + (size_t)it.z * a.gate.row_bytes, n, &bars[s]);
            bulk_copy(dst + n, a.up.data + (size_t)e * a.up.expert_bytes + (size_t)it.z * a.up.row_bytes, n, &bars[s]);
        }
    } else {
        const int nk = it.x >> 8;
        const unsigned n = (unsigned)(it.w * a.down.row_bytes);
        unsigned tx = 0;
        for (int kk = 0; kk < nk; kk++) {
            const int ek = de ? de[it.y + kk] : a.ids[it.y + kk];
            tx += ek >= 0 && ek < a.n_expert ? n : 0;
        }
        mbar_expect_tx(&bars[s], tx);
        for (int kk = 0; kk < nk; kk++) {
            const int ek = de ? de[it.y + kk] : a.ids[it.y + kk];
            if (ek >= 0 && ek < a.n_expert)
                bulk_copy(dst + kk * n, a.down.data + (size_t)ek * a.down.expert_bytes + (size_t)it.z * a.down.row_bytes,
                          n, &bars[s]);
        }
    }
    (void)ok;
}

/* Named barrier of the FW consumer warps (the producer warp never joins). */
__device__ __forceinline__ void consumers_sync()
{
    asm volatile("bar.sync 1, %0;" ::"n"(FT) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *b)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(saddr(b)) : "memory");
}

/* MB: a small batch (n_tok >= 2): the ring streams the distinct experts' rows; see the
 * lists below. !MB: batch 1, the pairs' rows, the token's activation in registers. */
template <int TG, int TD, bool MB>
__global__ void __launch_bounds__(FT + 32, 1) k_fused(const __grid_constant__ fused_args a)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (a.mode == 2) /* bench diagnostics: the launch alone */
        return;
    unsigned long long *tr = a.trace ? a.trace + (size_t)blockIdx.x * F_TRACE : NULL;
#define STAMP(k)                                                                              \
    do {                                                                                      \
        if (tr && threadIdx.x == 0)                                                           \
            tr[k] = clock64();                                                                \
    } while (0)
    if (tr && threadIdx.x == 0) {
        unsigned long long g;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
        tr[0] = g;
    }
    STAMP(1);
    extern __shared__ __align__(128) unsigned char sm[];
    uint64_t *full = (uint64_t *)sm, *empty = full + F_MAX_SLOTS, *ready = empty + F_MAX_SLOTS;
    int4 *items = (int4 *)(sm + F_OFF_ITEMS);
    int8_t *aq = (int8_t *)(sm + a.p.off_act);
    const int nblk_act = (a.p.off_tab - a.p.off_act) / (QUANT_QK_K + 4 + 32);
    float *ad = (float *)(aq + (size_t)nblk_act * QUANT_QK_K);
    int16_t *abs_ = (int16_t *)(ad + nblk_act);
    unsigned char *tab = sm + a.p.off_tab;
    unsigned char *ring = sm + a.p.off_ring;
    __shared__ int s_n[3];
    /* MB: the distinct experts of the batch, in order of first use: key[p] = the id of pair p
     * (-1 if out of range), de[d] = the id of distinct expert d, its pairs ep[es[d] ..
     * es[d+1]) (ascending, so by token) */
    int *s_key = (int *)(sm + F_OFF_LISTS), *s_de = s_key + F_MB_PAIRS, *s_es = s_de + F_MB_PAIRS,
        *s_ep = s_es + F_MB_PAIRS + 4;
    const int *de = MB ? s_de : nullptr;
    const int tid = threadIdx.x, lane = tid & 31, wp = tid >> 5;
    const int G = gridDim.x, B = blockIdx.x, S = a.p.n_slots;
    const int n_ff = a.gate.n_out, n_out = a.down.n_out;

    /* the mbarriers; the consumers' first global loads (h, IQ2 tables) go out before any
     * bulk copy, so they do not queue behind the weight stream */
    if (tid < 2 * S)
        mbar_init(tid < S ? &full[tid] : &empty[tid - S], tid < S ? (CUDA_FUSED_CP_ASYNC ? 32 : 1) : FW);
    if (tid == 2 * S)
        mbar_init(ready, 32); /* every producer lane arrives: its own list writes released */
    if (tid <= 2 * S)
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    const int nbx = a.gate.nb; /* 16 (the plan's condition): one block per consumer warp */
    float hv[8];
    uint64_t tg = 0, ts = 0;
    if (wp < FW) {
        if constexpr (!MB)
            load8<false>(a.h + (wp < nbx ? wp : 0) * QUANT_QK_K, lane, hv);
        if constexpr (TG == WT_IQ2_XXS) { /* thread t: table row t / 2 (FT = 512) */
            tg = __ldg(a.grid + (tid >> 1));
            ts = __ldg(a.signmask + ((tid >> 1) & 127));
        }
    }
    __syncthreads();

    /* the producer warp: builds the block's items (the first S issued as soon as built), then
     * item i into slot i % S once every consumer warp is done with item i - S */
    if (wp == FW) {
        int nu = a.n_used; /* gate/up and down item units: pairs, or (MB) distinct experts */
        if constexpr (MB) {
            /* the lists by the whole warp: pair p = lane + 32h (np <= 64) */
            const int np = a.n_tok * a.n_used;
            for (int p = lane; p < np; p += 32) {
                const int e = a.ids[p];
                s_key[p] = e >= 0 && e < a.n_expert ? e : -1;
            }
            __syncwarp();
            int rk[2], fq[2], cnt[2];
            unsigned fmask[2];
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
                const int p = lane + 32 * h2;
                rk[h2] = 0, fq[h2] = p, cnt[h2] = 0;
                if (p < np) {
                    const int key = s_key[p];
                    for (int q = 0; q < np; q++)
                        if (s_key[q] == key) {
                            if (q < p && rk[h2]++ == 0)
                                fq[h2] = q;
                            cnt[h2]++;
                        }
                }
                fmask[h2] = __ballot_sync(0xffffffffu, p < np && rk[h2] == 0);
            }
            const unsigned long long fm = (unsigned long long)fmask[0] | (unsigned long long)fmask[1] << 32;
            int dd[2];
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
                const int p = lane + 32 * h2;
                dd[h2] = __popcll(fm & ((1ull << fq[h2]) - 1ull));
                if (p < np && rk[h2] == 0)
                    s_de[dd[h2]] = s_key[p], s_es[dd[h2] + 1] = cnt[h2];
            }
            nu = __popcll(fm);
            __syncwarp();
            /* es: the prefix sums of the counts (a warp scan over d = lane, lane + 32) */
            int c0 = lane < nu ? s_es[lane + 1] : 0, c1 = lane + 32 < nu ? s_es[lane + 33] : 0;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int u0 = __shfl_up_sync(0xffffffffu, c0, o), u1 = __shfl_up_sync(0xffffffffu, c1, o);
                if (lane >= o)
                    c0 += u0, c1 += u1;
            }
            c1 += __shfl_sync(0xffffffffu, c0, 31);
            __syncwarp();
            if (lane < nu)
                s_es[lane + 1] = c0;
            if (lane + 32 < nu)
                s_es[lane + 33] = c1;
            if (lane == 0)
                s_es[0] = 0;
            __syncwarp();
#pragma unroll
            for (int h2 = 0; h2 < 2; h2++) {
                const int p = lane + 32 * h2;
                if (p < np)
                    s_ep[s_es[dd[h2]] + rk[h2]] = p;
            }
            __syncwarp();
        }
        if (lane == 0) {
            int n = 0;
            const int Lt = nu * n_ff;
            const int lo = (int)((long long)B * Lt / G), hi = (int)((long long)(B + 1) * Lt / G);
            for (int r = lo; r < hi;) {
                const int p = r / n_ff, row = r - p * n_ff;
                const int m = min(min(a.p.gu_rows, hi - r), n_ff - row);
                items[n] = make_int4(0, p, row, m);
                if (!CUDA_FUSED_CP_ASYNC && n < S)
                    issue(a, items, n, ring, full, de);
                n++;
                r += m;
            }
            s_n[0] = n;
            s_n[2] = nu;
            const int dlo = (int)((long long)B * n_out / G), dhi = (int)((long long)(B + 1) * n_out / G);
            for (int r = dlo; r < dhi;) {
                const int m = min(a.p.dn_rows, dhi - r);
                for (int k = 0; k < nu; k += a.p.dn_experts) {
                    items[n] = make_int4(1 | min(a.p.dn_experts, nu - k) << 8, k, r, m);
                    if (!CUDA_FUSED_CP_ASYNC && n < S)
                        issue(a, items, n, ring, full, de);
                    n++;
                }
                r += m;
            }
            s_n[1] = n;
        }
        mbar_arrive(ready); /* release by each lane: its list entries; lane 0's the items and counts */
        __syncwarp();
        const int n = s_n[1];
        for (int i = CUDA_FUSED_CP_ASYNC ? 0 : S; i < n; i++) {
            const int s = i % S;
            if (i >= S)
                mbar_wait(&empty[s], (unsigned)(i / S - 1) & 1u);
            if (CUDA_FUSED_CP_ASYNC)
                issue_lanes(a, items, i, ring, full, lane, de);
            else if (lane == 0)
                issue(a, items, i, ring, full, de);
        }
        return;
    }
    STAMP(2);

    /* the token's Q8_K activation and the IQ2 tables (loaded above) into shared memory; MB:
     * every token's, lane-major for the gate/up lanes (int4 k of lane l = 2b + hf of token t
     * at (8t + k) * 32 + l: bytes 128 hf + 16 k of block b), block t * nbx + b */
    if constexpr (!MB) {
        if (wp < nbx)
            quant_block_warp(hv, aq + wp * QUANT_QK_K + 8 * lane, ad + wp, abs_ + 16 * wp, lane);
    } else {
        for (int qb = wp; qb < a.n_tok * nbx; qb += FW) {
            const int t = qb / nbx, b = qb - t * nbx;
            float v[8];
            load8<false>(a.h + (size_t)t * a.ldh + b * QUANT_QK_K, lane, v);
            int8_t *dst = aq + ((8 * t + ((lane & 15) >> 1)) * 32 + 2 * b + (lane >> 4)) * 16 + 8 * (lane & 1);
            quant_block_warp(v, dst, ad + qb, abs_ + 16 * qb, lane);
        }
    }
    if constexpr (TG == WT_IQ2_XXS) {
        /* row r = tid / 2: nibble k of the grid word = element k's byte 8, 25, 43 as 0, 1, 2;
         * of the sign word, 4 if element k is negative; 32 copies of each (copy = lane), this
         * thread the 16 copies 16 * (tid & 1) .. of both (16-byte stores, rotated per lane
         * pair: no bank conflicts) */
        uint32_t gn = 0, sn = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            gn |= (uint32_t)((tg >> (8 * k + 4)) & 3u) << (4 * k);
            sn |= (uint32_t)((ts >> (8 * k)) & 4u) << (4 * k);
        }
        uint4 *trow = (uint4 *)(tab + (size_t)(tid >> 1) * 256) + 4 * (tid & 1);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int kk = (k + (lane >> 1)) & 3;
            trow[kk] = make_uint4(gn, gn, gn, gn);
            trow[8 + kk] = make_uint4(sn, sn, sn, sn);
        }
    }
    consumers_sync();
    int x[32], xs[4];
    float dx;
    if constexpr (!MB) {
        const int b = lane >> 1, hf = lane & 1;
        const int4 *x4 = (const int4 *)(aq + b * QUANT_QK_K + 128 * hf);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int4 t = x4[i];
            x[4 * i] = t.x, x[4 * i + 1] = t.y, x[4 * i + 2] = t.z, x[4 * i + 3] = t.w;
        }
#pragma unroll
        for (int c = 0; c < 4; c++)
            xs[c] = abs_[16 * b + 8 * hf + 2 * c] + abs_[16 * b + 8 * hf + 2 * c + 1];
        dx = ad[b];
    }
    mbar_wait(ready, 0);
    const int n_gu = s_n[0], n_items = s_n[1], nu = s_n[2];

    /* gate/up + SwiGLU -> mid: row pair c (counted over the block's items) is warp c % FW's */
    const size_t rbg = a.gate.row_bytes;
    for (int i = 0, c0 = 0; i < n_gu; i++) {
        const int4 it = items[i];
        const int s = i % S, m = it.w;
        const int e = MB ? s_de[it.y] : a.ids[it.y];
        const bool ok = e >= 0 && e < a.n_expert;
        mbar_wait(&full[s], (unsigned)(i / S) & 1u);
        if (i == 0)
            STAMP(3);
        const unsigned char *slot = ring + (size_t)s * a.p.slot_bytes;
        if constexpr (MB) {
            const int e0 = s_es[it.y], e1 = s_es[it.y + 1], b = lane >> 1, hf = lane & 1;
            for (int r = (wp - c0 % FW + FW) % FW; r < m; r += FW)
                for (int en = e0; en < e1; en += FNP) {
                    const int n = min(FNP, e1 - en);
                    int pr[FNP], tk[FNP];
                    const int4 *xp[FNP];
                    const int16_t *bsp[FNP];
                    float dxv[FNP], g[FNP], u[FNP];
#pragma unroll
                    for (int j = 0; j < FNP; j++) {
                        const int p = s_ep[en + min(j, n - 1)], t = p / a.n_used, blk = t * nbx + b;
                        pr[j] = p, tk[j] = t;
                        xp[j] = (const int4 *)aq + 8 * 32 * t + lane;
                        bsp[j] = abs_ + 16 * blk + 8 * hf;
                        dxv[j] = ad[blk];
                        g[j] = u[j] = 0.0f;
                    }
                    if (ok && a.mode == 0) {
#if CUDA_FUSED_GU2
                        dot_gu2_m<TG>(slot + r * rbg, slot + (m + r) * rbg, (const int4 *)aq + lane,
                                      abs_ + 16 * b + 8 * hf, tk, dxv, n, lane, tab, g, u);
#else
                        dot_gu_m<TG>(slot + r * rbg, xp, bsp, dxv, n, lane, tab, g);
                        dot_gu_m<TG>(slot + (m + r) * rbg, xp, bsp, dxv, n, lane, tab, u);
#endif
                    }
#pragma unroll
                    for (int j = 0; j < FNP; j++) {
                        if (j >= n)
                            break;
                        float v = 0.0f;
                        if (ok && a.mode == 0)
                            v = moe_swiglu(warp_sum(g[j]), warp_sum(u[j]), a.clamp, a.wts[pr[j]]);
                        if (lane == 0)
                            a.mid[(size_t)pr[j] * n_ff + it.z + r] = v;
                    }
                }
        } else
        for (int r = (wp - c0 % FW + FW) % FW; r < m; r += FW) {
            float v = 0.0f;
            if (ok && a.mode == 0) {
                const float g = dot_gu<TG>(slot + r * rbg, x, xs, dx, lane, tab);
                const float u = dot_gu<TG>(slot + (m + r) * rbg, x, xs, dx, lane, tab);
                const float gs = warp_sum(g), us = warp_sum(u);
                v = moe_swiglu(gs, us, a.clamp, a.wts[it.y]);
            }
            if (lane == 0)
                a.mid[(size_t)it.y * n_ff + it.z + r] = v;
        }
        __syncwarp();
        if (lane == 0)
            mbar_arrive(&empty[s]);
        if (!ok && tid == 0)
            atomicExch(a.err, 1);
        c0 += m;
    }

    /* grid barrier: every block's mids written */
    STAMP(4);
    consumers_sync();
    if (tid == 0) { /* after the CTA barrier: release our mids, acquire everyone's */
        unsigned long long old;
        asm volatile("atom.add.release.gpu.global.u64 %0, [%1], 1;" : "=l"(old) : "l"(a.bar) : "memory");
        const unsigned long long target = (old / (unsigned)G + 1) * (unsigned)G;
        while ((long long)(ld_acquire(a.bar) - target) < 0)
            ;
    }
    consumers_sync();
    STAMP(5);
    /* all mids to Q8_K (each block all of them: n_used x n_ff/256 blocks, at most 4 per warp),
     * every load of the warp in flight at once. The qs go lane-major for the down lanes: the
     * 16 bytes j (0..3) of down lane l (= 4b + q: bytes 64q + 16j of block b) of pair k at
     * ((4k + j) * 32 + l) * 16, so the warp's 16-byte loads are contiguous. */
    for (int q0 = wp, nq = (MB ? a.n_tok : 1) * a.n_used * a.down.nb; q0 < nq; q0 += 4 * FW) {
        float v[4][8];
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (q0 + j * FW < nq)
                load8<true>(a.mid + (size_t)(q0 + j * FW) * QUANT_QK_K, lane, v[j]);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int qb = q0 + j * FW;
            if (qb < nq) {
                const int k = qb / a.down.nb, b = qb - k * a.down.nb, u = lane >> 1;
                int8_t *dst = aq + ((4 * k + (u & 3)) * 32 + 4 * b + (u >> 2)) * 16 + 8 * (lane & 1);
                quant_block_warp(v[j], dst, ad + qb, abs_ + 16 * qb, lane);
            }
        }
    }
    consumers_sync();
    STAMP(6);

    /* down, summed over the experts per row group: rows wp and wp + FW of each group */
    const size_t rbd = a.down.row_bytes;
    if constexpr (MB) {
        /* per token, the lane's partial sums of rows wp and wp + FW over the group's experts */
        float t0[CUDA_FUSED_MAX_TOK], t1[CUDA_FUSED_MAX_TOK];
#pragma unroll
        for (int j = 0; j < CUDA_FUSED_MAX_TOK; j++)
            t0[j] = t1[j] = 0.0f;
        for (int i = n_gu; i < n_items; i++) {
            const int4 it = items[i];
            const int s = i % S, nk = it.x >> 8, m = it.w;
            mbar_wait(&full[s], (unsigned)(i / S) & 1u);
            const unsigned char *slot = ring + (size_t)s * a.p.slot_bytes;
            if (a.mode == 0 && wp < m) {
                for (int kx = 0; kx < nk; kx++) {
                    const int d = it.y + kx;
                    if (s_de[d] < 0) /* a bad id: no rows, counts 0 */
                        continue;
                    const unsigned char *rows = slot + (size_t)kx * m * rbd;
                    for (int en = s_es[d]; en < s_es[d + 1]; en++) {
                        const int k = s_ep[en], t = k / a.n_used;
                        const int b = lane >> 2, q = lane & 3, xb = k * a.down.nb + b;
                        int xd[16], bsum[4];
                        const int4 *x4 = (const int4 *)(aq + (size_t)k * 4 * 32 * 16) + lane;
#pragma unroll
                        for (int j = 0; j < 4; j++) {
                            const int4 tt = x4[32 * j];
                            xd[4 * j] = tt.x, xd[4 * j + 1] = tt.y, xd[4 * j + 2] = tt.z, xd[4 * j + 3] = tt.w;
                        }
                        const uint2 bb = *(const uint2 *)(abs_ + 16 * xb + 4 * q);
                        bsum[0] = (int16_t)(bb.x & 0xffffu), bsum[1] = (int16_t)(bb.x >> 16);
                        bsum[2] = (int16_t)(bb.y & 0xffffu), bsum[3] = (int16_t)(bb.y >> 16);
                        const float dxd = ad[xb];
                        const float v0 = dot_dn<TD>(rows + wp * rbd, xd, bsum, dxd, lane);
                        const float v1 = wp + FW < m ? dot_dn<TD>(rows + (wp + FW) * rbd, xd, bsum, dxd, lane) : 0.0f;
#pragma unroll
                        for (int j = 0; j < CUDA_FUSED_MAX_TOK; j++)
                            if (j == t)
                                t0[j] += v0, t1[j] += v1;
                    }
                }
            }
            __syncwarp();
            if (lane == 0)
                mbar_arrive(&empty[s]);
            if (it.y + nk == nu) {
#pragma unroll
                for (int j = 0; j < CUDA_FUSED_MAX_TOK; j++) {
                    if (j >= a.n_tok)
                        break;
                    const float v0 = warp_sum(t0[j]), v1 = warp_sum(t1[j]);
                    if (lane == 0 && a.mode == 0) {
                        float *yt = a.y + (size_t)j * a.ldy + it.z;
                        if (wp < m)
                            yt[wp] = a.accumulate ? yt[wp] + v0 : v0;
                        if (wp + FW < m)
                            yt[wp + FW] = a.accumulate ? yt[wp + FW] + v1 : v1;
                    }
                    t0[j] = t1[j] = 0.0f;
                }
            }
        }
    } else {
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int i = n_gu; i < n_items; i++) {
        const int4 it = items[i];
        const int s = i % S, nk = it.x >> 8, m = it.w;
        mbar_wait(&full[s], (unsigned)(i / S) & 1u);
        const unsigned char *slot = ring + (size_t)s * a.p.slot_bytes;
        if (a.mode == 0 && wp < m) {
            /* two experts at a time (independent chains); a missing or bad one counts 0 */
            for (int kk = 0; kk < nk; kk += 2) {
                float v[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
                bool use[2] = {false, false};
                const int nh = kk + 1 < nk ? 2 : 1;
#pragma unroll
                for (int h2 = 0; h2 < 2; h2++) {
                    if (h2 >= nh)
                        break;
                    const int kx = min(kk + h2, nk - 1), k = it.y + kx, e = a.ids[k];
                    use[h2] = kk + h2 < nk && e >= 0 && e < a.n_expert;
                    const int b = lane >> 2, q = lane & 3, xb = k * a.down.nb + b;
                    int xd[16], bsum[4];
                    const int4 *x4 = (const int4 *)(aq + (size_t)k * 4 * 32 * 16) + lane;
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const int4 t = x4[32 * j];
                        xd[4 * j] = t.x, xd[4 * j + 1] = t.y, xd[4 * j + 2] = t.z, xd[4 * j + 3] = t.w;
                    }
                    const uint2 bb = *(const uint2 *)(abs_ + 16 * xb + 4 * q);
                    bsum[0] = (int16_t)(bb.x & 0xffffu), bsum[1] = (int16_t)(bb.x >> 16);
                    bsum[2] = (int16_t)(bb.y & 0xffffu), bsum[3] = (int16_t)(bb.y >> 16);
                    const float dxd = ad[xb];
                    const unsigned char *rows = slot + (size_t)kx * m * rbd;
                    v[h2][0] = dot_dn<TD>(rows + wp * rbd, xd, bsum, dxd, lane);
                    v[h2][1] = wp + FW < m ? dot_dn<TD>(rows + (wp + FW) * rbd, xd, bsum, dxd, lane) : 0.0f;
                }
                acc0 += (use[0] ? v[0][0] : 0.0f) + (use[1] ? v[1][0] : 0.0f);
                acc1 += (use[0] ? v[0][1] : 0.0f) + (use[1] ? v[1][1] : 0.0f);
            }
        }
        __syncwarp();
        if (lane == 0)
            mbar_arrive(&empty[s]);
        if (it.y + nk == a.n_used) {
            const float v0 = warp_sum(acc0), v1 = warp_sum(acc1);
            if (lane == 0 && a.mode == 0) {
                if (wp < m) {
                    float *o = a.y + it.z + wp;
                    *o = a.accumulate ? *o + v0 : v0;
                }
                if (wp + FW < m) {
                    float *o = a.y + it.z + wp + FW;
                    *o = a.accumulate ? *o + v1 : v1;
                }
            }
            acc0 = acc1 = 0.0f;
        }
    }
    }
    (void)nu;
    STAMP(7);
#undef STAMP
#else
    (void)a;
#endif
}

/* ======== host ========================================================================== */

static size_t al128(size_t n) { return (n + 127) / 128 * 128; }

/* The plan with gate/up items of gr rows (of each matrix); false if it does not fit. */
static bool fused_plan_rows(fused_plan *p, int gr, int rbg, int rbd, int tg, const moe_wt *down,
                            const moe_wt *gate, int n_tok, int nu, int n_sm, int smem_optin, int max_items)
{
    p->gu_rows = gr;
    if (p->gu_rows < 1)
        return false;
    p->slot_bytes = (int)al128((size_t)2 * p->gu_rows * rbg);
    /* down rows per group: the choice that fills the slots best (fewest items per block) */
    const int drows = (down->n_out + n_sm - 1) / n_sm;
    int best = 0;
    for (int r = 2 * FW; r >= 4; r /= 2) {
        const int nk = p->slot_bytes / (r * rbd) < nu ? p->slot_bytes / (r * rbd) : nu;
        if (nk < 1)
            continue;
        const int items = (drows + r - 1) / r * ((nu + nk - 1) / nk);
        if (!best || items < best)
            best = items, p->dn_rows = r, p->dn_experts = nk;
    }
    if (!best)
        return false;
    /* the activation (16 blocks a token), later the mids (8 blocks a pair) */
    const int nblk_act = 16 * n_tok > nu * 8 ? 16 * n_tok : nu * 8;
    p->off_act = n_tok > 1 ? F_FIXED_MB : F_FIXED;
    /* off_tab - off_act divides back to nblk_act in the kernel (a multiple of 8: aligned) */
    p->off_tab = p->off_act + nblk_act * (QUANT_QK_K + 4 + 32);
    p->off_ring = (int)al128((size_t)p->off_tab + (tg == WT_IQ2_XXS ? 256 * 256 : 0));
    const int room = smem_optin - 1024 - p->off_ring; /* 1 KB: the static shared memory */
    p->n_slots = room / p->slot_bytes;
    if (p->n_slots > F_MAX_SLOTS)
        p->n_slots = F_MAX_SLOTS;
    if (p->n_slots > CUDA_FUSED_MAX_SLOTS)
        p->n_slots = CUDA_FUSED_MAX_SLOTS;
    if (p->n_slots < 2)
        return false;
    p->smem = p->off_ring + p->n_slots * p->slot_bytes;
    /* items per block must fit the shared list */
    const int lt = nu * gate->n_out, rows = (lt + n_sm - 1) / n_sm;
    return (rows + p->gu_rows - 1) / p->gu_rows + rows / gate->n_out + 2 + best <= max_items;
}

bool cuda_moe_fused_plan(fused_plan *p, int tg, int td, const moe_wt *gate, const moe_wt *up,
                         const moe_wt *down, int n_tok, int n_used, int n_sm, int smem_optin)
{
    if (n_tok < 1 || n_tok > CUDA_FUSED_MAX_TOK || n_tok * n_used > F_MB_PAIRS)
        return false;
    /* item units: the pairs (batch 1) or, at most, the batch's pairs as distinct experts */
    const int nu = n_tok * n_used, max_items = n_tok > 1 ? F_MB_ITEMS : F_MAX_ITEMS;
    if ((tg != WT_IQ2_XXS && tg != WT_Q4_K) || (td != WT_Q2_K && td != WT_Q4_K))
        return false;
    if (gate->nb != 16 || gate->nb > FW || down->nb != 8 || gate->n_out != down->nb * QUANT_QK_K ||
        up->n_out != gate->n_out || n_used < 1 || n_used > 8 || n_sm < 1)
        return false;
    const moe_wt *w[3] = {gate, up, down};
    for (int i = 0; i < 3; i++)
        if (w[i]->row_bytes % 16 || w[i]->expert_bytes % 16 || (uintptr_t)w[i]->data % 16)
            return false;
    if (up->row_bytes != gate->row_bytes)
        return false;
    const int rbg = (int)gate->row_bytes, rbd = (int)down->row_bytes;
    p->n_blocks = n_sm;
    int gr = CUDA_FUSED_SLOT_TARGET / (2 * rbg);
    gr = gr > FW ? FW : gr; /* 2 rows per warp at most */
    /* batch 1: that slot size; a batch whose activations leave room for fewer than 3 slots
     * of it: halved slots (down to 4 rows) while that gives more of them */
    fused_plan ok_plan = *p;
    bool have = false;
    for (; gr >= 1; gr /= 2) {
        if (fused_plan_rows(p, gr, rbg, rbd, tg, down, gate, n_tok, nu, n_sm, smem_optin, max_items)) {
            if (!have || p->n_slots > ok_plan.n_slots)
                ok_plan = *p, have = true;
            if (p->n_slots >= 3)
                break;
        }
        if (n_tok == 1 || gr <= 4)
            break;
    }
    if (have)
        *p = ok_plan;
    return have;
}

template <int TG, int TD> static void *kfn(bool mb)
{
    return mb ? (void *)k_fused<TG, TD, true> : (void *)k_fused<TG, TD, false>;
}

static void *fused_kernel(int tg, int td, bool mb)
{
    if (tg == WT_IQ2_XXS)
        return td == WT_Q2_K ? kfn<WT_IQ2_XXS, WT_Q2_K>(mb) : kfn<WT_IQ2_XXS, WT_Q4_K>(mb);
    return td == WT_Q2_K ? kfn<WT_Q4_K, WT_Q2_K>(mb) : kfn<WT_Q4_K, WT_Q4_K>(mb);
}

cudaError_t cuda_moe_fused_prepare(int tg, int td, bool batch, int smem)
{
    return cudaFuncSetAttribute(fused_kernel(tg, td, batch), cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
}

cudaError_t cuda_moe_fused_run(int tg, int td, const fused_plan *p, const moe_wt *gate,
                               const moe_wt *up, const moe_wt *down, const uint64_t *grid,
                               const uint64_t *signmask, const float *h, long long ldh,
                               const int32_t *ids, const float *wts, int n_tok, int n_used,
                               int n_expert, float clamp, float *mid, float *y, long long ldy,
                               bool accumulate, int *err, unsigned long long *bar,
                               unsigned long long *trace, int mode, bool coop, cudaStream_t s)
{
    fused_args a;
    a.gate = *gate, a.up = *up, a.down = *down;
    a.grid = grid, a.signmask = signmask;
    a.h = h, a.ids = ids, a.wts = wts;
    a.n_tok = n_tok, a.ldh = ldh, a.ldy = ldy;
    a.n_used = n_used, a.n_expert = n_expert, a.clamp = clamp;
    a.mid = mid, a.y = y;
    a.accumulate = accumulate ? 1 : 0, a.mode = mode;
    a.err = err, a.bar = bar, a.trace = trace;
    a.p = *p;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p->n_blocks);
    cfg.blockDim = dim3(FT + 32); /* FW consumer warps and the producer warp */
    cfg.dynamicSmemBytes = (size_t)p->smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = coop ? 1 : 0;
    void *args[] = {&a};
    return cudaLaunchKernelExC(&cfg, fused_kernel(tg, td, n_tok > 1), args);
}
