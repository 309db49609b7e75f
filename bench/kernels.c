/* kernels.c — the CPU dot-kernel sweep (build/bench/kernels): for every row of the kernel
 * table (weight type x variant) it streams a weight matrix larger than the last-level cache
 * through cpu_matvec, once with 1 thread and once with all cores (rows split), and prints
 * median/min time, GB/s of weight bytes and the share of the memory read bandwidth it
 * measured itself. Each variant's output is checked against _ref before it is timed.
 * Usage: kernels [--csv FILE] [--mb MiB] [--cols N] [--threads N] [--budget SECONDS]
 *                [--only TYPE] (a weight type name: q8_0, q2_K, q4_K, iq2_xxs, f16, f32)
 * Owns no kernels (src/kernels/cpu/); follows style.md §10. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "kernels/cpu/cpu_dot.h"
#include "quant/quant.h"

#define MAX_THREADS BENCH_MAX_THREADS
#define MAX_ITERS 25
#define POOL_ROWS 64         /* distinct random rows, tiled over the matrix */
#define CHECK_TOL 1e-5       /* max |y - y_ref| / max |y_ref|: f32 reassociation only */

typedef struct {
    const char *csv;
    int64_t cols;
    double mb;       /* matrix size in MiB (0: 2 x LLC, at least 512) */
    int threads;     /* all-thread count (0: online CPUs) */
    double budget_s; /* timed seconds per case, beyond the minimum iterations */
    const char *only; /* weight type name, or NULL for all */
} options;

/* ======== one matrix pass ============================================================== */

typedef struct {
    cpu_dot_fn dot;
    cpu_dot2_fn dot2; /* non-NULL: rows are taken in pairs through the paired kernel */
    int64_t cols;
    const uint8_t *w;
    size_t row_bytes;
    const void *x;
    float *y;
    int64_t r0, r1;
} pass_job;

static void *pass_worker(void *arg)
{
    pass_job *j = arg;
    if (!j->dot2) {
        cpu_matvec(j->dot, j->cols, j->w, j->row_bytes, j->x, j->y, j->r0, j->r1);
        return NULL;
    }
    for (int64_t r = j->r0; r + 1 < j->r1; r += 2)
        j->dot2(j->cols, j->w + (size_t)r * j->row_bytes, j->w + (size_t)(r + 1) * j->row_bytes,
                j->x, j->y + r);
    return NULL;
}

/* Runs y = W x over all rows with nthreads (contiguous, even row ranges); returns seconds. */
static double run_pass(const pass_job *tmpl, int64_t rows, int nthreads)
{
    pthread_t th[MAX_THREADS];
    pass_job jobs[MAX_THREADS];
    int64_t step = tmpl->dot2 ? 2 : 1;
    double t0 = bench_now_s();
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = *tmpl;
        jobs[t].r0 = rows / step * t / nthreads * step;
        jobs[t].r1 = rows / step * (t + 1) / nthreads * step;
        if (t > 0)
            pthread_create(&th[t], NULL, pass_worker, &jobs[t]);
    }
    pass_worker(&jobs[0]);
    for (int t = 1; t < nthreads; t++)
        pthread_join(th[t], NULL);
    return bench_now_s() - t0;
}

/* ======== the sweep ==================================================================== */

typedef struct {
    FILE *csv;
    double bw_all;
    int failed;
} sweep;

static void emit_row(sweep *s, const char *kernel, const char *variant, int threads,
                     int64_t rows, int64_t cols, double mbytes, double med_us, double min_us,
                     double ref_med_us, const char *check)
{
    double gbs = mbytes * 1e6 / (med_us * 1e-6) / 1e9;
    double pct = 100.0 * gbs / s->bw_all;
    char xref[32] = "-", xref_csv[32] = ""; /* no _ref twin for the paired kernel */
    if (ref_med_us > 0) {
        snprintf(xref, sizeof xref, "%.2f", ref_med_us / med_us);
        snprintf(xref_csv, sizeof xref_csv, "%.3f", ref_med_us / med_us);
    }
    printf("%-20s %-7s %3d  %6lldx%-5lld %8.1f %10.0f %10.0f %7.2f %6.1f%% %7s  %s\n", kernel,
           variant, threads, (long long)rows, (long long)cols, mbytes, med_us, min_us, gbs, pct,
           xref, check);
    if (s->csv)
        fprintf(s->csv, "%s,%s,%d,%lld,%lld,%.1f,%.0f,%.0f,%.3f,%.2f,%s,%s\n", kernel, variant,
                threads, (long long)rows, (long long)cols, mbytes, med_us, min_us, gbs, pct,
                xref_csv, check);
    fflush(stdout);
}

/* Times one kernel (or paired kernel) at 1 and nthreads threads; y_ref NULL means this is the
 * reference run, whose output becomes y_ref. ref_us[2] holds/gets _ref's medians. */
static void bench_variant(sweep *s, const options *o, const cpu_dot_kernel *k, int paired,
                          const uint8_t *w, size_t row_bytes, int64_t rows, const void *x,
                          float *y, float *y_ref, int have_ref, double ref_us[2])
{
    pass_job tmpl = {k->dot, paired ? k->dot2 : NULL, o->cols, w, row_bytes, x, y, 0, 0};
    double mbytes = (double)rows * (double)row_bytes / 1e6;
    int thread_counts[2] = {1, o->threads};
    char name[64];
    snprintf(name, sizeof name, "%s%s", k->name, paired ? " dot2" : "");
    for (int ti = 0; ti < 2; ti++) {
        int nt = thread_counts[ti];
        if (ti == 1 && nt == 1)
            break;
        /* untimed first pass: warms up, and is the pass whose output is checked */
        memset(y, 0, (size_t)rows * sizeof *y);
        run_pass(&tmpl, rows, nt);
        const char *check = "ok";
        if (!have_ref) {
            memcpy(y_ref, y, (size_t)rows * sizeof *y);
            check = "ref";
        } else {
            double maxref = 0, maxdiff = 0;
            for (int64_t r = 0; r < rows; r++) {
                maxref = fmax(maxref, fabs(y_ref[r]));
                double d = fabs((double)y[r] - y_ref[r]);
                maxdiff = (d == d) ? fmax(maxdiff, d) : INFINITY;
            }
            if (!(maxdiff <= CHECK_TOL * maxref)) {
                check = "FAIL";
                s->failed = 1;
            }
        }
        double t[MAX_ITERS];
        int it = 0;
        double spent = 0;
        while (it < MAX_ITERS && (it < 3 || spent < o->budget_s)) {
            t[it] = run_pass(&tmpl, rows, nt);
            spent += t[it++];
        }
        qsort(t, (size_t)it, sizeof t[0], bench_cmp_double);
        double med = it % 2 ? t[it / 2] : 0.5 * (t[it / 2 - 1] + t[it / 2]);
        if (!have_ref && !paired)
            ref_us[ti] = med * 1e6;
        emit_row(s, name, cpu_isa_name(k->isa), nt, rows, o->cols, mbytes, med * 1e6, t[0] * 1e6,
                 paired ? 0 : ref_us[ti], check);
    }
}

/* Fills rows x row_bytes of w by tiling POOL_ROWS quantized Gaussian rows. */
static void fill_matrix(ds4_type t, int64_t cols, uint8_t *w, size_t row_bytes, int64_t rows)
{
    const quant_traits *tr = quant_get_traits(t);
    float *v = malloc((size_t)cols * sizeof *v);
    uint64_t s = 0x1234567u + (uint64_t)t;
    for (int r = 0; r < POOL_ROWS && r < rows; r++) {
        for (int64_t i = 0; i < cols; i++) { /* cheap normal-ish: sum of 4 uniforms */
            double acc = 0;
            for (int k = 0; k < 4; k++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                acc += (double)(s >> 11) / 9007199254740992.0;
            }
            v[i] = (float)((acc - 2.0) * 1.7);
        }
        tr->quant_row(v, w + (size_t)r * row_bytes, cols);
    }
    for (int64_t r = POOL_ROWS; r < rows; r++)
        memcpy(w + (size_t)r * row_bytes, w + (size_t)(r % POOL_ROWS) * row_bytes, row_bytes);
    free(v);
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){NULL, 4096, 0, 0, 0.3, NULL};
    const bench_opt opts[] = {{"--csv", 's', &o->csv},        {"--mb", 'd', &o->mb},
                              {"--cols", 'l', &o->cols},      {"--threads", 'i', &o->threads},
                              {"--budget", 'd', &o->budget_s}, {"--only", 's', &o->only}};
    if (bench_parse_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                         "kernels [--csv FILE] [--mb MiB] [--cols N] [--threads N] "
                         "[--budget SECONDS] [--only TYPE]"))
        return -1;
    if (o->cols <= 0 || o->cols % 256 != 0) {
        fprintf(stderr, "kernels: --cols must be a positive multiple of 256\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.threads <= 0)
        o.threads = ncpu > 0 ? ncpu : 1;
    if (o.threads > MAX_THREADS)
        o.threads = MAX_THREADS;
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (llc <= 0)
        llc = 32l << 20;
    if (o.mb <= 0)
        o.mb = fmax(512.0, 2.0 * (double)llc / (1 << 20));

    char commit[64], model[256], loadavg[128];
    bench_read_cmd("git rev-parse --short HEAD 2>/dev/null", commit, sizeof commit);
    bench_read_cmd("cat /proc/loadavg 2>/dev/null", loadavg, sizeof loadavg);
    bench_cpu_model(model, sizeof model);
    printf("# ds4 bench/kernels — CPU dot kernels streaming a weight matrix (cpu_matvec)\n");
    printf("# commit: %s\n", commit[0] ? commit : "unknown");
    printf("# build: %s\n", bench_build_info);
    printf("# cpu: %s, %d online cores, LLC %.0f MiB, best ISA %s\n", model, ncpu,
           (double)llc / (1 << 20), cpu_isa_name(cpu_best_isa()));

    /* memory read bandwidth: a buffer of 4 x LLC (>= 1 GiB), best of 5 */
    size_t bw_bytes = (size_t)fmax(1024.0 * (1 << 20), 4.0 * (double)llc);
    uint64_t *bw_buf = malloc(bw_bytes);
    if (!bw_buf) {
        fprintf(stderr, "kernels: cannot allocate %zu bytes\n", bw_bytes);
        return 1;
    }
    memset(bw_buf, 1, bw_bytes);
    double bw1 = bench_measure_bw(bw_buf, bw_bytes / 8, 1, 5);
    double bw_all = bench_measure_bw(bw_buf, bw_bytes / 8, o.threads, 5);
    free(bw_buf);
    printf("# memory read bandwidth (%.0f MiB buffer, best of 5): %.2f GB/s with 1 thread, "
           "%.2f GB/s with %d threads\n",
           (double)bw_bytes / (1 << 20), bw1, bw_all, o.threads);
    if (o.threads > 1 && bw_all < 1.3 * bw1)
        printf("# warning: %d threads read barely faster than 1; is something else running? "
               "(load average: %s)\n",
               o.threads, loadavg);
    printf("# matrices: %lld columns, ~%.0f MiB of weights each (%d distinct rows tiled)\n",
           (long long)o.cols, o.mb, POOL_ROWS);
    printf("# %%bw: of the %d-thread bandwidth; x ref: _ref median / this median; dot2: the "
           "paired kernel over row pairs\n",
           o.threads);
    printf("%-20s %-7s %3s  %12s %8s %10s %10s %7s %7s %7s  %s\n", "kernel", "variant", "thr",
           "rows x cols", "MB", "median_us", "min_us", "GB/s", "%bw", "x ref", "check");

    sweep s = {NULL, bw_all, 0};
    if (bench_csv_open("kernels", o.csv,
                       "kernel,variant,threads,rows,cols,weight_MB,median_us,min_us,GBps,pct_bw,"
                       "x_ref,check",
                       &s.csv))
        return 1;

    int nk;
    const cpu_dot_kernel *ks = cpu_dot_kernels(&nk);
    size_t max_bytes = (size_t)(o.mb * (1 << 20)) + 65536;
    uint8_t *w = malloc(max_bytes);
    float *xf = malloc((size_t)o.cols * sizeof *xf);
    void *x = malloc((size_t)o.cols * sizeof(float) + 4096);
    if (!w || !xf || !x) {
        fprintf(stderr, "kernels: cannot allocate %zu bytes of weights\n", max_bytes);
        return 1;
    }
    for (int64_t i = 0; i < o.cols; i++)
        xf[i] = (float)sin(0.37 * (double)i) * (1.0f + (float)(i % 7));
    for (int i = 0; i < nk; i++) {
        if (ks[i].isa != CPU_ISA_REF)
            continue; /* one block of rows per weight type, starting at its _ref row */
        ds4_type wt = ks[i].wtype;
        if (o.only && strcmp(o.only, quant_get_traits(wt)->name) != 0)
            continue;
        size_t row_bytes = quant_row_bytes(wt, o.cols);
        int64_t rows = (int64_t)((o.mb * (1 << 20)) / (double)row_bytes) & ~(int64_t)1;
        fill_matrix(wt, o.cols, w, row_bytes, rows);
        quant_get_traits(ks[i].xtype)->quant_row(xf, x, o.cols);
        float *y = malloc((size_t)rows * sizeof *y), *y_ref = malloc((size_t)rows * sizeof *y);
        double ref_us[2] = {0, 0};
        int have_ref = 0;
        for (int j = i; j < nk && ks[j].wtype == wt; j++) {
            if (!cpu_isa_supported(ks[j].isa)) {
                printf("%-20s %-7s skipped: this CPU lacks it\n", ks[j].name,
                       cpu_isa_name(ks[j].isa));
                continue;
            }
            bench_variant(&s, &o, &ks[j], 0, w, row_bytes, rows, x, y, y_ref, have_ref, ref_us);
            have_ref = 1;
        }
        for (int j = i; j < nk && ks[j].wtype == wt; j++)
            if (ks[j].dot2 && ks[j].isa != CPU_ISA_REF && cpu_isa_supported(ks[j].isa))
                bench_variant(&s, &o, &ks[j], 1, w, row_bytes, rows, x, y, y_ref, 1, ref_us);
        free(y);
        free(y_ref);
    }
    free(w);
    free(xf);
    free(x);
    if (s.csv)
        fclose(s.csv);
    if (s.failed)
        fprintf(stderr, "kernels: some outputs differ from _ref (check column)\n");
    return s.failed ? 1 : 0;
}
