/* test_q8_0_dot.c — q8_0 x q8_0 dot kernels: attention projections, shared
 * expert and output head (ds4-architecture.md §4.1); lengths 32..32768.
 * Checks the _ref kernel against float64 over the reference dequantizers and every other
 * variant against _ref, at every length the model uses, on random, quantized-Gaussian and
 * extreme-code rows (cases and tolerances: tests/dot_test_common.h).
 * Usage: test_q8_0_dot [case-name substring]; DS4_TEST_SEED=N picks the data. */
#include "dot_test_common.h"

int main(int argc, char **argv)
{
    static const int64_t lens[] = {32, 64, 96, 256, 320, 352, 512, 1024, 2048, 4096, 8192,
                                   16384, 32768};
    const int nlens = (int)(sizeof lens / sizeof lens[0]);
    return dot_test_main(argc, argv, DS4_TYPE_Q8_0, lens, nlens, 801);
}
