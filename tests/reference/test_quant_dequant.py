"""test_quant_dequant.py — ds4's reference dequantizers against the gguf Python package.

For every type ds4 computes with, raw blocks are built with numpy (random bytes plus crafted
blocks: f16 max / min-normal / denormal / negative / NaN / inf scales, zero blocks, every
sign pattern, grid row and scale of IQ2_XXS, all 65536 f16 and bf16 patterns), written into a
GGUF with gguf.GGUFWriter, dequantized by `ds4-gguf dump FILE TENSOR` (one "%.9g" value per
line) and compared bit for bit (NaN-aware) with gguf.quants.dequantize. Q8_K and I32 are not in
the package's dequantize; they are checked against the numpy expressions d*qs and
astype(float32). The same blocks also go through the table's dequantizer directly
(`test_quant --dequantize TYPE`), so a failure tells the library apart from the tool.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

BUILD = Path(os.environ.get("DS4_BUILD", "build"))
DS4_GGUF = BUILD / "bin" / "ds4-gguf"
TEST_QUANT = BUILD / "tests" / "test_quant"
SEED = int(os.environ.get("DS4_TEST_SEED", "20240601"))
N_RANDOM_BLOCKS = 512

F16_SPECIAL = [0x7BFF, 0xFBFF, 0x0400, 0x8400, 0x0001, 0x8001, 0x03FF, 0x0000, 0x8000,
               0x3C00, 0xBC00, 0x7C00, 0xFC00, 0x7E00, 0x7C01]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: build it first (make all); this test never skips")
    return path


# ---- raw blocks ------------------------------------------------------------------------

def set_f16(blocks: np.ndarray, offset: int, values) -> None:
    """Writes f16 bit patterns at a byte offset of successive blocks (cycling values)."""
    v = np.resize(np.array(values, dtype=np.uint16), blocks.shape[0])
    blocks[:, offset:offset + 2] = v.view(np.uint8).reshape(-1, 2)


def raw_blocks(qtype: T, rng: np.random.Generator) -> np.ndarray:
    """Random blocks followed by crafted ones, as a (n_blocks, type_size) uint8 array."""
    _, size = GGML_QUANT_SIZES[qtype]
    rnd = rng.integers(0, 256, size=(N_RANDOM_BLOCKS, size), dtype=np.uint8)
    if qtype == T.Q8_0:
        crafted = rng.integers(0, 256, size=(2 * len(F16_SPECIAL), size), dtype=np.uint8)
        set_f16(crafted, 0, F16_SPECIAL)
        crafted[-1] = 0
        crafted[-2, 2:] = [0x80, 0x7F] * 16  # extreme codes -128, 127
    elif qtype == T.Q2_K:  # scales[16] qs[64] d dmin
        crafted = rng.integers(0, 256, size=(len(F16_SPECIAL) ** 2 // 3, size), dtype=np.uint8)
        pairs = [(a, b) for a in F16_SPECIAL for b in F16_SPECIAL][::3]
        set_f16(crafted, 80, [a for a, _ in pairs])
        set_f16(crafted, 82, [b for _, b in pairs])
        crafted[0] = 0
        crafted[1, :16] = 0xFF  # largest scale and min everywhere
    elif qtype == T.Q4_K:  # d dmin scales[12] qs[128]
        crafted = rng.integers(0, 256, size=(len(F16_SPECIAL) ** 2 // 3, size), dtype=np.uint8)
        pairs = [(a, b) for a in F16_SPECIAL for b in F16_SPECIAL][::3]
        set_f16(crafted, 0, [a for a, _ in pairs])
        set_f16(crafted, 2, [b for _, b in pairs])
        crafted[0] = 0
        crafted[1, 4:16] = 0xFF
    elif qtype == T.IQ2_XXS:  # d, then 8 x (u32 grid indices, u32 signs | scale << 28)
        n = 64  # every grid row, sign index and scale appears
        crafted = np.zeros((n, size), dtype=np.uint8)
        set_f16(crafted, 0, [0x3C00, 0xBC00, 0x0001, 0x7BFF] + F16_SPECIAL)
        k = np.arange(n * 8 * 4, dtype=np.uint32).reshape(n, 8, 4)
        grid_idx = (k % 256).astype(np.uint32)
        sign_idx = ((k * 7 + 3) % 128).astype(np.uint32)
        scale = (np.arange(n * 8, dtype=np.uint32).reshape(n, 8) % 16)
        w0 = (grid_idx << np.array([0, 8, 16, 24], dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)
        w1 = (sign_idx << np.array([0, 7, 14, 21], dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)
        w1 |= scale << np.uint32(28)
        words = np.stack([w0, w1], axis=-1).astype("<u4").reshape(n, 16)
        crafted[:, 2:] = words.view(np.uint8).reshape(n, 64)
    elif qtype == T.Q8_K:  # f32 d, qs[256], bsums[16]
        crafted = rng.integers(0, 256, size=(8, size), dtype=np.uint8)
        crafted[:, :4] = np.array([0.0, -1.0, 1e-45, 3.4e38, np.inf, np.nan, -2.5e-3, 1.0],
                                  dtype="<f4").view(np.uint8).reshape(8, 4)
        crafted[0] = 0
    else:
        raise AssertionError(qtype)
    return np.concatenate([rnd, crafted])


def expected(qtype: T, raw: np.ndarray) -> np.ndarray:
    """The reference dequantization of raw bytes, as float32."""
    with np.errstate(all="ignore"):  # the crafted scales overflow and make NaN on purpose
        return expected_values(qtype, raw)


def expected_values(qtype: T, raw: np.ndarray) -> np.ndarray:
    if qtype == T.Q8_K:
        d = raw[:, :4].copy().view("<f4")
        qs = raw[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * qs).reshape(-1)
    if qtype == T.I32:
        return raw.view("<i4").astype(np.float32).reshape(-1)
    return dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)


# ---- running ds4 ---------------------------------------------------------------------------

def parse_values(text: str) -> np.ndarray:
    return np.array([float(s) for s in text.split()], dtype=np.float32)


def dump_via_gguf(tmp_path: Path, qtype: T, raw: np.ndarray) -> np.ndarray:
    path = tmp_path / f"{qtype.name}.gguf"
    w = GGUFWriter(str(path), "ds4test")
    if qtype == T.F32:
        w.add_tensor("t", raw.view("<f4").reshape(1, -1))
    elif qtype == T.F16:
        w.add_tensor("t", raw.view("<f2").reshape(1, -1))
    elif qtype == T.I32:
        w.add_tensor("t", raw.view("<i4").reshape(1, -1))
    else:  # raw blocks: one row; the writer derives the element shape from the byte shape
        w.add_tensor("t", raw.reshape(1, -1), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = subprocess.run([str(need(DS4_GGUF)), "dump", str(path), "t"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"ds4-gguf dump failed ({out.returncode}): {out.stderr}"
    return parse_values(out.stdout)


def dump_via_table(qtype: T, raw: np.ndarray) -> np.ndarray:
    out = subprocess.run([str(need(TEST_QUANT)), "--dequantize", qtype.name],
                         input=raw.tobytes(), capture_output=True, timeout=120)
    assert out.returncode == 0, f"test_quant --dequantize failed: {out.stderr!r}"
    return np.frombuffer(out.stdout, dtype="<f4")


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {got.shape[0]} values, expected {want.shape[0]}"
    gn, wn = np.isnan(got), np.isnan(want)
    bad = (gn != wn) | (~gn & (got.view(np.uint32) != want.view(np.uint32)))
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        rows = ", ".join(f"[{i}] got {got[i]!r} want {want[i]!r}" for i in idx)
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} values differ: {rows} (seed {SEED})")


# ---- the cases -------------------------------------------------------------------------------

def cases(qtype: T) -> np.ndarray:
    """Raw bytes of one test tensor of qtype."""
    rng = np.random.default_rng(SEED + int(qtype))
    if qtype in (T.F16, T.BF16):  # every 16-bit pattern
        return np.arange(65536, dtype=np.uint32).astype("<u2").view(np.uint8).reshape(-1, 2)
    if qtype == T.F32:
        bits = rng.integers(0, 2**32, size=8192, dtype=np.uint64).astype("<u4")
        bits[:8] = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 1, 0x807FFFFF]
        return bits.view(np.uint8).reshape(-1, 4)
    if qtype == T.I32:
        v = rng.integers(-2**31, 2**31, size=4096, dtype=np.int64).astype("<i4")
        v[:6] = [0, -1, 2**31 - 1, -2**31, 2**24 + 1, -(2**24 + 3)]
        return v.view(np.uint8).reshape(-1, 4)
    return raw_blocks(qtype, rng)


COMPUTED = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q2_K, T.Q4_K, T.IQ2_XXS, T.Q8_K, T.I32]
IN_PACKAGE = [t for t in COMPUTED if t not in (T.Q8_K, T.I32)]


@pytest.mark.parametrize("qtype", COMPUTED, ids=lambda t: t.name)
def test_dequant_table_matches_reference(qtype: T) -> None:
    raw = cases(qtype)
    assert_same_bits(dump_via_table(qtype, raw), expected(qtype, raw),
                     f"test_quant --dequantize {qtype.name}")


@pytest.mark.parametrize("qtype", COMPUTED, ids=lambda t: t.name)
def test_dequant_ds4_gguf_dump_matches_reference(qtype: T, tmp_path: Path) -> None:
    raw = cases(qtype)
    assert_same_bits(dump_via_gguf(tmp_path, qtype, raw), expected(qtype, raw),
                     f"ds4-gguf dump of {qtype.name}")


def test_reference_is_the_package() -> None:
    """The expectation of package types really comes from gguf.quants.dequantize."""
    for qtype in IN_PACKAGE:
        raw = cases(qtype)
        with np.errstate(all="ignore"):
            ref = dequantize(raw, qtype)
        assert ref.dtype == np.float32 and ref.size == raw.shape[0] * GGML_QUANT_SIZES[qtype][0]
