/* ds4-quantize.c — the external quantizer tools/convert_hf.py calls for the routed experts:
 *   ds4-quantize IN.f32 OUT.bin TYPE ROWS COLS
 * IN.f32 holds ROWS x COLS little-endian float32, row-major (COLS contiguous); OUT.bin gets
 * ROWS rows of COLS/block blocks of TYPE (a ggml name with a quantizer in the traits table:
 * q2_K, q4_K, iq2_xxs, q8_0, f16, bf16, f32) in the standard ggml layout, nothing else.
 * Streams in chunks of rows, each chunk split over threads ($DS4_THREADS, default all CPUs);
 * the output does not depend on the thread count. Exit 0 on success; one line on stderr and
 * exit 2 on any error (the partial output is removed). Quantizers: src/quant/. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant/quant.h"

#define CHUNK_FLOATS (4u << 20) /* floats read per chunk (16 MiB), at least one row */
#define MAX_THREADS 64

static const char *out_path;

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "ds4-quantize: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    if (out_path)
        remove(out_path);
    return 2;
}

static bool parse_i64(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x <= 0)
        return false;
    *v = x;
    return true;
}

typedef struct job {
    const quant_traits *tr;
    const float *src;
    uint8_t *dst;
    int64_t rows, cols;
    size_t row_bytes;
} job;

static void *run(void *arg)
{
    job *j = arg;
    for (int64_t r = 0; r < j->rows; r++)
        j->tr->quant_row(j->src + r * j->cols, j->dst + (size_t)r * j->row_bytes, j->cols);
    return NULL;
}

/* Quantizes rows of src into dst over nt threads. */
static void quantize(const quant_traits *tr, const float *src, uint8_t *dst, int64_t rows,
                     int64_t cols, size_t row_bytes, int nt)
{
    job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    if (nt > rows)
        nt = (int)rows;
    for (int k = 0; k < nt; k++) {
        int64_t a = rows * k / nt, b = rows * (k + 1) / nt;
        jobs[k] = (job){tr, src + a * cols, dst + (size_t)a * row_bytes, b - a, cols, row_bytes};
        if (k > 0)
            started[k] = pthread_create(&th[k], NULL, run, &jobs[k]) == 0;
    }
    run(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            run(&jobs[k]);
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: ds4-quantize IN.f32 OUT.bin TYPE ROWS COLS\n");
        return 2;
    }
    const char *in = argv[1], *type = argv[3];
    int64_t rows, cols;
    if (!parse_i64(argv[4], &rows) || !parse_i64(argv[5], &cols))
        return fail("ROWS and COLS must be positive integers, got '%s' '%s'", argv[4], argv[5]);
    int t = quant_type_from_name(type);
    const quant_traits *tr = t >= 0 ? quant_get_traits((ds4_type)t) : NULL;
    if (!tr || !tr->quant_row || t == DS4_TYPE_Q8_K)
        return fail("unknown or unquantizable weight type '%s'%s", type,
                    " (q2_K, q4_K, iq2_xxs, q8_0, f16, bf16, f32)");
    if (cols % tr->block_elems)
        return fail("COLS %s is not a multiple of the %s block", argv[5], tr->name);
    size_t row_bytes = quant_row_bytes((ds4_type)t, cols);
    FILE *fi = fopen(in, "rb");
    if (!fi)
        return fail("%s: %s", in, strerror(errno));
    struct stat st;
    if (fstat(fileno(fi), &st) || (uint64_t)st.st_size != (uint64_t)rows * (uint64_t)cols * 4) {
        fclose(fi);
        return fail("%s: size does not match ROWS x COLS float32 values (%s)", in, argv[4]);
    }
    FILE *fo = fopen(argv[2], "wb");
    if (!fo) {
        fclose(fi);
        return fail("%s: %s", argv[2], strerror(errno));
    }
    out_path = argv[2];
    const char *env = getenv("DS4_THREADS");
    long nt = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    nt = nt < 1 ? 1 : nt > MAX_THREADS ? MAX_THREADS : nt;
    int64_t per = (int64_t)CHUNK_FLOATS / cols > 0 ? (int64_t)CHUNK_FLOATS / cols : 1;
    if (per > rows)
        per = rows;
    float *src = malloc((size_t)(per * cols) * sizeof *src);
    uint8_t *dst = malloc((size_t)per * row_bytes);
    int rc = 0;
    if (!src || !dst)
        rc = fail("out of memory for a chunk of %s rows%s", argv[4], "");
    for (int64_t r = 0; !rc && r < rows; r += per) {
        int64_t n = rows - r < per ? rows - r : per;
        if (fread(src, sizeof *src, (size_t)(n * cols), fi) != (size_t)(n * cols))
            rc = fail("%s: short read%s", in, "");
        else {
            quantize(tr, src, dst, n, cols, row_bytes, (int)nt);
            if (fwrite(dst, row_bytes, (size_t)n, fo) != (size_t)n)
                rc = fail("%s: write failed: %s", argv[2], strerror(errno));
        }
    }
    free(src);
    free(dst);
    fclose(fi);
    if (fclose(fo) && !rc)
        rc = fail("%s: write failed: %s", argv[2], strerror(errno));
    return rc;
}
