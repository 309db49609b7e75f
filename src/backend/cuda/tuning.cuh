/* tuning.cuh — every tuning number of the CUDA decode-MoE kernels in one table: block shapes
 * of the GEMV and mini-GEMM kernels and the batch sizes at which the mini-GEMM path wins.
 * Owns numbers only (no code). The crossovers come from bench/cuda_moe_bench on the H100
 * (docs/perf.md); the shapes must keep the asserts of the kernels that use them. Each may
 * be overridden with -D for a sweep (bench/cuda_run.sh builds variants). */
#ifndef DS4_BACKEND_CUDA_TUNING_CUH
#define DS4_BACKEND_CUDA_TUNING_CUH

#ifndef CUDA_MOE_MAX_TOK
#define CUDA_MOE_MAX_TOK 64        /* tokens per kernel launch; a larger call is split */
#endif
#ifndef CUDA_MOE_MAX_USED
#define CUDA_MOE_MAX_USED 16       /* experts per token the kernels take */
#endif
#ifndef CUDA_MOE_TILE_COLS
#define CUDA_MOE_TILE_COLS 16      /* mini-GEMM columns (token, expert pairs) per tile */
#endif

/* GEMV: 8 warps per block, each warp ROWS rows, 8 lanes per 256-block (one 32-chunk each) */
#ifndef CUDA_GEMV_WARPS
#define CUDA_GEMV_WARPS 8
#endif
#ifndef CUDA_GEMV_GU_ROWS
#define CUDA_GEMV_GU_ROWS 2        /* gate/up rows (pairs) per warp */
#endif
#ifndef CUDA_GEMV_DOWN_ROWS
#define CUDA_GEMV_DOWN_ROWS 2      /* down rows per warp */
#endif

/* mini-GEMM: 16 rows per block (one m16 tile); warps split the K blocks */
#ifndef CUDA_MMA_GU_WARPS
#define CUDA_MMA_GU_WARPS 8        /* gate/up: half on gate, half on up, each half over the K blocks */
#endif
#ifndef CUDA_MMA_GU_BLOCKS_PER_SM
#define CUDA_MMA_GU_BLOCKS_PER_SM 2 /* launch bound: caps registers at 128 */
#endif
#ifndef CUDA_MMA_DOWN_WARPS
#define CUDA_MMA_DOWN_WARPS 8      /* down: warps over (tile, K block) items */
#endif
#ifndef CUDA_MMA_DOWN_BLOCKS_PER_SM
#define CUDA_MMA_DOWN_BLOCKS_PER_SM 2
#endif

/* fused kernel (moe_fused.cu, sm_90): warps per block (one block per SM), the bytes
 * of one ring slot (a gate/up item: that many bytes of gate + up rows, 2 rows per warp at
 * most; a batch that leaves room for fewer than 3 slots halves it, down to 4 rows, while that
 * gives more), the ring depth cap (the rest
 * of the SM's shared memory decides below it), the size of one bulk copy (an item's spans are
 * cut into copies of that many bytes), the largest batch it takes */
#ifndef CUDA_FUSED_WARPS
#define CUDA_FUSED_WARPS 16
#endif
#ifndef CUDA_FUSED_SLOT_TARGET
#define CUDA_FUSED_SLOT_TARGET 36864
#endif
#ifndef CUDA_FUSED_MAX_SLOTS
#define CUDA_FUSED_MAX_SLOTS 8
#endif
#ifndef CUDA_FUSED_COPY_CHUNK
#define CUDA_FUSED_COPY_CHUNK (1 << 20) /* bytes per bulk copy (a multiple of 16); run 11: 4 KB
                                           and 16 KB pieces were slower than whole spans */
#endif
#ifndef CUDA_FUSED_MAX_TOK
#define CUDA_FUSED_MAX_TOK 8 /* the fused kernel takes batches up to this many tokens (the
                                distinct experts' rows streamed once, dotted per token) */
#endif
#ifndef CUDA_FUSED_GU2
#define CUDA_FUSED_GU2 1 /* batches: 1 = a gate row and its up row in one pass (each activation
                            chunk read from shared memory once for both; run17: batch 4 cold
                            q2 69.2 -> 63.5 us, q4 75.3 -> 65.0); 0 = one row a pass */
#endif
#ifndef CUDA_FUSED_CP_ASYNC
#define CUDA_FUSED_CP_ASYNC 0 /* 1: the producer warp's 32 lanes move the rows with 16-byte
                                 cp.async instead of bulk copies */
#endif

/* CUDA_MOE_AUTO: below this batch the GEMV path always (batch 1: GEMV 47 vs mini-GEMM 71 us
 * q2, 51 vs 91 us q4 on the H100; fused GEMV 29 vs 71 us q2, 32 vs 88 us q4 on the H200); from
 * it (above CUDA_MOE_FUSED_AUTO_MAX_TOK where the fused kernel runs), the choice is made on
 * the device per call: mini-GEMM when
 * 100 * tiles < X100 * n_tok. Measured (docs/perf.md, H100): a mini-GEMM tile costs about
 * 8.3 us (q2) / 10.2 us (q4), a GEMV token about 23.5 / 29 us, so the break-even is near
 * 2.8 tiles per token for both mixes. */
#ifndef CUDA_MOE_MINIGEMM_FROM
#define CUDA_MOE_MINIGEMM_FROM 2
#endif
#ifndef CUDA_MOE_MG_TILES_PER_TOK_X100
#define CUDA_MOE_MG_TILES_PER_TOK_X100 280
#endif
/* CUDA_MOE_AUTO with the fused kernel (sm_90, its plan fits): the fused GEMV up to this batch
 * (IQ2_XXS gate/up: _IQ2; other gate types: the plain one), the device-side choice above it.
 * H200, docs/cuda-runs/run17 call 2 (CUDA_FUSED_GU2=1), us, fused / four-launch GEMV /
 * mini-GEMM: batch 2 cold q2 41.5 / 66.6 / 73.9, q4 43.3 / 74.9 / 95.7; batch 4 cold q2
 * 63.5 / 119.5 / 76.8, q4 65.0 / 130.6 / 105.8; batch 4 indep q2 105.5 / 122.4 / 223.9, q4
 * 107.9 / 134.2 / 294.1; batch 8 cold q2 129.2 / 218.4 / 86.4, q4 112.9 / 239.8 / 129.4;
 * batch 8 indep q2 282.3 / 226.5 / 408.7, q4 218.6 / 242.9 / 538.2. So q2 through batch 4
 * (at 8 the mini-GEMM wins shared experts, the four-launch GEMV independent ones: its 2
 * half-size slots), q4 through 8 (batches 5-7 not measured). */
/* The fused kernel at 2..CUDA_FUSED_MAX_TOK tokens by default (DS4_CUDA_MOE_FUSED_BATCH=0|1
 * overrides): off. It passes every GPU test and memcheck, but compute-sanitizer racecheck
 * reports hazards between the ring's bulk copies and the batch gate/up reads (run17/run18
 * notes) that the batch-1 kernel, with the same full/empty handshake, does not show; until
 * they are explained the engine keeps batches on the measured paths without it. */
#ifndef CUDA_MOE_FUSED_BATCH_DEFAULT
#define CUDA_MOE_FUSED_BATCH_DEFAULT 0
#endif
#ifndef CUDA_MOE_FUSED_AUTO_MAX_TOK_IQ2
#define CUDA_MOE_FUSED_AUTO_MAX_TOK_IQ2 4
#endif
#ifndef CUDA_MOE_FUSED_AUTO_MAX_TOK
#define CUDA_MOE_FUSED_AUTO_MAX_TOK 8
#endif

#endif
