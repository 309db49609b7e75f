/* cuda_moe_bench.c — decode MoE of one layer on the GPU (src/backend/cuda/cuda_moe.h) at the
 * published dimensions (n_embd 4096, n_ff 2048, 256 experts in device memory, 6 per token),
 * q2 and q4 mixes, GEMV vs mini-GEMM interleaved, batch 1, 2, 4, 8, 16, three regimes:
 *   warm:   the same 6 experts every iteration for every token (weights may sit in L2);
 *   cold:   6 experts drawn at random per iteration, shared by the batch's tokens (weights
 *           come from HBM: 256 experts, one layer 1.8 / 3.6 GB, L2 50 MB);
 *   indep:  every token draws its own 6 experts per iteration (little to share).
 * Times graph replays of R calls with CUDA events (median and min over replays, per call),
 * weight bytes = distinct experts read per call, % of the device-to-device copy bandwidth
 * (read + write bytes) measured in the same run. Paths: gemv (on sm_90 the fused one-launch
 * kernel where it takes the batch: up to CUDA_FUSED_MAX_TOK tokens), minigemm, auto
 * (CUDA_MOE_AUTO, its ratio 'bN' to the fastest forced path), gemv4 (the four-launch GEMV,
 * DS4_CUDA_MOE_FUSED=0). Checks gemv == minigemm == gemv4 before timing.
 * At batch 1 cold it also times the GEMV path three ways, interleaved (DS4_CUDA_MOE_FUSED):
 * the fused one-launch kernel, the four-launch path it replaces, and the fused kernel's copies
 * alone (no arithmetic: the data-movement floor of its pipeline; outputs unchecked).
 * Usage: cuda_moe_bench [--csv FILE] [--reps N] [--max-batch N]. Figures: docs/perf.md. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_moe.h"
#include "bench_util.h"

#define N_EMBD 4096
#define N_FF 2048
#define N_EXPERT 256
#define N_USED 6
#define MAX_TOK 16
#define R_CALLS 32 /* calls per graph */

#define CU(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static double copy_bw_gbs(void)
{
    const size_t n = (size_t)2 << 30;
    void *a, *b;
    CU(cudaMalloc(&a, n));
    CU(cudaMalloc(&b, n));
    CU(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    double t[9];
    for (int i = 0; i < 10; i++) {
        CU(cudaEventRecord(e0, 0));
        CU(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        CU(cudaEventRecord(e1, 0));
        CU(cudaEventSynchronize(e1));
        float ms;
        CU(cudaEventElapsedTime(&ms, e0, e1));
        if (i)
            t[i - 1] = ms;
    }
    cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / (bench_median(t, 9) * 1e-3) / 1e9;
}

static void tensor(cuda_moe_tensor *T, ds4_type type, int64_t n_in, int64_t n_out, float rms,
                   uint64_t seed)
{
    ds4_error err;
    T->type = type;
    T->n_in = n_in;
    T->n_out = n_out;
    T->row_bytes = quant_row_bytes(type, n_in);
    T->expert_bytes = T->row_bytes * (size_t)n_out;
    void *d;
    CU(cudaMalloc(&d, T->expert_bytes * N_EXPERT));
    if (cuda_fill_random_blocks(d, type, T->expert_bytes * N_EXPERT / quant_get_traits(type)->block_bytes,
                                seed, rms, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    T->data = d;
}

enum { WARM, COLD, INDEP };
static const char *regime_name[] = {"warm", "cold", "indep"};

/* R_CALLS id sets of n tokens for a regime; returns the mean distinct experts per call. */
static double make_ids(int32_t *ids, int n, int regime)
{
    double distinct = 0;
    for (int c = 0; c < R_CALLS; c++) {
        int32_t *s = ids + (size_t)c * n * N_USED;
        for (int t = 0; t < n; t++)
            for (int k = 0; k < N_USED; k++) {
                int e, dup;
                if (regime == WARM) {
                    e = 7 + 31 * k;
                } else if (regime == COLD && t > 0) {
                    e = s[k];
                } else {
                    do {
                        e = (int)(rnd() % N_EXPERT);
                        dup = 0;
                        for (int j = 0; j < k; j++)
                            dup |= s[t * N_USED + j] == e;
                    } while (dup);
                }
                s[t * N_USED + k] = e;
            }
        bool seen[N_EXPERT] = {false};
        for (int i = 0; i < n * N_USED; i++)
            if (!seen[s[i]])
                seen[s[i]] = true, distinct++;
    }
    return distinct / R_CALLS;
}

/* Replays the n graphs interleaved (2 warm-up rounds, then reps), each timed with events:
 * t[p][r] = µs per call of graph p in round r (R_CALLS calls a graph), r < 64. */
static void time_graphs(cudaGraphExec_t *gx, int n, int reps, cudaStream_t st, cudaEvent_t e0,
                        cudaEvent_t e1, double (*t)[64])
{
    for (int r = -2; r < reps; r++)
        for (int p = 0; p < n; p++) {
            CU(cudaEventRecord(e0, st));
            CU(cudaGraphLaunch(gx[p], st));
            CU(cudaEventRecord(e1, st));
            CU(cudaEventSynchronize(e1));
            float ms;
            CU(cudaEventElapsedTime(&ms, e0, e1));
            if (r >= 0 && r < 64)
                t[p][r] = ms * 1e3 / R_CALLS;
        }
}

/* The GEMV path at batch 1 with DS4_CUDA_MOE_FUSED = 1 (fused), 0 (four launches), 2 (the
 * fused kernel's copies only), 3 (its launch only), 4 (not a cooperative launch), graphs of
 * R_CALLS calls replayed interleaved. */
static void fused_ab(cuda_moe_ctx *ctx, cudaStream_t st, const cuda_moe_layer *L, const int32_t *ids,
                     const float *w, const float *h, float *y, int reps, double bytes, double bw,
                     const char *mix, const char *regime, FILE *csv)
{
    enum { NV = 5 };
    static const char *mode[NV] = {"1", "0", "2", "3", "4"};
    static const char *name[NV] = {"fused", "4-launch", "copies", "launch", "noncoop"};
    cudaGraphExec_t gx[NV];
    ds4_error err;
    for (int p = 0; p < NV; p++) {
        setenv("DS4_CUDA_MOE_FUSED", mode[p], 1);
        cuda_moe_args a = {L, 1, N_USED, ids, w, h, N_EMBD, y, N_EMBD, false, CUDA_MOE_GEMV, 0};
        if (cuda_moe_run(ctx, &a, &err) || cuda_moe_sync(ctx, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            exit(1);
        }
        if (p != 1 && p != 3) { /* the stage profile, with the fused kernel's stamps */
            setenv("DS4_MOE_STAGE_PROFILE", "1", 1);
            setenv("DS4_CUDA_MOE_FUSED_TRACE", "1", 1);
            for (int k = 0; k < 3; k++)
                cuda_moe_run(ctx, &a, &err);
            unsetenv("DS4_CUDA_MOE_FUSED_TRACE");
            unsetenv("DS4_MOE_STAGE_PROFILE");
        }
        cudaGraph_t g;
        CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int c = 0; c < R_CALLS; c++) {
            a.ids = ids + (size_t)c * N_USED;
            if (cuda_moe_run(ctx, &a, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                exit(1);
            }
        }
        CU(cudaStreamEndCapture(st, &g));
        CU(cudaGraphInstantiate(&gx[p], g, 0));
        CU(cudaGraphDestroy(g));
    }
    unsetenv("DS4_CUDA_MOE_FUSED");
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    double t[NV][64];
    time_graphs(gx, NV, reps, st, e0, e1, t);
    if (cuda_moe_sync(ctx, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    const int nr = reps < 64 ? reps : 64;
    for (int p = 0; p < NV; p++) {
        const double med = bench_median(t[p], nr), gbs = bytes / (med * 1e-6) / 1e9;
        printf("%-3s %-6s %5d %-9s %10.1f %10.1f %8.0f %6.1f%% %8s\n", mix, regime, 1, name[p], med,
               t[p][0], gbs, 100.0 * gbs / bw, "gemv");
        if (csv)
            fprintf(csv, "%s,%s,1,gemv-%s,%.2f,%.2f,%.1f,%.2f,\n", mix, regime, name[p], med, t[p][0], gbs,
                    100.0 * gbs / bw);
        CU(cudaGraphExecDestroy(gx[p]));
    }
    CU(cudaEventDestroy(e0));
    CU(cudaEventDestroy(e1));
}

int main(int argc, char **argv)
{
    const char *csv_path = NULL;
    int reps = 15, max_batch = MAX_TOK;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            csv_path = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-batch") && i + 1 < argc)
            max_batch = atoi(argv[++i]);
    }
    if (cuda_device_count() == 0) {
        printf("cuda_moe_bench: no CUDA device\n");
        return 0;
    }
    FILE *csv = csv_path ? fopen(csv_path, "w") : NULL;
    if (csv)
        fprintf(csv, "mix,regime,batch,path,median_us,min_us,weight_gb_s,pct_copy_bw,mg_over_gemv\n");
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    bench_header("cuda_moe_bench: decode MoE, one layer, GEMV vs mini-GEMM", "cuda");
    const double bw = copy_bw_gbs();
    printf("# gpu: %s, sm_%d%d, %d SMs, L2 %.0f MiB, %.0f GiB\n", prop.name, prop.major,
           prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
           prop.totalGlobalMem / 1073741824.0);
    printf("# device-to-device copy bandwidth (read + write): %.0f GB/s\n", bw);
    printf("# graph of %d calls per replay, %d replays per case, paths interleaved\n", R_CALLS, reps);
    printf("%-3s %-6s %5s %-9s %10s %10s %8s %7s %8s\n", "mix", "regime", "batch", "path",
           "median_us", "min_us", "GB/s", "%bw", "mg/gemv");

    ds4_error err;
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cuda_moe_ctx *ctx;
    if (cuda_moe_ctx_new(&ctx, st, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float *h, *y, *w;
    int32_t *ids;
    CU(cudaMalloc((void **)&h, sizeof(float) * MAX_TOK * N_EMBD));
    CU(cudaMalloc((void **)&y, sizeof(float) * MAX_TOK * N_EMBD));
    CU(cudaMalloc((void **)&w, sizeof(float) * MAX_TOK * N_USED));
    CU(cudaMalloc((void **)&ids, sizeof(int32_t) * R_CALLS * MAX_TOK * N_USED));
    float hh[MAX_TOK * N_EMBD], ww[MAX_TOK * N_USED];
    for (int i = 0; i < MAX_TOK * N_EMBD; i++)
        hh[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 * 3.4 - 1.7);
    for (int i = 0; i < MAX_TOK * N_USED; i++)
        ww[i] = 0.1f + 0.4f * (float)((rnd() >> 40) / 16777216.0);
    CU(cudaMemcpy(h, hh, sizeof hh, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(w, ww, sizeof ww, cudaMemcpyHostToDevice));
    CU(cudaDeviceSynchronize());
    static int32_t hid[R_CALLS * MAX_TOK * N_USED];
    static float y0[MAX_TOK * N_EMBD], y1[MAX_TOK * N_EMBD], y2[MAX_TOK * N_EMBD];
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    static const int batches[] = {1, 2, 4, 8, 16};

    for (int q2 = 1; q2 >= 0; q2--) {
        const char *mix = q2 ? "q2" : "q4";
        cuda_moe_layer L;
        memset(&L, 0, sizeof L);
        L.n_expert = N_EXPERT;
        L.clamp = 10.0f;
        const ds4_type gt = q2 ? DS4_TYPE_IQ2_XXS : DS4_TYPE_Q4_K, dt = q2 ? DS4_TYPE_Q2_K : DS4_TYPE_Q4_K;
        tensor(&L.gate, gt, N_EMBD, N_FF, 6.0f / 64.0f, 1);
        tensor(&L.up, gt, N_EMBD, N_FF, 6.0f / 64.0f, 2);
        tensor(&L.down, dt, N_FF, N_EMBD, 0.5f / 45.25f, 3);
        const double expert_bytes = (double)(L.gate.expert_bytes + L.up.expert_bytes + L.down.expert_bytes);
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
            const int n = batches[bi];
            if (n > max_batch)
                break;
            for (int regime = WARM; regime <= INDEP; regime++) {
                if (regime == INDEP && n == 1)
                    continue; /* the same as cold */
                const double distinct = make_ids(hid, n, regime);
                CU(cudaMemcpy(ids, hid, sizeof(int32_t) * R_CALLS * n * N_USED, cudaMemcpyHostToDevice));
                CU(cudaDeviceSynchronize()); /* the context's stream does not wait for it */
                enum { NP = 4 };
                cudaGraphExec_t gx[NP];
                for (int p = 0; p < NP; p++) {
                    cuda_moe_args a = {&L, n, N_USED, ids, w, h, N_EMBD, y, N_EMBD, false,
                                       p == 2 ? CUDA_MOE_AUTO : p == 3 ? CUDA_MOE_GEMV : (cuda_moe_path)p, 0};
                    if (p == 3)
                        setenv("DS4_CUDA_MOE_FUSED", "0", 1);
                    /* check once (gemv == minigemm on the first id set), size the scratch */
                    if (cuda_moe_run(ctx, &a, &err) || cuda_moe_sync(ctx, &err)) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                    }
                    if (p != 2)
                        CU(cudaMemcpy(p == 0 ? y0 : p == 1 ? y1 : y2, y, sizeof(float) * n * N_EMBD,
                                      cudaMemcpyDeviceToHost));
                    if (p < 2 && regime == COLD && (n == 1 || n == 8)) {
                        setenv("DS4_MOE_STAGE_PROFILE", "1", 1);
                        for (int k = 0; k < 3; k++)
                            cuda_moe_run(ctx, &a, &err);
                        unsetenv("DS4_MOE_STAGE_PROFILE");
                    }
                    cudaGraph_t g;
                    CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
                    for (int c = 0; c < R_CALLS; c++) {
                        a.ids = ids + (size_t)c * n * N_USED;
                        if (cuda_moe_run(ctx, &a, &err)) {
                            fprintf(stderr, "%s\n", err.msg);
                            return 1;
                        }
                    }
                    CU(cudaStreamEndCapture(st, &g));
                    CU(cudaGraphInstantiate(&gx[p], g, 0));
                    CU(cudaGraphDestroy(g));
                    unsetenv("DS4_CUDA_MOE_FUSED");
                }
                for (int c = 1; c <= 2; c++) {
                    const float *yc = c == 1 ? y1 : y2;
                    double num = 0, den = 0;
                    for (int i = 0; i < n * N_EMBD; i++)
                        num += (double)(yc[i] - y0[i]) * (yc[i] - y0[i]), den += (double)y0[i] * y0[i];
                    const double rel = sqrt(num / (den > 0 ? den : 1));
                    if (!(rel < 1e-3)) {
                        printf("FAIL  %s %s n=%d: %s vs gemv rel L2 %.3g\n", mix, regime_name[regime], n,
                               c == 1 ? "minigemm" : "gemv4", rel);
                        return 1;
                    }
                }
                double t[NP][64];
                time_graphs(gx, NP, reps, st, e0, e1, t);
                if (cuda_moe_sync(ctx, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                double med[NP];
                const int nr = reps < 64 ? reps : 64;
                static const char *pname[] = {"gemv", "minigemm", "auto", "gemv4"};
                for (int p = 0; p < NP; p++)
                    med[p] = bench_median(t[p], nr);
                double best = med[0] < med[1] ? med[0] : med[1];
                best = med[3] < best ? med[3] : best;
                for (int p = 0; p < NP; p++) {
                    const double gbs = distinct * expert_bytes / (med[p] * 1e-6) / 1e9;
                    char ratio[16] = "";
                    if (p == 1)
                        snprintf(ratio, sizeof ratio, "%.2f", med[1] / med[0]);
                    if (p == 2) /* auto over the fastest forced path */
                        snprintf(ratio, sizeof ratio, "b%.2f", med[2] / best);
                    if (p == 3)
                        snprintf(ratio, sizeof ratio, "g%.2f", med[3] / med[0]);
                    printf("%-3s %-6s %5d %-9s %10.1f %10.1f %8.0f %6.1f%% %8s\n", mix,
                           regime_name[regime], n, pname[p], med[p], t[p][0], gbs,
                           100.0 * gbs / bw, ratio);
                    if (csv)
                        fprintf(csv, "%s,%s,%d,%s,%.2f,%.2f,%.1f,%.2f,%s\n", mix, regime_name[regime],
                                n, pname[p], med[p], t[p][0], gbs, 100.0 * gbs / bw, ratio);
                    CU(cudaGraphExecDestroy(gx[p]));
                }
                if (n == 1 && regime == COLD) {
                    fused_ab(ctx, st, &L, ids, w, h, y, reps, distinct * expert_bytes, bw, mix, "cold", csv);
                    /* the same with the experts drawn from 16 (their pages stay mapped in the
                     * TLBs, their bytes do not fit L2): separates first-touch latency */
                    static int32_t few[R_CALLS * N_USED];
                    for (int i = 0; i < R_CALLS * N_USED; i++)
                        few[i] = hid[i] % 16 * 16;
                    for (int c = 0; c < R_CALLS; c++) /* keep the 6 distinct */
                        for (int k = 0; k < N_USED; k++)
                            for (int j = 0; j < k; j++)
                                if (few[c * N_USED + k] == few[c * N_USED + j])
                                    few[c * N_USED + k] = (few[c * N_USED + k] + 16) % 256, j = -1;
                    CU(cudaMemcpy(ids, few, sizeof few, cudaMemcpyHostToDevice));
                    CU(cudaDeviceSynchronize());
                    fused_ab(ctx, st, &L, ids, w, h, y, reps, 6.0 * expert_bytes, bw, mix, "few16", csv);
                }
            }
        }
        cudaFree((void *)L.gate.data), cudaFree((void *)L.up.data), cudaFree((void *)L.down.data);
    }
    cuda_moe_ctx_free(ctx);
    if (csv)
        fclose(csv);
    return 0;
}
