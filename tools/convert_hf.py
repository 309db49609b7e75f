#!/usr/bin/env python3
"""convert_hf.py - Hugging Face DeepseekV4ForCausalLM checkpoint -> DS4 GGUF (spec dialect).

Owns: reading config.json + *.safetensors (own reader: BF16/F16/F32/I64/I32, memory-mapped, one
tensor at a time), the metadata keys of ds4-architecture.md §1.3, the tensor names/types/shapes
of §1.4, tokenizer metadata (tokenizer.json, else a byte-level placeholder vocab), and streaming
the GGUF out. Does not own quantization to Q2_K/Q4_K/IQ2_XXS: that is an external program (below).
Invariant: no transposes. A HF Linear weight [out, in] (row-major) is GGUF ne [in, out] with the
same bytes; ape [R, w] -> ne [w, R]; tid2eid I64 [vocab, k] -> I32 ne [k, vocab]; routed experts
are stacked np.stack([W_e]) [E, out, in] -> ne [in, out, E]. HF name spellings accepted: DeepSeek's
(layers.N.attn.wq_a.weight), transformers' save_pretrained (model.layers.N.attn.norm.weight ...)
and transformers' module names (model.layers.N.self_attn.q_a_proj.weight, mlp.experts.gate_up_proj
[E, 2I, D] gate first, mlp.experts.down_proj [E, D, I]). Facts: docs/hf-deepseek-v4-notes.md.

Usage: convert_hf.py HF_DIR OUT.gguf [--outtype mixed|f32] [--experts f32|f16|q2|q4]
                     [--quantizer PROG] [--name NAME]
  --outtype mixed  types of §1.4 (F32 norms/scales, F16 HC/router/compressor/indexer/embedding,
                   Q8_0 attention/shared/output); f32: every tensor F32 (tid2eid stays I32).
  --experts        routed experts: f32, f16, q2 (gate/up IQ2_XXS, down Q2_K) or q4 (all Q4_K).
                   Default: f32 with --outtype f32, else f16.

External quantizer (q2/q4), looked up as --quantizer, $DS4_QUANTIZE, build/bin/ds4-quantize, then
ds4-quantize on PATH; invoked once per (layer, tensor) as
    PROG IN.f32 OUT.bin TYPE ROWS COLS
  IN.f32   ROWS x COLS little-endian float32, row-major (COLS = ne0, the contiguous dimension;
           ROWS = out * n_expert, expert e's rows start at row e * out)
  TYPE     ggml type name: q2_K | q4_K | iq2_xxs  (COLS is a multiple of 256)
  OUT.bin  ROWS rows of COLS/256 blocks in the standard ggml block layout (84/144/66 bytes per
           block), nothing else; exit status 0 on success.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
except ImportError:  # pragma: no cover
    sys.exit("convert_hf: the gguf package is required (pip install gguf==0.19.0)")

ARCH = "deepseek4"
KP = ARCH + "."


def die(msg):
    sys.exit("convert_hf: " + msg)


# ---- safetensors ---------------------------------------------------------------------------

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "F64": np.float64}


class SafeTensors:
    """All tensors of the *.safetensors files of a directory, read lazily through np.memmap."""

    def __init__(self, directory):
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
        if not files:
            die("no *.safetensors in %s" % directory)
        self.entries = {}
        for f in files:
            path = os.path.join(directory, f)
            with open(path, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            base = 8 + n
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if name in self.entries:
                    die("tensor %s appears in two files" % name)
                self.entries[name] = (path, base, info)

    def names(self):
        return list(self.entries)

    def shape(self, name):
        return tuple(self.entries[name][2]["shape"])

    def get(self, name):
        """The tensor as a numpy array (float32 for BF16 sources; memory-mapped otherwise)."""
        path, base, info = self.entries[name]
        dt = info["dtype"]
        if dt not in ST_DTYPES:
            die("tensor %s has dtype %s; only BF16/F16/F32/F64/I8-I64 checkpoints are supported "
                "(dequantize FP8/FP4 checkpoints first)" % (name, dt))
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        arr = np.memmap(path, dtype=ST_DTYPES[dt], mode="r", offset=base + start,
                        shape=shape if shape else (1,))
        if end - start != arr.nbytes:
            die("tensor %s: byte size does not match its shape" % name)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


# ---- names ---------------------------------------------------------------------------------

# Per-layer suffix aliases -> DeepSeek's own spelling (the "HF source" column of spec §1.4).
LAYER_ALIASES = [
    (r"self_attn\.", "attn."), (r"mlp\.", "ffn."),
    (r"input_layernorm\.weight", "attn_norm.weight"),
    (r"post_attention_layernorm\.weight", "ffn_norm.weight"),
    (r"attn_hc\.(fn|base|scale)", r"hc_attn_\1"), (r"ffn_hc\.(fn|base|scale)", r"hc_ffn_\1"),
    (r"attn\.sinks", "attn.attn_sink"),
    (r"attn\.q_a_proj\.", "attn.wq_a."), (r"attn\.q_a_norm\.", "attn.q_norm."),
    (r"attn\.q_b_proj\.", "attn.wq_b."), (r"attn\.kv_proj\.", "attn.wkv."),
    (r"attn\.norm\.weight", "attn.kv_norm.weight"),
    (r"attn\.o_a_proj\.", "attn.wo_a."), (r"attn\.o_b_proj\.", "attn.wo_b."),
    (r"attn\.compressor\.indexer\.scorer\.weights_proj\.", "attn.indexer.weights_proj."),
    (r"attn\.compressor\.indexer\.q_b_proj\.", "attn.indexer.wq_b."),
    (r"attn\.compressor\.indexer\.", "attn.indexer.compressor."),
    (r"compressor\.position_bias", "compressor.ape"), (r"compressor\.kv_proj\.", "compressor.wkv."),
    (r"compressor\.gate_proj\.", "compressor.wgate."), (r"compressor\.kv_norm\.", "compressor.norm."),
    (r"ffn\.gate\.e_score_correction_bias", "ffn.gate.bias"),
    (r"shared_experts\.gate_proj\.", "shared_experts.w1."),
    (r"shared_experts\.up_proj\.", "shared_experts.w3."),
    (r"shared_experts\.down_proj\.", "shared_experts.w2."),
    (r"experts\.(\d+)\.gate_proj\.", r"experts.\1.w1."), (r"experts\.(\d+)\.up_proj\.", r"experts.\1.w3."),
    (r"experts\.(\d+)\.down_proj\.", r"experts.\1.w2."),
]
GLOBAL_ALIASES = {"embed_tokens.weight": "embed.weight", "lm_head.weight": "head.weight",
                  "hc_head.hc_fn": "hc_head_fn", "hc_head.hc_base": "hc_head_base",
                  "hc_head.hc_scale": "hc_head_scale"}


def canonical(name):
    """DeepSeek's spelling of a checkpoint tensor name, or None for tensors we do not convert."""
    n = name
    if n.startswith("model."):
        n = n[len("model."):]
    if n.startswith("mtp."):
        return None
    m = re.match(r"layers\.(\d+)\.(.*)$", n)
    if not m:
        return GLOBAL_ALIASES.get(n, n)
    suffix = m.group(2)
    for pat, rep in LAYER_ALIASES:
        suffix = re.sub(r"(?:^|(?<=\.))" + pat, rep, suffix, count=1)
    return "layers.%s.%s" % (m.group(1), suffix)


# ---- config --------------------------------------------------------------------------------

RATIO_OF_TYPE = {"sliding_attention": 0}


def read_config(directory):
    with open(os.path.join(directory, "config.json")) as fh:
        c = json.load(fh)
    arch = c.get("architectures") or []
    if arch and "DeepseekV4ForCausalLM" not in arch:
        print("convert_hf: warning: architectures = %s" % arch, file=sys.stderr)
    n = c.get("num_hidden_layers", 43)
    rates = dict(c.get("compress_rates") or {"compressed_sparse_attention": 4,
                                             "heavily_compressed_attention": 128})
    if c.get("compress_rate_csa") is not None:
        rates["compressed_sparse_attention"] = c["compress_rate_csa"]
    if c.get("compress_rate_hca") is not None:
        rates["heavily_compressed_attention"] = c["compress_rate_hca"]
    if c.get("layer_types"):
        lt = c["layer_types"][:n]
        ratios = [0 if t == "sliding_attention" else int(rates[t]) for t in lt]
    elif c.get("compress_ratios") is not None:
        ratios = [int(r) for r in c["compress_ratios"][:n]]
    else:
        # transformers' default pattern (not Flash's): 2 x HCA, then CSA/HCA interleaved.
        lt = ["heavily_compressed_attention"] * min(n, 2) + [
            "compressed_sparse_attention" if i % 2 else "heavily_compressed_attention"
            for i in range(max(n - 2, 0))]
        ratios = [int(rates[t]) for t in lt]
        print("convert_hf: warning: config has no layer_types/compress_ratios; using transformers' "
              "default pattern %s" % ratios, file=sys.stderr)
    if len(ratios) != n:
        die("per-layer compression list has %d entries for %d layers" % (len(ratios), n))

    if c.get("mlp_layer_types"):
        mt = c["mlp_layer_types"][:n]
        n_hash = 0
        while n_hash < len(mt) and mt[n_hash] == "hash_moe":
            n_hash += 1
        if any(t == "hash_moe" for t in mt[n_hash:]):
            die("hash_moe layers must be a leading run (GGUF stores only hash_layer_count)")
    else:
        n_hash = min(n, int(c.get("num_hash_layers", 3)))

    head_dim = c.get("head_dim", 512)
    prf = c.get("partial_rotary_factor")
    if prf is None:
        prf = c["qk_rope_head_dim"] / head_dim if c.get("qk_rope_head_dim") else 64 / 512
    rope_dim = int(head_dim * prf)

    rp = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if isinstance(rp.get("main"), dict) and isinstance(rp.get("compress"), dict):
        main, comp = rp["main"], rp["compress"]
        if comp.get("rope_type") == "yarn" and comp.get("attention_factor") is None:
            print("convert_hf: warning: rope_parameters.compress has no attention_factor: "
                  "transformers would scale cos/sin by 1+0.1*ln(factor); DS4 never does",
                  file=sys.stderr)
    else:
        main = {"rope_theta": c.get("rope_theta", 10000.0)}
        comp = dict(rp)
        comp.setdefault("rope_theta", c.get("compress_rope_theta", 160000.0))
    if comp.get("attention_factor") not in (None, 1.0):
        print("convert_hf: warning: compress attention_factor %s is not representable in GGUF "
              "(DS4 uses 1.0)" % comp["attention_factor"], file=sys.stderr)
    yarn = comp.get("rope_type", comp.get("type", "default")) == "yarn"

    p = {
        "n_layer": n, "n_embd": c["hidden_size"], "n_vocab": c["vocab_size"],
        "n_head": c["num_attention_heads"], "n_head_kv": c.get("num_key_value_heads", 1),
        "head_dim": head_dim, "rope_dim": rope_dim, "q_lora_rank": c["q_lora_rank"],
        "o_lora_rank": c["o_lora_rank"], "o_groups": c["o_groups"],
        "n_expert": c.get("n_routed_experts", c.get("num_local_experts")),
        "n_expert_used": c["num_experts_per_tok"], "n_ff_exp": c["moe_intermediate_size"],
        "n_expert_shared": c.get("n_shared_experts", 1), "n_hash": n_hash,
        "sliding_window": c.get("sliding_window", 128),
        "idx_heads": c.get("index_n_heads", 64), "idx_dim": c.get("index_head_dim", 128),
        "idx_topk": c.get("index_topk", 512),
        "hc": c.get("hc_mult", 4), "hc_iters": c.get("hc_sinkhorn_iters", 20),
        "hc_eps": c.get("hc_eps", 1e-6), "ratios": ratios,
        "swiglu": float(c.get("swiglu_limit", 10.0)),
        "rope_orig_ctx": int(comp.get("original_max_position_embeddings", 65536)) if yarn else
        int(c.get("max_position_embeddings", 65536)),
        "rope_base": float(main.get("rope_theta", 10000.0)),
        "rope_factor": float(comp.get("factor", 1.0)) if yarn else 1.0,
        "beta_fast": float(comp.get("beta_fast") or 32.0),
        "beta_slow": float(comp.get("beta_slow") or 1.0),
        "compress_rope_base": float(comp.get("rope_theta", 160000.0)),
        "w_scale": float(c.get("routed_scaling_factor", 1.5)),
        "w_norm": bool(c.get("norm_topk_prob", True)),
        "eps": float(c.get("rms_norm_eps", 1e-6)),
        "ctx": int(c.get("max_position_embeddings", 1048576)),
        "bos": c.get("bos_token_id"), "eos": c.get("eos_token_id"),
        "scoring": c.get("scoring_func", "sqrtsoftplus"),
    }
    if p["scoring"] != "sqrtsoftplus":
        die("scoring_func %s: DS4 hard-codes sqrt(softplus)" % p["scoring"])
    if isinstance(p["eos"], list):
        p["eos"] = p["eos"][0]
    bad = [r for r in ratios if r not in (0,) and r <= 0]
    if bad:
        die("bad compression ratios %s" % bad)
    return p


def write_metadata(w, p, name):
    w.add_name(name)
    u32 = lambda k, v: w.add_uint32(KP + k, int(v))
    f32 = lambda k, v: w.add_float32(KP + k, float(v))
    u32("block_count", p["n_layer"])
    w.add_uint64(KP + "context_length", p["ctx"])
    u32("embedding_length", p["n_embd"])
    u32("vocab_size", p["n_vocab"])
    u32("attention.head_count", p["n_head"])
    u32("attention.head_count_kv", p["n_head_kv"])
    u32("attention.key_length", p["head_dim"])
    u32("attention.value_length", p["head_dim"])
    u32("rope.dimension_count", p["rope_dim"])
    u32("attention.q_lora_rank", p["q_lora_rank"])
    u32("attention.output_lora_rank", p["o_lora_rank"])
    u32("attention.output_group_count", p["o_groups"])
    u32("expert_count", p["n_expert"])
    u32("expert_used_count", p["n_expert_used"])
    u32("expert_feed_forward_length", p["n_ff_exp"])
    u32("expert_shared_count", p["n_expert_shared"])
    u32("hash_layer_count", p["n_hash"])
    u32("attention.sliding_window", p["sliding_window"])
    u32("attention.indexer.head_count", p["idx_heads"])
    u32("attention.indexer.key_length", p["idx_dim"])
    u32("attention.indexer.top_k", p["idx_topk"])
    u32("hyper_connection.count", p["hc"])
    u32("hyper_connection.sinkhorn_iterations", p["hc_iters"])
    f32("hyper_connection.epsilon", p["hc_eps"])
    w.add_key_value(KP + "attention.compress_ratios", [int(r) for r in p["ratios"]],
                    gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT32)
    w.add_key_value(KP + "swiglu_clamp_exp", [p["swiglu"]] * p["n_layer"],
                    gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
    u32("rope.scaling.original_context_length", p["rope_orig_ctx"])
    f32("rope.freq_base", p["rope_base"])
    f32("rope.scaling.factor", p["rope_factor"])
    f32("rope.scaling.yarn_beta_fast", p["beta_fast"])
    f32("rope.scaling.yarn_beta_slow", p["beta_slow"])
    f32("attention.compress_rope_freq_base", p["compress_rope_base"])
    f32("expert_weights_scale", p["w_scale"])
    w.add_bool(KP + "expert_weights_norm", p["w_norm"])
    f32("attention.layer_norm_rms_epsilon", p["eps"])


# ---- tokenizer -----------------------------------------------------------------------------

def gpt2_byte_symbols():
    """The GPT-2 byte -> printable code point table (byte-level BPE), as 256 one-char strings."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tokenizer(w, directory, p):
    n = p["n_vocab"]
    path = os.path.join(directory, "tokenizer.json")
    tokens, types, merges = [None] * n, [5] * n, []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            tj = json.load(fh)
        model = tj.get("model", {})
        for tok, i in model.get("vocab", {}).items():
            if i < n:
                tokens[i], types[i] = tok, 1
        for m in model.get("merges", []):
            merges.append(m if isinstance(m, str) else " ".join(m))
        for at in tj.get("added_tokens", []):
            if at["id"] < n:
                tokens[at["id"]] = at["content"]
                types[at["id"]] = 3 if at.get("special") else 4
        pre = "joyai-llm"
    else:
        # Placeholder: BOS/EOS strings at the config's ids, then the 256 byte symbols and four
        # merged symbols; every other id is "[PAD<id>]" (type 5, unused).
        specials = {p["bos"]: "<｜begin▁of▁sentence｜>", p["eos"]: "<｜end▁of▁sentence｜>"}
        for i, s in specials.items():
            if i is not None and 0 <= i < n:
                tokens[i], types[i] = s, 3
        free = (i for i in range(n) if tokens[i] is None)
        # A few merges so that tokenizer.ggml.merges exists (gguf refuses empty arrays).
        for sym in gpt2_byte_symbols() + ["\u0120t", "he", "in", "\u0120the"]:
            i = next(free, None)
            if i is None:
                break
            tokens[i], types[i] = sym, 1
        merges = ["\u0120 t", "h e", "i n", "\u0120t he"]
        merges = merges if n >= 262 else merges[:0]
        pre = "default"
    for i in range(n):
        if tokens[i] is None:
            tokens[i] = "[PAD%d]" % i
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if merges:
        w.add_token_merges(merges)
    if p["bos"] is not None:
        w.add_bos_token_id(int(p["bos"]))
    if p["eos"] is not None:
        w.add_eos_token_id(int(p["eos"]))


# ---- tensor plan ---------------------------------------------------------------------------

QUANT_NAMES = {QT.Q2_K: "q2_K", QT.Q4_K: "q4_K", QT.IQ2_XXS: "iq2_xxs"}


class Plan:
    """Ordered list of output tensors: (gguf name, ggml type, numpy shape, loader)."""

    def __init__(self, st, p, outtype, experts):
        self.st, self.p, self.outtype, self.experts = st, p, outtype, experts
        self.by_canon = {}
        for name in st.names():
            c = canonical(name)
            if c is not None:
                self.by_canon[c] = name
        self.used = set()
        self.items = []

    def has(self, canon):
        return canon in self.by_canon

    def load(self, canon):
        if canon not in self.by_canon:
            die("checkpoint has no tensor for %s" % canon)
        self.used.add(canon)
        return self.st.get(self.by_canon[canon])

    def shape_of(self, canon):
        if canon not in self.by_canon:
            die("checkpoint has no tensor for %s" % canon)
        return self.st.shape(self.by_canon[canon])

    def kind_type(self, kind):
        if self.outtype == "f32":
            return QT.F32
        return {"f32": QT.F32, "f16": QT.F16, "q8": QT.Q8_0}[kind]

    def add(self, gname, kind, canon, want_shape):
        shape = tuple(self.shape_of(canon))
        if want_shape is not None and shape != tuple(want_shape):
            die("%s (%s): shape %s, expected %s" % (canon, gname, shape, tuple(want_shape)))
        self.used.add(canon)
        self.items.append((gname, self.kind_type(kind), shape, lambda c=canon: self.load(c)))

    def add_raw(self, gname, qtype, shape, fn):
        self.items.append((gname, qtype, tuple(shape), fn))


def build_plan(st, p, outtype, experts):
    pl = Plan(st, p, outtype, experts)
    d, V, L = p["n_embd"], p["n_vocab"], p["n_layer"]
    hc, H, D = p["hc"], p["n_head"], p["head_dim"]
    mix = (2 + hc) * hc
    E, K, I = p["n_expert"], p["n_expert_used"], p["n_ff_exp"]

    pl.add("token_embd.weight", "f16", "embed.weight", (V, d))
    pl.add("output_hc_fn.weight", "f16", "hc_head_fn", (hc, hc * d))
    pl.add("output_hc_base.weight", "f32", "hc_head_base", (hc,))
    pl.add("output_hc_scale.weight", "f32", "hc_head_scale", (1,))
    pl.add("output_norm.weight", "f32", "norm.weight", (d,))
    pl.add("output.weight", "q8", "head.weight", (V, d))

    for il in range(L):
        b, s = "blk.%d." % il, "layers.%d." % il
        R = p["ratios"][il]
        pl.add(b + "hc_attn_fn.weight", "f16", s + "hc_attn_fn", (mix, hc * d))
        pl.add(b + "hc_attn_scale.weight", "f32", s + "hc_attn_scale", (3,))
        pl.add(b + "hc_attn_base.weight", "f32", s + "hc_attn_base", (mix,))
        pl.add(b + "attn_norm.weight", "f32", s + "attn_norm.weight", (d,))
        pl.add(b + "attn_q_a.weight", "q8", s + "attn.wq_a.weight", (p["q_lora_rank"], d))
        pl.add(b + "attn_q_a_norm.weight", "f32", s + "attn.q_norm.weight", (p["q_lora_rank"],))
        pl.add(b + "attn_q_b.weight", "q8", s + "attn.wq_b.weight", (H * D, p["q_lora_rank"]))
        pl.add(b + "attn_kv.weight", "q8", s + "attn.wkv.weight", (D, d))
        pl.add(b + "attn_kv_a_norm.weight", "f32", s + "attn.kv_norm.weight", (D,))
        pl.add(b + "attn_sinks.weight", "f32", s + "attn.attn_sink", (H,))
        pl.add(b + "attn_output_a.weight", "q8", s + "attn.wo_a.weight",
               (p["o_groups"] * p["o_lora_rank"], H * D // p["o_groups"]))
        pl.add(b + "attn_output_b.weight", "q8", s + "attn.wo_b.weight",
               (d, p["o_groups"] * p["o_lora_rank"]))
        if R:
            w = 2 * D if R == 4 else D
            c = s + "attn.compressor."
            pl.add(b + "attn_compressor_ape.weight", "f16", c + "ape", (R, w))
            pl.add(b + "attn_compressor_kv.weight", "f16", c + "wkv.weight", (w, d))
            pl.add(b + "attn_compressor_gate.weight", "f16", c + "wgate.weight", (w, d))
            pl.add(b + "attn_compressor_norm.weight", "f32", c + "norm.weight", (D,))
        if R == 4:
            Di, Hi = p["idx_dim"], p["idx_heads"]
            c = s + "attn.indexer."
            pl.add(b + "indexer.attn_q_b.weight", "f16", c + "wq_b.weight", (Hi * Di, p["q_lora_rank"]))
            pl.add(b + "indexer.proj.weight", "f16", c + "weights_proj.weight", (Hi, d))
            pl.add(b + "indexer_compressor_ape.weight", "f16", c + "compressor.ape", (R, 2 * Di))
            pl.add(b + "indexer_compressor_kv.weight", "f16", c + "compressor.wkv.weight", (2 * Di, d))
            pl.add(b + "indexer_compressor_gate.weight", "f16", c + "compressor.wgate.weight", (2 * Di, d))
            pl.add(b + "indexer_compressor_norm.weight", "f32", c + "compressor.norm.weight", (Di,))
        pl.add(b + "hc_ffn_fn.weight", "f16", s + "hc_ffn_fn", (mix, hc * d))
        pl.add(b + "hc_ffn_scale.weight", "f32", s + "hc_ffn_scale", (3,))
        pl.add(b + "hc_ffn_base.weight", "f32", s + "hc_ffn_base", (mix,))
        pl.add(b + "ffn_norm.weight", "f32", s + "ffn_norm.weight", (d,))
        pl.add(b + "ffn_gate_inp.weight", "f16", s + "ffn.gate.weight", (E, d))
        if pl.has(s + "ffn.gate.bias"):
            pl.add(b + "exp_probs_b.bias", "f32", s + "ffn.gate.bias", (E,))
        elif il >= p["n_hash"]:
            print("convert_hf: warning: layer %d has no ffn.gate.bias" % il, file=sys.stderr)
        if il < p["n_hash"]:
            canon = s + "ffn.gate.tid2eid"
            shp = tuple(pl.shape_of(canon))
            if shp != (V, K):
                die("%s: shape %s, expected %s" % (canon, shp, (V, K)))
            pl.used.add(canon)
            pl.add_raw(b + "ffn_gate_tid2eid.weight", QT.I32, (V, K),
                       lambda c=canon: tid2eid(pl.load(c), E))
        add_experts(pl, b, s, E, I, d)
        sh = s + "ffn.shared_experts."
        pl.add(b + "ffn_gate_shexp.weight", "q8", sh + "w1.weight", (I, d))
        pl.add(b + "ffn_up_shexp.weight", "q8", sh + "w3.weight", (I, d))
        pl.add(b + "ffn_down_shexp.weight", "q8", sh + "w2.weight", (d, I))

    unused = sorted(set(pl.by_canon) - pl.used)
    unused = [u for u in unused if not re.match(r"layers\.\d+\.ffn\.experts\.", u)]
    if unused:
        print("convert_hf: warning: %d checkpoint tensors not converted: %s"
              % (len(unused), ", ".join(unused[:8])), file=sys.stderr)
    return pl


def tid2eid(a, n_expert):
    a = np.asarray(a)
    if a.min() < 0 or a.max() >= n_expert:
        die("tid2eid holds expert ids outside [0, %d)" % n_expert)
    return np.ascontiguousarray(a.astype(np.int32))


def add_experts(pl, b, s, E, I, d):
    """Routed experts: per-expert w1/w3/w2 or fused gate_up_proj/down_proj -> [E, out, in]."""
    e = s + "ffn.experts."
    fused = pl.has(e + "gate_up_proj")
    if fused:
        gu_shape = tuple(pl.shape_of(e + "gate_up_proj"))
        if gu_shape != (E, 2 * I, d):
            die("%sgate_up_proj: shape %s, expected %s" % (e, gu_shape, (E, 2 * I, d)))
        if tuple(pl.shape_of(e + "down_proj")) != (E, d, I):
            die("%sdown_proj: shape %s, expected %s" % (e, pl.shape_of(e + "down_proj"), (E, d, I)))
        pl.used |= {e + "gate_up_proj", e + "down_proj"}
        gate = lambda: pl.load(e + "gate_up_proj")[:, :I, :]
        up = lambda: pl.load(e + "gate_up_proj")[:, I:, :]
        down = lambda: pl.load(e + "down_proj")
    else:
        for j in range(E):
            for wn, shp in (("w1", (I, d)), ("w3", (I, d)), ("w2", (d, I))):
                got = tuple(pl.shape_of("%s%d.%s.weight" % (e, j, wn)))
                if got != shp:
                    die("%s%d.%s.weight: shape %s, expected %s" % (e, j, wn, got, shp))
        stack = lambda wn: np.stack([pl.load("%s%d.%s.weight" % (e, j, wn)) for j in range(E)])
        gate, up, down = (lambda: stack("w1")), (lambda: stack("w3")), (lambda: stack("w2"))
    mode = pl.experts
    types = {"f32": (QT.F32, QT.F32), "f16": (QT.F16, QT.F16), "q2": (QT.IQ2_XXS, QT.Q2_K),
             "q4": (QT.Q4_K, QT.Q4_K)}[mode]
    pl.add_raw(b + "ffn_gate_exps.weight", types[0], (E, I, d), gate)
    pl.add_raw(b + "ffn_up_exps.weight", types[0], (E, I, d), up)
    pl.add_raw(b + "ffn_down_exps.weight", types[1], (E, d, I), down)


# ---- quantization and writing --------------------------------------------------------------

def find_quantizer(arg):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (arg, os.environ.get("DS4_QUANTIZE"), os.path.join(here, "build/bin/ds4-quantize"),
                 shutil.which("ds4-quantize")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def external_quantize(prog, data, qtype):
    rows, cols = int(np.prod(data.shape[:-1])), data.shape[-1]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block:
        die("%s needs rows that are a multiple of %d elements, got %d" % (qtype.name, block, cols))
    with tempfile.TemporaryDirectory() as tmp:
        fin, fout = os.path.join(tmp, "in.f32"), os.path.join(tmp, "out.bin")
        np.ascontiguousarray(data, dtype="<f4").tofile(fin)
        r = subprocess.run([prog, fin, fout, QUANT_NAMES[qtype], str(rows), str(cols)])
        if r.returncode != 0:
            die("%s failed (status %d) on %s" % (prog, r.returncode, qtype.name))
        out = np.fromfile(fout, dtype=np.uint8)
    want = rows * cols // block * size
    if out.size != want:
        die("%s wrote %d bytes, expected %d" % (prog, out.size, want))
    return out.reshape(*data.shape[:-1], cols // block * size)


def encode(arr, qtype, quantizer):
    """The tensor's bytes in the requested ggml type (as the array gguf's writer expects)."""
    if qtype == QT.I32:
        return np.ascontiguousarray(arr, dtype=np.int32)
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == QT.F32:
        return a
    if qtype == QT.F16:
        return a.astype(np.float16)
    if qtype == QT.Q8_0:
        return gguf.quants.quantize(a, QT.Q8_0)
    return external_quantize(quantizer, a, qtype)


def nbytes_of(qtype, shape):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        die("a %s tensor needs ne0 %% %d == 0, got shape %s (use --outtype f32 for tiny models)"
            % (qtype.name, block, shape))
    return int(np.prod(shape[:-1])) * shape[-1] // block * size


def convert(hf_dir, out_path, outtype="mixed", experts=None, quantizer=None, name=None, log=print):
    p = read_config(hf_dir)
    experts = experts or ("f32" if outtype == "f32" else "f16")
    st = SafeTensors(hf_dir)
    plan = build_plan(st, p, outtype, experts)
    prog = None
    if experts in ("q2", "q4"):
        prog = find_quantizer(quantizer)
        if prog is None:
            die("--experts %s needs an external quantizer: pass --quantizer PROG, set DS4_QUANTIZE, "
                "or build build/bin/ds4-quantize (interface: PROG IN.f32 OUT.bin TYPE ROWS COLS; "
                "see the header of tools/convert_hf.py)" % experts)

    w = gguf.GGUFWriter(out_path, ARCH)
    write_metadata(w, p, name or os.path.basename(os.path.normpath(hf_dir)))
    write_tokenizer(w, hf_dir, p)
    for gname, qtype, shape, _ in plan.items:
        nb = nbytes_of(qtype, shape)
        if qtype in (QT.F32, QT.F16, QT.I32):
            w.add_tensor_info(gname, shape, {QT.F32: np.float32, QT.F16: np.float16,
                                             QT.I32: np.int32}[qtype], nb)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            byte_shape = tuple(shape[:-1]) + (shape[-1] // block * size,)
            w.add_tensor_info(gname, byte_shape, np.uint8, nb, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for gname, qtype, shape, fn in plan.items:
        data = encode(fn(), qtype, prog)
        w.write_tensor_data(data)
    w.close()
    log("convert_hf: wrote %s (%d tensors, outtype %s, experts %s)"
        % (out_path, len(plan.items), outtype, experts))
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--outtype", choices=("mixed", "f32"), default="mixed")
    ap.add_argument("--experts", choices=("f32", "f16", "q2", "q4"))
    ap.add_argument("--quantizer")
    ap.add_argument("--name")
    a = ap.parse_args(argv)
    convert(a.hf_dir, a.out, a.outtype, a.experts, a.quantizer, a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
