"""test_hf_convert.py - tools/convert_hf.py against transformers' DeepseekV4ForCausalLM.

(a) Conversion: a tiny random HF checkpoint (tests/reference/hf_tiny.py) converted with
    --outtype f32 holds every tensor of ds4-architecture.md §1.4 expected for its config, with
    the right ne and type, and bytes equal to the HF tensors; the metadata of §1.3 carries the
    config's values; the default (mixed) types follow the §1.4 table; the transformers
    module-name spelling (fused gate_up_proj) converts to the same bytes; q2/q4 experts go
    through the external quantizer interface.
(b) Logits: the C engine's ds4-logits on the converted GGUF against transformers, every
    position. Skipped until build/bin/ds4-logits exists (issue 4). Interface:
        ds4-logits -m MODEL.gguf --tokens 1,2,3 --out FILE.npy [--decode]
    FILE.npy = float32 [n_tokens, vocab], row p = logits after token p; --decode feeds the tokens
    one at a time instead of one prefill. Env DS4_NO_QAT_SIM=1 (§3.8 reference mode).
Needs torch/transformers/safetensors (tools/ensure_ref_venv.sh); skipped without them.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

torch = pytest.importorskip("torch", reason="reference venv missing: run tools/ensure_ref_venv.sh")
pytest.importorskip("transformers", reason="reference venv missing: run tools/ensure_ref_venv.sh")
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

import convert_hf  # noqa: E402
import hf_tiny  # noqa: E402

BUILD = os.environ.get("DS4_BUILD", os.path.join(ROOT, "build"))
DS4_LOGITS = os.path.join(BUILD, "bin", "ds4-logits")
# f32 weights, no QAT simulation: both sides are f32 implementations of the same math.
TOL_F32 = 1e-4
# Quantized GGUF: transformers runs on the dequantized weights, the engine also quantizes
# activations (Q8_0 / Q8_K) for its quantized matmuls.
TOL_QUANT = 2e-2


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    r = hf_tiny.build(str(out), "tiny", seed=0)
    r["f32"] = str(out / "f32.gguf")
    convert_hf.convert(r["hf_dir"], r["f32"], outtype="f32", log=lambda *a: None)
    return r


def read(path):
    r = gguf.GGUFReader(path)
    tensors = {t.name: t for t in r.tensors}
    return r, tensors


def field(r, key):
    f = r.fields[key]
    return f.contents()


def expected_inventory(cfg):
    """{gguf name: ne} for this config, written from the §1.4 table."""
    d, V, L = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    H, D, hc = cfg.num_attention_heads, cfg.head_dim, cfg.hc_mult
    E, K, I = cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size
    qr, g, orank = cfg.q_lora_rank, cfg.o_groups, cfg.o_lora_rank
    Hi, Di = cfg.index_n_heads, cfg.index_head_dim
    mix = (2 + hc) * hc
    inv = {"token_embd.weight": [d, V], "output_hc_fn.weight": [hc * d, hc],
           "output_hc_base.weight": [hc], "output_hc_scale.weight": [1],
           "output_norm.weight": [d], "output.weight": [d, V]}
    n_hash = sum(1 for t in cfg.mlp_layer_types if t == "hash_moe")
    for il in range(L):
        b = "blk.%d." % il
        lt = cfg.layer_types[il]
        R = 0 if lt == "sliding_attention" else cfg.compress_rates[lt]
        inv.update({b + "hc_attn_fn.weight": [hc * d, mix], b + "hc_attn_scale.weight": [3],
                    b + "hc_attn_base.weight": [mix], b + "attn_norm.weight": [d],
                    b + "attn_q_a.weight": [d, qr], b + "attn_q_a_norm.weight": [qr],
                    b + "attn_q_b.weight": [qr, H * D], b + "attn_kv.weight": [d, D],
                    b + "attn_kv_a_norm.weight": [D], b + "attn_sinks.weight": [H],
                    b + "attn_output_a.weight": [H * D // g, g * orank],
                    b + "attn_output_b.weight": [g * orank, d],
                    b + "hc_ffn_fn.weight": [hc * d, mix], b + "hc_ffn_scale.weight": [3],
                    b + "hc_ffn_base.weight": [mix], b + "ffn_norm.weight": [d],
                    b + "ffn_gate_inp.weight": [d, E],
                    b + "ffn_gate_exps.weight": [d, I, E], b + "ffn_up_exps.weight": [d, I, E],
                    b + "ffn_down_exps.weight": [I, d, E],
                    b + "ffn_gate_shexp.weight": [d, I], b + "ffn_up_shexp.weight": [d, I],
                    b + "ffn_down_shexp.weight": [I, d]})
        if il < n_hash:
            inv[b + "ffn_gate_tid2eid.weight"] = [K, V]
        else:
            inv[b + "exp_probs_b.bias"] = [E]
        if R:
            w = 2 * D if R == 4 else D
            inv.update({b + "attn_compressor_ape.weight": [w, R],
                        b + "attn_compressor_kv.weight": [d, w],
                        b + "attn_compressor_gate.weight": [d, w],
                        b + "attn_compressor_norm.weight": [D]})
        if R == 4:
            inv.update({b + "indexer.attn_q_b.weight": [qr, Hi * Di], b + "indexer.proj.weight": [d, Hi],
                        b + "indexer_compressor_ape.weight": [2 * Di, 4],
                        b + "indexer_compressor_kv.weight": [d, 2 * Di],
                        b + "indexer_compressor_gate.weight": [d, 2 * Di],
                        b + "indexer_compressor_norm.weight": [Di]})
    return inv


# Default (--outtype mixed) type of each tensor, from the §1.4 type summary.
F32_SUFFIX = ("norm.weight", "_scale.weight", "_base.weight", "attn_sinks.weight", "exp_probs_b.bias")
Q8_SUFFIX = ("output.weight", "attn_q_a.weight", "attn_q_b.weight", "attn_kv.weight",
             "attn_output_a.weight", "attn_output_b.weight", "ffn_gate_shexp.weight",
             "ffn_up_shexp.weight", "ffn_down_shexp.weight")


def mixed_type(name):
    if name.endswith("tid2eid.weight"):
        return QT.I32
    if name.endswith("_exps.weight"):
        return QT.F16
    if name.endswith(F32_SUFFIX):
        return QT.F32
    if name == "output.weight" or name.split(".", 2)[-1] in Q8_SUFFIX:
        return QT.Q8_0
    return QT.F16


# ---- (a) conversion ------------------------------------------------------------------------

def test_tensor_inventory_shapes_types(tiny):
    cfg = tiny["config"]
    _, tensors = read(tiny["f32"])
    inv = expected_inventory(cfg)
    assert sorted(tensors) == sorted(inv)
    for name, ne in inv.items():
        t = tensors[name]
        assert [int(x) for x in t.shape] == ne, name
        want = QT.I32 if name.endswith("tid2eid.weight") else QT.F32
        assert t.tensor_type == want, name


def test_tensor_bytes_equal_hf(tiny):
    """Every GGUF tensor, read back into HF module names, equals the HF tensor bit for bit."""
    model, cfg = tiny["model"], tiny["config"]
    hf = model.state_dict()
    back = hf_tiny.gguf_to_state(tiny["f32"], cfg)
    keys = [k for k in hf if "rotary_emb" not in k]
    assert sorted(back) == sorted(keys)
    for k in keys:
        a, b = hf[k].numpy(), back[k].numpy()
        assert a.shape == b.shape, k
        assert a.dtype == b.dtype or k.endswith("tid2eid"), k
        assert np.array_equal(a, b), k
    # Spot checks of the memory order, independent of gguf_to_state.
    _, tensors = read(tiny["f32"])
    ape = hf["model.layers.2.self_attn.compressor.position_bias"].numpy()  # HF [R, w]
    assert np.array_equal(np.array(tensors["blk.2.attn_compressor_ape.weight"].data), ape)
    tid = hf["model.layers.0.mlp.gate.tid2eid"].numpy()  # HF I64 [vocab, k]
    t = tensors["blk.0.ffn_gate_tid2eid.weight"]
    assert np.array_equal(np.array(t.data).reshape(tid.shape), tid.astype(np.int32))
    gu = hf["model.layers.3.mlp.experts.gate_up_proj"].numpy()  # [E, 2I, d], gate first
    I = cfg.moe_intermediate_size
    up = np.array(tensors["blk.3.ffn_up_exps.weight"].data).reshape(gu.shape[0], I, -1)
    assert np.array_equal(up, gu[:, I:, :])


def test_metadata(tiny):
    cfg = tiny["config"]
    r, _ = read(tiny["f32"])
    P = "deepseek4."
    ratio = lambda t: 0 if t == "sliding_attention" else cfg.compress_rates[t]
    comp = cfg.rope_parameters["compress"]
    want = {
        "general.architecture": "deepseek4",
        P + "block_count": cfg.num_hidden_layers, P + "embedding_length": cfg.hidden_size,
        P + "vocab_size": cfg.vocab_size, P + "attention.head_count": cfg.num_attention_heads,
        P + "attention.head_count_kv": 1, P + "attention.key_length": cfg.head_dim,
        P + "attention.value_length": cfg.head_dim,
        P + "rope.dimension_count": hf_tiny.PRESETS["tiny"]["rope_dim"],
        P + "attention.q_lora_rank": cfg.q_lora_rank, P + "attention.output_lora_rank": cfg.o_lora_rank,
        P + "attention.output_group_count": cfg.o_groups, P + "expert_count": cfg.n_routed_experts,
        P + "expert_used_count": cfg.num_experts_per_tok,
        P + "expert_feed_forward_length": cfg.moe_intermediate_size, P + "expert_shared_count": 1,
        P + "hash_layer_count": 3, P + "attention.sliding_window": cfg.sliding_window,
        P + "attention.indexer.head_count": cfg.index_n_heads,
        P + "attention.indexer.key_length": cfg.index_head_dim,
        P + "attention.indexer.top_k": cfg.index_topk, P + "hyper_connection.count": 4,
        P + "hyper_connection.sinkhorn_iterations": 20,
        P + "attention.compress_ratios": [ratio(t) for t in cfg.layer_types],
        P + "rope.scaling.original_context_length": 65536, P + "context_length": 1048576,
        P + "expert_weights_norm": True,
    }
    for k, v in want.items():
        assert field(r, k) == v, k
    approx = {P + "hyper_connection.epsilon": 1e-6, P + "rope.freq_base": 10000.0,
              P + "rope.scaling.factor": comp["factor"], P + "rope.scaling.yarn_beta_fast": 32.0,
              P + "rope.scaling.yarn_beta_slow": 1.0,
              P + "attention.compress_rope_freq_base": 160000.0,
              P + "expert_weights_scale": 1.5, P + "attention.layer_norm_rms_epsilon": 1e-6}
    for k, v in approx.items():
        assert field(r, k) == pytest.approx(v, rel=1e-6), k
    assert field(r, P + "attention.compress_ratios") == [0, 0, 4, 128, 4, 128]
    assert field(r, P + "swiglu_clamp_exp") == [10.0] * cfg.num_hidden_layers
    toks = field(r, "tokenizer.ggml.tokens")
    assert len(toks) == cfg.vocab_size and len(set(toks)) == cfg.vocab_size
    assert toks[0] == "<｜begin▁of▁sentence｜>" and toks[1] == "<｜end▁of▁sentence｜>"
    assert len(field(r, "tokenizer.ggml.merges")) > 0


def test_mixed_types_follow_table(tiny, tmp_path):
    out = str(tmp_path / "mixed.gguf")
    convert_hf.convert(tiny["hf_dir"], out, log=lambda *a: None)
    _, tensors = read(out)
    f32 = read(tiny["f32"])[1]
    for name, t in tensors.items():
        assert t.tensor_type == mixed_type(name), name
        assert [int(x) for x in t.shape] == [int(x) for x in f32[name].shape], name
    # Values: Q8_0 / F16 dequantize back to within their precision of the f32 tensor.
    for name in ("blk.2.attn_q_b.weight", "blk.2.indexer.proj.weight", "output.weight"):
        t = tensors[name]
        deq = gguf.quants.dequantize(np.array(t.data), t.tensor_type).reshape(-1)
        ref = np.array(f32[name].data).reshape(-1)
        assert np.abs(deq - ref).max() <= np.abs(ref).max() / 100, name


def test_module_name_spelling(tiny, tmp_path):
    """transformers' module names (fused gate_up_proj, self_attn.*, mlp.*) convert identically."""
    from safetensors.torch import save_file
    d = tmp_path / "modnames"
    d.mkdir()
    sd = {k: v.contiguous() for k, v in tiny["model"].state_dict().items() if "rotary_emb" not in k}
    save_file(sd, str(d / "model.safetensors"))
    with open(os.path.join(tiny["hf_dir"], "config.json")) as fh:
        (d / "config.json").write_text(fh.read())
    out = str(tmp_path / "modnames.gguf")
    convert_hf.convert(str(d), out, outtype="f32", log=lambda *a: None)
    a, b = read(out)[1], read(tiny["f32"])[1]
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(np.array(a[name].data), np.array(b[name].data)), name


FAKE_QUANTIZER = r'''#!/usr/bin/env python3
import sys, numpy as np
fin, fout, typ, rows, cols = sys.argv[1:]
size = {"q2_K": 84, "q4_K": 144, "iq2_xxs": 66}[typ]
x = np.fromfile(fin, dtype="<f4")
assert x.size == int(rows) * int(cols) and int(cols) % 256 == 0
with open(fout, "wb") as fh:
    fh.write(bytes(int(rows) * int(cols) // 256 * size))
'''


@pytest.mark.parametrize("mode,gate,down", [("q2", QT.IQ2_XXS, QT.Q2_K), ("q4", QT.Q4_K, QT.Q4_K)])
def test_external_quantizer_interface(tmp_path, mode, gate, down):
    model, cfg = hf_tiny.make_model("wide", seed=1)
    hf_dir = str(tmp_path / "hf")
    model.save_pretrained(hf_dir)
    fake = tmp_path / "fake-quantize"
    fake.write_text(FAKE_QUANTIZER.replace("#!/usr/bin/env python3", "#!" + sys.executable))
    fake.chmod(0o755)
    out = str(tmp_path / "q.gguf")
    convert_hf.convert(hf_dir, out, experts=mode, quantizer=str(fake), log=lambda *a: None)
    _, tensors = read(out)
    E, I, d = cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
    for il in range(cfg.num_hidden_layers):
        b = "blk.%d." % il
        for suffix, typ, ne in (("ffn_gate_exps", gate, [d, I, E]), ("ffn_up_exps", gate, [d, I, E]),
                                ("ffn_down_exps", down, [I, d, E])):
            t = tensors[b + suffix + ".weight"]
            assert t.tensor_type == typ and [int(x) for x in t.shape] == ne
            block, size = gguf.GGML_QUANT_SIZES[typ]
            assert t.n_bytes == E * (ne[1]) * ne[0] // block * size


def test_quantizer_missing_is_a_clear_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("DS4_QUANTIZE", str(tmp_path / "nope"))
    monkeypatch.setattr(convert_hf, "find_quantizer", lambda arg: None)
    with pytest.raises(SystemExit) as e:
        convert_hf.convert(tiny["hf_dir"], str(tmp_path / "x.gguf"), experts="q2", log=lambda *a: None)
    assert "external quantizer" in str(e.value)


# ---- (b) logits against the C engine -------------------------------------------------------

def run_ds4_logits(model_path, tokens, out, decode=False):
    cmd = [DS4_LOGITS, "-m", model_path, "--tokens", ",".join(str(int(t)) for t in tokens),
           "--out", out] + (["--decode"] if decode else [])
    env = dict(os.environ, DS4_NO_QAT_SIM="1")
    subprocess.run(cmd, check=True, env=env, timeout=240)
    return np.load(out)


def compare(ours, ref, tol):
    assert ours.shape == ref.shape and ours.dtype == np.float32
    rel = np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    worst = int(rel.argmax())
    assert rel.max() < tol, "position %d: rel L2 %.3g (tol %g)" % (worst, rel[worst], tol)
    return rel


needs_engine = pytest.mark.skipif(not os.path.exists(DS4_LOGITS), reason="ds4-logits not built yet (issue 4)")


@needs_engine
@pytest.mark.parametrize("decode", [False, True], ids=["prefill", "decode"])
@pytest.mark.parametrize("preset", ["tiny", "window16"])
def test_logits_match_transformers_f32(tmp_path, preset, decode):
    r = hf_tiny.build(str(tmp_path), preset, seed=0)
    gg = str(tmp_path / "f32.gguf")
    convert_hf.convert(r["hf_dir"], gg, outtype="f32", log=lambda *a: None)
    ours = run_ds4_logits(gg, r["tokens"], str(tmp_path / "ours.npy"), decode)
    compare(ours, r["logits"], TOL_F32)
    assert np.array_equal(ours.argmax(-1), r["logits"].argmax(-1))


@needs_engine
@pytest.mark.parametrize("experts", ["q2", "q4"])
def test_logits_match_transformers_quantized(tmp_path, experts):
    if convert_hf.find_quantizer(None) is None:
        pytest.skip("no ds4-quantize (build/bin/ds4-quantize) for --experts %s" % experts)
    r = hf_tiny.build(str(tmp_path), "wide", seed=0)
    gg = str(tmp_path / "q.gguf")
    convert_hf.convert(r["hf_dir"], gg, experts=experts, log=lambda *a: None)
    ref = hf_tiny.logits_from_gguf(r["model"], gg, r["tokens"])
    ours = run_ds4_logits(gg, r["tokens"], str(tmp_path / "ours.npy"))
    compare(ours, ref, TOL_QUANT)
