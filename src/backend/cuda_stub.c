/* cuda_stub.c — the CUDA backend's constructors in a build without CUDA (make, make test, make
 * asan): no device, and backend_cuda_new fails with a message that says how to get one. The
 * `make cuda` programs link src/backend/cuda/cuda.cu instead of this file (Makefile: the
 * CUDA host library leaves this object out). */
#include "backend/backend.h"

int backend_cuda_new(ds4_backend **out, int device, ds4_error *err)
{
    (void)device;
    *out = NULL;
    return ds4_error_set(err, DS4_E_ARG, "built without CUDA: run make cuda (then "
                         "build/cuda/bin/ds4)");
}

int backend_cuda_device_count(void)
{
    return 0;
}

bool backend_cuda_built(void)
{
    return false;
}
