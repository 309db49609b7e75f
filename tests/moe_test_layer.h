/* moe_test_layer.h — the random routed-expert layers of the MoE tests (tests/test_moe.c, and
 * tests/cuda/test_cuda_moe.c, which copies them to the GPU): valid random IQ2_XXS, Q2_K and
 * Q4_K blocks of a chosen RMS, and a layer of E experts per mix (q2: IQ2_XXS gate/up, Q2_K
 * down; q4: Q4_K everywhere). Deterministic per seed. Header-only; does not own the tokens
 * (each test routes its own). */
#ifndef DS4_TESTS_MOE_TEST_LAYER_H
#define DS4_TESTS_MOE_TEST_LAYER_H

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/moe.h"
#include "quant/quant.h"
#include "test_util.h"

/* One random valid block of type t (IQ2_XXS, Q2_K or Q4_K) with elements of RMS about rms. */
__attribute__((unused))
static void moe_test_rand_block(t_rng *r, ds4_type t, void *blk, double rms)
{
    if (t == DS4_TYPE_IQ2_XXS) {
        quant_block_iq2_xxs *b = blk;
        for (int i = 0; i < 32; i++)
            b->qs[i] = (uint16_t)t_next(r);
        b->d = quant_f32_to_f16((float)(rms / 67.0 * (0.5 + t_uniform(r))));
    } else if (t == DS4_TYPE_Q2_K) {
        quant_block_q2_k *b = blk;
        for (int j = 0; j < 16; j++) {
            uint32_t sc = 1 + (uint32_t)(t_next(r) % 15), m = (3 * sc + 1) / 2;
            b->scales[j] = (uint8_t)(sc | (m > 15 ? 15 : m) << 4);
        }
        for (int i = 0; i < 64; i++)
            b->qs[i] = (uint8_t)t_next(r);
        b->d = b->dmin = quant_f32_to_f16((float)(rms / 10.0 * (0.5 + t_uniform(r))));
    } else {
        quant_block_q4_k *b = blk;
        uint8_t sc[8];
        for (int j = 0; j < 8; j++)
            sc[j] = (uint8_t)(1 + t_next(r) % 63);
        for (int j = 0; j < 4; j++) {
            b->scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
            b->scales[j + 4] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
            b->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (sc[j + 4] & 15) << 4);
        }
        for (int i = 0; i < 128; i++)
            b->qs[i] = (uint8_t)t_next(r);
        float d = (float)(rms / 166.0 * (0.5 + t_uniform(r)));
        b->d = quant_f32_to_f16(d);
        b->dmin = quant_f32_to_f16(7.5f * d);
    }
}

/* E experts of n_out x n_in random blocks of type in T (malloc'd data); 0 or -1 (memory). */
__attribute__((unused))
static int moe_test_rand_tensor(cpu_moe_tensor *T, ds4_type type, int64_t n_in, int64_t n_out,
                                int E, double rms, t_rng *r)
{
    const size_t bb = quant_get_traits(type)->block_bytes;
    T->type = type;
    T->n_in = n_in;
    T->n_out = n_out;
    T->row_bytes = quant_row_bytes(type, n_in);
    T->expert_bytes = T->row_bytes * (size_t)n_out;
    uint8_t *p = malloc(T->expert_bytes * (size_t)E);
    if (!p)
        return -1;
    for (size_t b = 0; b < T->expert_bytes * (size_t)E / bb; b++)
        moe_test_rand_block(r, type, p + b * bb, rms);
    T->data = p;
    return 0;
}

/* A random layer of E experts of mix q2 or q4 (L zeroed first); 0 or -1 (memory). */
__attribute__((unused))
static int moe_test_make_layer(cpu_moe_layer *L, bool q2, int64_t n_embd, int64_t n_ff, int E,
                               float clamp, uint64_t seed)
{
    t_rng r = {seed};
    const ds4_type gt = q2 ? DS4_TYPE_IQ2_XXS : DS4_TYPE_Q4_K;
    const ds4_type dt = q2 ? DS4_TYPE_Q2_K : DS4_TYPE_Q4_K;
    memset(L, 0, sizeof *L);
    L->n_expert = E;
    L->clamp = clamp;
    /* gate/up elements of RMS 6/sqrt(n_embd): |g| ~ 6 with unit h, so the clamp acts */
    const double wr = 6.0 / sqrt((double)n_embd);
    if (moe_test_rand_tensor(&L->gate, gt, n_embd, n_ff, E, wr, &r) ||
        moe_test_rand_tensor(&L->up, gt, n_embd, n_ff, E, wr, &r) ||
        moe_test_rand_tensor(&L->down, dt, n_ff, n_embd, E, 0.5 / sqrt((double)n_ff), &r))
        return -1;
    return 0;
}

__attribute__((unused))
static void moe_test_free_layer(cpu_moe_layer *L)
{
    free((void *)L->gate.data), free((void *)L->up.data), free((void *)L->down.data);
}

#endif
