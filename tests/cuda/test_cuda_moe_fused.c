/* test_cuda_moe_fused.c — the one-launch decode MoE (src/backend/cuda/moe_fused.cu) on a GPU
 * against the four-launch GEMV path of the same library (DS4_CUDA_MOE_FUSED=0) on the same
 * inputs: q2 and q4 mixes at n_embd 4096 / n_ff 2048, batch 1 with 1 to 8 experts per token
 * (the ring's item layouts change with the count), accumulate, an out-of-range id (DS4_E_RANGE,
 * finite output), and a check that the fused kernel is the one that ran (its copies-only
 * diagnostic mode leaves the NaN-poisoned output unwritten); batches of 2, 3, 4 and 8 tokens
 * (the distinct experts streamed once): all tokens on the same experts, independent draws,
 * overlapping draws with an expert repeated within a token, 8 x 8 = 64 pairs, row strides
 * above n_embd, accumulate, a bad id and the copies-only check. tests/cuda/test_cuda_moe compares both paths with the CPU.
 * Skips (exit 0) without a CUDA device or below sm_90 (no fused kernel there).
 * Usage: test_cuda_moe_fused [case-substring]. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_moe.h"
#include "cuda/cuda_test_util.h"
#include "moe_test_layer.h"
#include "test_util.h"

/* Both GPU paths quantize h identically; the mids differ in f32 summation order, so a rare
 * mid element's Q8_K rounding flips (~2e-4 rel L2 each); a wrong row or scale is O(1). */
#define FUSED_TOL 1e-3

#define N_EMBD 4096
#define N_FF 2048
#define N_EXPERT 16
#define MAX_USED 8
#define MAX_TOK 8
#define LD_MAX (N_EMBD + 64)
#define CLAMP 10.0f

static const char *filter;


typedef struct bufs {
    int32_t *ids;
    float *w, *h, *y;
} bufs;

/* One call on the device with DS4_CUDA_MOE_FUSED=fused; y starts as y0 (or NaN bytes).
 * Returns cuda_moe_run's or cuda_moe_sync's code; the output in yo. */
static int run(cuda_moe_ctx *ctx, const cuda_moe_layer *L, const bufs *g, int n_used, bool acc,
               const float *y0, const char *fused, float *yo)
{
    ds4_error err;
    setenv("DS4_CUDA_MOE_FUSED", fused, 1);
    if (y0)
        CUCHECK(cudaMemcpy(g->y, y0, sizeof(float) * N_EMBD, cudaMemcpyHostToDevice));
    else
        CUCHECK(cudaMemset(g->y, 0xff, sizeof(float) * N_EMBD));
    int rc = cuda_moe_poison(ctx, &err);
    cuda_moe_args a = {L, 1, n_used, g->ids, g->w, g->h, N_EMBD, g->y, N_EMBD, acc, CUDA_MOE_GEMV, 0};
    if (!rc)
        rc = cuda_moe_run(ctx, &a, &err);
    const int rs = cuda_moe_sync(ctx, &err);
    unsetenv("DS4_CUDA_MOE_FUSED");
    CUCHECK(cudaMemcpy(yo, g->y, sizeof(float) * N_EMBD, cudaMemcpyDeviceToHost));
    return rc ? rc : rs;
}

/* A batch of n_tok tokens, rows ld apart (h and y), as run(). */
static int run_b(cuda_moe_ctx *ctx, const cuda_moe_layer *L, const bufs *g, int n_tok, int n_used, int ld,
                 bool acc, const float *y0, const char *fused, float *yo)
{
    ds4_error err;
    setenv("DS4_CUDA_MOE_FUSED", fused, 1);
    if (y0)
        CUCHECK(cudaMemcpy(g->y, y0, sizeof(float) * ld * n_tok, cudaMemcpyHostToDevice));
    else
        CUCHECK(cudaMemset(g->y, 0xff, sizeof(float) * ld * n_tok));
    int rc = cuda_moe_poison(ctx, &err);
    cuda_moe_args a = {L, n_tok, n_used, g->ids, g->w, g->h, ld, g->y, ld, acc, CUDA_MOE_GEMV, 0};
    if (!rc)
        rc = cuda_moe_run(ctx, &a, &err);
    const int rs = cuda_moe_sync(ctx, &err);
    unsetenv("DS4_CUDA_MOE_FUSED");
    CUCHECK(cudaMemcpy(yo, g->y, sizeof(float) * ld * n_tok, cudaMemcpyDeviceToHost));
    return rc ? rc : rs;
}

/* rel L2 over n_tok rows of n_embd, ld apart */
static double rel_l2_b(const float *a, const float *b, int n_tok, int ld, bool *finite)
{
    double num = 0, den = 0;
    *finite = true;
    for (int t = 0; t < n_tok; t++)
        for (int i = 0; i < N_EMBD; i++) {
            const size_t k = (size_t)t * ld + i;
            if (!isfinite(a[k]))
                *finite = false;
            num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
            den += (double)b[k] * b[k];
        }
    return sqrt(num / (den > 0 ? den : 1));
}

static double rel_l2(const float *a, const float *b, bool *finite)
{
    double num = 0, den = 0;
    *finite = true;
    for (int i = 0; i < N_EMBD; i++) {
        if (!isfinite(a[i]))
            *finite = false;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    struct cudaDeviceProp prop;
    if (cuda_device_count() == 0 || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        t_skip("no CUDA device", "cuda_moe_fused (every case)");
        return t_summary();
    }
    if (prop.major < 9) {
        t_skip("below sm_90: no fused kernel", "cuda_moe_fused (every case)");
        return t_summary();
    }
    printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    /* the batch cases test the fused batch kernel, opt-in in the engine (tuning.cuh
     * CUDA_MOE_FUSED_BATCH_DEFAULT) */
    setenv("DS4_CUDA_MOE_FUSED_BATCH", "1", 1);
    ds4_error err;
    cuda_moe_ctx *ctx;
    if (cuda_moe_ctx_new(&ctx, NULL, &err)) {
        printf("FAIL  setup: %s\n", err.msg);
        return 1;
    }
    bufs g;
    CUCHECK(cudaMalloc((void **)&g.ids, sizeof(int32_t) * MAX_USED * MAX_TOK));
    CUCHECK(cudaMalloc((void **)&g.w, sizeof(float) * MAX_USED * MAX_TOK));
    CUCHECK(cudaMalloc((void **)&g.h, sizeof(float) * LD_MAX * MAX_TOK));
    CUCHECK(cudaMalloc((void **)&g.y, sizeof(float) * LD_MAX * MAX_TOK));
    static float h[LD_MAX * MAX_TOK], y0[LD_MAX * MAX_TOK], yf[LD_MAX * MAX_TOK], yr[LD_MAX * MAX_TOK];
    char name[128];
    for (int q2 = 1; q2 >= 0; q2--) {
        const char *mix = q2 ? "q2" : "q4";
        cpu_moe_layer C;
        if (moe_test_make_layer(&C, q2, N_EMBD, N_FF, N_EXPERT, CLAMP, q2 ? 21 : 22))
            return 1;
        cuda_moe_layer L;
        memset(&L, 0, sizeof L);
        L.n_expert = N_EXPERT;
        L.clamp = CLAMP;
        cuda_test_upload(&L.gate, &C.gate, N_EXPERT, 0), cuda_test_upload(&L.up, &C.up, N_EXPERT, 0);
        cuda_test_upload(&L.down, &C.down, N_EXPERT, 0);
        static const int used[] = {1, 2, 3, 5, 6, 8};
        for (size_t u = 0; u < sizeof used / sizeof used[0]; u++)
            for (int acc = 0; acc < 2; acc++) {
                const int n_used = used[u];
                snprintf(name, sizeof name, "%s fused vs 4-launch n_used=%d%s", mix, n_used,
                         acc ? " accumulate" : "");
                if (filter && !strstr(name, filter))
                    continue;
                const uint64_t seed = 1000 + 10 * u + acc + (q2 ? 0 : 500);
                t_rng r = {seed};
                int32_t ids[MAX_USED];
                float w[MAX_USED];
                for (int k = 0; k < n_used; k++) {
                    int e, dup;
                    do {
                        e = (int)(t_next(&r) % N_EXPERT);
                        dup = 0;
                        for (int j = 0; j < k; j++)
                            dup |= ids[j] == e;
                    } while (dup);
                    ids[k] = e;
                    w[k] = (float)(0.1 + 0.4 * t_uniform(&r));
                }
                for (int i = 0; i < N_EMBD; i++)
                    h[i] = (float)t_normal(&r), y0[i] = (float)(i % 7) - 3.0f;
                CUCHECK(cudaMemcpy(g.ids, ids, sizeof(int32_t) * n_used, cudaMemcpyHostToDevice));
                CUCHECK(cudaMemcpy(g.w, w, sizeof(float) * n_used, cudaMemcpyHostToDevice));
                CUCHECK(cudaMemcpy(g.h, h, sizeof h, cudaMemcpyHostToDevice));
                const int rf = run(ctx, &L, &g, n_used, acc, acc ? y0 : NULL, "1", yf);
                const int rr = run(ctx, &L, &g, n_used, acc, acc ? y0 : NULL, "0", yr);
                bool finite;
                const double e = rel_l2(yf, yr, &finite);
                t_case(rf == 0 && rr == 0 && finite && e < FUSED_TOL, e, FUSED_TOL, "%s%s (seed %llu)",
                       name, finite ? "" : " (unwritten/NaN)", (unsigned long long)seed);
            }
        /* the fused kernel is the one that runs: its copies-only mode writes no output */
        snprintf(name, sizeof name, "%s fused kernel taken", mix);
        if (!filter || strstr(name, filter)) {
            const int rc = run(ctx, &L, &g, 6, false, NULL, "2", yf);
            int nan = 0;
            for (int i = 0; i < N_EMBD; i++)
                nan += isnan(yf[i]) != 0;
            t_check(rc == 0 && nan == N_EMBD, "%s (%d of %d outputs left unwritten)", name, nan, N_EMBD);
        }
        /* an id out of range: DS4_E_RANGE from the sync, the other experts still summed */
        snprintf(name, sizeof name, "%s fused bad id", mix);
        if (!filter || strstr(name, filter)) {
            int32_t ids[6] = {1, 3, N_EXPERT + 5, 7, 9, 11};
            CUCHECK(cudaMemcpy(g.ids, ids, sizeof ids, cudaMemcpyHostToDevice));
            const int rc = run(ctx, &L, &g, 6, false, NULL, "1", yf);
            bool finite;
            rel_l2(yf, yf, &finite);
            t_check(rc == DS4_E_RANGE && finite, "%s -> DS4_E_RANGE, finite output (rc %d)", name, rc);
            t_check(cuda_moe_sync(ctx, &err) == 0, "%s: sync clean afterwards", name);
        }
        /* batches: the distinct experts streamed once, each dotted with its tokens */
        static const struct {
            int n_tok, n_used, ld, acc;
            const char *kind; /* same, indep, overlap (from 5 experts, repeats within a token) */
        } bc[] = {{2, 6, N_EMBD, 0, "same"},    {2, 6, N_EMBD, 0, "indep"},   {2, 6, N_EMBD, 1, "overlap"},
                  {3, 6, N_EMBD + 64, 0, "indep"}, {4, 6, N_EMBD, 0, "same"}, {4, 6, N_EMBD, 0, "indep"},
                  {4, 6, N_EMBD, 1, "overlap"}, {4, 1, N_EMBD, 0, "indep"},  {8, 6, N_EMBD, 0, "same"},
                  {8, 6, N_EMBD, 0, "indep"},   {8, 8, N_EMBD + 64, 0, "overlap"}};
        for (size_t ci = 0; ci < sizeof bc / sizeof bc[0]; ci++) {
            const int nt = bc[ci].n_tok, nu = bc[ci].n_used, ld = bc[ci].ld;
            snprintf(name, sizeof name, "%s fused vs 4-launch batch %d n_used=%d %s%s%s", mix, nt, nu, bc[ci].kind,
                     ld != N_EMBD ? " ld+64" : "", bc[ci].acc ? " accumulate" : "");
            if (filter && !strstr(name, filter))
                continue;
            const uint64_t seed = 3000 + 10 * ci + (q2 ? 0 : 500);
            t_rng r = {seed};
            int32_t ids[MAX_USED * MAX_TOK];
            float w[MAX_USED * MAX_TOK];
            for (int t = 0; t < nt; t++)
                for (int k = 0; k < nu; k++) {
                    int e, dup;
                    if (!strcmp(bc[ci].kind, "overlap")) {
                        e = (int)(t_next(&r) % 5); /* repeats allowed */
                    } else if (!strcmp(bc[ci].kind, "same") && t > 0) {
                        e = ids[k];
                    } else {
                        do {
                            e = (int)(t_next(&r) % N_EXPERT);
                            dup = 0;
                            for (int j = 0; j < k; j++)
                                dup |= ids[t * nu + j] == e;
                        } while (dup);
                    }
                    ids[t * nu + k] = e;
                    w[t * nu + k] = (float)(0.1 + 0.4 * t_uniform(&r));
                }
            for (int i = 0; i < ld * nt; i++)
                h[i] = (float)t_normal(&r), y0[i] = (float)(i % 7) - 3.0f;
            CUCHECK(cudaMemcpy(g.ids, ids, sizeof(int32_t) * nt * nu, cudaMemcpyHostToDevice));
            CUCHECK(cudaMemcpy(g.w, w, sizeof(float) * nt * nu, cudaMemcpyHostToDevice));
            CUCHECK(cudaMemcpy(g.h, h, sizeof(float) * ld * nt, cudaMemcpyHostToDevice));
            const bool acc = bc[ci].acc != 0;
            const int rf = run_b(ctx, &L, &g, nt, nu, ld, acc, acc ? y0 : NULL, "1", yf);
            const int rr = run_b(ctx, &L, &g, nt, nu, ld, acc, acc ? y0 : NULL, "0", yr);
            bool finite;
            const double e = rel_l2_b(yf, yr, nt, ld, &finite);
            t_case(rf == 0 && rr == 0 && finite && e < FUSED_TOL, e, FUSED_TOL, "%s%s (seed %llu)", name,
                   finite ? "" : " (unwritten/NaN)", (unsigned long long)seed);
        }
        snprintf(name, sizeof name, "%s fused kernel taken batch 4", mix);
        if (!filter || strstr(name, filter)) {
            const int rc = run_b(ctx, &L, &g, 4, 6, N_EMBD, false, NULL, "2", yf);
            int nan = 0;
            for (int i = 0; i < 4 * N_EMBD; i++)
                nan += isnan(yf[i]) != 0;
            t_check(rc == 0 && nan == 4 * N_EMBD, "%s (%d of %d outputs left unwritten)", name, nan, 4 * N_EMBD);
        }
        snprintf(name, sizeof name, "%s batch 4 by default: not the fused kernel", mix);
        if (!filter || strstr(name, filter)) {
            unsetenv("DS4_CUDA_MOE_FUSED_BATCH"); /* mode 2 would leave the outputs NaN */
            const int rc = run_b(ctx, &L, &g, 4, 6, N_EMBD, false, NULL, "2", yf);
            setenv("DS4_CUDA_MOE_FUSED_BATCH", "1", 1);
            int nan = 0;
            for (int i = 0; i < 4 * N_EMBD; i++)
                nan += isnan(yf[i]) != 0;
            t_check(rc == 0 && nan == 0, "%s (%d outputs unwritten)", name, nan);
        }
        snprintf(name, sizeof name, "%s fused bad id batch 2", mix);
        if (!filter || strstr(name, filter)) {
            int32_t ids[12] = {1, 3, N_EXPERT + 5, 7, 9, 11, 3, -2, 7, 12, 13, 14};
            CUCHECK(cudaMemcpy(g.ids, ids, sizeof ids, cudaMemcpyHostToDevice));
            const int rc = run_b(ctx, &L, &g, 2, 6, N_EMBD, false, NULL, "1", yf);
            bool finite;
            rel_l2_b(yf, yf, 2, N_EMBD, &finite);
            t_check(rc == DS4_E_RANGE && finite, "%s -> DS4_E_RANGE, finite output (rc %d)", name, rc);
            t_check(cuda_moe_sync(ctx, &err) == 0, "%s: sync clean afterwards", name);
        }
        moe_test_free_layer(&C);
        cudaFree((void *)L.gate.data), cudaFree((void *)L.up.data), cudaFree((void *)L.down.data);
    }
    cudaFree(g.ids), cudaFree(g.w), cudaFree(g.h), cudaFree(g.y);
    cuda_moe_ctx_free(ctx);
    return t_summary();
}
