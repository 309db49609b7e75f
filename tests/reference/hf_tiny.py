#!/usr/bin/env python3
"""hf_tiny.py - tiny random DeepseekV4ForCausalLM checkpoints and their transformers logits.

Owns: the presets (DS4 layout at toy size: layers 0,1 uncompressed, then ratio 4 / 128
alternating; hash-routed layers 0-2; more experts than selected; indexer top-k small enough to
select), the random weights (scaled so activations stay O(1) and routing/indexer/argmax choices
have margins), save_pretrained (safetensors), the token sequence, and the reference logits
[positions, vocab] as float32 .npy. Also reloads a converted GGUF's (dequantized) values into the
HF model, so a quantized GGUF can be compared against transformers on the same weights.
Deterministic by (preset, seed). The reference for ds4-architecture.md §3 (see §3.8a).

CLI: hf_tiny.py OUT_DIR [--preset NAME] [--seed N] [--tokens N] [--from-gguf FILE.gguf]
Writes OUT_DIR/hf/ (config.json, model.safetensors), OUT_DIR/tokens.npy (int32),
OUT_DIR/tokens.txt (comma-separated, for ds4-logits --tokens), OUT_DIR/logits.npy,
OUT_DIR/margins.json. With --from-gguf: OUT_DIR/logits-gguf.npy from the GGUF's weights.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

# n_tokens: > 2 x 128 so ratio-128 rows exist, and tokens/4 > index_topk so the indexer selects.
PRESETS = {
    # The fast default: 6 layers (ratios 0,0,4,128,4,128), 16 experts top-6.
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                 head_dim=64, rope_dim=16, q_lora_rank=32, o_groups=2, o_lora_rank=32,
                 n_routed_experts=16, num_experts_per_tok=6, moe_intermediate_size=32,
                 index_n_heads=16, index_head_dim=32, index_topk=8, sliding_window=128,
                 n_tokens=300),
    # Short raw window: compressed rows carry most of the context.
    "window16": dict(vocab_size=384, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                     head_dim=64, rope_dim=16, q_lora_rank=32, o_groups=2, o_lora_rank=32,
                     n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                     index_n_heads=16, index_head_dim=32, index_topk=4, sliding_window=16,
                     n_tokens=280),
    # Rows of 256 for the quantized expert types (Q2_K / Q4_K / IQ2_XXS blocks), 8 layers,
    # 4 ratio-128 rows.
    "wide": dict(vocab_size=1024, hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
                 head_dim=128, rope_dim=32, q_lora_rank=64, o_groups=4, o_lora_rank=64,
                 n_routed_experts=16, num_experts_per_tok=6, moe_intermediate_size=256,
                 index_n_heads=16, index_head_dim=64, index_topk=16, sliding_window=128,
                 n_tokens=520),
}


def layer_types(n):
    t = ["sliding_attention"] * min(n, 2)
    for il in range(2, n):
        t.append("compressed_sparse_attention" if il % 2 == 0 else "heavily_compressed_attention")
    return t


def make_config(preset):
    from transformers import DeepseekV4Config
    p = dict(PRESETS[preset])
    n = p["num_hidden_layers"]
    rope_dim = p.pop("rope_dim")
    p.pop("n_tokens")
    return DeepseekV4Config(
        **p, num_key_value_heads=1, n_shared_experts=1, partial_rotary_factor=rope_dim / p["head_dim"],
        layer_types=layer_types(n), mlp_layer_types=["hash_moe"] * min(n, 3) + ["moe"] * max(0, n - 3),
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        rope_theta=10000.0, compress_rope_theta=160000.0,
        rope_parameters={"main": {"rope_type": "default", "rope_theta": 10000.0,
                                  "partial_rotary_factor": rope_dim / p["head_dim"]},
                         "compress": {"rope_type": "yarn", "rope_theta": 160000.0, "factor": 16.0,
                                      "original_max_position_embeddings": 65536, "beta_fast": 32.0,
                                      "beta_slow": 1.0, "attention_factor": 1.0,
                                      "partial_rotary_factor": rope_dim / p["head_dim"]}},
        max_position_embeddings=1048576, hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6,
        swiglu_limit=10.0, routed_scaling_factor=1.5, norm_topk_prob=True,
        scoring_func="sqrtsoftplus", rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1,
        tie_word_embeddings=False)


def init_weights(model, cfg, seed):
    """Deterministic weights: Linear ~ N(0, 1/in) so every projection keeps unit scale, larger
    router/head gains for decisive top-k and argmax, random HC/ape/sink/bias terms."""
    import torch
    g = torch.Generator().manual_seed(seed)
    rn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float32)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            shape = tuple(prm.shape)
            if name.endswith("norm.weight"):
                val = 1.0 + 0.1 * rn(*shape)
            elif name.endswith(".sinks"):
                val = rn(*shape)
            elif name.endswith("position_bias"):
                val = 0.5 * rn(*shape)
            elif name.endswith("hc.fn") or name.endswith("hc_head.hc_fn"):
                val = rn(*shape) * (2.0 / math.sqrt(shape[-1]))
            elif name.endswith("hc.base") or name.endswith("hc_base"):
                val = 0.5 * rn(*shape)
            elif name.endswith("hc.scale") or name.endswith("hc_scale"):
                val = 0.5 + 0.5 * torch.rand(*shape, generator=g)
            elif name.endswith("mlp.gate.weight"):
                val = rn(*shape) * (3.0 / math.sqrt(shape[-1]))
            elif name == "lm_head.weight":
                val = rn(*shape) * (3.0 / math.sqrt(shape[-1]))
            elif name.endswith("embed_tokens.weight"):
                val = rn(*shape)
            elif name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
                val = rn(*shape) / math.sqrt(shape[-1])
            elif len(shape) == 2:
                val = rn(*shape) / math.sqrt(shape[-1])
            else:
                raise RuntimeError("no init rule for %s %s" % (name, shape))
            prm.copy_(val)
        E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
        for il, layer in enumerate(model.model.layers):
            gate = layer.mlp.gate
            if hasattr(gate, "e_score_correction_bias"):
                gate.e_score_correction_bias.copy_(0.3 * rn(E))
            if hasattr(gate, "tid2eid"):
                # Distinct experts per token, explicit (transformers initialises it to zeros).
                ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(cfg.vocab_size)])
                gate.tid2eid.copy_(ids.to(torch.long))


def make_tokens(cfg, n, seed):
    rng = np.random.default_rng(seed + 7919)
    toks = rng.integers(2, cfg.vocab_size, size=n).astype(np.int64)
    toks[0] = cfg.bos_token_id
    return toks


class MarginProbe:
    """Records, over one forward pass, the smallest relative gap at every discrete choice the
    comparison depends on: routed top-k (biased scores), indexer top-k, logits argmax."""

    def __init__(self, model, cfg):
        from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m
        self.router, self.indexer = [], []
        self.hooks = []
        k, topk = cfg.num_experts_per_tok, cfg.index_topk

        def on_router(mod, inp, out):
            import torch
            scores = mod.score_fn(out[0].float()) + mod.e_score_correction_bias
            s = torch.sort(scores, dim=-1, descending=True).values
            gap = (s[:, k - 1] - s[:, k]) / s[:, 0].abs().clamp_min(1e-6)
            self.router.append(float(gap.min()))

        def on_scorer(mod, inp, out):
            import torch
            sc = out[0]  # [S, T]
            S, T = sc.shape
            for p in range(S):
                vis = (p + 1) // 4
                if vis <= topk:
                    continue
                row = torch.sort(sc[p, :vis], descending=True).values
                self.indexer.append(float((row[topk - 1] - row[topk]) / row[0].abs().clamp_min(1e-6)))

        for mod in model.modules():
            if isinstance(mod, m.DeepseekV4TopKRouter):
                self.hooks.append(mod.register_forward_hook(on_router))
            elif isinstance(mod, m.DeepseekV4IndexerScorer):
                self.hooks.append(mod.register_forward_hook(on_scorer))

    def close(self):
        for h in self.hooks:
            h.remove()


def run_logits(model, tokens, probe_cfg=None):
    import torch
    probe = MarginProbe(model, probe_cfg) if probe_cfg is not None else None
    with torch.no_grad():
        out = model(torch.tensor(tokens[None, :], dtype=torch.long), use_cache=False)
    logits = out.logits[0].float().numpy().astype(np.float32)
    if probe is None:
        return logits, None
    probe.close()
    top2 = np.sort(logits, axis=-1)[:, -2:]
    margins = {
        "router_min_rel_gap": min(probe.router) if probe.router else None,
        "indexer_min_rel_gap": min(probe.indexer) if probe.indexer else None,
        "indexer_selecting_positions": len(probe.indexer) // max(1, sum(
            1 for t in probe_cfg.layer_types if t == "compressed_sparse_attention")),
        "argmax_min_gap": float((top2[:, 1] - top2[:, 0]).min()),
        "logits_rms": float(np.sqrt((logits ** 2).mean())),
    }
    return logits, margins


def make_model(preset="tiny", seed=0):
    """The preset's model with its deterministic random weights (no forward pass)."""
    import torch
    from transformers import DeepseekV4ForCausalLM
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cfg = make_config(preset)
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(cfg).float().eval()
    init_weights(model, cfg, seed)
    return model, cfg


# Smallest accepted relative gap at a routed/indexer top-k boundary, and smallest accepted
# top1-top2 logit gap in units of the logits' RMS: f32 engines agree to ~1e-6 relative, so a
# boundary this far apart cannot flip between two correct implementations.
MIN_REL_GAP = 1e-5
MIN_ARGMAX_GAP = 1e-4


def build(out_dir, preset="tiny", seed=0, n_tokens=None, tries=24, log=print):
    """Makes OUT_DIR/hf + tokens + logits; returns a dict of paths and facts. Redraws the token
    sequence (deterministically) until every discrete choice has the margins above."""
    model, cfg = make_model(preset, seed)
    n = n_tokens or PRESETS[preset]["n_tokens"]
    for attempt in range(tries):
        tokens = make_tokens(cfg, n, seed + 104729 * attempt)
        logits, margins = run_logits(model, tokens, cfg)
        worst = min(v for k2, v in margins.items() if k2.endswith("rel_gap") and v is not None)
        if worst >= MIN_REL_GAP and margins["argmax_min_gap"] >= MIN_ARGMAX_GAP * margins["logits_rms"]:
            break
        log("hf_tiny: attempt %d margins too small (%s), redrawing tokens" % (attempt, margins))
    else:
        raise RuntimeError("no token sequence with margins in %d tries" % tries)
    os.makedirs(out_dir, exist_ok=True)
    hf_dir = os.path.join(out_dir, "hf")
    model.save_pretrained(hf_dir)
    np.save(os.path.join(out_dir, "tokens.npy"), tokens.astype(np.int32))
    with open(os.path.join(out_dir, "tokens.txt"), "w") as fh:
        fh.write(",".join(str(int(t)) for t in tokens) + "\n")
    np.save(os.path.join(out_dir, "logits.npy"), logits)
    margins.update(preset=preset, seed=seed, n_tokens=int(n), attempt=attempt)
    with open(os.path.join(out_dir, "margins.json"), "w") as fh:
        json.dump(margins, fh, indent=1)
    return dict(dir=out_dir, hf_dir=hf_dir, tokens=tokens, logits=logits, margins=margins,
                model=model, config=cfg)


# ---- GGUF values back into the HF model ----------------------------------------------------

def gguf_to_state(gguf_path, cfg):
    """HF state_dict (module names) holding the GGUF's dequantized values."""
    import torch
    import gguf
    r = gguf.GGUFReader(gguf_path)
    t = {}
    for ti in r.tensors:
        ne = [int(x) for x in ti.shape]
        if ti.tensor_type == gguf.GGMLQuantizationType.I32:
            arr = np.array(ti.data).reshape(ne[::-1])
        else:
            arr = gguf.quants.dequantize(np.array(ti.data), ti.tensor_type).astype(np.float32)
            arr = arr.reshape(ne[::-1])
        t[ti.name] = torch.from_numpy(np.ascontiguousarray(arr))
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "lm_head.weight": t["output.weight"],
          "model.norm.weight": t["output_norm.weight"], "model.hc_head.hc_fn": t["output_hc_fn.weight"],
          "model.hc_head.hc_base": t["output_hc_base.weight"],
          "model.hc_head.hc_scale": t["output_hc_scale.weight"]}
    names = {"hc_attn_fn": "attn_hc.fn", "hc_attn_base": "attn_hc.base", "hc_attn_scale": "attn_hc.scale",
             "hc_ffn_fn": "ffn_hc.fn", "hc_ffn_base": "ffn_hc.base", "hc_ffn_scale": "ffn_hc.scale",
             "attn_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight",
             "attn_q_a": "self_attn.q_a_proj.weight", "attn_q_a_norm": "self_attn.q_a_norm.weight",
             "attn_q_b": "self_attn.q_b_proj.weight", "attn_kv": "self_attn.kv_proj.weight",
             "attn_kv_a_norm": "self_attn.kv_norm.weight", "attn_sinks": "self_attn.sinks",
             "attn_output_a": "self_attn.o_a_proj.weight", "attn_output_b": "self_attn.o_b_proj.weight",
             "attn_compressor_ape": "self_attn.compressor.position_bias",
             "attn_compressor_kv": "self_attn.compressor.kv_proj.weight",
             "attn_compressor_gate": "self_attn.compressor.gate_proj.weight",
             "attn_compressor_norm": "self_attn.compressor.kv_norm.weight",
             "indexer.attn_q_b": "self_attn.compressor.indexer.q_b_proj.weight",
             "indexer.proj": "self_attn.compressor.indexer.scorer.weights_proj.weight",
             "indexer_compressor_ape": "self_attn.compressor.indexer.position_bias",
             "indexer_compressor_kv": "self_attn.compressor.indexer.kv_proj.weight",
             "indexer_compressor_gate": "self_attn.compressor.indexer.gate_proj.weight",
             "indexer_compressor_norm": "self_attn.compressor.indexer.kv_norm.weight",
             "ffn_gate_inp": "mlp.gate.weight", "exp_probs_b": "mlp.gate.e_score_correction_bias",
             "ffn_gate_tid2eid": "mlp.gate.tid2eid",
             "ffn_gate_shexp": "mlp.shared_experts.gate_proj.weight",
             "ffn_up_shexp": "mlp.shared_experts.up_proj.weight",
             "ffn_down_shexp": "mlp.shared_experts.down_proj.weight",
             "ffn_down_exps": "mlp.experts.down_proj"}
    for il in range(cfg.num_hidden_layers):
        b = "blk.%d." % il
        for gname, ten in t.items():
            if not gname.startswith(b):
                continue
            key = gname[len(b):].rsplit(".", 1)[0]
            if key in ("ffn_gate_exps", "ffn_up_exps"):
                continue
            if key == "ffn_gate_tid2eid":
                ten = ten.to(torch.long)
            sd["model.layers.%d.%s" % (il, names[key])] = ten
        sd["model.layers.%d.mlp.experts.gate_up_proj" % il] = torch.cat(
            [t[b + "ffn_gate_exps.weight"], t[b + "ffn_up_exps.weight"]], dim=1)
    return sd


def logits_from_gguf(model, gguf_path, tokens):
    """Loads the GGUF's values into MODEL (in place) and returns its logits for TOKENS."""
    sd = gguf_to_state(gguf_path, model.config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise RuntimeError("GGUF -> HF state mismatch: missing %s unexpected %s" % (missing, unexpected))
    return run_logits(model, tokens)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int)
    ap.add_argument("--from-gguf")
    a = ap.parse_args(argv)
    r = build(a.out_dir, a.preset, a.seed, a.tokens)
    print(json.dumps(r["margins"]))
    if a.from_gguf:
        lg = logits_from_gguf(r["model"], a.from_gguf, r["tokens"])
        np.save(os.path.join(a.out_dir, "logits-gguf.npy"), lg)
        rel = np.linalg.norm(lg - r["logits"], axis=-1) / np.linalg.norm(r["logits"], axis=-1)
        print("hf_tiny: GGUF weights vs original: max rel L2 %.3g" % rel.max())
    return 0


if __name__ == "__main__":
    sys.exit(main())
