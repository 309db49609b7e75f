/* tuning.cuh — every tuning number of the CUDA decode-MoE kernels in one table: block shapes
 * of the GEMV and mini-GEMM kernels and the batch sizes at which the mini-GEMM path wins.
 * Owns numbers only (no code). The crossovers come from bench/cuda_moe_bench on the H100
 * (docs/perf.md); the shapes must keep the asserts of the kernels that use them. */
#ifndef DS4_BACKEND_CUDA_TUNING_CUH
#define DS4_BACKEND_CUDA_TUNING_CUH

#define CUDA_MOE_MAX_TOK 64        /* tokens per kernel launch; a larger call is split */
#define CUDA_MOE_MAX_USED 16       /* experts per token the kernels take */
#define CUDA_MOE_TILE_COLS 16      /* mini-GEMM columns (token, expert pairs) per tile */

/* GEMV: 8 warps per block, each warp ROWS rows, 8 lanes per 256-block (one 32-chunk each) */
#define CUDA_GEMV_WARPS 8
#define CUDA_GEMV_GU_ROWS 2        /* gate/up rows (pairs) per warp */
#define CUDA_GEMV_DOWN_ROWS 2      /* down rows per warp */

/* mini-GEMM: 16 rows per block (one m16 tile); warps split the K blocks */
#define CUDA_MMA_GU_WARPS 4        /* gate/up: warps over the n_embd/256 K blocks */
#define CUDA_MMA_DOWN_WARPS 8      /* down: warps over (tile, K block) items */

/* Smallest batch at which CUDA_MOE_AUTO takes the mini-GEMM path, per gate/up type
 * (measured crossover, docs/perf.md). */
#define CUDA_MOE_MINIGEMM_FROM_IQ2_XXS 2
#define CUDA_MOE_MINIGEMM_FROM_Q4_K 2

#endif
