/* mkmodel.h — generator of DS4-layout GGUF models with random weights, for tests and
 * benchmarks: presets (tiny, small, flash-shape), any dimension overridable, the q2/q4
 * published type mixes or all-F16/F32, either naming dialect, tokenizer metadata so a model
 * runs end to end. Deterministic: the bytes depend only on the options (seed included),
 * never on the thread count. Used by tools/ds4-mkmodel and by tests in-process.
 * Does not load models (weights.c) or define names/shapes (names.h, weights.c). */
#ifndef DS4_MODEL_MKMODEL_H
#define DS4_MODEL_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

/* Tensor type mix. q2/q4: the published files' types (ds4-architecture.md §1.4): routed
 * experts IQ2_XXS gate/up + Q2_K down (q2) or Q4_K (q4), attention/shared/output Q8_0, F16
 * where the table says F16, F32 vectors. f16/f32: every matrix in that type (vectors F32,
 * tid2eid I32). */
typedef enum { MODEL_MK_Q2, MODEL_MK_Q4, MODEL_MK_F16, MODEL_MK_F32 } model_mk_quant;

/* How quantized tensors (Q8_0, Q2_K, Q4_K, IQ2_XXS) get their bytes: quantize random floats
 * with the traits quantizers (realistic, slow for the k/iq types), or random valid blocks
 * whose scales give the same element RMS as the float initialisation (fast; what a
 * flash-shape file needs). AUTO quantizes when the model holds at most
 * MODEL_MK_AUTO_QUANTIZE_MAX elements of the slow types, else uses random blocks. */
typedef enum { MODEL_MK_FILL_AUTO, MODEL_MK_FILL_QUANTIZE, MODEL_MK_FILL_RANDOM } model_mk_fill;

#define MODEL_MK_AUTO_QUANTIZE_MAX (32ll << 20)

typedef struct model_mk_opts {
    model_hparams hp;       /* every dimension and constant written to the file */
    model_mk_quant quant;
    model_dialect dialect;  /* names and keys: the spec's, or llama.cpp's (see mkmodel.c) */
    model_mk_fill fill;
    uint64_t seed;
    int n_threads;          /* 0: online CPUs; never changes the output bytes */
    char name[64];          /* general.name */
} model_mk_opts;

/* Fills o with a preset: "tiny" (6 layers, every structural feature, seconds to make),
 * "small" (CPU speed measurements) or "flash-shape" (the published DS4 Flash dimensions,
 * 4 of its 43 layers by default). Returns 0 or DS4_E_ARG for an unknown name. */
int model_mk_preset(model_mk_opts *o, const char *preset, ds4_error *err);

/* Sets the layer count and the layer pattern of the presets: ratios 0, 0, then 4 and 128
 * alternating (the published pattern), hash layers min(3, n), one swiglu clamp for all. */
void model_mk_set_layers(model_mk_opts *o, uint32_t n_layer);

/* "q2" "q4" "f16" "f32" <-> enum (-1 if unknown). */
int model_mk_quant_from_name(const char *s);
const char *model_mk_quant_name(model_mk_quant q);

/* Whether o's quantized tensors get random blocks (AUTO resolved). */
bool model_mk_uses_random_blocks(const model_mk_opts *o);

/* Checks o (hyperparameter consistency, rows that fit the chosen types' blocks, room for
 * the tokenizer's special and byte tokens); 0 or DS4_E_ARG/RANGE with a message. */
int model_mk_check(const model_mk_opts *o, ds4_error *err);

/* Writes the model to path (streamed: memory stays a few MiB per thread whatever the
 * size), or into a new malloc'ed buffer (*buf, *size; free with free()). Returns 0 or a
 * negative DS4_E_* code. *bytes (if non-NULL) gets the file size. */
int model_mk_write(const model_mk_opts *o, const char *path, uint64_t *bytes, ds4_error *err);
int model_mk_write_memory(const model_mk_opts *o, void **buf, size_t *size, ds4_error *err);

#endif
