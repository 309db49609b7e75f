/* mkmodel_fill.c — the bytes of a generated model: each row of each tensor from its own
 * seeded generator (so output is identical for any chunking or thread count), drawn from an
 * approximately normal distribution, then stored through the traits quantizer of the
 * tensor's type, or — for quantized types in random-block mode — as random valid blocks
 * scaled so their elements have on average the RMS of the float draw (each type's RMS at
 * unit scale is measured on a fixed sample of blocks). Rows are split over threads. Owns
 * no names or shapes (mkmodel.c). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/mkmodel_impl.h"
#include "quant/quant.h"

/* ---- random numbers --------------------------------------------------------------------- */

static inline uint64_t sm_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t model_mk_hash(const char *s, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return sm_next(&h);
}

/* Approximately N(0,1): Irwin-Hall sum of four 16-bit uniforms from one draw, scaled to unit
 * variance (bounded by +-3.46; cheap enough for billions of weights). */
static inline float rnd_normal(uint64_t *s)
{
    uint64_t x = sm_next(s);
    uint32_t sum = (uint32_t)(x & 0xffff) + (uint32_t)((x >> 16) & 0xffff) +
                   (uint32_t)((x >> 32) & 0xffff) + (uint32_t)(x >> 48);
    return ((float)sum + 2.0f - 131072.0f) * (1.7320508f / 65536.0f);
}

/* Uniform in [0, n). */
static inline uint32_t rnd_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((sm_next(s) >> 32) * (uint64_t)n) >> 32);
}

/* n random bytes, 8 per draw. */
static void rnd_bytes(uint64_t *s, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t x = sm_next(s);
        memcpy(p + i, &x, n - i < 8 ? n - i : 8);
    }
}

/* ---- random valid blocks ---------------------------------------------------------------- */

/* Each generator writes one block whose scale fields are `scale` times a unit scale (see
 * unit_rms). Random sub-block scales and quants, valid by construction. Centering: Q2_K/Q4_K mins are chosen
 * so q - m/sc is centred on zero. */
static void gen_q8_0(uint64_t *s, void *blk, float scale)
{
    quant_block_q8_0 *b = blk;
    b->d = quant_f32_to_f16(scale);
    rnd_bytes(s, (uint8_t *)b->qs, QUANT_QK8_0);
    for (int i = 0; i < QUANT_QK8_0; i++)
        b->qs[i] = b->qs[i] == -128 ? -127 : b->qs[i];
}

static void gen_q2_k(uint64_t *s, void *blk, float scale)
{
    quant_block_q2_k *b = blk;
    for (int j = 0; j < QUANT_QK_K / 16; j++) {
        uint32_t sc = 1 + rnd_below(s, 15), m = (3 * sc + 1) / 2;
        b->scales[j] = (uint8_t)(sc | (m > 15 ? 15 : m) << 4);
    }
    rnd_bytes(s, b->qs, QUANT_QK_K / 4);
    b->d = b->dmin = quant_f32_to_f16(scale);
}

static void gen_q4_k(uint64_t *s, void *blk, float scale)
{
    quant_block_q4_k *b = blk;
    uint8_t sc[8];
    for (int j = 0; j < 8; j++)
        sc[j] = (uint8_t)(1 + rnd_below(s, 63));
    /* m_j = sc_j and dmin = 7.5 d: w = d sc (q - 7.5). Packing of quant_q4_k_scale_min. */
    for (int j = 0; j < 4; j++) {
        b->scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        b->scales[j + 4] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        b->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (sc[j + 4] & 15) << 4);
    }
    rnd_bytes(s, b->qs, QUANT_QK_K / 2);
    b->d = quant_f32_to_f16(scale);
    b->dmin = quant_f32_to_f16(7.5f * scale);
}

static void gen_iq2_xxs(uint64_t *s, void *blk, float scale)
{
    quant_block_iq2_xxs *b = blk;
    uint8_t *q = (uint8_t *)b->qs;
    for (int sub = 0; sub < QUANT_QK_K / 32; sub++, q += 8) {
        uint64_t x = sm_next(s);
        uint32_t grid = (uint32_t)x, signs = (uint32_t)(x >> 32) & 0x0fffffffu;
        uint32_t aux = signs | rnd_below(s, 16) << 28;
        memcpy(q, &grid, 4);
        memcpy(q + 4, &aux, 4);
    }
    b->d = quant_f32_to_f16(scale);
}

typedef void (*gen_fn)(uint64_t *s, void *blk, float scale);

static const struct {
    ds4_type type;
    gen_fn gen;
} generators[] = {
    {DS4_TYPE_Q8_0, gen_q8_0},
    {DS4_TYPE_Q2_K, gen_q2_k},
    {DS4_TYPE_Q4_K, gen_q4_k},
    {DS4_TYPE_IQ2_XXS, gen_iq2_xxs},
};

static gen_fn generator_of(ds4_type t)
{
    for (size_t i = 0; i < sizeof generators / sizeof generators[0]; i++)
        if (generators[i].type == t)
            return generators[i].gen;
    return NULL;
}

#define CALIB_BLOCKS 64 /* blocks measured for a type's element RMS at unit scale */

/* The RMS of the elements of random unit-scale blocks of a type (fixed seed, so the same
 * on every call); scale = std / this gives elements of RMS std on average. */
static double unit_rms(const quant_traits *tr, gen_fn gen)
{
    uint8_t blk[512];
    float x[512];
    uint64_t s = 0x5eed;
    double ss = 0;
    for (int b = 0; b < CALIB_BLOCKS; b++) {
        gen(&s, blk, 1.0f);
        tr->dequant_row(blk, x, tr->block_elems);
        for (int64_t i = 0; i < tr->block_elems; i++)
            ss += (double)x[i] * x[i];
    }
    return sqrt(ss / (double)(CALIB_BLOCKS * tr->block_elems));
}

/* One row of random blocks at the given scale. */
static void random_blocks(const quant_traits *tr, gen_fn gen, uint64_t *s, uint8_t *dst,
                          int64_t n, float scale)
{
    for (int64_t b = 0; b < n / tr->block_elems; b++, dst += tr->block_bytes)
        gen(s, dst, scale);
}

/* ---- rows ------------------------------------------------------------------------------- */

static void make_row(const mk_tensor *t, int64_t r, uint8_t *out, float *x, uint32_t *perm,
                     float block_scale)
{
    uint64_t s = t->seed ^ ((uint64_t)r * 0xd1342543de82ef95ull);
    sm_next(&s);
    const int64_t n = t->ne[0];
    if (t->init == MK_INIT_TID2EID) {
        /* n_used distinct ids: a partial Fisher-Yates shuffle of 0..n_expert-1 */
        for (uint32_t e = 0; e < t->n_expert; e++)
            perm[e] = e;
        for (uint32_t k = 0; k < t->n_used; k++) {
            uint32_t j = k + rnd_below(&s, t->n_expert - k), v = perm[j];
            perm[j] = perm[k];
            perm[k] = v;
            int32_t id = (int32_t)v;
            memcpy(out + 4 * k, &id, 4);
        }
        return;
    }
    const quant_traits *tr = quant_get_traits(t->type);
    gen_fn gen = t->random_blocks ? generator_of(t->type) : NULL;
    if (gen) {
        random_blocks(tr, gen, &s, out, n, block_scale);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = t->mean + t->std * rnd_normal(&s);
    if (t->init == MK_INIT_HC_BASE) /* combine block starts at 2*hc: +1 on its diagonal */
        for (uint32_t i = 0; i < t->hc; i++)
            x[2 * t->hc + i * t->hc + i] += 1.0f;
    tr->quant_row(x, out, n);
}

typedef struct job {
    const mk_tensor *t;
    float block_scale;
    int64_t row0, n;
    uint8_t *dst;
    size_t row_bytes;
    int rc;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    const mk_tensor *t = j->t;
    int64_t ne0 = t->ne[0] > 256 ? t->ne[0] : 256; /* >= one block of floats */
    float *x = malloc((size_t)ne0 * sizeof *x);
    uint32_t *perm = malloc((size_t)(t->n_expert ? t->n_expert : 1) * sizeof *perm);
    if (!x || !perm) {
        j->rc = DS4_E_NOMEM;
    } else {
        for (int64_t r = 0; r < j->n; r++)
            make_row(t, j->row0 + r, j->dst + (size_t)r * j->row_bytes, x, perm,
                     j->block_scale);
    }
    free(x);
    free(perm);
    return NULL;
}

#define MK_MAX_THREADS 64
#define MK_ROWS_PER_THREAD_MIN 16 /* below this a chunk is not split */

int model_mk_fill_rows(void *user, int64_t row0, int64_t n_rows, void *dst, ds4_error *err)
{
    const mk_tensor *t = user;
    const size_t row_bytes = quant_row_bytes(t->type, t->ne[0]);
    int nt = t->n_threads > 0 ? t->n_threads : 1;
    if (nt > MK_MAX_THREADS)
        nt = MK_MAX_THREADS;
    if (n_rows / MK_ROWS_PER_THREAD_MIN < nt)
        nt = (int)(n_rows / MK_ROWS_PER_THREAD_MIN) > 0 ? (int)(n_rows / MK_ROWS_PER_THREAD_MIN)
                                                       : 1;
    float block_scale = 1.0f;
    gen_fn gen = t->random_blocks ? generator_of(t->type) : NULL;
    if (gen) {
        const quant_traits *tr = quant_get_traits(t->type);
        block_scale = (float)(t->std / unit_rms(tr, gen));
    }
    job jobs[MK_MAX_THREADS];
    pthread_t th[MK_MAX_THREADS];
    bool started[MK_MAX_THREADS] = {false};
    for (int k = 0; k < nt; k++) {
        int64_t a = n_rows * k / nt, b = n_rows * (k + 1) / nt;
        jobs[k] = (job){t, block_scale, row0 + a, b - a, (uint8_t *)dst + (size_t)a * row_bytes,
                        row_bytes, 0};
        if (k > 0)
            started[k] = pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0;
    }
    run_job(&jobs[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k])
            pthread_join(th[k], NULL);
        else
            run_job(&jobs[k]); /* no thread: do it here, same bytes */
    }
    for (int k = 0; k < nt; k++)
        if (jobs[k].rc)
            return ds4_error_set(err, jobs[k].rc, "mkmodel: tensor '%s': out of memory for"
                                 " row scratch", t->name);
    return 0;
}
