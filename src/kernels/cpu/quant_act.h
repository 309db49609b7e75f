/* quant_act.h — fast variants of the activation quantizers (Q8_0 and Q8_K of f32 rows), the
 * step every quantized product starts with (ds4-architecture.md §4.1). Each variant writes
 * exactly the bytes of the reference quantizer in src/quant/quantize_act.c
 * (quant_quant_row_q8_0 / _q8_k), for every input including zeros, NaN and infinities: the
 * reference is the definition, a variant only computes it faster. Owns no block layouts. */
#ifndef DS4_KERNELS_CPU_QUANT_ACT_H
#define DS4_KERNELS_CPU_QUANT_ACT_H

#include "kernels/cpu/cpu_dot.h"
#include "quant/quant.h"

/* AVX-512 (F/BW/VL/DQ) variants, quant_act_avx512.c. n is a multiple of the block size. */
void cpu_quant_row_q8_0_avx512(const float *src, void *dst, int64_t n);
void cpu_quant_row_q8_k_avx512(const float *src, void *dst, int64_t n);

/* The quantizer of activation type t (Q8_0, Q8_K; F32 copies) for variant isa: the fast one
 * where it exists and isa allows it, else the reference. NULL for any other type. Checks the
 * CPU (CPUID: microseconds under a hypervisor): look it up once, not per row. */
quant_quant_row_fn cpu_quant_act_fn(ds4_type t, cpu_isa isa);

#endif
