/* test_forward_ref.c — the reference forward pass (src/model/forward_ref.c) and its
 * components: hand-computed values of the pieces (Sinkhorn sums, RoPE inverse, YaRN
 * cut-offs, FP8/FP4 rounding tables, Hadamard orthonormality, sink attention, SwiGLU clamp,
 * top-k ties), then invariants on tiny DS4-layout models built in memory (random weights,
 * every layer kind, the indexer selecting): decode == prefill (bit-identical, QAT on and
 * off, whole and chunked prefill), determinism, context overflow and bad-token errors; the
 * same invariants through the loader on a `ds4-mkmodel --preset tiny` q2-mix model made in
 * memory, and on a model file given as the argument.
 * Spec: ds4-architecture.md §3, §3.8, §3.11. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward_ref.h"
#include "model/mkmodel.h"
#include "model/ops.h"
#include "model/state.h"
#include "quant/quant.h"
#include "test_util.h"

/* ---- a tiny model in memory ------------------------------------------------------------ */

#define MAX_T 2048

typedef struct tiny {
    model m;
    gguf_tensor t[MAX_T];
    void *data[MAX_T];
    int n;
    t_rng rng;
} tiny;

/* A tensor of ne = [ne0, ne1, ne2] with values mean + sd * N(0, 1), stored as type. */
static const gguf_tensor *mk(tiny *T, ds4_type type, int64_t ne0, int64_t ne1, int64_t ne2,
                             double mean, double sd)
{
    gguf_tensor *t = &T->t[T->n];
    const int64_t n = ne0 * ne1 * ne2;
    float *f = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)(mean + sd * t_normal(&T->rng));
    const size_t rb = quant_row_bytes(type, ne0);
    void *q = malloc(rb * (size_t)(ne1 * ne2));
    for (int64_t r = 0; r < ne1 * ne2; r++)
        quant_get_traits(type)->quant_row(f + r * ne0, (uint8_t *)q + r * rb, ne0);
    free(f);
    t->name = "tiny";
    t->n_dims = ne2 > 1 ? 3 : ne1 > 1 ? 2 : 1;
    for (int k = 0; k < GGUF_MAX_DIMS; k++)
        t->ne[k] = 1;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2;
    t->type = type;
    t->n_elems = n;
    t->nbytes = rb * (size_t)(ne1 * ne2);
    t->data = q;
    T->data[T->n++] = q;
    return t;
}

typedef struct tiny_cfg {
    uint32_t n_layer, d, vocab, H, D, n_rot, q_rank, groups, o_rank, E, K, I, Hi, Di, top_k;
    uint32_t swa, r_a, r_b; /* ratios of even / odd layers >= 2 */
    ds4_type wtype;         /* type of the large matrices */
} tiny_cfg;

static void tiny_build(tiny *T, const tiny_cfg *c, uint64_t seed)
{
    memset(T, 0, sizeof *T);
    T->rng.s = seed;
    model_hparams *hp = &T->m.hp;
    *hp = (model_hparams){
        .n_layer = c->n_layer, .n_embd = c->d, .n_vocab = c->vocab, .n_head = c->H,
        .n_head_kv = 1, .head_dim = c->D, .n_rot = c->n_rot, .q_lora_rank = c->q_rank,
        .o_lora_rank = c->o_rank, .n_out_group = c->groups, .n_expert = c->E,
        .n_expert_used = c->K, .n_ff_exp = c->I, .n_expert_shared = 1, .n_hash_layer = 3,
        .n_swa = c->swa, .n_indexer_head = c->Hi, .indexer_head_dim = c->Di,
        .indexer_top_k = c->top_k, .n_hc = 4, .hc_sinkhorn_iters = 20, .hc_eps = 1e-6f,
        .rms_eps = 1e-6f, .rope_freq_base = 10000.0f, .rope_compress_freq_base = 160000.0f,
        .rope_scaling_factor = 16.0f, .rope_orig_ctx = 65536, .rope_beta_fast = 32.0f,
        .rope_beta_slow = 1.0f, .expert_weights_scale = 1.5f, .expert_weights_norm = true,
    };
    const uint32_t d = c->d, hc = 4, mix = (2 + hc) * hc, V = c->vocab;
    const ds4_type W = c->wtype, F = DS4_TYPE_F32;
    model_weights *w = &T->m.w;
    w->token_embd = mk(T, DS4_TYPE_F16, d, V, 1, 0, 1);
    w->output_hc_fn = mk(T, F, hc * d, hc, 1, 0, 2.0 / sqrt(hc * d));
    w->output_hc_base = mk(T, F, hc, 1, 1, 0, 0.5);
    w->output_hc_scale = mk(T, F, 1, 1, 1, 0.75, 0.1);
    w->output_norm = mk(T, F, d, 1, 1, 1, 0.1);
    w->output = mk(T, W, d, V, 1, 0, 3.0 / sqrt(d));
    w->layers = calloc(c->n_layer, sizeof *w->layers);
    for (uint32_t il = 0; il < c->n_layer; il++) {
        model_layer *L = &w->layers[il];
        const uint32_t R = il < 2 ? 0 : il % 2 == 0 ? c->r_a : c->r_b;
        hp->compress_ratio[il] = R;
        hp->swiglu_clamp[il] = 10.0f;
        L->hc_attn_fn = mk(T, F, hc * d, mix, 1, 0, 2.0 / sqrt(hc * d));
        L->hc_attn_scale = mk(T, F, 3, 1, 1, 0.75, 0.15);
        L->hc_attn_base = mk(T, F, mix, 1, 1, 0, 0.5);
        L->attn_norm = mk(T, F, d, 1, 1, 1, 0.1);
        L->attn_q_a = mk(T, W, d, c->q_rank, 1, 0, 1 / sqrt(d));
        L->attn_q_a_norm = mk(T, F, c->q_rank, 1, 1, 1, 0.1);
        L->attn_q_b = mk(T, W, c->q_rank, c->H * c->D, 1, 0, 1 / sqrt(c->q_rank));
        L->attn_kv = mk(T, W, d, c->D, 1, 0, 1 / sqrt(d));
        L->attn_kv_a_norm = mk(T, F, c->D, 1, 1, 1, 0.1);
        L->attn_sinks = mk(T, F, c->H, 1, 1, 0, 1);
        L->attn_output_a = mk(T, W, c->H * c->D / c->groups, c->groups * c->o_rank, 1, 0,
                              1 / sqrt(c->H * c->D / c->groups));
        L->attn_output_b = mk(T, W, c->groups * c->o_rank, d, 1, 0, 1 / sqrt(c->groups * c->o_rank));
        if (R) {
            const uint32_t coff = R == 4 ? 2 : 1;
            L->attn_compressor_ape = mk(T, DS4_TYPE_F16, coff * c->D, R, 1, 0, 0.5);
            L->attn_compressor_kv = mk(T, W, d, coff * c->D, 1, 0, 1 / sqrt(d));
            L->attn_compressor_gate = mk(T, W, d, coff * c->D, 1, 0, 1 / sqrt(d));
            L->attn_compressor_norm = mk(T, F, c->D, 1, 1, 1, 0.1);
        }
        if (R == 4) {
            L->indexer_attn_q_b = mk(T, W, c->q_rank, c->Hi * c->Di, 1, 0, 1 / sqrt(c->q_rank));
            L->indexer_proj = mk(T, W, d, c->Hi, 1, 0, 1 / sqrt(d));
            L->indexer_compressor_ape = mk(T, DS4_TYPE_F16, 2 * c->Di, 4, 1, 0, 0.5);
            L->indexer_compressor_kv = mk(T, W, d, 2 * c->Di, 1, 0, 1 / sqrt(d));
            L->indexer_compressor_gate = mk(T, W, d, 2 * c->Di, 1, 0, 1 / sqrt(d));
            L->indexer_compressor_norm = mk(T, F, c->Di, 1, 1, 1, 0.1);
        }
        L->hc_ffn_fn = mk(T, F, hc * d, mix, 1, 0, 2.0 / sqrt(hc * d));
        L->hc_ffn_scale = mk(T, F, 3, 1, 1, 0.75, 0.15);
        L->hc_ffn_base = mk(T, F, mix, 1, 1, 0, 0.5);
        L->ffn_norm = mk(T, F, d, 1, 1, 1, 0.1);
        L->ffn_gate_inp = mk(T, F, d, c->E, 1, 0, 3.0 / sqrt(d));
        if (il < hp->n_hash_layer) {
            gguf_tensor *t = (gguf_tensor *)mk(T, DS4_TYPE_F32, c->K, V, 1, 0, 0);
            int32_t *ids = T->data[T->n - 1];
            t->type = DS4_TYPE_I32;
            for (uint32_t v = 0; v < V; v++)
                for (uint32_t k = 0; k < c->K; k++) /* distinct experts per token */
                    ids[v * c->K + k] = (int32_t)((v * 7 + k * 3 + il) % c->E);
            L->ffn_gate_tid2eid = t;
        } else {
            L->exp_probs_b = mk(T, F, c->E, 1, 1, 0, 0.3);
        }
        L->ffn_gate_exps = mk(T, W, d, c->I, c->E, 0, 1 / sqrt(d));
        L->ffn_up_exps = mk(T, W, d, c->I, c->E, 0, 1 / sqrt(d));
        L->ffn_down_exps = mk(T, W, c->I, d, c->E, 0, 1 / sqrt(c->I));
        L->ffn_gate_shexp = mk(T, W, d, c->I, 1, 0, 1 / sqrt(d));
        L->ffn_up_shexp = mk(T, W, d, c->I, 1, 0, 1 / sqrt(d));
        L->ffn_down_shexp = mk(T, W, c->I, d, 1, 0, 1 / sqrt(c->I));
    }
}

static void tiny_free(tiny *T)
{
    for (int i = 0; i < T->n; i++)
        free(T->data[i]);
    free(T->m.w.layers);
}

/* Presets: ratios 4 / 16 so short sequences emit rows of both kinds and the indexer
 * selects (top_k 4 < visible rows from position 19 on). */
static const tiny_cfg CFG_F32 = { .n_layer = 6, .d = 64, .vocab = 96, .H = 4, .D = 64,
                                  .n_rot = 16, .q_rank = 32, .groups = 2, .o_rank = 32,
                                  .E = 8, .K = 3, .I = 32, .Hi = 8, .Di = 32, .top_k = 4,
                                  .swa = 16, .r_a = 4, .r_b = 16, .wtype = DS4_TYPE_F32 };

/* ---- components ------------------------------------------------------------------------ */

/* Sinkhorn output sums: the last step is a column normalisation, so columns sum to 1 up to
 * f32 division; rows converge geometrically (20 rounds: ~1e-5 for softmaxes of N(0,1)
 * logits, slower for very peaked ones; 200 rounds: to f32 precision). */
#define TOL_SINKHORN_COL 1e-5
#define TOL_SINKHORN_ROW20 1e-4
#define TOL_SINKHORN_ROW200 1e-5

static void test_sinkhorn(t_rng *rng)
{
    for (int iters = 20; iters <= 200; iters *= 10) {
        float c[16];
        double worst_col = 0, worst_row = 0;
        for (int trial = 0; trial < 100; trial++) {
            for (int i = 0; i < 4; i++) {
                double z[4], s = 0;
                for (int j = 0; j < 4; j++)
                    s += (z[j] = exp(t_normal(rng)));
                for (int j = 0; j < 4; j++)
                    c[i * 4 + j] = (float)(z[j] / s + 1e-6);
            }
            hc_sinkhorn(c, 4, (uint32_t)iters, 1e-6f);
            for (int k = 0; k < 4; k++) {
                double rs = 0, cs = 0;
                for (int j = 0; j < 4; j++)
                    rs += c[k * 4 + j], cs += c[j * 4 + k];
                worst_row = fmax(worst_row, fabs(rs - 1));
                worst_col = fmax(worst_col, fabs(cs - 1));
            }
        }
        double tol_row = iters == 20 ? TOL_SINKHORN_ROW20 : TOL_SINKHORN_ROW200;
        t_case(worst_col < TOL_SINKHORN_COL, worst_col, TOL_SINKHORN_COL,
               "sinkhorn %d rounds: column sums = 1", iters);
        t_case(worst_row < tol_row, worst_row, tol_row, "sinkhorn %d rounds: row sums = 1", iters);
    }
}

#define TOL_ROPE 1e-6 /* two f32 roundings per value */

static void test_rope(t_rng *rng)
{
    double lo, hi;
    rope_yarn_range(64, 160000, 65536, 32, 1, &lo, &hi);
    t_check(lo == 15 && hi == 25, "yarn cut-offs for Flash (n_rot 64): %g %g = 15 25", lo, hi);
    rope_yarn_range(16, 160000, 65536, 32, 1, &lo, &hi);
    t_check(lo == 3 && hi == 7, "yarn cut-offs for n_rot 16: %g %g = 3 7", lo, hi);

    model_hparams hp = { .n_layer = 3, .head_dim = 512, .n_rot = 64, .rope_freq_base = 10000,
                         .rope_compress_freq_base = 160000, .rope_scaling_factor = 16,
                         .rope_orig_ctx = 65536, .rope_beta_fast = 32, .rope_beta_slow = 1,
                         .compress_ratio = { 0, 4, 128 } };
    rope_cfg rc;
    rope_layer_cfg(&hp, 1, &rc);
    /* pairs k <= 15 unscaled, k >= 25 interpolated by 1/16, between blended */
    double e15 = pow(160000, -30.0 / 64), e25 = pow(160000, -50.0 / 64), e20 = pow(160000, -40.0 / 64);
    double err = fmax(fabs(rc.inv_freq[15] / e15 - 1), fabs(rc.inv_freq[25] / (e25 / 16) - 1));
    err = fmax(err, fabs(rc.inv_freq[20] / (0.5 * e20 + 0.5 * e20 / 16) - 1));
    t_case(err < 1e-12, err, 1e-12, "yarn inv_freq at k = 15, 20, 25");
    rope_layer_cfg(&hp, 0, &rc);
    err = fabs(rc.inv_freq[31] / pow(10000, -62.0 / 64) - 1);
    t_case(err < 1e-12, err, 1e-12, "plain rope inv_freq (base 10000)");

    for (uint32_t il = 0; il < 3; il++) {
        rope_layer_cfg(&hp, il, &rc);
        float v[512], o[512];
        for (int i = 0; i < 512; i++)
            o[i] = v[i] = (float)t_normal(rng);
        double worst = 0;
        for (int64_t pos = 0; pos < 70000; pos += 997) {
            rope_apply(&rc, v, 512, pos, false);
            bool head_same = memcmp(v, o, 448 * sizeof(float)) == 0;
            rope_apply(&rc, v, 512, pos, true);
            if (!head_same)
                worst = 1e9;
            for (int i = 0; i < 512; i++) {
                worst = fmax(worst, fabs(v[i] - o[i]));
                v[i] = o[i];
            }
        }
        t_case(worst < TOL_ROPE, worst, TOL_ROPE, "rope: inverse(rope(x)) = x, layer kind R=%u",
               hp.compress_ratio[il]);
    }
    /* a rotation by theta at pos 1 on pair 0 (inv_freq 1): (1, 0) -> (cos 1, sin 1) */
    rope_layer_cfg(&hp, 0, &rc);
    float v[64] = { 0 };
    v[0] = 1;
    rope_apply(&rc, v, 64, 1, false);
    err = fmax(fabs(v[0] - cos(1.0)), fabs(v[1] - sin(1.0)));
    t_case(err < 1e-7, err, 1e-7, "rope pair 0 at pos 1 = (cos 1, sin 1)");
}

static void test_fp8(void)
{
    const float in[] = { 448, 500, -1000, 1.0625f, 1.1875f, 0x1p-10f, 0x3p-10f, 0x1p-9f,
                         0.3f, 240, 232, -17.5f, 0, 0x1p-7f * 1.9375f };
    const float want[] = { 448, 448, -448, 1.0f, 1.25f, 0, 0x2p-9f, 0x1p-9f,
                           0.3125f, 240, 224, -18, 0, 0x1p-6f };
    int bad = 0;
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float got = qat_e4m3(in[i]);
        if (got != want[i]) {
            printf("# e4m3(%a) = %a, want %a\n", in[i], got, want[i]);
            bad++;
        }
    }
    t_check(bad == 0, "fp8 e4m3: saturation at 448, ties to even code, subnormals");
    /* every representable value maps to itself */
    bad = 0;
    for (int e = 0; e < 16; e++)
        for (int mnt = 0; mnt < 8; mnt++) {
            if (e == 15 && mnt == 7)
                continue; /* NaN code */
            float v = e == 0 ? ldexpf((float)mnt, -9) : ldexpf(1.0f + mnt / 8.0f, e - 7);
            bad += qat_e4m3(v) != v || qat_e4m3(-v) != -v;
        }
    t_check(bad == 0, "fp8 e4m3: all 253 finite codes are fixed points");
    /* block simulation: amax 448 keeps scale 1; amax 0.5 -> scale 2^-9 */
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (i % 2 ? -1.0f : 1.0f) * 0.5f * (float)i / 63.0f;
    float y[64];
    memcpy(y, x, sizeof x);
    qat_fp8_sim(y, 64);
    double worst = 0;
    for (int i = 0; i < 64; i++)
        worst = fmax(worst, fabs(y[i] - ldexpf(qat_e4m3(ldexpf(x[i], 9)), -9)));
    t_case(worst == 0, worst, 0, "fp8 block sim = e4m3(x / 2^ceil(log2(amax/448))) * scale");
}

static void test_fp4(void)
{
    const float in[] = { 0.25f, 0.26f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5, 7, -0.8f, 6, 0.5f };
    const float want[] = { 0, 0.5f, 1, 1, 2, 2, 4, 4, 6, -1, 6, 0.5f };
    int bad = 0;
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float got = qat_e2m1(in[i]);
        if (got != want[i]) {
            printf("# e2m1(%g) = %g, want %g\n", in[i], got, want[i]);
            bad++;
        }
    }
    t_check(bad == 0, "fp4 e2m1 table: nearest, ties to even index, saturation at 6");
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = (float)i * 0.75f; /* amax 23.25 -> scale 2^ceil(log2(3.875)) = 4 */
    qat_fp4_sim(x, 32);
    int ok = x[31] == 24 && x[1] == 0 && x[3] == 2 && x[8] == 6;
    t_check(ok, "fp4 block sim, scale 4: 23.25 -> 24, 0.75 -> 0, 2.25 -> 2, 6 -> 6");
}

static void test_hadamard(t_rng *rng)
{
    for (uint32_t n = 2; n <= 128; n *= 4) {
        float x[128], y[128];
        double worst = 0, nx = 0, ny = 0;
        for (uint32_t i = 0; i < n; i++)
            y[i] = x[i] = (float)t_normal(rng);
        qat_hadamard(y, n);
        for (uint32_t i = 0; i < n; i++)
            nx += (double)x[i] * x[i], ny += (double)y[i] * y[i];
        qat_hadamard(y, n); /* orthonormal and symmetric: H H = I */
        for (uint32_t i = 0; i < n; i++)
            worst = fmax(worst, fabs(y[i] - x[i]));
        worst = fmax(worst, fabs(sqrt(ny / nx) - 1));
        t_case(worst < 1e-5, worst, 1e-5, "hadamard-%u orthonormal: |Hx| = |x|, HHx = x", n);
    }
    float e[128] = { 1 };
    qat_hadamard(e, 128);
    double worst = 0;
    for (int i = 0; i < 128; i++)
        worst = fmax(worst, fabs(e[i] - 1 / sqrt(128.0)));
    t_case(worst < 1e-7, worst, 1e-7, "hadamard-128 of e0 = 1/sqrt(128) everywhere");
}

static void test_attention_and_moe(void)
{
    /* one head of dim 4, one row k: o = k * e^s / (e^sink + e^s), s = q.k / 2 */
    float sink_v = 0.5f, q[4] = { 1, 2, 0, 0 }, k[4] = { 1, 1, 1, 1 }, o[4];
    gguf_tensor sink = { .name = "s", .n_dims = 1, .ne = { 1, 1, 1, 1, 1, 1, 1, 1 },
                         .type = DS4_TYPE_F32, .n_elems = 1, .data = &sink_v };
    model_hparams hp = { .n_head = 1, .head_dim = 4 };
    const float *rows[1] = { k };
    double sc[1];
    attn_sink_heads(&hp, &sink, q, rows, 1, o, sc);
    double want = exp(1.5) / (exp(0.5) + exp(1.5));
    t_case(fabs(o[0] - want) < 1e-7, fabs(o[0] - want), 1e-7, "sink attention, one row");
    attn_sink_heads(&hp, &sink, q, rows, 0, o, sc);
    t_check(o[0] == 0 && o[3] == 0, "sink attention, no rows: zero output");

    float g[3] = { 20, -1, 2 }, u[3] = { 50, -30, 0.5f }, m[3];
    moe_swiglu(g, u, 3, 10, 2, m);
    double w0 = 10 / (1 + exp(-10.0)) * 10 * 2, w1 = -1 / (1 + exp(1.0)) * -10 * 2;
    double err = fmax(fabs(m[0] - w0) / w0, fabs(m[1] - w1) / w1);
    t_case(err < 1e-6, err, 1e-6, "swiglu clamp: gate <= 10, up in [-10, 10], times weight");

    float s[6] = { 1, 3, 3, -1, 2, 3 };
    uint32_t sel[3];
    indexer_top_k(s, 6, 3, sel);
    t_check(sel[0] == 1 && sel[1] == 2 && sel[2] == 5, "indexer top-k: ties to lowest index, "
            "ascending output (%u %u %u)", sel[0], sel[1], sel[2]);
}

/* Row access of 3-D expert tensors by expert index, for every quantized weight type. */
static void test_rows(void)
{
    static const ds4_type types[] = { DS4_TYPE_F32, DS4_TYPE_F16, DS4_TYPE_Q8_0, DS4_TYPE_Q2_K,
                                      DS4_TYPE_Q4_K, DS4_TYPE_IQ2_XXS };
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        tiny T;
        memset(&T, 0, sizeof T);
        T.rng.s = 99 + ti;
        const int64_t in = 512, out = 5, ne = 3;
        const gguf_tensor *t = mk(&T, types[ti], in, out, ne, 0, 1);
        float *all = malloc((size_t)(in * out * ne) * sizeof(float)), row[512], x[512], y[5];
        quant_get_traits(t->type)->dequant_row(t->data, all, in * out * ne);
        for (int i = 0; i < in; i++)
            x[i] = (float)t_normal(&T.rng);
        bool ok = true;
        double worst = 0;
        for (uint32_t e = 0; e < ne; e++) {
            model_matvec(t, e, x, y);
            for (uint32_t r = 0; r < out; r++) {
                const float *want = all + ((int64_t)e * out + r) * in;
                model_row_f32(t, e, r, row);
                ok &= memcmp(row, want, sizeof row) == 0;
                ok &= model_elem(t, ((uint64_t)e * out + r) * in + 37) == want[37];
                double acc = 0;
                for (int i = 0; i < in; i++)
                    acc += (double)want[i] * x[i];
                worst = fmax(worst, fabs(y[r] - acc) / (fabs(acc) + 1e-30));
            }
        }
        t_check(ok, "%s: expert rows and elements = slices of the whole dequantized tensor",
                quant_get_traits(types[ti])->name);
        t_case(worst < 1e-6, worst, 1e-6, "%s: matvec of expert e = double dot of its rows",
               quant_get_traits(types[ti])->name);
        free(all);
        tiny_free(&T);
    }
}

/* ---- the forward pass on tiny models ---------------------------------------------------- */

static double max_rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Runs tokens through decode, whole prefill (unless light) and prefill in two chunks
 * (split), and checks bit equality of logits and of the state after; then (unless light)
 * determinism after a reset. */
static void check_model(const model *m, const char *name, uint32_t n_tok, uint32_t split,
                        bool qat, bool light, uint64_t seed)
{
    const uint32_t V = m->hp.n_vocab;
    int32_t *tok = malloc(n_tok * sizeof *tok);
    t_rng r = { seed };
    for (uint32_t i = 0; i < n_tok; i++)
        tok[i] = (int32_t)(t_next(&r) % V);
    float *a = malloc((size_t)n_tok * V * sizeof(float)), *b = malloc((size_t)n_tok * V * sizeof(float));
    float *c = malloc((size_t)n_tok * V * sizeof(float)), *d2 = malloc((size_t)n_tok * V * sizeof(float));
    ds4_error err = { 0 };
    model_state *s1 = NULL, *s2 = NULL, *s3 = NULL;
    int rc = model_state_new(&s1, m, n_tok + 8, &err);
    rc = rc ? rc : model_state_new(&s2, m, n_tok + 8, &err);
    rc = rc ? rc : model_state_new(&s3, m, n_tok + 8, &err);
    if (rc) {
        t_check(false, "%s: state: %s", name, err.msg);
        goto done;
    }
    s1->qat = s2->qat = s3->qat = qat;
    rc = model_forward_ref(m, s1, tok, n_tok, a, &err);
    if (!light)
        rc = rc ? rc : model_prefill_ref(m, s2, tok, n_tok, b, &err);
    rc = rc ? rc : model_prefill_ref(m, s3, tok, split, c, &err);
    rc = rc ? rc : model_prefill_ref(m, s3, tok + split, n_tok - split, c + (size_t)split * V, &err);
    if (rc) {
        t_check(false, "%s: forward: %s", name, err.msg);
        goto done;
    }
    size_t nl = (size_t)n_tok * V;
    bool finite = true;
    for (size_t i = 0; i < nl; i++)
        finite &= isfinite(a[i]);
    t_check(finite, "%s qat=%d: logits finite", name, qat);
    if (!light)
        t_case(memcmp(a, b, nl * 4) == 0, max_rel_diff(b, a, nl), 0,
               "%s qat=%d: decode == prefill (%u tokens), bit-identical", name, qat, n_tok);
    t_case(memcmp(a, c, nl * 4) == 0, max_rel_diff(c, a, nl), 0,
           "%s qat=%d: decode == prefill in chunks %u + %u", name, qat, split, n_tok - split);
    bool same_state = s1->pos == s3->pos;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer_state *x = &s1->layers[il], *y = &s3->layers[il];
        same_state &= x->n_comp == y->n_comp && x->n_index == y->n_index;
        same_state &= memcmp(x->raw, y->raw, (size_t)s1->raw_cap * m->hp.head_dim * 4) == 0;
        if (x->comp)
            same_state &= memcmp(x->comp, y->comp, (size_t)x->n_comp * m->hp.head_dim * 4) == 0;
        if (x->index)
            same_state &= memcmp(x->index, y->index, (size_t)x->n_index * m->hp.indexer_head_dim * 4) == 0;
    }
    t_check(same_state, "%s qat=%d: state after decode == after chunked prefill", name, qat);
    if (light)
        goto done;
    /* determinism: a reset state gives the same logits again */
    model_state_reset(s1);
    rc = model_forward_ref(m, s1, tok, n_tok, d2, &err);
    t_check(rc == 0 && memcmp(a, d2, nl * 4) == 0, "%s qat=%d: deterministic after reset", name, qat);
done:
    model_state_free(s1);
    model_state_free(s2);
    model_state_free(s3);
    free(tok), free(a), free(b), free(c), free(d2);
}

static void check_errors(const model *m)
{
    ds4_error err = { 0 };
    model_state *s = NULL;
    int32_t tok[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    float *lg = malloc((size_t)12 * m->hp.n_vocab * sizeof(float));
    int rc = model_state_new(&s, m, 10, &err);
    t_check(rc == 0, "state for 10 tokens");
    if (rc)
        return;
    rc = model_prefill_ref(m, s, tok, 11, lg, &err);
    t_check(rc == DS4_E_RANGE && s->pos == 0, "11 tokens in a context of 10: %s", err.msg);
    rc = model_forward_ref(m, s, tok, 10, NULL, &err);
    t_check(rc == 0 && s->pos == 10, "10 tokens fit (logits skipped)");
    rc = model_forward_ref(m, s, tok, 1, lg, &err);
    t_check(rc == DS4_E_RANGE && s->pos == 10, "one more token: %s", err.msg);
    model_state_reset(s);
    tok[3] = (int32_t)m->hp.n_vocab;
    rc = model_forward_ref(m, s, tok, 5, lg, &err);
    t_check(rc == DS4_E_ARG && s->pos == 0, "token outside the vocabulary: %s", err.msg);
    tok[3] = -1;
    rc = model_prefill_ref(m, s, tok, 5, lg, &err);
    t_check(rc == DS4_E_ARG, "negative token: %s", err.msg);
    rc = model_state_new(&(model_state *){ NULL }, m, 0, &err);
    t_check(rc == DS4_E_ARG, "context 0: %s", err.msg);
    model_state_free(s);
    free(lg);
}

int main(int argc, char **argv)
{
    t_rng rng = { t_seed(20261125) };
    test_sinkhorn(&rng);
    test_rope(&rng);
    test_fp8();
    test_fp4();
    test_hadamard(&rng);
    test_attention_and_moe();
    test_rows();

    tiny T;
    tiny_build(&T, &CFG_F32, rng.s + 1);
    check_model(&T.m, "tiny-f32", 150, 61, true, false, rng.s + 2);
    check_model(&T.m, "tiny-f32", 150, 97, false, false, rng.s + 3);
    check_errors(&T.m);
    tiny_free(&T);

    tiny_cfg cq = CFG_F32;
    cq.wtype = DS4_TYPE_Q8_0;
    tiny_build(&T, &cq, rng.s + 4);
    check_model(&T.m, "tiny-q8_0", 120, 40, true, false, rng.s + 5);
    tiny_free(&T);

    /* the ds4-mkmodel generator in memory (q2 mix: IQ2_XXS / Q2_K experts, Q8_0, F16),
     * through the loader; ratio 16 instead of 128 and a window of 32 so that 72 tokens emit
     * rows of both kinds, slide the window and make the indexer select (top-k 8) */
    {
        model_mk_opts o;
        ds4_error err = { 0 };
        void *buf = NULL;
        size_t size = 0;
        gguf_file *f = NULL;
        model *m = NULL;
        int rc = model_mk_preset(&o, "tiny", &err);
        for (uint32_t il = 0; il < o.hp.n_layer; il++)
            if (o.hp.compress_ratio[il] > 4)
                o.hp.compress_ratio[il] = 16;
        o.hp.n_swa = 32;
        o.quant = MODEL_MK_Q2;
        o.fill = MODEL_MK_FILL_RANDOM;
        o.seed = rng.s + 10;
        rc = rc ? rc : model_mk_write_memory(&o, &buf, &size, &err);
        rc = rc ? rc : gguf_open_memory(&f, buf, size, &err);
        rc = rc ? rc : model_load_file(&m, f, &err);
        if (t_check(rc == 0, "ds4-mkmodel tiny q2 in memory: %s", rc ? err.msg : "loaded"))
            check_model(m, "mkmodel-tiny-q2", 72, 37, true, true, rng.s + 11);
        model_free(m);
        free(buf);
    }

    /* a model file given as the argument */
    if (argc > 1) {
        model *m = NULL;
        ds4_error err = { 0 };
        if (model_load(&m, argv[1], &err) == 0) {
            check_model(m, argv[1], 300, 129, true, false, rng.s + 6);
            check_model(m, argv[1], 300, 200, false, false, rng.s + 7);
            model_free(m);
        } else {
            t_check(false, "load %s: %s", argv[1], err.msg);
        }
    } else {
        t_skip("no model file argument", "invariants on a model file");
    }
    return t_summary();
}
