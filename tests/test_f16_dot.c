/* test_f16_dot.c — f16 x f32 dot kernels: hyper-connections, router, compressor
 * and indexer projections; odd lengths exercise the SIMD tails.
 * Checks the _ref kernel against float64 over the reference dequantizers and every other
 * variant against _ref, at every length the model uses, on random, quantized-Gaussian and
 * extreme-code rows (cases and tolerances: tests/dot_test_common.h).
 * Usage: test_f16_dot [case-name substring]; DS4_TEST_SEED=N picks the data. */
#include "dot_test_common.h"

int main(int argc, char **argv)
{
    static const int64_t lens[] = {1, 3, 17, 100, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    const int nlens = (int)(sizeof lens / sizeof lens[0]);
    return dot_test_main(argc, argv, DS4_TYPE_F16, lens, nlens, 805);
}
