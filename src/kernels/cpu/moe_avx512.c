/* moe_avx512.c — the AVX-512 variant of the routed-expert kernels (moe_kern.h): its table
 * (kernels in moe_iq2_avx512.c and moe_k_avx512.c), the CPU check for it (AVX-512
 * F/BW/VL/DQ/VNNI plus VBMI and GFNI), the SwiGLU of moe_swiglu1 on 16 lanes with the same
 * IEEE operations in the same order (so equal to the scalar one bit for bit), the Q8_K
 * quantizer of quant_act_avx512.c (byte-identical to the reference) and the token tile of
 * the mini-GEMM (one for all types). */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,f16c,fma")
#include "kernels/cpu/moe_avx512.h"
#include "kernels/cpu/quant_act.h"

int cpu_moe_avx512_supported(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return cpu_isa_supported(CPU_ISA_AVX512) && __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("gfni");
#else
    return 0;
#endif
}

/* moe_exp1 on 16 lanes. */
static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(MOE_EXP_LO)), _mm512_set1_ps(MOE_EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(MOE_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(MOE_LN2_HI))),
                                   _mm512_mul_ps(n, _mm512_set1_ps(MOE_LN2_LO)));
    __m512 p = _mm512_set1_ps(MOE_EXP_P0);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(MOE_EXP_P1));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(MOE_EXP_P2));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(MOE_EXP_P3));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(MOE_EXP_P4));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(MOE_EXP_P5));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static void swiglu(const float *g, const float *u, const float *w, int w_stride, int64_t n,
                   float clamp, float *m)
{
    int64_t i = 0;
    const __m512 c = _mm512_set1_ps(clamp), nc = _mm512_set1_ps(-clamp);
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i), uv = _mm512_loadu_ps(u + i);
        if (clamp > 0.0f) {
            /* g > c ? c : g and the same for u, NaN kept as the scalar comparisons keep it */
            gv = _mm512_mask_mov_ps(gv, _mm512_cmp_ps_mask(gv, c, _CMP_GT_OQ), c);
            uv = _mm512_mask_mov_ps(uv, _mm512_cmp_ps_mask(uv, c, _CMP_GT_OQ), c);
            uv = _mm512_mask_mov_ps(uv, _mm512_cmp_ps_mask(uv, nc, _CMP_LT_OQ), nc);
        }
        const __m512 wv = w_stride ? _mm512_loadu_ps(w + i * w_stride) : _mm512_set1_ps(w[0]);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        const __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(m + i, _mm512_mul_ps(_mm512_mul_ps(s, uv), wv));
    }
    for (; i < n; i++)
        m[i] = moe_swiglu1(g[i], u[i], clamp, w[i * w_stride]);
}

/* quant_act_avx512.c's Q8_K quantizer: byte-identical to quant_quant_row_q8_k. */
static void quant_q8_k(const float *x, quant_block_q8_k *out, int64_t n)
{
    cpu_quant_row_q8_k_avx512(x, out, n);
}

/* The token tile, the same for every weight type. */
void cpu_moe_tile_avx512(void *tile, const quant_block_q8_k *const *x, int n, int64_t nb)
{
    moe_tile_init(tile, x, n, nb);
}

static const cpu_moe_kern kern_iq2 = {
    cpu_moe_iq2_prep_gemv_avx512, cpu_moe_iq2_prep_gemm_avx512, cpu_moe_iq2_gemv_avx512,
    cpu_moe_iq2_gemv2_avx512,     cpu_moe_tile_avx512,          cpu_moe_iq2_gemm_avx512,
    cpu_moe_iq2_gemm2_avx512};
static const cpu_moe_kern kern_q2k = {
    NULL, NULL, cpu_moe_q2k_gemv_avx512, cpu_moe_q2k_gemv2_avx512, cpu_moe_tile_avx512,
    cpu_moe_q2k_gemm_avx512, cpu_moe_q2k_gemm2_avx512};
static const cpu_moe_kern kern_q4k = {
    NULL, NULL, cpu_moe_q4k_gemv_avx512, cpu_moe_q4k_gemv2_avx512, cpu_moe_tile_avx512,
    cpu_moe_q4k_gemm_avx512, cpu_moe_q4k_gemm2_avx512};

const cpu_moe_ops cpu_moe_ops_avx512 = {"avx512", quant_q8_k, swiglu, &kern_iq2, &kern_q2k,
                                        &kern_q4k};
