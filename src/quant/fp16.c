/* fp16.c — exact scalar conversions between f32 and the two 16-bit float formats of GGUF:
 * IEEE binary16 (f16) and bfloat16 (bf16). Owns bit manipulation only; vectorised
 * conversions belong to the kernels. Invariants: f32->f16 rounds to nearest even with
 * denormals, overflow to inf and NaN payloads handled exactly as numpy's astype(float16)
 * (software path: payload >> 13, forced non-zero, not quieted); f16->f32 is exact and keeps
 * NaN payloads; f32->bf16 matches gguf.quants BF16 (round to nearest even, NaN forced quiet).
 * Implements ds4-architecture.md §1.5 (F16, BF16 storage). */
#include <string.h>

#include "quant/quant.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float quant_f16_to_f32(quant_f16 h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;

    if (exp == 0x1f) /* inf or NaN: payload moves up unchanged */
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)
        return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0)
        return bits_f32(sign);
    /* subnormal: normalise so the leading one reaches bit 10 */
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return bits_f32(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

quant_f16 quant_f32_to_f16(float f)
{
    const uint32_t u = f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t x = u & 0x7fffffffu;

    if (x > 0x7f800000u) { /* NaN: keep the top payload bits, never turn into inf */
        uint16_t m = (uint16_t)((x & 0x7fffffu) >> 13);
        return (quant_f16)(sign | 0x7c00u | (m ? m : 1u));
    }
    if (x >= 0x477ff000u) /* >= 65520 (incl. inf) rounds to inf */
        return (quant_f16)(sign | 0x7c00u);
    if (x >= 0x38800000u) { /* normal f16 range: round the 13 dropped bits to even */
        const uint32_t r = x + 0x0fffu + ((x >> 13) & 1u);
        return (quant_f16)(sign | ((r >> 13) - (112u << 10)));
    }
    if (x < 0x33000000u) /* below 2^-25 (or exactly tie to 0): zero */
        return sign;
    /* subnormal result: units of 2^-24; the value is m * 2^(e-150) */
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e; /* 14..24 */
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (quant_f16)(sign | q);
}

float quant_bf16_to_f32(quant_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

quant_bf16 quant_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and top payload, set quiet bit */
        return (quant_bf16)(((u & 0xffff0000u) | 0x00400000u) >> 16);
    return (quant_bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
