/* test_cuda_moe.c — the CUDA decode-MoE kernels (src/backend/cuda/cuda_moe.h) on a GPU, at the
 * published dimensions (n_embd 4096, n_ff 2048, 6 experts per token; 16 experts in the
 * tensors so tokens share some), q2 mix (IQ2_XXS gate/up, Q2_K down) and q4 mix (Q4_K):
 *  1. both paths, batch 1..16, against cpu_moe_run (the same-precision CPU path, bit-exact to
 *     the float64-checked reference of tests/test_moe.c) by rel L2 over the whole batch;
 *     outputs and scratch poisoned (NaN) before every run; every output must be finite;
 *  2. a float64 reference (dequantized weights, Q8_K round-tripped activations) at batch 1, 4;
 *  3. grouping: all tokens on the same experts (full tiles, 40 and 70 tokens: split tiles and
 *     calls), a token repeating an expert, accumulate, the stage profile, the env switch, the
 *     automatic choice made on the device (and the path it took);
 *  4. an out-of-range id reported by cuda_moe_sync;
 *  5. other shapes (n_embd 256 and 768: odd IQ2_XXS block counts; rows padded to 16 bytes).
 * Skips (exit 0) without a CUDA device.
 * Usage: test_cuda_moe [case-substring]. Spec: §3.9 step 6, §4.1. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_moe.h"
#include "kernels/cpu/moe.h"
#include "cuda/cuda_test_util.h"
#include "moe_test_layer.h"
#include "test_util.h"

/* GPU and CPU differ only in f32 summation order and in the rare mid element whose Q8_K
 * rounding flips (~2e-4 rel L2 per flip at these sizes); a wrong row or scale is O(1). */
#define GPU_TOL 1e-3
/* vs float64: the same plus the CPU path's own f32 error (tests/test_moe.c MOE_REF_TOL) */
#define F64_TOL 1e-3

#define N_EMBD 4096
#define N_FF 2048
#define N_EXPERT 16
#define N_USED 6
#define MAX_TOK 70
#define CLAMP 10.0f

static const char *filter;
static cpu_pool *pool;

static bool want(const char *name) { return !filter || strstr(name, filter); }

/* ======== random layers (host and device copies) ======================================== */

typedef struct layer {
    cpu_moe_layer cpu;
    cuda_moe_layer gpu;
} layer;

/* The random layer of tests/moe_test_layer.h on the host, and its copy on the device. */
static void make_layer(layer *L, bool q2, uint64_t seed)
{
    memset(L, 0, sizeof *L);
    if (moe_test_make_layer(&L->cpu, q2, N_EMBD, N_FF, N_EXPERT, CLAMP, seed))
        exit(1);
    L->gpu.n_expert = N_EXPERT;
    L->gpu.clamp = CLAMP;
    cuda_test_upload(&L->gpu.gate, &L->cpu.gate, N_EXPERT, 0);
    cuda_test_upload(&L->gpu.up, &L->cpu.up, N_EXPERT, 0);
    cuda_test_upload(&L->gpu.down, &L->cpu.down, N_EXPERT, 0);
}

static void free_layer(layer *L)
{
    moe_test_free_layer(&L->cpu);
    cudaFree((void *)L->gpu.gate.data), cudaFree((void *)L->gpu.up.data);
    cudaFree((void *)L->gpu.down.data);
}

/* ======== batches ======================================================================= */

enum { R_RANDOM, R_SHARED, R_REPEAT };

typedef struct batch {
    int n;
    float h[MAX_TOK][N_EMBD];
    int32_t ids[MAX_TOK][N_USED];
    float w[MAX_TOK][N_USED];
} batch;

static void make_batch(batch *B, int n, int routing, uint64_t seed)
{
    t_rng r = {seed};
    B->n = n;
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < N_EMBD; i++)
            B->h[t][i] = (float)t_normal(&r);
        for (int k = 0; k < N_USED; k++) {
            int e, dup;
            do {
                e = (int)(t_next(&r) % N_EXPERT);
                dup = 0;
                for (int j = 0; j < k; j++)
                    dup |= B->ids[t][j] == e;
            } while (dup);
            B->ids[t][k] = routing == R_SHARED && t > 0 ? B->ids[0][k] : e;
            B->w[t][k] = (float)(0.1 + 0.4 * t_uniform(&r));
        }
        if (routing == R_REPEAT)
            B->ids[t][N_USED - 1] = B->ids[t][0];
    }
}

/* ======== running both sides ============================================================ */

static double rel_l2(const float *a, const float *ref, size_t n, bool *finite)
{
    double num = 0, den = 0;
    *finite = true;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            *finite = false;
        const double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct gpu_bufs {
    int32_t *ids;
    float *w, *h, *y;
} gpu_bufs;

/* Runs B on the GPU (y starts as y0 when accumulate, else poisoned); out gets y. */
static int run_gpu(cuda_moe_ctx *ctx, gpu_bufs *g, const layer *L, const batch *B,
                   cuda_moe_path path, bool accumulate, const float *y0, float *out, ds4_error *err)
{
    const size_t ny = (size_t)B->n * N_EMBD;
    CUCHECK(cudaMemcpy(g->ids, B->ids, sizeof(int32_t) * B->n * N_USED, cudaMemcpyHostToDevice));
    CUCHECK(cudaMemcpy(g->w, B->w, sizeof(float) * B->n * N_USED, cudaMemcpyHostToDevice));
    CUCHECK(cudaMemcpy(g->h, B->h, sizeof(float) * ny, cudaMemcpyHostToDevice));
    if (accumulate)
        CUCHECK(cudaMemcpy(g->y, y0, sizeof(float) * ny, cudaMemcpyHostToDevice));
    else
        CUCHECK(cudaMemset(g->y, 0xff, sizeof(float) * ny));
    CUCHECK(cudaDeviceSynchronize()); /* the copies above ran on the legacy stream */
    if (cuda_moe_poison(ctx, err))
        return -1;
    cuda_moe_args a = {&L->gpu, B->n, N_USED, g->ids, g->w, g->h, N_EMBD, g->y, N_EMBD,
                       accumulate, path, 0};
    int rc = cuda_moe_run(ctx, &a, err);
    if (!rc)
        rc = cuda_moe_sync(ctx, err);
    CUCHECK(cudaMemcpy(out, g->y, sizeof(float) * ny, cudaMemcpyDeviceToHost));
    return rc;
}

static void run_cpu(cpu_moe_ctx *cc, const layer *L, const batch *B, bool accumulate, float *y)
{
    ds4_error err;
    cpu_moe_args a = {&L->cpu, B->n, N_USED, &B->ids[0][0], &B->w[0][0], &B->h[0][0], N_EMBD,
                      y, N_EMBD, accumulate, CPU_MOE_AUTO, 0};
    if (cpu_moe_run(cc, pool, &a, &err)) {
        printf("FAIL  cpu_moe_run: %s\n", err.msg);
        exit(1);
    }
}

/* ======== float64 reference ============================================================= */

static void q8k_round_trip(const float *x, int64_t n, double *out)
{
    quant_block_q8_k q[N_EMBD / QUANT_QK_K];
    float f[N_EMBD];
    quant_quant_row_q8_k(x, q, n);
    quant_dequant_row_q8_k(q, f, n);
    for (int64_t i = 0; i < n; i++)
        out[i] = f[i];
}

static double swiglu_f64(double g, double u, double c, double w)
{
    g = g > c ? c : g;
    u = u > c ? c : u < -c ? -c : u;
    return g / (1.0 + exp(-g)) * u * w;
}

static void ref_f64(const layer *L, const batch *B, float *y)
{
    static float wrow[N_EMBD], midf[N_FF];
    static double x[N_EMBD], m[N_FF], gg[N_FF];
    const cpu_moe_tensor *G = &L->cpu.gate, *U = &L->cpu.up, *D = &L->cpu.down;
    for (int t = 0; t < B->n; t++) {
        double acc[N_EMBD] = {0};
        q8k_round_trip(B->h[t], N_EMBD, x);
        for (int k = 0; k < N_USED; k++) {
            const int e = B->ids[t][k];
            for (int r = 0; r < N_FF; r++) {
                double sg = 0, su = 0;
                quant_get_traits(G->type)->dequant_row((const uint8_t *)G->data + e * G->expert_bytes + r * G->row_bytes, wrow, N_EMBD);
                for (int i = 0; i < N_EMBD; i++)
                    sg += wrow[i] * x[i];
                quant_get_traits(U->type)->dequant_row((const uint8_t *)U->data + e * U->expert_bytes + r * U->row_bytes, wrow, N_EMBD);
                for (int i = 0; i < N_EMBD; i++)
                    su += wrow[i] * x[i];
                gg[r] = swiglu_f64(sg, su, CLAMP, B->w[t][k]);
                midf[r] = (float)gg[r];
            }
            q8k_round_trip(midf, N_FF, m);
            for (int r = 0; r < N_EMBD; r++) {
                quant_get_traits(D->type)->dequant_row((const uint8_t *)D->data + e * D->expert_bytes + r * D->row_bytes, wrow, N_FF);
                double s = 0;
                for (int i = 0; i < N_FF; i++)
                    s += wrow[i] * m[i];
                acc[r] += s;
            }
        }
        for (int r = 0; r < N_EMBD; r++)
            y[t * N_EMBD + r] = (float)acc[r];
    }
}

/* ======== cases ========================================================================= */

static void check(const char *name, const float *gpu, const float *ref, size_t n, double tol,
                  int rc, uint64_t seed)
{
    bool finite;
    const double e = rel_l2(gpu, ref, n, &finite);
    const bool ok = rc == 0 && finite && e < tol;
    t_case(ok, e, tol, "%s%s", name, finite ? "" : " (unwritten/NaN)");
    if (!ok)
        printf("      seed %llu: rerun with test_cuda_moe '%s'\n", (unsigned long long)seed, name);
}

static void mix_cases(bool q2, cuda_moe_ctx *ctx, cpu_moe_ctx *cc, gpu_bufs *g, batch *B,
                      float *yc, float *yg, float *y0)
{
    const char *mix = q2 ? "q2" : "q4";
    layer L;
    make_layer(&L, q2, q2 ? 11 : 12);
    ds4_error err;
    char name[96];
    for (int n = 1; n <= 16; n++) {
        const uint64_t seed = 100 + n;
        make_batch(B, n, R_RANDOM, seed);
        bool ran = false;
        for (int p = 0; p < 2; p++) {
            snprintf(name, sizeof name, "%s %s n=%d", mix, p ? "minigemm" : "gemv", n);
            if (!want(name))
                continue;
            if (!ran)
                run_cpu(cc, &L, B, false, yc), ran = true;
            int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, false, NULL, yg, &err);
            check(name, yg, yc, (size_t)n * N_EMBD, GPU_TOL, rc, seed);
        }
    }
    for (int n = 1; n <= 4; n += 3) {
        snprintf(name, sizeof name, "%s vs float64 n=%d", mix, n);
        if (!want(name))
            continue;
        make_batch(B, n, R_RANDOM, 200 + n);
        ref_f64(&L, B, yc);
        for (int p = 0; p < 2; p++) {
            int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, false, NULL, yg, &err);
            snprintf(name, sizeof name, "%s %s vs float64 n=%d", mix, p ? "minigemm" : "gemv", n);
            check(name, yg, yc, (size_t)n * N_EMBD, F64_TOL, rc, 200 + n);
        }
    }
    static const struct { const char *what; int routing, n; bool acc; } extra[] = {
        {"shared experts", R_SHARED, 16, false}, {"shared experts", R_SHARED, 40, false},
        {"shared experts", R_SHARED, 70, false}, {"repeated id", R_REPEAT, 5, false},
        {"accumulate", R_RANDOM, 3, true},       {"random", R_RANDOM, 70, false},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        const uint64_t seed = 300 + i;
        make_batch(B, extra[i].n, extra[i].routing, seed);
        const size_t ny = (size_t)extra[i].n * N_EMBD;
        bool ran = false;
        for (int p = 0; p < 2; p++) {
            snprintf(name, sizeof name, "%s %s %s n=%d", mix, p ? "minigemm" : "gemv",
                     extra[i].what, extra[i].n);
            if (!want(name))
                continue;
            if (!ran) {
                for (size_t k = 0; k < ny; k++)
                    y0[k] = yc[k] = (float)(k % 7) - 3.0f;
                run_cpu(cc, &L, B, extra[i].acc, yc), ran = true;
            }
            int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, extra[i].acc, y0, yg, &err);
            check(name, yg, yc, ny, GPU_TOL, rc, seed);
        }
    }
    /* the automatic choice: decided on the device from the grouping (tuning.cuh) */
    static const struct { int routing, n; cuda_moe_path want; } autos[] = {
        {R_SHARED, 4, CUDA_MOE_MINIGEMM}, {R_SHARED, 16, CUDA_MOE_MINIGEMM},
        {R_RANDOM, 2, CUDA_MOE_GEMV},     {R_RANDOM, 1, CUDA_MOE_GEMV},
    };
    /* sm_90 with DS4_CUDA_MOE_FUSED_BATCH=1: the fused GEMV takes small batches (tuning.cuh
     * CUDA_MOE_FUSED_AUTO_MAX_TOK*: faster than the tiles at 4 tokens on the same experts) */
    int major = 0;
    CUCHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    const char *fb = getenv("DS4_CUDA_MOE_FUSED_BATCH");
    const bool fused_batch = fb && !strcmp(fb, "1");
    for (size_t i = 0; i < sizeof autos / sizeof autos[0]; i++) {
        const cuda_moe_path want_path =
            fused_batch && major >= 9 && autos[i].n <= 4 ? CUDA_MOE_GEMV : autos[i].want;
        snprintf(name, sizeof name, "%s auto %s n=%d -> %s", mix,
                 autos[i].routing == R_SHARED ? "shared" : "random", autos[i].n,
                 cuda_moe_path_name(want_path));
        if (!want(name))
            continue;
        make_batch(B, autos[i].n, autos[i].routing, 600 + i);
        run_cpu(cc, &L, B, false, yc);
        int rc = run_gpu(ctx, g, &L, B, CUDA_MOE_AUTO, false, NULL, yg, &err);
        check(name, yg, yc, (size_t)autos[i].n * N_EMBD, GPU_TOL, rc, 600 + i);
        t_check(cuda_moe_last_path(ctx) == want_path, "%s: took %s", name,
                cuda_moe_path_name(cuda_moe_last_path(ctx)));
    }
    snprintf(name, sizeof name, "%s stage profile", mix);
    if (want(name)) {
        make_batch(B, 4, R_RANDOM, 400);
        run_cpu(cc, &L, B, false, yc);
        setenv("DS4_MOE_STAGE_PROFILE", "1", 1);
        for (int p = 0; p < 2; p++) {
            int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, false, NULL, yg, &err);
            snprintf(name, sizeof name, "%s %s stage profile", mix, p ? "minigemm" : "gemv");
            check(name, yg, yc, 4 * N_EMBD, GPU_TOL, rc, 400);
        }
        unsetenv("DS4_MOE_STAGE_PROFILE");
    }
    snprintf(name, sizeof name, "%s bad id", mix);
    if (want(name)) {
        make_batch(B, 2, R_RANDOM, 500);
        B->ids[1][2] = N_EXPERT;
        for (int p = 0; p < 2; p++) {
            int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, false, NULL, yg, &err);
            t_check(rc == DS4_E_RANGE, "%s %s bad id -> DS4_E_RANGE (rc %d)", mix,
                    p ? "minigemm" : "gemv", rc);
            t_check(cuda_moe_sync(ctx, &err) == 0, "%s %s sync clean after bad id", mix,
                    p ? "minigemm" : "gemv");
        }
    }
    free_layer(&L);
}

/* Shapes other than the published ones (dimensions come from the GGUF): an odd count of 66-byte
 * IQ2_XXS blocks per row (n_embd 256, 768) ends mid-word, rows padded to 16 bytes, single-block
 * Q2_K/Q4_K rows. Both paths against cpu_moe_run, h and y rows N_EMBD apart. */
static void shape_cases(cuda_moe_ctx *ctx, cpu_moe_ctx *cc, gpu_bufs *g, batch *B, float *yc,
                        float *yg)
{
    static const struct { int n_embd, n_ff; } shapes[] = {{256, 256}, {768, 512}};
    static const int ns[] = {1, 2, 5, 16};
    static float pc[MAX_TOK * 768], pg[MAX_TOK * 768];
    ds4_error err;
    char name[96];
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int ne = shapes[si].n_embd, nf = shapes[si].n_ff;
        for (int q2 = 1; q2 >= 0; q2--) {
            layer L;
            memset(&L, 0, sizeof L);
            if (moe_test_make_layer(&L.cpu, q2, ne, nf, N_EXPERT, CLAMP, 700 + 2 * si + q2))
                exit(1);
            L.gpu.n_expert = N_EXPERT;
            L.gpu.clamp = CLAMP;
            cuda_test_upload(&L.gpu.gate, &L.cpu.gate, N_EXPERT, (L.cpu.gate.row_bytes + 15) / 16 * 16);
            cuda_test_upload(&L.gpu.up, &L.cpu.up, N_EXPERT, (L.cpu.up.row_bytes + 15) / 16 * 16);
            cuda_test_upload(&L.gpu.down, &L.cpu.down, N_EXPERT, (L.cpu.down.row_bytes + 15) / 16 * 16);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                const int n = ns[ni];
                const uint64_t seed = 710 + ni;
                make_batch(B, n, n == 16 ? R_SHARED : R_RANDOM, seed);
                bool ran = false;
                for (int p = 0; p < 2; p++) {
                    snprintf(name, sizeof name, "%s %s n_embd=%d n_ff=%d padded n=%d",
                             q2 ? "q2" : "q4", p ? "minigemm" : "gemv", ne, nf, n);
                    if (!want(name))
                        continue;
                    if (!ran)
                        run_cpu(cc, &L, B, false, yc), ran = true;
                    int rc = run_gpu(ctx, g, &L, B, (cuda_moe_path)p, false, NULL, yg, &err);
                    for (int t = 0; t < n; t++) {
                        memcpy(pc + (size_t)t * ne, yc + (size_t)t * N_EMBD, sizeof(float) * ne);
                        memcpy(pg + (size_t)t * ne, yg + (size_t)t * N_EMBD, sizeof(float) * ne);
                    }
                    check(name, pg, pc, (size_t)n * ne, GPU_TOL, rc, seed);
                }
            }
            free_layer(&L);
        }
    }
}

int main(int argc, char **argv)
{
    filter = argc > 1 ? argv[1] : NULL;
    if (cuda_device_count() == 0) {
        t_skip("no CUDA device", "cuda_moe (every case)");
        printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
        return 0;
    }
    struct cudaDeviceProp prop;
    CUCHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount);
    ds4_error err;
    cuda_moe_ctx *ctx;
    cpu_moe_ctx *cc;
    if (cuda_moe_ctx_new(&ctx, NULL, &err) || cpu_moe_ctx_new(&cc, &err) ||
        cpu_pool_new(&pool, cpu_pool_default_threads(), &err)) {
        printf("FAIL  setup: %s\n", err.msg);
        return 1;
    }
    gpu_bufs g;
    CUCHECK(cudaMalloc((void **)&g.ids, sizeof(int32_t) * MAX_TOK * N_USED));
    CUCHECK(cudaMalloc((void **)&g.w, sizeof(float) * MAX_TOK * N_USED));
    CUCHECK(cudaMalloc((void **)&g.h, sizeof(float) * MAX_TOK * N_EMBD));
    CUCHECK(cudaMalloc((void **)&g.y, sizeof(float) * MAX_TOK * N_EMBD));
    batch *B = malloc(sizeof *B);
    float *yc = malloc(sizeof(float) * MAX_TOK * N_EMBD), *yg = malloc(sizeof(float) * MAX_TOK * N_EMBD);
    float *y0 = malloc(sizeof(float) * MAX_TOK * N_EMBD);
    if (!B || !yc || !yg || !y0)
        return 1;

    /* the env switch and the table */
    setenv("DS4_DECODE_MOE_MINIGEMM", "1", 1);
    t_check(cuda_moe_auto_path(DS4_TYPE_IQ2_XXS, 1) == CUDA_MOE_MINIGEMM, "env DS4_DECODE_MOE_MINIGEMM=1");
    setenv("DS4_DECODE_MOE_MINIGEMM", "0", 1);
    t_check(cuda_moe_auto_path(DS4_TYPE_Q4_K, 16) == CUDA_MOE_GEMV, "env DS4_DECODE_MOE_MINIGEMM=0");
    unsetenv("DS4_DECODE_MOE_MINIGEMM");
    t_check(cuda_moe_auto_path(DS4_TYPE_IQ2_XXS, 1) == CUDA_MOE_GEMV, "auto path: batch 1 -> gemv");
    t_check(cuda_moe_auto_path(DS4_TYPE_Q4_K, 4) == CUDA_MOE_BY_ROUTING,
            "auto path: batch 4 -> decided by the routing");

    mix_cases(true, ctx, cc, &g, B, yc, yg, y0);
    mix_cases(false, ctx, cc, &g, B, yc, yg, y0);
    shape_cases(ctx, cc, &g, B, yc, yg);

    free(B), free(yc), free(yg), free(y0);
    cudaFree(g.ids), cudaFree(g.w), cudaFree(g.h), cudaFree(g.y);
    cuda_moe_ctx_free(ctx);
    cpu_moe_ctx_free(cc);
    cpu_pool_free(pool);
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}
