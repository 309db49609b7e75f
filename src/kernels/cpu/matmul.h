/* matmul.h — threaded quantized matrix x activations on the CPU: a weight matrix (any type
 * with a dot kernel: Q8_0, Q2_K, Q4_K, IQ2_XXS, F16, F32) times a batch of n_tok activation
 * rows, each activation row quantized once to the weight type's vec_dot_type (Q8_0 for Q8_0,
 * Q8_K for K/IQ types, F32 for F16/F32), output rows split across the pool's threads.
 * Several products can run in one dispatch (cpu_matmul_many): expert slices of 3-D tensors,
 * row ranges, the grouped attn_output_a (each group against its own slice of the input), and
 * token subsets (the tokens routed to one expert). Implements ds4-architecture.md §4.1.
 * Invariants: every output element is one dot kernel call on one (weight row, activation row)
 * pair, computed by exactly one thread, so results are bit-identical for any thread count and
 * any split; each weight row is read once per call for all tokens of its product. Kernels and
 * quantizers are not owned here (cpu_dot.h, quant.h); neither is the thread pool. */
#ifndef DS4_KERNELS_CPU_MATMUL_H
#define DS4_KERNELS_CPU_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "ds4.h"
#include "kernels/cpu/cpu_dot.h"
#include "kernels/cpu/threadpool.h"
#include "quant/quant.h"

/* A 2-D weight matrix: ne1 rows of ne0 elements, y[r] = sum_i W[r][i] x[i]. */
typedef struct cpu_weight {
    ds4_type type;    /* weight type (one with a dot kernel) */
    int64_t ne0;      /* elements per row: the input width */
    int64_t ne1;      /* rows: the output width */
    const void *data; /* row 0 */
    size_t row_bytes; /* bytes from one row to the next: quant_row_bytes(type, ne0) when dense */
} cpu_weight;

/* Describes a dense matrix [ne0, ne1] of type at data (for a 3-D expert tensor
 * [ne0, ne1, n_expert]: expert 0; see cpu_weight_expert). Returns 0, or DS4_E_TYPE when no dot
 * kernel takes the type (BF16 has none), DS4_E_RANGE when ne0 is not a positive multiple of
 * its block. */
int cpu_weight_init(cpu_weight *w, ds4_type type, int64_t ne0, int64_t ne1, const void *data,
                    ds4_error *err);

/* Rows [r0, r0 + n) of w as a matrix of their own (assumes 0 <= r0, r0 + n <= w->ne1). */
cpu_weight cpu_weight_rows(const cpu_weight *w, int64_t r0, int64_t n);

/* Expert e of a 3-D tensor whose experts are w->ne1 rows each, w describing expert 0. */
cpu_weight cpu_weight_expert(const cpu_weight *w, int64_t e);

/* A batch of activation rows in one type (F32, Q8_0 or Q8_K), n_tok rows of n elements,
 * stride bytes apart. Owns data when cap > 0 (grown by cpu_act_quantize, freed by
 * cpu_act_free); a view made by cpu_act_f32 owns nothing. Zero-initialise before first use. */
typedef struct cpu_act {
    ds4_type type;
    int64_t n;      /* elements per row */
    int n_tok;      /* rows */
    size_t stride;  /* bytes from one row to the next */
    void *data;
    size_t cap;     /* bytes owned at data (0: a view) */
} cpu_act;

/* The activation type a weight type's dot kernels read (DS4_TYPE_NONE if none). */
ds4_type cpu_act_type(ds4_type wtype);

/* Quantizes n_tok rows of n floats (row t at x + t * ldx) to type (F32, Q8_0, Q8_K; n a
 * multiple of its block) into a, growing its buffer as needed, with cpu_quant_act_fn's
 * quantizer (bytes identical to quant_quant_row_*), in parallel over row pieces when the
 * batch is large enough. Returns
 * 0, DS4_E_ARG (type or n not usable), DS4_E_NOMEM. A view's buffer is replaced, not freed. */
int cpu_act_quantize(cpu_pool *p, cpu_act *a, ds4_type type, const float *x, int64_t n,
                     int n_tok, int64_t ldx, ds4_error *err);

/* A view of f32 rows for F16/F32 weights: no copy. */
cpu_act cpu_act_f32(const float *x, int64_t n, int n_tok, int64_t ldx);

/* Frees an owned buffer and zeroes a. */
void cpu_act_free(cpu_act *a);

/* One product of a cpu_matmul_many call: for t < n_tok and r < w.ne1,
 *   y[t * ldy + r] = dot(W row r, activation row tok ? tok[t] : t, elements x_off ..
 *                        x_off + w.ne0 - 1).
 * x->type must be cpu_act_type(w.type); x_off a multiple of that type's block. */
typedef struct cpu_mm {
    cpu_weight w;
    const cpu_act *x;
    int64_t x_off;      /* first activation element this product reads (grouped inputs) */
    const int32_t *tok; /* NULL: activation rows 0..n_tok-1; else the n_tok row indices */
    int n_tok;
    float *y;
    int64_t ldy;        /* floats from one token's output row to the next */
} cpu_mm;

/* Runs n_mm products in one dispatch: their rows are split by estimated cost into pieces that
 * the pool's threads claim; small totals run on the caller alone. Assumes valid products
 * (types paired, ranges inside the buffers); outputs of different products must not overlap. */
void cpu_matmul_many(cpu_pool *p, const cpu_mm *mm, int n_mm);

/* y [n_tok][w.ne1] (ldy floats apart) = W x for all rows of x (x->n >= w.ne0). */
void cpu_matmul_act(cpu_pool *p, const cpu_weight *w, const cpu_act *x, float *y, int64_t ldy);

/* The whole step: quantizes x [n_tok][w.ne0] (contiguous) into scratch, then y [n_tok][w.ne1]
 * (contiguous) = W x. Returns 0 or DS4_E_NOMEM. */
int cpu_matmul(cpu_pool *p, const cpu_weight *w, const float *x, int n_tok, float *y,
               cpu_act *scratch, ds4_error *err);

/* Grouped product (spec §3.3 step 9): x [n_tok][n_group * w.ne0] is n_group input groups;
 * output rows g*w.ne1/n_group .. (g+1)*w.ne1/n_group - 1 use group g. Each group is quantized
 * on its own (identical to quantizing the whole row: groups are whole blocks). y is
 * [n_tok][w.ne1]. Returns 0, DS4_E_ARG (w.ne1 not a multiple of n_group), DS4_E_NOMEM. */
int cpu_matmul_grouped(cpu_pool *p, const cpu_weight *w, int n_group, const float *x, int n_tok,
                       float *y, cpu_act *scratch, ds4_error *err);

/* The kernel variant the products use: DS4_CPU_ISA if set and supported, else the best. */
cpu_isa cpu_matmul_isa(void);

#endif
