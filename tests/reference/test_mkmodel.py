"""test_mkmodel.py — ds4-mkmodel output read by the gguf Python package (an independent GGUF
reader and dequantizer), checked against the tensor inventory and metadata of
ds4-architecture.md §1.3/§1.4 as written out here in Python (not taken from the C tables):

1. every tensor (the same names in the spec dialect and llama.cpp's) with its ne and the type
   of the q2 / q4 / f16 / f32 mix, no other tensor; the deepseek4.* keys (and the llama.cpp
   dialect's differences: docs/llamacpp-dialect.md); tokenizer metadata;
2. every tensor dequantizes (gguf.quants.dequantize) to finite values; matrices have row RMS
   near 1/sqrt(fan_in); tid2eid rows hold distinct expert ids;
3. ds4-quantize output dequantizes (gguf package) close to its float input.

Binaries come from $DS4_BUILD (default "build"); run by `make test-py`.
"""
import os
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DS4_BUILD", "build"))
MKMODEL = os.path.join(BUILD, "bin", "ds4-mkmodel")
QUANTIZE = os.path.join(BUILD, "bin", "ds4-quantize")

# the tiny preset (tools/ds4-mkmodel --preset tiny)
TINY = dict(L=6, d=256, V=512, H=4, D=128, rot=64, q=128, r=64, g=2, E=16, K=6, I=256,
            hash=3, swa=64, Hi=4, Di=128, topk=8, hc=4, ratios=[0, 0, 4, 128, 4, 128])

def inventory(p, quant):
    """{name: (ne, type)} of spec §1.4 for hyperparameters p and mix quant."""
    F16 = QT.F32 if quant == "f32" else QT.F16
    Q8 = {"q2": QT.Q8_0, "q4": QT.Q8_0, "f16": QT.F16, "f32": QT.F32}[quant]
    GU = {"q2": QT.IQ2_XXS, "q4": QT.Q4_K, "f16": QT.F16, "f32": QT.F32}[quant]
    DN = {"q2": QT.Q2_K, "q4": QT.Q4_K, "f16": QT.F16, "f32": QT.F32}[quant]
    d, hc, D, H = p["d"], p["hc"], p["D"], p["H"]
    mix = (2 + hc) * hc
    t = {"token_embd.weight": ((d, p["V"]), F16), "output_hc_fn.weight": ((hc * d, hc), F16),
         "output_hc_base.weight": ((hc,), QT.F32), "output_hc_scale.weight": ((1,), QT.F32),
         "output_norm.weight": ((d,), QT.F32), "output.weight": ((d, p["V"]), Q8)}
    for il in range(p["L"]):
        R = p["ratios"][il]
        b = "blk.%d." % il
        lay = {"hc_attn_fn.weight": ((hc * d, mix), F16), "hc_attn_scale.weight": ((3,), QT.F32),
               "hc_attn_base.weight": ((mix,), QT.F32), "attn_norm.weight": ((d,), QT.F32),
               "attn_q_a.weight": ((d, p["q"]), Q8), "attn_q_a_norm.weight": ((p["q"],), QT.F32),
               "attn_q_b.weight": ((p["q"], H * D), Q8), "attn_kv.weight": ((d, D), Q8),
               "attn_kv_a_norm.weight": ((D,), QT.F32), "attn_sinks.weight": ((H,), QT.F32),
               "attn_output_a.weight": ((H * D // p["g"], p["g"] * p["r"]), Q8),
               "attn_output_b.weight": ((p["g"] * p["r"], d), Q8),
               "hc_ffn_fn.weight": ((hc * d, mix), F16), "hc_ffn_scale.weight": ((3,), QT.F32),
               "hc_ffn_base.weight": ((mix,), QT.F32), "ffn_norm.weight": ((d,), QT.F32),
               "ffn_gate_inp.weight": ((d, p["E"]), F16),
               "ffn_gate_exps.weight": ((d, p["I"], p["E"]), GU),
               "ffn_up_exps.weight": ((d, p["I"], p["E"]), GU),
               "ffn_down_exps.weight": ((p["I"], d, p["E"]), DN),
               "ffn_gate_shexp.weight": ((d, p["I"]), Q8), "ffn_up_shexp.weight": ((d, p["I"]), Q8),
               "ffn_down_shexp.weight": ((p["I"], d), Q8)}
        if R:
            w = 2 * D if R == 4 else D
            lay.update({"attn_compressor_ape.weight": ((w, R), F16),
                        "attn_compressor_kv.weight": ((d, w), F16),
                        "attn_compressor_gate.weight": ((d, w), F16),
                        "attn_compressor_norm.weight": ((D,), QT.F32)})
        if R == 4:
            Hi, Di = p["Hi"], p["Di"]
            lay.update({"indexer.attn_q_b.weight": ((p["q"], Hi * Di), F16),
                        "indexer.proj.weight": ((d, Hi), F16),
                        "indexer_compressor_ape.weight": ((2 * Di, 4), F16),
                        "indexer_compressor_kv.weight": ((d, 2 * Di), F16),
                        "indexer_compressor_gate.weight": ((d, 2 * Di), F16),
                        "indexer_compressor_norm.weight": ((Di,), QT.F32)})
        if il < p["hash"]:
            lay["ffn_gate_tid2eid.weight"] = ((p["K"], p["V"]), QT.I32)
        else:
            lay["exp_probs_b.bias"] = ((p["E"],), QT.F32)
        t.update({b + k: v for k, v in lay.items()})
    return t


def make(tmp_path, *args):
    if not os.path.exists(MKMODEL):
        pytest.fail("%s is missing: build it first (make all)" % MKMODEL)
    out = str(tmp_path / "m.gguf")
    r = subprocess.run([MKMODEL, out, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return GGUFReader(out)


def kv(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


@pytest.mark.parametrize("quant,dialect", [("q2", "ds4"), ("q4", "llamacpp"), ("f16", "ds4"),
                                           ("f32", "llamacpp")])
def test_inventory_and_metadata(tmp_path, quant, dialect):
    r = make(tmp_path, "--quant", quant, "--dialect", dialect, "--fill", "random")
    want = inventory(TINY, quant)  # llama.cpp 0c1e57098 spells every tensor as the spec
    got = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type) for t in r.tensors}
    assert set(got) == set(want)
    for n, (ne, ty) in want.items():
        assert got[n] == (ne, ty), n
    p = TINY
    assert kv(r, "general.architecture") == "deepseek4"
    for key, v in [("block_count", p["L"]), ("embedding_length", p["d"]),
                   ("attention.head_count", p["H"]), ("attention.head_count_kv", 1),
                   ("attention.key_length", p["D"]), ("attention.value_length", p["D"]),
                   ("rope.dimension_count", p["rot"]), ("attention.q_lora_rank", p["q"]),
                   ("attention.output_group_count", p["g"]), ("expert_count", p["E"]),
                   ("expert_used_count", p["K"]), ("expert_feed_forward_length", p["I"]),
                   ("expert_shared_count", 1), ("hash_layer_count", p["hash"]),
                   ("attention.sliding_window", p["swa"]), ("attention.indexer.head_count", p["Hi"]),
                   ("attention.indexer.key_length", p["Di"]), ("attention.indexer.top_k", p["topk"]),
                   ("hyper_connection.sinkhorn_iterations", 20), ("expert_weights_norm", True),
                   ("rope.scaling.original_context_length", 65536), ("context_length", 8192),
                   ("attention.output_lora_rank", p["r"]), ("hyper_connection.count", p["hc"])]:
        assert kv(r, "deepseek4." + key) == v, key
    for key, v in [("hyper_connection.epsilon", 1e-6), ("rope.freq_base", 10000.0),
                   ("rope.scaling.factor", 16.0), ("rope.scaling.yarn_beta_fast", 32.0),
                   ("rope.scaling.yarn_beta_slow", 1.0),
                   ("attention.compress_rope_freq_base", 160000.0),
                   ("expert_weights_scale", 1.5), ("attention.layer_norm_rms_epsilon", 1e-6)]:
        assert kv(r, "deepseek4." + key) == pytest.approx(v, rel=1e-6), key
    assert list(kv(r, "deepseek4.attention.compress_ratios")) == p["ratios"]
    assert list(kv(r, "deepseek4.swiglu_clamp_exp")) == [10.0] * p["L"]
    ctx_type = r.fields["deepseek4.context_length"].types[0]
    ratio_type = r.fields["deepseek4.attention.compress_ratios"].types[1]
    if dialect == "ds4":  # spec §1.3: context_length u64, ratios u32, no llama.cpp keys
        assert kv(r, "deepseek4.vocab_size") == p["V"]
        assert ctx_type == GGUFValueType.UINT64 and ratio_type == GGUFValueType.UINT32
        for k in ("expert_gating_func", "rope.scaling.type", "swiglu_clamp_shexp",
                  "embedding_length_out"):
            assert kv(r, "deepseek4." + k) is None, k
    else:  # what llama.cpp's converter writes (and its loader needs)
        assert kv(r, "deepseek4.vocab_size") is None
        assert ctx_type == GGUFValueType.UINT32 and ratio_type == GGUFValueType.INT32
        assert kv(r, "deepseek4.expert_gating_func") == 4
        assert kv(r, "deepseek4.rope.scaling.type") == "yarn"
        assert list(kv(r, "deepseek4.swiglu_clamp_shexp")) == [10.0] * p["L"]
        assert kv(r, "deepseek4.embedding_length_out") == p["hc"] * p["d"]
    toks = kv(r, "tokenizer.ggml.tokens")
    assert len(toks) == p["V"] and toks[0] == "<｜begin▁of▁sentence｜>"
    assert toks[1] == "<｜end▁of▁sentence｜>" and "｜DSML｜" in toks and "<think>" in toks
    assert toks[7 + ord("A")] == "A" and toks[7 + ord(" ")] == "Ġ"
    assert kv(r, "tokenizer.ggml.model") == "gpt2" and kv(r, "tokenizer.ggml.pre") == "joyai-llm"
    assert "Ġ t" in list(kv(r, "tokenizer.ggml.merges"))


@pytest.mark.parametrize("quant,fill", [("q2", "random"), ("q4", "random"), ("q4", "quantize"),
                                        ("f16", "random")])
def test_values(tmp_path, quant, fill):
    r = make(tmp_path, "--quant", quant, "--fill", fill, "--experts", "8", "--seed", "3")
    for t in r.tensors:
        if t.tensor_type == QT.I32:
            ids = np.array(t.data).reshape(-1, 6)
            assert ids.min() >= 0 and ids.max() < 8
            assert all(len(set(row)) == 6 for row in ids[:200]), t.name
            continue
        x = dequantize(np.array(t.data), t.tensor_type).reshape(-1, int(t.shape[0]))
        assert np.isfinite(x).all(), t.name
        if len(t.shape) >= 2 and "ape" not in t.name and "token_embd" not in t.name:
            rms = np.sqrt((x[:64].astype(np.float64) ** 2).mean())
            assert abs(rms * np.sqrt(int(t.shape[0])) - 1) < 0.25, (t.name, rms)


@pytest.mark.parametrize("qtype,tol", [("q2_K", 0.35), ("q4_K", 0.12), ("iq2_xxs", 0.4),
                                       ("q8_0", 0.01)])
def test_quantize_tool(tmp_path, qtype, tol):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 512)).astype("<f4")
    fin, fout = tmp_path / "in.f32", tmp_path / "out.bin"
    x.tofile(fin)
    r = subprocess.run([QUANTIZE, str(fin), str(fout), qtype, "16", "512"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    qt = {"q2_K": QT.Q2_K, "q4_K": QT.Q4_K, "iq2_xxs": QT.IQ2_XXS, "q8_0": QT.Q8_0}[qtype]
    y = dequantize(np.fromfile(fout, dtype=np.uint8).reshape(16, -1), qt).reshape(16, 512)
    err = np.sqrt(((y - x) ** 2).mean() / (x ** 2).mean())
    assert err < tol, err
