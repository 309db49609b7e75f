/* bench_util.h — what every CPU bench shares: a monotonic clock, medians, the header lines
 * (commit, build flags, CPU model), the memory read bandwidth the bench measures itself so
 * its rows can be read as a share of what the machine can stream (style.md §10), the
 * "--flag VALUE" command line and the --csv file with its header row.
 * Header-only (static functions); each bench includes it once. Owns no kernels. */
#ifndef DS4_BENCH_UTIL_H
#define DS4_BENCH_UTIL_H

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_THREADS 256

__attribute__((unused)) static double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

__attribute__((unused)) static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t[0..n) and returns its median (n >= 1). */
__attribute__((unused)) static double bench_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], bench_cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* ======== header: commit, build, CPU ================================================== */

/* First line of a shell command's output into out ("" on failure). */
__attribute__((unused)) static void bench_read_cmd(const char *cmd, char *out, size_t cap)
{
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    if (fgets(out, (int)cap, p))
        out[strcspn(out, "\n")] = 0;
    pclose(p);
}

/* The "model name" line of /proc/cpuinfo, or "unknown". */
__attribute__((unused)) static void bench_cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                snprintf(out, cap, "%s", v + 2);
                out[strcspn(out, "\n")] = 0;
            }
            break;
        }
    }
    fclose(f);
}

/* The compiler command line (the Makefile passes DS4_BUILD_FLAGS), or what the compiler
 * itself can tell. */
__attribute__((unused)) static const char bench_build_info[] =
#ifdef DS4_BUILD_FLAGS
    DS4_BUILD_FLAGS
#else
    "cc " __VERSION__
#ifdef __OPTIMIZE__
    ", optimized"
#endif
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    ", -march baseline has AVX-512+VNNI"
#elif defined(__AVX2__)
    ", -march baseline has AVX2"
#else
    ", -march baseline below AVX2"
#endif
#ifdef __SANITIZE_ADDRESS__
    ", ASan (timings meaningless)"
#endif
    "; dot_avx2.c/dot_avx512.c add the Makefile's ISA_avx2/ISA_avx512 flags"
#endif
    ;

/* ======== memory read bandwidth ======================================================= */

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bench_bw_job;

__attribute__((unused)) static void *bench_bw_worker(void *arg)
{
    bench_bw_job *j = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->p[i];
        s1 += j->p[i + 1];
        s2 += j->p[i + 2];
        s3 += j->p[i + 3];
    }
    j->sum = s0 + s1 + s2 + s3;
    return NULL;
}

/* Best-of-reps read bandwidth in GB/s (1e9 bytes/s) of a buffer summed by nthreads. */
__attribute__((unused)) static double bench_measure_bw(const uint64_t *buf, size_t words,
                                                       int nthreads, int reps)
{
    double best = 0;
    uint64_t total = 0;
    if (nthreads > BENCH_MAX_THREADS)
        nthreads = BENCH_MAX_THREADS;
    for (int r = 0; r < reps; r++) {
        pthread_t th[BENCH_MAX_THREADS];
        bench_bw_job jobs[BENCH_MAX_THREADS];
        double t0 = bench_now_s();
        for (int t = 0; t < nthreads; t++) {
            size_t a = words * (size_t)t / (size_t)nthreads;
            size_t b = words * (size_t)(t + 1) / (size_t)nthreads;
            jobs[t] = (bench_bw_job){buf + a, b - a, 0};
            if (t > 0)
                pthread_create(&th[t], NULL, bench_bw_worker, &jobs[t]);
        }
        bench_bw_worker(&jobs[0]);
        for (int t = 1; t < nthreads; t++)
            pthread_join(th[t], NULL);
        double dt = bench_now_s() - t0;
        for (int t = 0; t < nthreads; t++)
            total += jobs[t].sum;
        double gbs = (double)words * 8 / dt / 1e9;
        if (gbs > best)
            best = gbs;
    }
    if (total == 42) /* keep the sums alive */
        fputs("", stderr);
    return best;
}

/* The last-level cache size in bytes (32 MiB if the system does not say). */
__attribute__((unused)) static long bench_llc_bytes(void)
{
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return llc > 0 ? llc : 32l << 20;
}

/* Measures the read bandwidth with 1 and with nthreads threads over a buffer of 4 x LLC (at
 * least 1 GiB), best of 5 each, and prints the header line for it (and a warning when the
 * threads barely help: a busy machine). Returns 0, or -1 if the buffer cannot be allocated. */
__attribute__((unused)) static int bench_bandwidth(int nthreads, double *bw1, double *bw_all)
{
    size_t bytes = (size_t)fmax(1024.0 * (1 << 20), 4.0 * (double)bench_llc_bytes());
    uint64_t *buf = malloc(bytes);
    if (!buf)
        return -1;
    memset(buf, 1, bytes);
    *bw1 = bench_measure_bw(buf, bytes / 8, 1, 5);
    *bw_all = nthreads > 1 ? bench_measure_bw(buf, bytes / 8, nthreads, 5) : *bw1;
    free(buf);
    printf("# memory read bandwidth (%.0f MiB buffer, best of 5): %.2f GB/s with 1 thread, "
           "%.2f GB/s with %d threads\n",
           (double)bytes / (1 << 20), *bw1, *bw_all, nthreads);
    if (nthreads > 1 && *bw_all < 1.3 * *bw1) {
        char loadavg[128];
        bench_read_cmd("cat /proc/loadavg 2>/dev/null", loadavg, sizeof loadavg);
        printf("# warning: %d threads read barely faster than 1; is something else running? "
               "(load average: %s)\n",
               nthreads, loadavg);
    }
    return 0;
}

/* Prints the common header lines: title, commit, build, CPU. */
__attribute__((unused)) static void bench_header(const char *title, const char *isa_name)
{
    char commit[64], model[256];
#ifdef DS4_GIT_COMMIT
    snprintf(commit, sizeof commit, "%s", DS4_GIT_COMMIT);
#else
    bench_read_cmd("git rev-parse --short HEAD 2>/dev/null", commit, sizeof commit);
#endif
    bench_cpu_model(model, sizeof model);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("# %s\n", title);
    printf("# commit: %s\n", commit[0] ? commit : "unknown");
    printf("# build: %s\n", bench_build_info);
    printf("# cpu: %s, %ld online cores, LLC %.0f MiB, ISA %s\n", model, ncpu,
           (double)bench_llc_bytes() / (1 << 20), isa_name);
}

/* ======== command line and CSV file ==================================================== */

/* One option: "--flag VALUE" (flag NULL: the first argument not starting with '-'), its
 * value's kind ('s' const char *, 'i' int, 'l' int64_t, 'd' double) and where it goes. */
typedef struct bench_opt {
    const char *flag;
    char kind;
    void *dst;
} bench_opt;

/* Parses argv[1..] against opts[0..n) into their destinations (options not given keep what
 * they hold). An unknown flag or a missing value prints "usage: USAGE" on stderr; returns 0
 * or -1. */
__attribute__((unused)) static int bench_parse_opts(int argc, char **argv, const bench_opt *opts,
                                                    int n, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bench_opt *o = NULL;
        for (int k = 0; k < n && !o; k++)
            if (opts[k].flag ? strcmp(a, opts[k].flag) == 0
                             : a[0] != '-' && !*(const char **)opts[k].dst)
                o = &opts[k];
        if (o && o->flag && ++i >= argc)
            o = NULL;
        if (!o) {
            fprintf(stderr, "usage: %s\n", usage);
            return -1;
        }
        const char *v = argv[i];
        switch (o->kind) {
        case 'i': *(int *)o->dst = atoi(v); break;
        case 'l': *(int64_t *)o->dst = atoll(v); break;
        case 'd': *(double *)o->dst = atof(v); break;
        default: *(const char **)o->dst = v; break;
        }
    }
    return 0;
}

/* Opens path (NULL: *f = NULL, nothing to write) and writes the header row of its columns
 * (header without the newline). Returns 0, or -1 after saying "PROG: cannot write PATH". */
__attribute__((unused)) static int bench_csv_open(const char *prog, const char *path,
                                                  const char *header, FILE **f)
{
    *f = NULL;
    if (!path)
        return 0;
    *f = fopen(path, "w");
    if (!*f) {
        fprintf(stderr, "%s: cannot write %s\n", prog, path);
        return -1;
    }
    fprintf(*f, "%s\n", header);
    return 0;
}

#endif
