/* matmul.c — threaded weight x activation products (matmul.h): activation quantization into
 * a reusable buffer, the cost-based split of one or many products into pieces claimed by the
 * pool's threads, and the cache tiling of one piece (weight rows in L1-sized blocks, tokens in
 * L2-sized tiles, so each weight row is fetched from memory once for every token of the tile).
 * Owns no dot kernels (dispatch.c picks them) and no quantizers (quant_act.h picks them).
 * Invariant: an output element is always dot(ne0, W row, activation row) by the selected
 * kernel, whatever the split: thread count never changes a bit of the result. */
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quant_act.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ACT_ALIGN 64             /* activation rows start on cache lines */
#define ROW_BLOCK_BYTES (16 << 10) /* weight rows kept hot while a token tile streams by */
#define TOK_TILE_BYTES (512 << 10) /* activation rows kept in L2 while weight rows stream by */
#define PIECES_PER_THREAD 4      /* pieces per thread: balance against claim overhead */
#define MIN_PIECE_COST (48 << 10) /* a piece below ~48 KiB of weight traffic is not worth a
                                  * thread: the dispatch costs about 1 us */
#define QUANT_PIECE 4096         /* activation elements per quantization piece */
#define QUANT_PAR_MIN 32768      /* below this many elements (~16 us with AVX-512) quantize on
                                  * the caller: a dispatch costs about 1 us */

/* ======== kernel selection ============================================================= */

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static cpu_isa isa_selected = CPU_ISA_REF;
/* the activation quantizers of that variant (looked up once: cpu_isa_supported runs CPUID,
 * which costs microseconds under a hypervisor) */
static quant_quant_row_fn quant_q8_0, quant_q8_k;

static void isa_init(void)
{
    cpu_isa isa;
    isa_selected = cpu_isa_select(&isa, NULL) == DS4_OK ? isa : cpu_best_isa();
    quant_q8_0 = cpu_quant_act_fn(DS4_TYPE_Q8_0, isa_selected);
    quant_q8_k = cpu_quant_act_fn(DS4_TYPE_Q8_K, isa_selected);
}

cpu_isa cpu_matmul_isa(void)
{
    pthread_once(&isa_once, isa_init);
    return isa_selected;
}

/* ======== weights and activations ====================================================== */

ds4_type cpu_act_type(ds4_type wtype)
{
    int t = cpu_dot_act_type(wtype);
    return t < 0 ? DS4_TYPE_NONE : (ds4_type)t;
}

int cpu_weight_init(cpu_weight *w, ds4_type type, int64_t ne0, int64_t ne1, const void *data,
                    ds4_error *err)
{
    memset(w, 0, sizeof *w);
    if (cpu_act_type(type) == DS4_TYPE_NONE)
        return ds4_error_set(err, DS4_E_TYPE, "matmul: no CPU dot kernel for weight type %d",
                             (int)type);
    size_t rb = quant_row_bytes(type, ne0);
    if (ne0 <= 0 || ne1 < 0 || rb == 0)
        return ds4_error_set(err, DS4_E_RANGE, "matmul: %s rows of %lld elements",
                             quant_get_traits(type)->name, (long long)ne0);
    *w = (cpu_weight){type, ne0, ne1, data, rb};
    return DS4_OK;
}

cpu_weight cpu_weight_rows(const cpu_weight *w, int64_t r0, int64_t n)
{
    cpu_weight s = *w;
    s.data = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    s.ne1 = n;
    return s;
}

cpu_weight cpu_weight_expert(const cpu_weight *w, int64_t e)
{
    return cpu_weight_rows(w, e * w->ne1, w->ne1);
}

cpu_act cpu_act_f32(const float *x, int64_t n, int n_tok, int64_t ldx)
{
    return (cpu_act){DS4_TYPE_F32, n, n_tok, (size_t)ldx * sizeof(float), (void *)x, 0};
}

void cpu_act_free(cpu_act *a)
{
    if (a->cap)
        free(a->data);
    memset(a, 0, sizeof *a);
}

typedef struct {
    const cpu_act *a;
    quant_quant_row_fn quant;
    const float *x;
    int64_t ldx;
    int64_t pieces_per_row;
    int64_t n_pieces;
} quant_job;

/* Index ith quantizes pieces [n_pieces*ith/nth, n_pieces*(ith+1)/nth) (row-major). */
static void quant_fn(void *ctx, int ith, int nth)
{
    const quant_job *j = ctx;
    const cpu_act *a = j->a;
    int64_t p0 = j->n_pieces * ith / nth, p1 = j->n_pieces * (ith + 1) / nth;
    for (int64_t p = p0; p < p1; p++) {
        int64_t t = p / j->pieces_per_row;
        int64_t e0 = (p % j->pieces_per_row) * QUANT_PIECE;
        int64_t len = a->n - e0 < QUANT_PIECE ? a->n - e0 : QUANT_PIECE;
        uint8_t *dst = (uint8_t *)a->data + (size_t)t * a->stride + quant_row_bytes(a->type, e0);
        j->quant(j->x + t * j->ldx + e0, dst, len);
    }
}

int cpu_act_quantize(cpu_pool *p, cpu_act *a, ds4_type type, const float *x, int64_t n,
                     int n_tok, int64_t ldx, ds4_error *err)
{
    if (type != DS4_TYPE_F32 && type != DS4_TYPE_Q8_0 && type != DS4_TYPE_Q8_K)
        return ds4_error_set(err, DS4_E_ARG, "matmul: %d is not an activation type", (int)type);
    size_t rb = quant_row_bytes(type, n);
    if (n <= 0 || rb == 0 || n_tok < 0)
        return ds4_error_set(err, DS4_E_ARG, "matmul: %lld x %d activations of type %s",
                             (long long)n, n_tok, quant_get_traits(type)->name);
    size_t stride = (rb + ACT_ALIGN - 1) / ACT_ALIGN * ACT_ALIGN;
    size_t need = stride * (size_t)(n_tok > 0 ? n_tok : 1);
    if (need > a->cap) {
        void *buf = aligned_alloc(ACT_ALIGN, need);
        if (!buf)
            return ds4_error_set(err, DS4_E_NOMEM, "matmul: %zu bytes of activations", need);
        if (a->cap)
            free(a->data);
        a->data = buf;
        a->cap = need;
    }
    a->type = type;
    a->n = n;
    a->n_tok = n_tok;
    a->stride = stride;
    /* a piece boundary must fall on a block boundary of every activation type */
    _Static_assert(QUANT_PIECE % QUANT_QK_K == 0, "quantization pieces are whole blocks");
    cpu_matmul_isa(); /* the quantizers are picked with the kernel variant */
    quant_job j = {a,
                   type == DS4_TYPE_Q8_0   ? quant_q8_0
                   : type == DS4_TYPE_Q8_K ? quant_q8_k
                                           : quant_quant_row_f32,
                   x, ldx, (n + QUANT_PIECE - 1) / QUANT_PIECE, 0};
    j.n_pieces = j.pieces_per_row * n_tok;
    int nth = cpu_pool_threads(p);
    if ((int64_t)n_tok * n < QUANT_PAR_MIN || j.n_pieces < 2)
        nth = 1;
    if (nth > j.n_pieces)
        nth = (int)j.n_pieces;
    if (nth <= 1)
        quant_fn(&j, 0, 1);
    else
        cpu_pool_run_n(p, nth, quant_fn, &j);
    return DS4_OK;
}

/* ======== one piece: rows [r0, r1) of one product, tiled ================================ */

static void run_rows(const cpu_mm *m, const cpu_dot_kernel *k, int64_t r0, int64_t r1)
{
    const cpu_dot_fn dot = k->dot;
    const cpu_weight *w = &m->w;
    const cpu_act *x = m->x;
    const uint8_t *xbase = (const uint8_t *)x->data + quant_row_bytes(x->type, m->x_off);
    size_t x_bytes = quant_row_bytes(x->type, w->ne0);
    int64_t rb = (int64_t)(ROW_BLOCK_BYTES / w->row_bytes);
    int64_t tt = (int64_t)(TOK_TILE_BYTES / (x_bytes ? x_bytes : 1));
    if (rb < 1)
        rb = 1;
    if (tt < 1)
        tt = 1;
    for (int64_t t0 = 0; t0 < m->n_tok; t0 += tt) {
        int64_t t1 = t0 + tt < m->n_tok ? t0 + tt : m->n_tok;
        for (int64_t b0 = r0; b0 < r1; b0 += rb) {
            int64_t b1 = b0 + rb < r1 ? b0 + rb : r1;
            const uint8_t *wb = (const uint8_t *)w->data + (size_t)b0 * w->row_bytes;
            int64_t t = t0;
            for (; k->dot4 && t + 3 < t1; t += 4) { /* four tokens per weight-row pass */
                const void *xt[4];
                float out[4];
                for (int j = 0; j < 4; j++)
                    xt[j] = xbase + (size_t)(m->tok ? m->tok[t + j] : t + j) * x->stride;
                const uint8_t *wr = wb;
                for (int64_t r = b0; r < b1; r++, wr += w->row_bytes) {
                    k->dot4(w->ne0, wr, xt, out);
                    for (int j = 0; j < 4; j++)
                        m->y[(t + j) * m->ldy + r] = out[j];
                }
            }
            for (; t < t1; t++) {
                int64_t xi = m->tok ? m->tok[t] : t;
                const void *xt = xbase + (size_t)xi * x->stride;
                float *yt = m->y + t * m->ldy;
                const uint8_t *wr = wb;
                for (int64_t r = b0; r < b1; r++, wr += w->row_bytes)
                    yt[r] = dot(w->ne0, wr, xt);
            }
        }
    }
}

/* ======== the split ====================================================================== */

#define MAX_STACK_MM 64

typedef struct {
    const cpu_mm *mm;
    int n_mm;
    const int64_t *cost; /* per row of product i */
    const int64_t *start; /* cost before product i */
    const cpu_dot_kernel *const *kern;
    int64_t total;
} many_job;

static int64_t ceil_div(int64_t a, int64_t b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

/* Piece ith of nth: the rows whose starting cost lies in [total*ith/nth, total*(ith+1)/nth).
 * Neighbouring pieces share the bound expression, so every row lands in exactly one piece. */
static void many_fn(void *ctx, int ith, int nth)
{
    const many_job *j = ctx;
    int64_t lo = j->total * ith / nth, hi = j->total * (ith + 1) / nth;
    for (int i = 0; i < j->n_mm; i++) {
        int64_t rows = j->mm[i].w.ne1;
        int64_t end = j->start[i] + rows * j->cost[i];
        if (end <= lo || j->start[i] >= hi)
            continue;
        int64_t r0 = ceil_div(lo - j->start[i], j->cost[i]);
        int64_t r1 = ceil_div(hi - j->start[i], j->cost[i]);
        if (r1 > rows)
            r1 = rows;
        if (r0 < r1)
            run_rows(&j->mm[i], j->kern[i], r0, r1);
    }
}

void cpu_matmul_many(cpu_pool *p, const cpu_mm *mm, int n_mm)
{
    if (n_mm <= 0)
        return;
    int64_t cost_s[MAX_STACK_MM], start_s[MAX_STACK_MM];
    const cpu_dot_kernel *kern_s[MAX_STACK_MM];
    int64_t *cost = cost_s, *start = start_s;
    const cpu_dot_kernel **kern = kern_s;
    void *heap = NULL;
    if (n_mm > MAX_STACK_MM) {
        heap = malloc((size_t)n_mm * (2 * sizeof(int64_t) + sizeof(cpu_dot_kernel *)));
        if (!heap) { /* no memory for the split: run everything on the caller */
            for (int i = 0; i < n_mm; i++)
                run_rows(&mm[i], cpu_find_dot(mm[i].w.type, cpu_matmul_isa()), 0, mm[i].w.ne1);
            return;
        }
        cost = heap;
        start = cost + n_mm;
        kern = (const cpu_dot_kernel **)(start + n_mm);
    }
    /* cost of one row: its weight bytes once (memory) plus one dot per token (compute) */
    int64_t total = 0;
    cpu_isa isa = cpu_matmul_isa();
    for (int i = 0; i < n_mm; i++) {
        kern[i] = cpu_find_dot(mm[i].w.type, isa);
        cost[i] = (int64_t)mm[i].w.row_bytes * (1 + (mm[i].n_tok > 0 ? mm[i].n_tok : 0));
        if (mm[i].n_tok <= 0 || mm[i].w.ne1 <= 0)
            cost[i] = 1; /* nothing to compute; keeps the division defined */
        start[i] = total;
        total += (mm[i].n_tok > 0 ? mm[i].w.ne1 : 0) * cost[i];
    }
    many_job j = {mm, n_mm, cost, start, kern, total};
    int64_t pieces = total / MIN_PIECE_COST;
    int64_t max_pieces = (int64_t)cpu_pool_threads(p) * PIECES_PER_THREAD;
    if (pieces > max_pieces)
        pieces = max_pieces;
    if (cpu_pool_threads(p) == 1 || pieces < 2)
        many_fn(&j, 0, 1);
    else
        cpu_pool_run_n(p, (int)pieces, many_fn, &j);
    free(heap);
}

/* ======== convenience forms ============================================================== */

void cpu_matmul_act(cpu_pool *p, const cpu_weight *w, const cpu_act *x, float *y, int64_t ldy)
{
    cpu_mm m = {*w, x, 0, NULL, x->n_tok, y, ldy};
    cpu_matmul_many(p, &m, 1);
}

int cpu_matmul(cpu_pool *p, const cpu_weight *w, const float *x, int n_tok, float *y,
               cpu_act *scratch, ds4_error *err)
{
    ds4_type xt = cpu_act_type(w->type);
    cpu_act view;
    const cpu_act *a = &view;
    if (xt == DS4_TYPE_F32)
        view = cpu_act_f32(x, w->ne0, n_tok, w->ne0);
    else {
        int rc = cpu_act_quantize(p, scratch, xt, x, w->ne0, n_tok, w->ne0, err);
        if (rc != DS4_OK)
            return rc;
        a = scratch;
    }
    cpu_matmul_act(p, w, a, y, w->ne1);
    return DS4_OK;
}

int cpu_matmul_grouped(cpu_pool *p, const cpu_weight *w, int n_group, const float *x, int n_tok,
                       float *y, cpu_act *scratch, ds4_error *err)
{
    if (n_group <= 0 || w->ne1 % n_group != 0)
        return ds4_error_set(err, DS4_E_ARG, "matmul: %lld rows in %d groups",
                             (long long)w->ne1, n_group);
    ds4_type xt = cpu_act_type(w->type);
    int64_t n = w->ne0 * n_group;
    cpu_act view;
    const cpu_act *a = &view;
    if (xt == DS4_TYPE_F32)
        view = cpu_act_f32(x, n, n_tok, n);
    else {
        int rc = cpu_act_quantize(p, scratch, xt, x, n, n_tok, n, err);
        if (rc != DS4_OK)
            return rc;
        a = scratch;
    }
    cpu_mm stack[MAX_STACK_MM], *mm = stack;
    if (n_group > MAX_STACK_MM && !(mm = malloc((size_t)n_group * sizeof *mm)))
        return ds4_error_set(err, DS4_E_NOMEM, "matmul: %d groups", n_group);
    int64_t rows = w->ne1 / n_group;
    for (int g = 0; g < n_group; g++)
        mm[g] = (cpu_mm){cpu_weight_rows(w, g * rows, rows), a, g * w->ne0, NULL, n_tok,
                         y + g * rows, w->ne1};
    cpu_matmul_many(p, mm, n_group);
    if (mm != stack)
        free(mm);
    return DS4_OK;
}
