/* test_quant_act.c — the fast activation quantizers (src/kernels/cpu/quant_act*.c) write
 * exactly the bytes of the reference quantizers (quant_quant_row_q8_0 / _q8_k) for Gaussian
 * rows with varying block scales, rows with NaN, infinities, zeros, subnormals, exact
 * half-way products, equal magnitudes of both signs (Q8_K takes the first), all-zero and
 * all-NaN blocks; at lengths from one block to 16384. Also cpu_quant_act_fn's choice.
 * Usage: test_quant_act [case-substring]; DS4_TEST_SEED=N picks the data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quant_act.h"
#include "test_util.h"

/* bytes differing from the reference: none allowed, the reference defines the format */
#define QACT_TOL 0.0

enum { PAT_GAUSS, PAT_SPECIAL, PAT_HALF, PAT_TIES, PAT_ZERO_NAN, PAT_COUNT };
static const char *const pat_names[PAT_COUNT] = {"gauss", "special", "half-way", "ties",
                                                 "zero/nan blocks"};

static void gen(t_rng *r, int pat, float *x, int64_t n)
{
    double s = 1.0;
    for (int64_t i = 0; i < n; i++) {
        if (i % 32 == 0)
            s = ldexp(1.0, (int)(t_next(r) % 41) - 20);
        x[i] = (float)(s * t_normal(r));
        uint64_t u = t_next(r) % 64;
        switch (pat) {
        case PAT_SPECIAL:
            if (u == 0)
                x[i] = NAN;
            else if (u == 1)
                x[i] = (u & 64) ? -INFINITY : INFINITY;
            else if (u == 2)
                x[i] = 0.0f;
            else if (u == 3)
                x[i] = -0.0f;
            else if (u == 4)
                x[i] = 1e-40f; /* subnormal */
            break;
        case PAT_HALF: /* integers and half-integers of a block max 127: x*id hits .5 */
            x[i] = (float)((int)(t_next(r) % 255) - 127) * (u < 32 ? 0.5f : 1.0f);
            if (i % 32 == 0)
                x[i] = 127.0f;
            break;
        case PAT_TIES: /* the block maximum magnitude twice, with both signs */
            x[i] = (float)((int)(t_next(r) % 201) - 100) * 0.25f;
            if (u < 4)
                x[i] = u & 1 ? -40.0f : 40.0f;
            break;
        case PAT_ZERO_NAN:
            if ((i / 256) % 3 == 0)
                x[i] = 0.0f;
            else if ((i / 256) % 3 == 1)
                x[i] = (i % 2) ? NAN : -0.0f;
            break;
        }
    }
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    uint64_t seed = t_seed(4242);
    static const int64_t lens[] = {256, 512, 1024, 2048, 4096, 16384};
    static const ds4_type types[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q8_K};
    const int have = cpu_isa_supported(CPU_ISA_AVX512);
    for (int ti = 0; ti < 2; ti++) {
        ds4_type t = types[ti];
        quant_quant_row_fn ref = quant_get_traits(t)->quant_row;
        quant_quant_row_fn fast = t == DS4_TYPE_Q8_0 ? cpu_quant_row_q8_0_avx512
                                                     : cpu_quant_row_q8_k_avx512;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int p = 0; p < PAT_COUNT; p++) {
                char name[96];
                snprintf(name, sizeof name, "%s avx512 == ref n=%lld %s",
                         quant_get_traits(t)->name, (long long)lens[li], pat_names[p]);
                if (filter && !strstr(name, filter))
                    continue;
                if (!have) {
                    t_skip("this CPU lacks AVX-512", "%s", name);
                    continue;
                }
                int64_t n = lens[li];
                size_t nb = quant_row_bytes(t, n);
                float *x = malloc(sizeof(float) * (size_t)n);
                uint8_t *a = malloc(nb), *b = malloc(nb);
                int64_t bad = 0;
                for (int trial = 0; trial < 8; trial++) {
                    t_rng r = {seed ^ ((uint64_t)n << 20) ^ ((uint64_t)p << 8) ^ (uint64_t)trial ^
                               ((uint64_t)t << 40)};
                    gen(&r, p, x, n);
                    memset(a, 0x55, nb), memset(b, 0xaa, nb);
                    ref(x, a, n);
                    fast(x, b, n);
                    for (size_t i = 0; i < nb; i++)
                        bad += a[i] != b[i];
                }
                t_case(bad == 0, (double)bad, QACT_TOL, "%s (bytes differing)", name);
                free(x), free(a), free(b);
            }
    }
    t_check(cpu_quant_act_fn(DS4_TYPE_Q8_0, CPU_ISA_REF) == quant_quant_row_q8_0 &&
                cpu_quant_act_fn(DS4_TYPE_Q8_K, CPU_ISA_AVX2) == quant_quant_row_q8_k &&
                cpu_quant_act_fn(DS4_TYPE_F32, CPU_ISA_AVX512) == quant_quant_row_f32 &&
                cpu_quant_act_fn(DS4_TYPE_Q4_K, CPU_ISA_AVX512) == NULL,
            "cpu_quant_act_fn: references below AVX-512, NULL for weight types");
    t_check(cpu_quant_act_fn(DS4_TYPE_Q8_0, CPU_ISA_AVX512) ==
                (have ? cpu_quant_row_q8_0_avx512 : quant_quant_row_q8_0),
            "cpu_quant_act_fn: AVX-512 variant where the CPU has it");
    return t_summary();
}
