/* test_iq2xxs_dot.c — iq2_xxs x q8_K dot kernels, single-row and paired: the
 * routed gate/up of the q2 model (ds4-architecture.md §1.5, §4.1).
 * Checks the _ref kernel against float64 over the reference dequantizers and every other
 * variant against _ref, at every length the model uses, on random, quantized-Gaussian and
 * extreme-code rows (cases and tolerances: tests/dot_test_common.h).
 * Usage: test_iq2xxs_dot [case-name substring]; DS4_TEST_SEED=N picks the data. */
#include "dot_test_common.h"

int main(int argc, char **argv)
{
    static const int64_t lens[] = {256, 512, 768, 1024, 2048, 4096, 8192, 16384, 32768};
    const int nlens = (int)(sizeof lens / sizeof lens[0]);
    return dot_test_main(argc, argv, DS4_TYPE_IQ2_XXS, lens, nlens, 804);
}
