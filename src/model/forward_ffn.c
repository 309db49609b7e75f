/* forward_ffn.c — the FFN sublayer of the optimized forward (§3.9) for a chunk of tokens:
 * HC pre, ffn_norm, router, then the routed experts. Where src/kernels/cpu/moe.h has vector
 * kernels for the expert types (IQ2_XXS, Q2_K, Q4_K), the routed experts are one cpu_moe_run
 * (GEMV or mini-GEMM path by batch size and sharing, DS4_DECODE_MOE_MINIGEMM; the same bits
 * either way) and the shared expert runs beside it. Otherwise (F16/F32/Q8_0 experts, no
 * AVX-512 VBMI) they are batched by expert here: every (token, k) choice gets a slot, slots
 * are grouped by expert so each expert's gate/up/down rows are read once for all its tokens,
 * and all experts (plus the shared expert) run in one dispatch per stage. Activations (§4.1):
 * h quantized once to Q8_K for every expert's gate and up (and to Q8_0 for the shared
 * expert), each slot's hidden to Q8_K before down. The routed outputs are summed per token
 * (cpu_moe: in (expert, k) order; here: in k order), then the shared expert is added.
 * Layers whose routed experts model_offload placed on a backend run them there (backend.h,
 * BACKEND_OP_MOE, the same call's contract), enqueued before the shared expert runs here.
 * Owns the slot bookkeeping; routing and SwiGLU math are moe.c's. */
#include <string.h>

#include "model/forward_impl.h"

/* Steps 1-2: HC pre from the mixer output, h = RMSNorm(x) * ffn_norm. */
static void tok_ffn_pre(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const model_hparams *hp = f->hp;
    const model_layer *L = &f->m->w.layers[f->il];
    const uint64_t nh = hp->n_hc, d = hp->n_embd, mixw = (2 + nh) * nh;
    hc_pre_finish(hp, L->hc_ffn_scale, L->hc_ffn_base, f->MIX + t * mixw, f->X + t * nh * d,
                  f->XS + t * d, f->POST + t * nh, f->COMB + t * nh * nh);
    model_rmsnorm(f->XS + t * d, hp->n_embd, hp->rms_eps, L->ffn_norm, f->H + t * d);
}

/* Steps 3-5 after the router projection: scores, selection, weights. */
static void tok_route(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const model_hparams *hp = f->hp;
    const uint64_t K = hp->n_expert_used;
    moe_select(hp, &f->m->w.layers[f->il], f->il, f->tok[t], f->ROUT + t * hp->n_expert,
               f->ESEL + t * K, f->EW + t * K);
}

/* Steps 6-7 between the projections: the clamped SwiGLU of slot i (routed, weighted) or,
 * for i >= T*K, of token i - T*K's shared expert (unweighted). */
static void slot_swiglu(fwd *f, uint32_t i, fwd_thread *th)
{
    (void)th;
    const model_layer *L = &f->m->w.layers[f->il];
    const float lim = f->hp->swiglu_clamp[f->il];
    const uint64_t TK = (uint64_t)f->T * f->hp->n_expert_used, W = f->wmax;
    if (i < TK) {
        moe_swiglu(f->G + i * W, f->U + i * W, (uint32_t)L->ffn_gate_exps->ne[1], lim,
                   f->EW[f->SLOT_TK[i]], f->M + i * W);
    } else {
        const uint64_t t = i - TK;
        moe_swiglu(f->GS + t * W, f->US + t * W, (uint32_t)L->ffn_gate_shexp->ne[1], lim, 1.0f,
                   f->MS + t * W);
    }
}

/* Step 8: y = sum_k routed_k (in k order) + shared, as moe_ffn adds them. */
static void tok_sum(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const uint64_t d = f->hp->n_embd, K = f->hp->n_expert_used;
    float *y = f->Y + t * d;
    for (uint64_t i = 0; i < d; i++)
        y[i] = 0.0f;
    for (uint64_t k = 0; k < K; k++) {
        const float *yd = f->DN + (uint64_t)f->SLOT[t * K + k] * d;
        for (uint64_t i = 0; i < d; i++)
            y[i] += yd[i];
    }
    const float *ys = f->YS + t * d;
    for (uint64_t i = 0; i < d; i++)
        y[i] += ys[i];
}

/* Slots grouped by expert, in (token, k) order within an expert. */
static void assign_slots(fwd *f)
{
    const uint32_t E = f->hp->n_expert, K = f->hp->n_expert_used, TK = f->T * K;
    memset(f->ECOUNT, 0, E * sizeof *f->ECOUNT);
    for (uint32_t i = 0; i < TK; i++)
        f->ECOUNT[f->ESEL[i]]++;
    f->EOFF[0] = 0;
    for (uint32_t e = 0; e < E; e++)
        f->EOFF[e + 1] = f->EOFF[e] + f->ECOUNT[e];
    memset(f->ECOUNT, 0, E * sizeof *f->ECOUNT);
    for (uint32_t i = 0; i < TK; i++) {
        const uint32_t e = (uint32_t)f->ESEL[i], slot = f->EOFF[e] + f->ECOUNT[e]++;
        f->SLOT[i] = (int32_t)slot;
        f->SLOT_TK[slot] = (int32_t)i;
        f->SLOT_TOK[slot] = (int32_t)(i / K);
    }
}

#define ACT(name, x, n, rows, ldx, w)                                                          \
    const cpu_act *name = model_fwd_act(f, x, n, rows, ldx, (w)->type);                        \
    if (!name)                                                                                 \
        return f->err ? f->err->code : DS4_E_NOMEM

/* The shared expert's SwiGLU of token t (the cpu_moe route). */
static void tok_shared_swiglu(fwd *f, uint32_t t, fwd_thread *th)
{
    slot_swiglu(f, f->T * f->hp->n_expert_used + t, th);
}

/* y = routed (already in Y) + shared. */
static void tok_add_shared(fwd *f, uint32_t t, fwd_thread *th)
{
    (void)th;
    const uint64_t d = f->hp->n_embd;
    float *y = f->Y + t * d;
    const float *ys = f->YS + t * d;
    for (uint64_t i = 0; i < d; i++)
        y[i] += ys[i];
}

/* Whether the routed experts of L go through cpu_moe_run: it has kernels for their types and
 * vector ones on this CPU (without AVX-512 VBMI/GFNI, or with DS4_CPU_ISA below avx512, the
 * slot path's cpu_matmul products are the faster ones). */
static bool use_cpu_moe(const model_layer *L)
{
    return cpu_moe_vectorized() &&
           cpu_moe_supported(L->ffn_gate_exps->type, L->ffn_down_exps->type,
                             L->ffn_gate_exps->ne[0], L->ffn_gate_exps->ne[1]);
}

static cpu_moe_tensor moe_tensor(const gguf_tensor *t)
{
    const size_t rb = quant_row_bytes(t->type, t->ne[0]);
    return (cpu_moe_tensor){ t->type, t->ne[0], t->ne[1], t->data, rb, rb * (size_t)t->ne[1] };
}

/* Steps 6-7 of the shared expert: its SwiGLU into MS, its down projection into YS. */
static int shared_down(fwd *f, const model_layer *L)
{
    const uint32_t T = f->T, d = f->hp->n_embd;
    const uint32_t n_sh = (uint32_t)L->ffn_gate_shexp->ne[1];
    model_fwd_loop(f, T, tok_shared_swiglu);
    f->n_acts = 0;
    ACT(sq, f->MS, n_sh, T, f->wmax, L->ffn_down_shexp);
    f->mm[0] = (cpu_mm){ model_fwd_weight(L->ffn_down_shexp), sq, 0, NULL, (int)T, f->YS, d };
    cpu_matmul_many(f->pool, f->mm, 1);
    return 0;
}

/* Steps 6-8 with the routed experts in one call: cpu_moe_run here (bw NULL) or the backend's
 * BACKEND_OP_MOE on the layer's uploaded experts bw (enqueued first, so a device computes
 * them while the shared expert runs here, then synced). Routed into Y, then Y += shared. */
static int ffn_moe_call(fwd *f, const model_layer *L, const backend_moe_weights *bw)
{
    const model_hparams *hp = f->hp;
    const uint32_t T = f->T, d = hp->n_embd;
    ds4_backend *be = f->off ? f->off->be : NULL;
    int rc;
    if (bw) {
        const backend_moe_args a = { bw, (int)T, (int)hp->n_expert_used, f->ESEL, f->EW, f->H,
                                     d, f->Y, d, false, (int)f->il, f->pool };
        if ((rc = be->moe_run(be, &a, f->err)) != 0)
            return rc;
        rc = shared_down(f, L);
        const int rs = be->sync(be, f->err); /* always: no op may stay pending on our Y */
        if (rc == 0)
            rc = rs;
    } else if ((rc = shared_down(f, L)) == 0) {
        const cpu_moe_layer ml = { moe_tensor(L->ffn_gate_exps), moe_tensor(L->ffn_up_exps),
                                   moe_tensor(L->ffn_down_exps), (int)hp->n_expert,
                                   hp->swiglu_clamp[f->il] };
        const cpu_moe_args a = { &ml, (int)T, (int)hp->n_expert_used, f->ESEL, f->EW, f->H, d,
                                 f->Y, d, false, CPU_MOE_AUTO, (int)f->il };
        rc = cpu_moe_run(f->moe, f->pool, &a, f->err);
    }
    if (rc)
        return rc;
    model_fwd_loop(f, T, tok_add_shared);
    model_fwd_hc_post(f);
    return 0;
}

int model_fwd_ffn(fwd *f)
{
    const model_hparams *hp = f->hp;
    const model_layer *L = &f->m->w.layers[f->il];
    const uint32_t T = f->T, d = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used;
    const uint32_t n_ff = (uint32_t)L->ffn_gate_exps->ne[1];
    const uint32_t n_sh = (uint32_t)L->ffn_gate_shexp->ne[1];
    const int64_t W = f->wmax;
    cpu_mm *mm = f->mm;
    int n = 0, rc;

    /* 1-2. HC pre, ffn_norm */
    if ((rc = model_fwd_hc_mix(f, L->hc_ffn_fn)) != 0)
        return rc;
    model_fwd_loop(f, T, tok_ffn_pre);

    /* 3. router logits, and the shared expert's gate and up, in one dispatch */
    f->n_acts = 0;
    {
        ACT(a, f->H, d, T, d, L->ffn_gate_inp);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->ffn_gate_inp), a, 0, NULL, (int)T, f->ROUT, E };
    }
    {
        ACT(a, f->H, d, T, d, L->ffn_gate_shexp);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->ffn_gate_shexp), a, 0, NULL, (int)T, f->GS, W };
    }
    {
        ACT(a, f->H, d, T, d, L->ffn_up_shexp);
        mm[n++] = (cpu_mm){ model_fwd_weight(L->ffn_up_shexp), a, 0, NULL, (int)T, f->US, W };
    }
    cpu_matmul_many(f->pool, mm, n);

    /* 4-5. selection and weights per token, then slots grouped by expert */
    model_fwd_loop(f, T, tok_route);
    if (f->off && f->off->w[f->il])
        return ffn_moe_call(f, L, f->off->w[f->il]);
    if (use_cpu_moe(L))
        return ffn_moe_call(f, L, NULL);
    assign_slots(f);

    /* 6. every chosen expert's gate and up over its tokens: h quantized once (Q8_K) */
    const cpu_weight wg = model_fwd_weight(L->ffn_gate_exps), wu = model_fwd_weight(L->ffn_up_exps);
    ACT(hg, f->H, d, T, d, L->ffn_gate_exps);
    ACT(hu, f->H, d, T, d, L->ffn_up_exps);
    n = 0;
    for (uint32_t e = 0; e < E; e++) {
        const uint32_t c = f->EOFF[e + 1] - f->EOFF[e], o = f->EOFF[e];
        if (c == 0)
            continue;
        mm[n++] = (cpu_mm){ cpu_weight_expert(&wg, e), hg, 0, f->SLOT_TOK + o, (int)c,
                            f->G + (uint64_t)o * W, W };
        mm[n++] = (cpu_mm){ cpu_weight_expert(&wu, e), hu, 0, f->SLOT_TOK + o, (int)c,
                            f->U + (uint64_t)o * W, W };
    }
    cpu_matmul_many(f->pool, mm, n);
    model_fwd_loop(f, T * K + T, slot_swiglu);

    /* 6-7. down projections: every slot's hidden quantized (Q8_K), the shared one too */
    f->n_acts = 0;
    const cpu_weight wd = model_fwd_weight(L->ffn_down_exps);
    ACT(mq, f->M, n_ff, T * K, W, L->ffn_down_exps);
    ACT(sq, f->MS, n_sh, T, W, L->ffn_down_shexp);
    n = 0;
    for (uint32_t e = 0; e < E; e++) {
        const uint32_t c = f->EOFF[e + 1] - f->EOFF[e], o = f->EOFF[e];
        if (c == 0)
            continue;
        mm[n++] = (cpu_mm){ cpu_weight_expert(&wd, e), mq, 0, f->IDENT + o, (int)c,
                            f->DN + (uint64_t)o * d, d };
    }
    mm[n++] = (cpu_mm){ model_fwd_weight(L->ffn_down_shexp), sq, 0, NULL, (int)T, f->YS, d };
    cpu_matmul_many(f->pool, mm, n);

    /* 8. sum, HC post */
    model_fwd_loop(f, T, tok_sum);
    model_fwd_hc_post(f);
    return 0;
}
