/* cpu_features.c — which kernel variants this CPU can run, and the DS4_CPU_ISA override.
 * Detection uses the compiler's cpuid/xgetbv probe (__builtin_cpu_supports), which also
 * checks that the OS saves the wider registers. Owns no kernels and no kernel table
 * (dispatch.c). Invariant: CPU_ISA_REF is always supported; a variant is reported supported
 * only if every extension its file is compiled with (Makefile ISA_* flags) is present. */
#include "kernels/cpu/cpu_dot.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static const char *const isa_names[CPU_ISA_COUNT] = {"ref", "avx2", "avx512"};

/* What a variant needs, for the error message when DS4_CPU_ISA asks for a missing one. */
static const char *const isa_needs[CPU_ISA_COUNT] = {
    "nothing",
    "AVX2, FMA and F16C",
    "AVX2, FMA, F16C and AVX-512 F/BW/VL/DQ/VNNI",
};

const char *cpu_isa_name(cpu_isa isa)
{
    return (unsigned)isa < CPU_ISA_COUNT ? isa_names[isa] : "?";
}

int cpu_isa_from_name(const char *name)
{
    for (int i = 0; i < CPU_ISA_COUNT; i++)
        if (name && strcmp(name, isa_names[i]) == 0)
            return i;
    return -1;
}

int cpu_isa_supported(cpu_isa isa)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* F16C is cpuid leaf 1 ECX bit 29 (not every compiler's builtin knows its name); the
     * AVX register state it needs is already checked by the "avx2" probe */
    unsigned a, b, c = 0, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    switch (isa) {
    case CPU_ISA_REF:
        return 1;
    case CPU_ISA_AVX2:
        return avx2;
    case CPU_ISA_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    default:
        return 0;
    }
#else
    return isa == CPU_ISA_REF;
#endif
}

cpu_isa cpu_best_isa(void)
{
    for (int i = CPU_ISA_COUNT - 1; i > 0; i--)
        if (cpu_isa_supported((cpu_isa)i))
            return (cpu_isa)i;
    return CPU_ISA_REF;
}

int cpu_isa_select(cpu_isa *isa, ds4_error *err)
{
    const char *env = getenv("DS4_CPU_ISA");
    if (!env || !*env) {
        *isa = cpu_best_isa();
        return DS4_OK;
    }
    int want = cpu_isa_from_name(env);
    if (want < 0)
        return ds4_error_set(err, DS4_E_ARG,
                             "DS4_CPU_ISA=%s: unknown ISA (expected ref, avx2 or avx512)", env);
    if (!cpu_isa_supported((cpu_isa)want))
        return ds4_error_set(err, DS4_E_ARG,
                             "DS4_CPU_ISA=%s: this CPU lacks %s (best available: %s)", env,
                             isa_needs[want], cpu_isa_name(cpu_best_isa()));
    *isa = (cpu_isa)want;
    return DS4_OK;
}
