/* test_q2k_dot.c — q2_K x q8_K dot kernels: the routed down projection of the q2
 * model, min term through the Q8_K bsums (ds4-architecture.md §4.1).
 * Checks the _ref kernel against float64 over the reference dequantizers and every other
 * variant against _ref, at every length the model uses, on random, quantized-Gaussian and
 * extreme-code rows (cases and tolerances: tests/dot_test_common.h).
 * Usage: test_q2k_dot [case-name substring]; DS4_TEST_SEED=N picks the data. */
#include "dot_test_common.h"

int main(int argc, char **argv)
{
    static const int64_t lens[] = {256, 512, 768, 1024, 2048, 4096, 8192, 16384, 32768};
    const int nlens = (int)(sizeof lens / sizeof lens[0]);
    return dot_test_main(argc, argv, DS4_TYPE_Q2_K, lens, nlens, 802);
}
