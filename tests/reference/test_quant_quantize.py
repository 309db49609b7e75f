"""test_quant_quantize.py — ds4's quantizers and traits table against independent references.

ds4's quantizers run through the table's bridge `test_quant --quantize TYPE` (raw f32 on
stdin, blocks on stdout): the build's own binary and flags, no second build of the library.
  * Q8_0 must be byte-identical to gguf.quants.quantize (ggml's reference: round half away
    from zero), exact ties included; F16 to numpy astype(float16) on random bit patterns
    (NaN payloads too); BF16 to gguf.quants.quantize(BF16).
  * Q8_K must be byte-identical to a numpy transcription of ds4-architecture.md §4.1.
  * Q2_K, Q4_K, IQ2_XXS (searches, no single right answer): the blocks ds4 writes, decoded by
    gguf.quants.dequantize, must reproduce the input within the C test's error bounds.
  * The traits table (`test_quant_traits --list`) must list exactly the types and sizes of
    gguf.constants.GGML_QUANT_SIZES.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

BUILD = Path(os.environ.get("DS4_BUILD", "build"))
TEST_QUANT = BUILD / "tests" / "test_quant"
TEST_TRAITS = BUILD / "tests" / "test_quant_traits"
SEED = int(os.environ.get("DS4_TEST_SEED", "20240602"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: build it first (make all); this test never skips")
    return path


def ds4_quantize(qtype: T, x: np.ndarray) -> np.ndarray:
    """Quantizes f32 rows with ds4; returns (n_blocks, type_size) uint8."""
    x = np.ascontiguousarray(x, dtype="<f4").reshape(-1)
    out = subprocess.run([str(need(TEST_QUANT)), "--quantize", qtype.name], input=x.tobytes(),
                         capture_output=True, timeout=300)
    assert out.returncode == 0, f"test_quant --quantize {qtype.name} failed: {out.stderr!r}"
    block, size = GGML_QUANT_SIZES[qtype]
    return np.frombuffer(out.stdout, dtype=np.uint8).reshape(-1, size)


def assert_same_bytes(got: np.ndarray, want: np.ndarray, what: str, block: int) -> None:
    got = got.reshape(-1, want.shape[-1]) if want.ndim == 2 else got.reshape(-1)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bad = np.flatnonzero((got != want).reshape(got.shape[0], -1).any(axis=1))
    if bad.size:
        i = int(bad[0])
        pytest.fail(f"{what}: {bad.size} of {got.shape[0]} blocks differ, first block {i} "
                    f"(input elements {i * block}..): got {got[i].tobytes().hex()} "
                    f"want {want[i].tobytes().hex()} (seed {SEED})")


# ---- input data ----------------------------------------------------------------------------

def gaussian_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """N(0,1) data in rows of 4096 at scales 1e-3..1e3, plus outliers and zero blocks."""
    x = rng.standard_normal(n).astype(np.float32)
    scales = np.repeat(np.array([1e-3, 1e-2, 1.0, 7.0, 1e3], dtype=np.float32), 256)
    x *= np.resize(scales, n)
    x[1000:1032] = 0.0                           # one zero Q8_0 block
    x[4096:4096 + 256] = 0.0                     # one zero super-block
    x[5000] = 300.0                              # an outlier
    x[6000:6032] = rng.integers(-3, 4, 32)       # small integers
    return x


def q8_0_ties(rng: np.random.Generator) -> np.ndarray:
    """Blocks whose amax is 127*2^k, so d = 2^k and x*id lands exactly on k+0.5."""
    blocks = []
    for k in range(-6, 7):
        b = (rng.integers(-127, 127, 32) + 0.5).astype(np.float32) * np.float32(2.0 ** k)
        b[0] = np.float32(127 * 2.0 ** k) * (1 if k % 2 else -1)
        blocks.append(b)
    return np.concatenate(blocks)


# ---- byte-exact quantizers -----------------------------------------------------------------

def test_q8_0_matches_gguf_quantize() -> None:
    rng = np.random.default_rng(SEED)
    x = np.concatenate([gaussian_rows(rng, 16 * 4096), q8_0_ties(rng)])
    assert_same_bytes(ds4_quantize(T.Q8_0, x), quantize(x.reshape(1, -1), T.Q8_0).reshape(-1, 34),
                      "Q8_0 vs gguf.quants.quantize", 32)


def test_f16_matches_numpy_astype() -> None:
    rng = np.random.default_rng(SEED + 1)
    bits = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype("<u4")
    bits[:8] = [0x7F800001, 0xFFC00000, 0x7FBFFFFF, 0x477FF000, 0x477FEFFF, 0x33000000,
                0x33000001, 0x387FFFFF]
    x = bits.view("<f4")
    with np.errstate(all="ignore"):
        want = x.astype(np.float16).view(np.uint8).reshape(-1, 2)
    assert_same_bytes(ds4_quantize(T.F16, x), want, "F16 vs numpy astype(float16)", 1)


def test_bf16_matches_gguf_quantize() -> None:
    rng = np.random.default_rng(SEED + 2)
    bits = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype("<u4")
    bits[:4] = [0x7F800001, 0xFFFFFFFF, 0x7F7FFFFF, 0x3F808000]
    x = bits.view("<f4")
    with np.errstate(all="ignore"):
        want = quantize(x.reshape(1, -1), T.BF16).reshape(-1, 2)
    assert_same_bytes(ds4_quantize(T.BF16, x), want, "BF16 vs gguf.quants.quantize", 1)


def q8_k_reference(x: np.ndarray) -> np.ndarray:
    """ds4-architecture.md §4.1 in numpy: signed max, iscale = -127/max, q = rint(iscale*x)
    (ties to even) clamped to [-128, 127], d = 1/iscale, bsums of 16; zero block all zero."""
    xb = x.reshape(-1, 256)
    n = xb.shape[0]
    imax = np.argmax(np.abs(xb), axis=1)                 # first of equal |x|
    mx = xb[np.arange(n), imax]
    zero = mx == 0
    with np.errstate(all="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127.0) / mx).astype(np.float32)
        q = np.clip(np.rint(iscale[:, None] * xb), -128, 127).astype(np.int8)
        d = np.where(zero, np.float32(0), np.float32(1.0) / iscale).astype("<f4")
    bsums = q.astype(np.int32).reshape(n, 16, 16).sum(axis=-1).astype("<i2")
    return np.concatenate([d.view(np.uint8).reshape(n, 4), q.view(np.uint8),
                           bsums.view(np.uint8).reshape(n, 32)], axis=1)


def test_q8_k_matches_spec_formula() -> None:
    rng = np.random.default_rng(SEED + 3)
    x = gaussian_rows(rng, 16 * 4096)
    tie = np.zeros(256, dtype=np.float32)                # max -127: iscale 1, exact .5 ties
    tie[0], tie[1:9] = -127.0, [0.5, 1.5, 2.5, -2.5, 3.5, -0.5, 126.5, -126.5]
    eq = np.zeros(256, dtype=np.float32)
    eq[3], eq[7] = 2.0, -2.0                             # equal |x|: the first sets the sign
    x = np.concatenate([x, tie, eq])
    assert_same_bytes(ds4_quantize(T.Q8_K, x), q8_k_reference(x), "Q8_K vs §4.1 formula", 256)


# ---- search quantizers: the blocks decode, through gguf, to the input ------------------

RMS_BOUND = {T.Q2_K: 0.35, T.Q4_K: 0.09, T.IQ2_XXS: 0.40}  # tests/test_quant.c rms_bounds


@pytest.mark.parametrize("qtype", list(RMS_BOUND), ids=lambda t: t.name)
def test_weight_quantizer_blocks_decode_with_gguf(qtype: T) -> None:
    rng = np.random.default_rng(SEED + 4)
    x = rng.standard_normal(32 * 4096).astype(np.float32)
    blocks = ds4_quantize(qtype, x)
    y = dequantize(blocks.reshape(1, -1), qtype).reshape(-1)
    x64 = x.astype(np.float64)
    rel = float(np.sqrt(np.sum((y - x64) ** 2) / np.sum(x64 ** 2)))
    print(f"{qtype.name}: relative RMS {rel:.4f} (bound {RMS_BOUND[qtype]})")
    assert np.isfinite(y).all() and rel <= RMS_BOUND[qtype], f"{qtype.name}: rel. RMS {rel}"


# ---- the traits table ------------------------------------------------------------------------

# gguf 0.19.0 still lists Q8_1 with the block of old ggml (f32 d, f32 s: 40 bytes); ggml's
# block_q8_1 has been two f16 and 32 int8 (36 bytes) for a long time, and that is what ds4
# keeps. Q8_1 is an activation-only type that never appears in a GGUF file.
KNOWN_DIFFERENCES = {int(T.Q8_1): {"ds4": (32, 36), "gguf": (32, 40)}}


def test_traits_sizes_match_gguf_constants() -> None:
    out = subprocess.run([str(need(TEST_TRAITS)), "--list"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    ours = {}
    for line in out.stdout.splitlines():
        tid, name, elems, size = line.split()
        ours[int(tid)] = (name, int(elems), int(size))
    theirs = {int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in T}
    assert sorted(ours) == sorted(theirs), \
        f"type ids differ: only ds4 {sorted(set(ours) - set(theirs))}, " \
        f"only gguf {sorted(set(theirs) - set(ours))}"
    for tid, (name, elems, size) in theirs.items():
        o = ours[tid]
        if tid in KNOWN_DIFFERENCES:
            known = KNOWN_DIFFERENCES[tid]
            assert (elems, size) == known["gguf"] and o[1:] == known["ds4"], \
                f"type {tid}: the known difference changed: ds4 {o}, gguf {(elems, size)}"
            continue
        assert (o[0].lower(), o[1], o[2]) == (name.lower(), elems, size), \
            f"type {tid}: ds4 {o}, gguf {(name, elems, size)}"
