/* forward_bench.c — the optimized CPU forward (src/model/forward.c) on a model file: prefill
 * of N tokens in one call (layer-major), then decode one token per call, with the pool's
 * thread count; prints ms/token, tokens/s, and for decode the weight bytes one token reads
 * (every tensor but the embedding table and the routed experts not chosen: n_expert_used of
 * n_expert) as GB/s and % of the read bandwidth measured here. Checks first that decode and
 * prefill give the same logits for the first tokens (the forward's own invariant), then runs
 * every token once untimed so page faults of the mapped weights stay out of the timing.
 * Usage: forward_bench MODEL.gguf [--prefill N] [--decode N] [--threads N] [--csv FILE]
 * A model: build/bin/ds4-mkmodel m.gguf --preset flash-shape --layers 2 --quant q2 --fill random
 * Follows style.md §10; owns no kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/cpu/matmul.h"
#include "model/forward.h"

typedef struct {
    const char *path, *csv;
    int prefill, decode, threads;
} options;

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){NULL, NULL, 64, 16, 0};
    const bench_opt opts[] = {{NULL, 's', &o->path},          {"--prefill", 'i', &o->prefill},
                              {"--decode", 'i', &o->decode},   {"--threads", 'i', &o->threads},
                              {"--csv", 's', &o->csv}};
    const char *usage = "forward_bench MODEL.gguf [--prefill N] [--decode N] [--threads N] "
                        "[--csv FILE]";
    if (bench_parse_opts(argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), usage))
        return -1;
    if (!o->path || o->prefill < 1 || o->decode < 1) {
        fprintf(stderr, "usage: %s\n", usage);
        return -1;
    }
    return 0;
}

/* Weight bytes one decoded token reads (see the header comment). */
static double decode_bytes(const model *m)
{
    const model_hparams *hp = &m->hp;
    double total = 0;
    for (int64_t i = 0; i < gguf_tensor_count(m->file); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->file, i);
        if (t == m->w.token_embd)
            continue;
        total += (double)t->nbytes;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->w.layers[il];
        const gguf_tensor *e[3] = {L->ffn_gate_exps, L->ffn_up_exps, L->ffn_down_exps};
        for (int k = 0; k < 3; k++)
            total -= (double)e[k]->nbytes * (1.0 - (double)hp->n_expert_used / hp->n_expert);
    }
    return total;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    ds4_error err;
    model *m;
    cpu_pool *pool;
    if (model_load(&m, o.path, &err) != 0 ||
        cpu_pool_new(&pool, o.threads > 0 ? o.threads : 0, &err) != 0) {
        fprintf(stderr, "forward_bench: %s\n", err.msg);
        return 1;
    }
    const int nt = cpu_pool_threads(pool), N = o.prefill + o.decode;
    bench_header("ds4 bench/forward_bench — optimized CPU forward (model_forward_pool)",
                 cpu_isa_name(cpu_matmul_isa()));
    double bw1, bw_all;
    if (bench_bandwidth(nt, &bw1, &bw_all) != 0)
        return 1;
    const uint32_t V = m->hp.n_vocab;
    int32_t *tok = malloc(sizeof *tok * (size_t)N);
    float *logits = malloc(sizeof(float) * V * (size_t)(N > 4 ? N : 4));
    float *check = malloc(sizeof(float) * V * 4);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)((i * 7919u + 13u) % V);
    model_state *s;
    if (model_state_new(&s, m, (uint32_t)N + 4, &err) != 0) {
        fprintf(stderr, "forward_bench: %s\n", err.msg);
        return 1;
    }
    /* check: 4 tokens decoded one by one == the same 4 in one call */
    int ok = model_forward_pool(pool, m, s, tok, 4, check, &err) == 0;
    model_state_reset(s);
    for (int i = 0; ok && i < 4; i++)
        ok = model_forward_pool(pool, m, s, tok + i, 1, logits + (size_t)i * V, &err) == 0;
    ok = ok && memcmp(check, logits, sizeof(float) * V * 4) == 0;
    /* warm-up: one untimed pass over every token maps the weight pages the runs will touch */
    model_state_reset(s);
    ok = ok && model_forward_pool(pool, m, s, tok, (uint32_t)N, NULL, &err) == 0;
    model_state_reset(s);

    double t0 = bench_now_s();
    int rc = model_forward_pool(pool, m, s, tok, (uint32_t)o.prefill, logits, &err);
    double tp = bench_now_s() - t0;
    double *td = malloc(sizeof *td * (size_t)o.decode);
    for (int i = 0; rc == 0 && i < o.decode; i++) {
        t0 = bench_now_s();
        rc = model_forward_pool(pool, m, s, tok + o.prefill + i, 1, logits, &err);
        td[i] = bench_now_s() - t0;
    }
    if (rc) {
        fprintf(stderr, "forward_bench: %s\n", err.msg);
        return 1;
    }
    double dmin = td[0];
    for (int i = 1; i < o.decode; i++)
        dmin = td[i] < dmin ? td[i] : dmin;
    double dmed = bench_median(td, o.decode), gb = decode_bytes(m) / 1e9;
    printf("# model: %s: %u layers, d=%u, %u experts (%u used), vocab %u; %.2f GB read per "
           "decoded token\n",
           o.path, m->hp.n_layer, m->hp.n_embd, m->hp.n_expert, m->hp.n_expert_used, V, gb);
    printf("%-8s %6s %3s %12s %12s %10s %8s %7s  %s\n", "phase", "tokens", "thr", "ms/token",
           "min ms/tok", "tokens/s", "GB/s", "%bw", "check");
    printf("%-8s %6d %3d %12.2f %12s %10.2f %8s %7s  %s\n", "prefill", o.prefill, nt,
           tp * 1e3 / o.prefill, "-", o.prefill / tp, "-", "-", ok ? "ok" : "FAIL");
    printf("%-8s %6d %3d %12.2f %12.2f %10.2f %8.2f %6.1f%%  %s\n", "decode", o.decode, nt,
           dmed * 1e3, dmin * 1e3, 1.0 / dmed, gb / dmed, 100.0 * gb / dmed / bw_all,
           ok ? "ok" : "FAIL");
    if (o.csv) {
        FILE *f = fopen(o.csv, "w");
        if (f) {
            fprintf(f, "phase,tokens,threads,ms_per_token,min_ms,tokens_per_s,GBps,pct_bw,check\n"
                       "prefill,%d,%d,%.3f,,%.3f,,,%s\ndecode,%d,%d,%.3f,%.3f,%.3f,%.3f,%.2f,%s\n",
                    o.prefill, nt, tp * 1e3 / o.prefill, o.prefill / tp, ok ? "ok" : "FAIL",
                    o.decode, nt, dmed * 1e3, dmin * 1e3, 1.0 / dmed, gb / dmed,
                    100.0 * gb / dmed / bw_all, ok ? "ok" : "FAIL");
            fclose(f);
        }
    }
    model_state_free(s);
    model_free(m);
    cpu_pool_free(pool);
    free(tok), free(logits), free(check), free(td);
    return ok ? 0 : 1;
}
