/* moe_fused.cuh — host entry points of the one-launch decode MoE (moe_fused.cu; batch 1 to
 * CUDA_FUSED_MAX_TOK tokens):
 * the plan (does this layer fit the fused kernel, and with which ring of shared-memory
 * slots) and the launcher. Declares only host code; the kernel is private to moe_fused.cu. */
#ifndef DS4_BACKEND_CUDA_MOE_FUSED_CUH
#define DS4_BACKEND_CUDA_MOE_FUSED_CUH

#include "backend/cuda/common.cuh"

/* The launch shape of the fused kernel for one layer on one device. */
struct fused_plan {
    int n_blocks;           /* one per SM (cooperative launch: all resident) */
    int gu_rows;            /* gate/up rows (of each matrix) per ring item */
    int dn_rows, dn_experts; /* down: rows per group, experts per ring item */
    int slot_bytes, n_slots;
    int off_act, off_tab, off_ring; /* shared-memory layout, bytes */
    int smem;               /* dynamic shared memory per block */
};

/* Fills *p and returns true when the fused kernel takes this layer and batch: gate/up IQ2_XXS
 * or Q4_K with n_embd 4096, down Q2_K or Q4_K with n_ff 2048, n_used <= 8, n_tok <=
 * CUDA_FUSED_MAX_TOK with n_tok * n_used <= 64, rows, experts and data 16-byte aligned, and
 * the activations, mids and a ring of at least 2 slots fit smem_optin bytes of shared memory
 * on n_sm SMs. */
bool cuda_moe_fused_plan(fused_plan *p, int tg, int td, const moe_wt *gate, const moe_wt *up,
                         const moe_wt *down, int n_tok, int n_used, int n_sm, int smem_optin);

/* Sets the shared-memory limit of the kernel for (tg, td), batch 1 or not, to smem bytes
 * (call once per size, outside any stream capture). */
cudaError_t cuda_moe_fused_prepare(int tg, int td, bool batch, int smem);

/* y[t] (+)= the routed experts of token t < n_tok (rows h + t * ldh, y + t * ldy), in one
 * cooperative launch on stream s: quantize h (Q8_K), gate/up + SwiGLU for every (token,
 * expert) pair into mid (f32, n_tok * n_used x n_ff), a grid-wide barrier, quantize the mids,
 * down summed over each token's experts into y. Weight rows stream through a ring of
 * shared-memory slots by bulk copies (the down rows are loaded before the barrier); at
 * n_tok >= 2 the rows of each distinct expert are read once for all the tokens that chose it.
 * signmask: the 128 IQ2_XXS sign bytes expanded to 0x00/0xFF byte masks. bar: a 64-bit
 * counter, zero before the first launch, used only by this kernel. An id out of range sets
 * *err and counts as a zero expert. mode (bench diagnostics only; outputs undefined): 1 the
 * copies without arithmetic, 2 the launch alone. trace: NULL or n_blocks x CUDA_FUSED_TRACE
 * stamps (below). coop false: a plain launch (all blocks are
 * resident anyway when nothing else runs; the cooperative launch guarantees it). */
cudaError_t cuda_moe_fused_run(int tg, int td, const fused_plan *p, const moe_wt *gate,
                               const moe_wt *up, const moe_wt *down, const uint64_t *grid,
                               const uint64_t *signmask, const float *h, long long ldh,
                               const int32_t *ids, const float *wts, int n_tok, int n_used,
                               int n_expert, float clamp, float *mid, float *y, long long ldy,
                               bool accumulate, int *err, unsigned long long *bar,
                               unsigned long long *trace, int mode, bool coop, cudaStream_t s);

/* Stamps per block in the trace buffer of cuda_moe_fused_run: [0] globaltimer at entry (ns),
 * [1..7] clock64 at entry, items built, first gate/up rows in, gate/up done, after the grid
 * barrier, mids quantized, down done. */
#define CUDA_FUSED_TRACE 8

#endif
