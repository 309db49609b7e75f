/* test_cpu_dispatch.c — the CPU kernel table and ISA selection: every computed weight type has
 * a kernel in every variant, pairing the activation type the quant traits table names; ISA
 * names round-trip; DS4_CPU_ISA forces a variant and fails cleanly on an unknown or missing
 * one; cpu_matvec writes exactly rows [r0, r1) with the per-row dot. The kernels' numbers are
 * checked by the test_*_dot programs. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_dot.h"
#include "quant/quant.h"
#include "test_util.h"

static const ds4_type weight_types[] = {DS4_TYPE_Q8_0, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K,
                                        DS4_TYPE_IQ2_XXS, DS4_TYPE_F16, DS4_TYPE_F32};

static void test_table(void)
{
    int count;
    const cpu_dot_kernel *k = cpu_dot_kernels(&count);
    t_check(count == 6 * CPU_ISA_COUNT, "table has 6 weight types x %d variants (%d rows)",
            CPU_ISA_COUNT, count);
    for (size_t i = 0; i < sizeof weight_types / sizeof weight_types[0]; i++) {
        ds4_type t = weight_types[i];
        const quant_traits *tr = quant_get_traits(t);
        for (int isa = 0; isa < CPU_ISA_COUNT; isa++) {
            const cpu_dot_kernel *row = cpu_find_dot(t, (cpu_isa)isa);
            t_check(row && row->dot && cpu_get_dot(t, (cpu_isa)isa) == row->dot &&
                        row->isa == (cpu_isa)isa && row->wtype == t,
                    "%s has a %s kernel", tr->name, cpu_isa_name((cpu_isa)isa));
        }
        t_check(cpu_dot_act_type(t) == (int)tr->vec_dot_type,
                "%s kernels read %s, as the traits table says", tr->name,
                quant_get_traits((ds4_type)cpu_dot_act_type(t))->name);
    }
    t_check(cpu_get_dot(DS4_TYPE_Q5_K, CPU_ISA_REF) == NULL &&
                cpu_dot_act_type(DS4_TYPE_Q5_K) == -1,
            "no kernel for a size-only type (q5_K)");
    for (int i = 0; i < count; i++)
        t_check((k[i].dot2 != NULL) == (k[i].wtype == DS4_TYPE_IQ2_XXS),
                "paired kernel exactly for iq2_xxs: %s %s", k[i].name, cpu_isa_name(k[i].isa));
    for (int i = 0; i < count; i++)
        t_check((k[i].dot4 != NULL) ==
                    (k[i].wtype == DS4_TYPE_Q8_0 && k[i].isa == CPU_ISA_AVX512),
                "four-token kernel exactly for q8_0 avx512: %s %s", k[i].name,
                cpu_isa_name(k[i].isa));
}

static void test_isa_names(void)
{
    for (int isa = 0; isa < CPU_ISA_COUNT; isa++)
        t_check(cpu_isa_from_name(cpu_isa_name((cpu_isa)isa)) == isa, "isa name round trip: %s",
                cpu_isa_name((cpu_isa)isa));
    t_check(cpu_isa_from_name("sse9") == -1 && cpu_isa_from_name(NULL) == -1,
            "unknown isa name -> -1");
    t_check(strcmp(cpu_isa_name(CPU_ISA_COUNT), "?") == 0, "out-of-range isa prints ?");
    t_check(cpu_isa_supported(CPU_ISA_REF), "ref is always supported");
    t_check(cpu_isa_supported(cpu_best_isa()), "best isa (%s) is supported",
            cpu_isa_name(cpu_best_isa()));
}

static void test_isa_select(void)
{
    const char *saved = getenv("DS4_CPU_ISA");
    char *keep = saved ? strdup(saved) : NULL;
    cpu_isa isa = CPU_ISA_COUNT;
    ds4_error err = {0};

    unsetenv("DS4_CPU_ISA");
    int rc = cpu_isa_select(&isa, &err);
    t_check(rc == 0 && isa == cpu_best_isa(),
            "DS4_CPU_ISA unset -> best (%s)", cpu_isa_name(isa));
    setenv("DS4_CPU_ISA", "bogus", 1);
    rc = cpu_isa_select(&isa, &err);
    t_check(rc == DS4_E_ARG && err.code == DS4_E_ARG && strstr(err.msg, "DS4_CPU_ISA=bogus"),
            "DS4_CPU_ISA=bogus -> DS4_E_ARG: %s", err.msg);
    for (int want = 0; want < CPU_ISA_COUNT; want++) {
        setenv("DS4_CPU_ISA", cpu_isa_name((cpu_isa)want), 1);
        memset(&err, 0, sizeof err);
        rc = cpu_isa_select(&isa, &err);
        if (cpu_isa_supported((cpu_isa)want))
            t_check(rc == 0 && isa == (cpu_isa)want, "DS4_CPU_ISA=%s forces it",
                    cpu_isa_name((cpu_isa)want));
        else
            t_check(rc == DS4_E_ARG && strstr(err.msg, "lacks"),
                    "DS4_CPU_ISA=%s on a CPU without it -> DS4_E_ARG: %s",
                    cpu_isa_name((cpu_isa)want), err.msg);
    }
    setenv("DS4_CPU_ISA", "bogus", 1);
    t_check(cpu_isa_select(&isa, NULL) == DS4_E_ARG, "a NULL error record is accepted");
    if (keep) {
        setenv("DS4_CPU_ISA", keep, 1);
        free(keep);
    } else {
        unsetenv("DS4_CPU_ISA");
    }
}

static void test_matvec(t_rng *r)
{
    enum { ROWS = 7, N = 512 };
    size_t rb = quant_row_bytes(DS4_TYPE_Q4_K, N);
    float *src = malloc(sizeof(float) * ROWS * N);
    uint8_t *w = malloc(rb * ROWS);
    float xf[N];
    quant_block_q8_k xq[N / QUANT_QK_K];
    for (int i = 0; i < ROWS * N; i++)
        src[i] = (float)t_normal(r);
    for (int i = 0; i < N; i++)
        xf[i] = (float)t_normal(r);
    for (int i = 0; i < ROWS; i++)
        quant_quant_row_q4_k(src + i * N, w + i * rb, N);
    quant_quant_row_q8_k(xf, xq, N);
    for (int isa = 0; isa < CPU_ISA_COUNT; isa++) {
        if (!cpu_isa_supported((cpu_isa)isa)) {
            t_skip("this CPU lacks the ISA", "matvec q4_K rows [2,5) %s",
                   cpu_isa_name((cpu_isa)isa));
            continue;
        }
        cpu_dot_fn dot = cpu_get_dot(DS4_TYPE_Q4_K, (cpu_isa)isa);
        float y[ROWS];
        for (int i = 0; i < ROWS; i++)
            y[i] = -12345.0f;
        cpu_matvec(dot, N, w, rb, xq, y, 2, 5);
        int ok = 1;
        for (int i = 0; i < ROWS; i++)
            ok &= (i >= 2 && i < 5) ? y[i] == dot(N, w + i * rb, xq) : y[i] == -12345.0f;
        t_check(ok, "matvec q4_K rows [2,5) %s: those rows = dot, others untouched",
                cpu_isa_name((cpu_isa)isa));
    }
    free(src);
    free(w);
}

int main(void)
{
    t_rng r = {t_seed(901)};
    test_table();
    test_isa_names();
    test_isa_select();
    test_matvec(&r);
    return t_summary();
}
