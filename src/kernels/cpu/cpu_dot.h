/* cpu_dot.h — CPU dot products of one weight row against one activation vector, in every
 * variant (_ref scalar C, _avx2, _avx512), the ISA detection that picks one, the table that
 * lists them all, and a row-range matvec built on them. Implements ds4-architecture.md §4.1.
 * Does not own block layouts or (de)quantizers (src/quant/) or threading (the caller's job).
 * Invariants: n is the element count of the row, a multiple of the weight block size (32 for
 * q8_0, 256 for the K/IQ types, anything >= 0 for f16/f32); activation int8 values lie in
 * [-127, 127] (every ds4 activation quantizer guarantees it: d = amax/127); weight bytes may
 * be anything. Quantized variants give the same integer sums as _ref; only the order of the
 * float additions across blocks differs. */
#ifndef DS4_KERNELS_CPU_DOT_H
#define DS4_KERNELS_CPU_DOT_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "quant/quant.h"

/* One dot product: returns sum_i w_i * x_i over n elements of a weight row w (in its block
 * format) and an activation x (in the activation format the kernel pairs with w). */
typedef float (*cpu_dot_fn)(int64_t n, const void *w, const void *x);

/* Paired dot product: two weight rows of the same type against one activation (routed gate
 * and up share x); writes out[0] = w0·x, out[1] = w1·x. */
typedef void (*cpu_dot2_fn)(int64_t n, const void *w0, const void *w1, const void *x,
                            float out[2]);

/* Multi-token dot product: one weight row against four activation rows; out[k] = w·x[k],
 * each bit-identical to the single-row kernel of the same variant on x[k] (batched products
 * give the same results as one token at a time). */
typedef void (*cpu_dot4_fn)(int64_t n, const void *w, const void *const x[4], float out[4]);

/* Instruction-set variants, in increasing order of capability. */
typedef enum {
    CPU_ISA_REF = 0,    /* plain C, any CPU */
    CPU_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    CPU_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI (and everything AVX2 has) */
    CPU_ISA_COUNT
} cpu_isa;

/* ---- kernels: weight type x activation type x variant (dot_ref.c, dot_avx2.c, dot_avx512.c) */
/* Q8_0 weights x Q8_0 activation: sum_b d_w * d_x * sum_32 q_w * q_x. */
float cpu_dot_q8_0_q8_0_ref(int64_t n, const void *w, const void *x);
float cpu_dot_q8_0_q8_0_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_q8_0_q8_0_avx512(int64_t n, const void *w, const void *x);
/* Q2_K weights x Q8_K activation, the min term through bsums. */
float cpu_dot_q2_k_q8_k_ref(int64_t n, const void *w, const void *x);
float cpu_dot_q2_k_q8_k_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_q2_k_q8_k_avx512(int64_t n, const void *w, const void *x);
/* Q4_K weights x Q8_K activation, the min term through bsums. */
float cpu_dot_q4_k_q8_k_ref(int64_t n, const void *w, const void *x);
float cpu_dot_q4_k_q8_k_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_q4_k_q8_k_avx512(int64_t n, const void *w, const void *x);
/* IQ2_XXS weights x Q8_K activation. */
float cpu_dot_iq2_xxs_q8_k_ref(int64_t n, const void *w, const void *x);
float cpu_dot_iq2_xxs_q8_k_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_iq2_xxs_q8_k_avx512(int64_t n, const void *w, const void *x);
/* F16 weights x F32 activation, f32 accumulation. */
float cpu_dot_f16_f32_ref(int64_t n, const void *w, const void *x);
float cpu_dot_f16_f32_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_f16_f32_avx512(int64_t n, const void *w, const void *x);
/* F32 weights x F32 activation, f32 accumulation. */
float cpu_dot_f32_f32_ref(int64_t n, const void *w, const void *x);
float cpu_dot_f32_f32_avx2(int64_t n, const void *w, const void *x);
float cpu_dot_f32_f32_avx512(int64_t n, const void *w, const void *x);

/* Paired IQ2_XXS x Q8_K (routed gate + up): each result equals the single-row kernel's. */
void cpu_dot2_iq2_xxs_q8_k_ref(int64_t n, const void *w0, const void *w1, const void *x,
                               float out[2]);
void cpu_dot2_iq2_xxs_q8_k_avx2(int64_t n, const void *w0, const void *w1, const void *x,
                                float out[2]);
void cpu_dot2_iq2_xxs_q8_k_avx512(int64_t n, const void *w0, const void *w1, const void *x,
                                  float out[2]);

/* Four-token Q8_0 x Q8_0 (dot4_avx512.c). Other pairs and variants have none: callers fall
 * back to four single-row calls, which is what the kernel must equal. */
void cpu_dot4_q8_0_q8_0_avx512(int64_t n, const void *w, const void *const x[4], float out[4]);

/* ---- ISA detection (cpu_features.c) ---------------------------------------------------- */
/* Returns "ref", "avx2" or "avx512"; "?" for an out-of-range value. */
const char *cpu_isa_name(cpu_isa isa);

/* Parses an ISA name as cpu_isa_name spells it; returns -1 if unknown. */
int cpu_isa_from_name(const char *name);

/* Whether this CPU (and OS) can run the variant. CPU_ISA_REF is always supported. */
int cpu_isa_supported(cpu_isa isa);

/* Returns the most capable ISA this CPU supports (ignores DS4_CPU_ISA). */
cpu_isa cpu_best_isa(void);

/* The ISA to compute with: DS4_CPU_ISA=ref|avx2|avx512 if set, else cpu_best_isa().
 * Returns 0 and sets *isa, or DS4_E_ARG with a message in err if the variable names an
 * unknown ISA or one this CPU lacks. */
int cpu_isa_select(cpu_isa *isa, ds4_error *err);

/* ---- dispatch (dispatch.c) ------------------------------------------------------------ */
/* One row of the kernel table: a weight type, its activation type, a variant. */
typedef struct cpu_dot_kernel {
    ds4_type wtype;   /* weight row type */
    ds4_type xtype;   /* activation type the kernel reads */
    cpu_isa isa;      /* variant */
    const char *name; /* "q4_K x q8_K", the same for every variant of a pair */
    cpu_dot_fn dot;   /* single-row kernel */
    cpu_dot2_fn dot2; /* paired kernel, NULL where none exists */
    cpu_dot4_fn dot4; /* four-token kernel, NULL where none exists */
} cpu_dot_kernel;

/* The kernel table, grouped by weight type, variants in cpu_isa order; *count gets its length.
 * Tests and benches loop over it, so a new row is tested and timed the day it is added. */
const cpu_dot_kernel *cpu_dot_kernels(int *count);

/* Returns the table row for a weight type and variant, or NULL if there is none. */
const cpu_dot_kernel *cpu_find_dot(ds4_type wtype, cpu_isa isa);

/* Returns the dot kernel for a weight type and variant, or NULL if there is none. Does not
 * check that the CPU supports the variant (cpu_isa_supported does). */
cpu_dot_fn cpu_get_dot(ds4_type wtype, cpu_isa isa);

/* The activation type a weight type's dot kernels read (q8_0 -> q8_0, q2_K/q4_K/iq2_xxs ->
 * q8_K, f16/f32 -> f32); -1 if no kernel takes that weight type. */
int cpu_dot_act_type(ds4_type wtype);

/* Rows [r0, r1) of y = W x: y[r] = dot(n, W + r * row_bytes, x) for each r in the range.
 * W is row-major, row_bytes apart (quant_row_bytes(wtype, n) for a dense tensor); y is the
 * whole output vector, indexed by absolute row. Single-threaded: callers split row ranges. */
void cpu_matvec(cpu_dot_fn dot, int64_t n, const void *w, size_t row_bytes, const void *x,
                float *y, int64_t r0, int64_t r1);

#endif
