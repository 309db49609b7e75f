/* dispatch.c — the table of CPU dot kernels (weight type x variant), lookups into it, and
 * the row-range matvec that applies one kernel to many rows. Owns no kernel code (dot_*.c)
 * and no ISA detection (cpu_features.c): a lookup returns a variant whether or not this CPU
 * can run it. Implements the kernel pairing of ds4-architecture.md §4.1. */
#include "kernels/cpu/cpu_dot.h"

/* One line per (weight, activation) pair, expanded into its three variants. */
#define KERNEL_ROWS(W, X, name, dotname, dot2name, dot4name)                                \
    {W, X, CPU_ISA_REF, name, cpu_dot_##dotname##_ref, dot2name(ref), dot4name(ref)},       \
    {W, X, CPU_ISA_AVX2, name, cpu_dot_##dotname##_avx2, dot2name(avx2), dot4name(avx2)},   \
    {W, X, CPU_ISA_AVX512, name, cpu_dot_##dotname##_avx512, dot2name(avx512),             \
     dot4name(avx512)}
#define NO_DOT2(v) NULL
#define IQ2_DOT2(v) cpu_dot2_iq2_xxs_q8_k_##v
#define NO_DOT4(v) NULL
#define Q8_0_DOT4(v) Q8_0_DOT4_##v
#define Q8_0_DOT4_ref NULL
#define Q8_0_DOT4_avx2 NULL
#define Q8_0_DOT4_avx512 cpu_dot4_q8_0_q8_0_avx512

static const cpu_dot_kernel kernels[] = {
    KERNEL_ROWS(DS4_TYPE_Q8_0, DS4_TYPE_Q8_0, "q8_0 x q8_0", q8_0_q8_0, NO_DOT2, Q8_0_DOT4),
    KERNEL_ROWS(DS4_TYPE_Q2_K, DS4_TYPE_Q8_K, "q2_K x q8_K", q2_k_q8_k, NO_DOT2, NO_DOT4),
    KERNEL_ROWS(DS4_TYPE_Q4_K, DS4_TYPE_Q8_K, "q4_K x q8_K", q4_k_q8_k, NO_DOT2, NO_DOT4),
    KERNEL_ROWS(DS4_TYPE_IQ2_XXS, DS4_TYPE_Q8_K, "iq2_xxs x q8_K", iq2_xxs_q8_k, IQ2_DOT2,
                NO_DOT4),
    KERNEL_ROWS(DS4_TYPE_F16, DS4_TYPE_F32, "f16 x f32", f16_f32, NO_DOT2, NO_DOT4),
    KERNEL_ROWS(DS4_TYPE_F32, DS4_TYPE_F32, "f32 x f32", f32_f32, NO_DOT2, NO_DOT4),
};

const cpu_dot_kernel *cpu_dot_kernels(int *count)
{
    *count = (int)(sizeof kernels / sizeof kernels[0]);
    return kernels;
}

const cpu_dot_kernel *cpu_find_dot(ds4_type wtype, cpu_isa isa)
{
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (kernels[i].wtype == wtype && kernels[i].isa == isa)
            return &kernels[i];
    return NULL;
}

cpu_dot_fn cpu_get_dot(ds4_type wtype, cpu_isa isa)
{
    const cpu_dot_kernel *k = cpu_find_dot(wtype, isa);
    return k ? k->dot : NULL;
}

int cpu_dot_act_type(ds4_type wtype)
{
    const cpu_dot_kernel *k = cpu_find_dot(wtype, CPU_ISA_REF);
    return k ? (int)k->xtype : -1;
}

void cpu_matvec(cpu_dot_fn dot, int64_t n, const void *w, size_t row_bytes, const void *x,
                float *y, int64_t r0, int64_t r1)
{
    const uint8_t *row = (const uint8_t *)w + (size_t)r0 * row_bytes;
    for (int64_t r = r0; r < r1; r++, row += row_bytes)
        y[r] = dot(n, row, x);
}
