/* quant_bench.c — throughput of the reference quantizers and dequantizers of every table
 * row, on N(0,1) rows of 4096 (the model's n_embd). Checks each quantizer's round-trip error
 * once before timing, then prints one row per type: median and min µs per 4096-row and
 * M weights/s. Single-threaded. `--csv FILE` writes the same rows.
 * Usage: build/bench/quant_bench [--csv FILE] [--rows N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "quant/quant.h"

enum { ROW = 4096, REPS = 9 };

static void cpu_header(void)
{
    char model[256];
    bench_cpu_model(model, sizeof model);
    printf("# quant_bench: CPU %s, 1 thread, rows of %d, median of %d runs\n", model, ROW, REPS);
}

int main(int argc, char **argv)
{
    const char *csv_path = NULL;
    int rows = 64;
    const bench_opt opts[] = {{"--csv", 's', &csv_path}, {"--rows", 'i', &rows}};
    if (bench_parse_opts(argc, argv, opts, 2, "quant_bench [--csv FILE] [--rows N]"))
        return 2;
    if (rows < 1)
        rows = 1;
    const int64_t n = (int64_t)rows * ROW;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    uint8_t *q = malloc((size_t)n * 4);
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i += 2) { /* Box-Muller on a xorshift stream */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const double u1 = ((double)(s >> 11) + 1.0) / 9007199254740993.0;
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const double u2 = (double)(s >> 11) / 9007199254740992.0;
        x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
        x[i + 1] = (float)(sqrt(-2 * log(u1)) * sin(6.283185307179586 * u2));
    }
    FILE *csv;
    if (bench_csv_open("quant_bench", csv_path,
                       "type,rel_rms,quant_us_median,quant_us_min,quant_mw_s,dequant_us_median,"
                       "dequant_mw_s",
                       &csv))
        return 1;
    cpu_header();
    printf("%-8s %9s %12s %10s %10s %12s %10s\n", "type", "rel_rms", "quant_us/row", "min_us",
           "quant_MW/s", "deq_us/row", "deq_MW/s");
    for (int t = 0; t < DS4_TYPE_COUNT; t++) {
        const quant_traits *tr = quant_get_traits((ds4_type)t);
        if (!tr || !tr->quant_row || !tr->dequant_row)
            continue;
        /* check once: the round trip must be sane before its speed means anything */
        tr->quant_row(x, q, n);
        tr->dequant_row(q, y, n);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        const double rms = sqrt(se / sx);
        if (!(rms < 0.5)) {
            printf("%-8s round-trip error %.3g: broken, not timed\n", tr->name, rms);
            continue;
        }
        double tq[REPS], td[REPS];
        for (int r = 0; r < REPS; r++) {
            double t0 = 1e6 * bench_now_s();
            tr->quant_row(x, q, n);
            double t1 = 1e6 * bench_now_s();
            tr->dequant_row(q, y, n);
            double t2 = 1e6 * bench_now_s();
            tq[r] = (t1 - t0) / rows;
            td[r] = (t2 - t1) / rows;
        }
        const double qmed = bench_median(tq, REPS), dmed = bench_median(td, REPS); /* sorts */
        printf("%-8s %9.4f %12.1f %10.1f %10.1f %12.2f %10.0f\n", tr->name, rms, qmed, tq[0],
               ROW / qmed, dmed, ROW / dmed);
        if (csv)
            fprintf(csv, "%s,%.6g,%.3f,%.3f,%.3f,%.3f,%.1f\n", tr->name, rms, qmed, tq[0],
                    ROW / qmed, dmed, ROW / dmed);
    }
    if (csv)
        fclose(csv);
    free(x);
    free(y);
    free(q);
    return 0;
}
