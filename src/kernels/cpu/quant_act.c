/* quant_act.c — picks the activation quantizer for a type and kernel variant: the AVX-512
 * one where the variant allows it, else the reference of src/quant (the only one for
 * other ISAs). Owns no quantizer code. See quant_act.h. */
#include "kernels/cpu/quant_act.h"

quant_quant_row_fn cpu_quant_act_fn(ds4_type t, cpu_isa isa)
{
    const int fast = isa >= CPU_ISA_AVX512 && cpu_isa_supported(CPU_ISA_AVX512);
    switch (t) {
    case DS4_TYPE_Q8_0:
        return fast ? cpu_quant_row_q8_0_avx512 : quant_quant_row_q8_0;
    case DS4_TYPE_Q8_K:
        return fast ? cpu_quant_row_q8_k_avx512 : quant_quant_row_q8_k;
    case DS4_TYPE_F32:
        return quant_quant_row_f32;
    default:
        return NULL;
    }
}
