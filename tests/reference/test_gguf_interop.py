"""test_gguf_interop.py — ds4's GGUF reader/writer against the gguf Python package (an
independent implementation by others, pinned in requirements-dev.txt):

1. gguf.GGUFWriter writes metadata of every type, arrays and tensors of several types;
   `ds4-gguf copy` rewrites it; gguf.GGUFReader reads both: identical pairs (keys, types,
   value bytes), identical tensors (names, shapes, types, bytes), and identical file bytes.
2. ds4-mkgguf writes a file; gguf.GGUFReader reads it: every tensor dequantized by
   gguf.quants.dequantize equals `ds4-gguf dump` bit for bit, metadata equals the values
   ds4-mkgguf wrote, and `ds4-gguf info` prints the same pairs and tensor table.
3. The tools fail cleanly: exit code 2 and one line on stderr naming the file.

Binaries come from $DS4_BUILD (default "build"); run by `make test-py`.
"""
import os
import re
import subprocess

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFWriter
from gguf import GGUFValueType as VT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DS4_BUILD", "build"))
DS4_GGUF = os.path.join(BUILD, "bin", "ds4-gguf")
DS4_MKGGUF = os.path.join(BUILD, "bin", "ds4-mkgguf")

DS4_TYPE_NAME = {VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16",
                 VT.UINT32: "u32", VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool",
                 VT.STRING: "str", VT.ARRAY: "arr", VT.UINT64: "u64", VT.INT64: "i64",
                 VT.FLOAT64: "f64"}


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def fields_of(reader):
    """Every pair (and gguf-py's header pseudo-fields) as its raw bytes and types, in order."""
    return [(name, [int(t) for t in f.types], [p.tobytes() for p in f.parts])
            for name, f in reader.fields.items()]


def tensors_of(reader):
    return [(t.name, int(t.tensor_type), [int(x) for x in t.shape], int(t.n_bytes),
             t.data.tobytes()) for t in reader.tensors]


# ---- 1. gguf-py writes, ds4 copies --------------------------------------------------------

def write_python_file(path, alignment):
    rng = np.random.default_rng(42)
    w = GGUFWriter(str(path), arch="deepseek4")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("interop")
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1e-6)
    w.add_bool("t.bool", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.str", "h\u00e9llo \"w\u00f6rld\"\n")
    w.add_key_value("t.str_empty", "", VT.STRING)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -2**63)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_str", ["a", "b\u00e9ta", "", "with space"])
    for vt, vals in [(VT.UINT8, [0, 255]), (VT.INT8, [-128, 127]), (VT.UINT16, [65535]),
                     (VT.INT16, [-1]), (VT.UINT32, [0, 1, 4294967295]), (VT.UINT64, [2**64 - 1]),
                     (VT.INT64, [-2**63, 5]), (VT.FLOAT64, [0.1, -1e300])]:
        w.add_key_value(f"t.arr_{DS4_TYPE_NAME[vt]}", vals, VT.ARRAY, sub_type=vt)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])

    w.add_tensor("f32.a", rng.standard_normal((3, 8), dtype=np.float32))
    w.add_tensor("f16.b", rng.standard_normal((2, 4, 16)).astype(np.float16))
    w.add_tensor("bf16.c", gguf.quants.quantize(rng.standard_normal((2, 64), dtype=np.float32),
                                               QT.BF16), raw_dtype=QT.BF16)
    w.add_tensor("q8_0.d", gguf.quants.quantize(rng.standard_normal((4, 64), dtype=np.float32),
                                               QT.Q8_0), raw_dtype=QT.Q8_0)
    for name, qt, rows in [("q4_K.e", QT.Q4_K, 2), ("q2_K.f", QT.Q2_K, 3),
                           ("iq2_xxs.g", QT.IQ2_XXS, 2), ("q6_K.h", QT.Q6_K, 1)]:
        block, size = gguf.constants.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, (rows, 2 * size), dtype=np.uint8)
        w.add_tensor(name, raw, raw_dtype=qt)
    w.add_tensor("i32.i", rng.integers(-1000, 1000, (6, 5), dtype=np.int32))
    w.add_tensor("i8.j", rng.integers(-128, 128, (7,), dtype=np.int8))
    w.add_tensor("f64.k", rng.standard_normal((3,)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("alignment", [None, 1, 64, 4096])
def test_gguf_py_file_survives_ds4_copy(tmp_path, alignment):
    src, dst = tmp_path / "py.gguf", tmp_path / "ds4.gguf"
    write_python_file(src, alignment)
    r = run(DS4_GGUF, "copy", str(src), str(dst))
    assert r.returncode == 0, r.stderr
    a, b = GGUFReader(str(src)), GGUFReader(str(dst))
    assert fields_of(a) == fields_of(b)
    assert tensors_of(a) == tensors_of(b)
    assert len(a.tensors) == 11 and a.alignment == b.alignment
    assert src.read_bytes() == dst.read_bytes(), "ds4 writes the gguf-py layout byte for byte"


# ---- 2. ds4-mkgguf writes, gguf-py reads ----------------------------------------------------

F32 = np.float32
EXPECTED = {
    "general.architecture": (VT.STRING, "deepseek4"),
    "general.name": (VT.STRING, "ds4 sample"),
    "general.alignment": (VT.UINT32, 64),
    "sample.seed": (VT.UINT64, 7),
    "sample.u8": (VT.UINT8, 200),
    "sample.i8": (VT.INT8, -100),
    "sample.u16": (VT.UINT16, 60000),
    "sample.i16": (VT.INT16, -30000),
    "sample.u32": (VT.UINT32, 4000000000),
    "sample.i32": (VT.INT32, -2000000000),
    "sample.f32": (VT.FLOAT32, float(F32(3.14159274))),
    "sample.bool": (VT.BOOL, True),
    "sample.str": (VT.STRING, "h\u00e9llo \"gguf\"\tv3"),
    "sample.u64": (VT.UINT64, 2**64 - 1),
    "sample.i64": (VT.INT64, -2**63),
    "sample.f64": (VT.FLOAT64, 2.718281828459045),
    "sample.arr_u8": (VT.UINT8, [0, 1, 255]),
    "sample.arr_i8": (VT.INT8, [-128, 0, 127]),
    "sample.arr_u16": (VT.UINT16, [0, 65535]),
    "sample.arr_i16": (VT.INT16, [-32768, 32767]),
    "sample.arr_u32": (VT.UINT32, list(range(1, 11))),
    "sample.arr_i32": (VT.INT32, [-1, 0, 1]),
    "sample.arr_f32": (VT.FLOAT32, [float(F32(x)) for x in (0.5, -1.25, 1e-6)]),
    "sample.arr_bool": (VT.BOOL, [True, False, True]),
    "sample.arr_u64": (VT.UINT64, [0, 2**64 - 1]),
    "sample.arr_i64": (VT.INT64, [-2**63, 2**63 - 1]),
    "sample.arr_f64": (VT.FLOAT64, [0.1, -2.5e300]),
    "tokenizer.ggml.tokens": (VT.STRING, ["<bos>", "<eos>", "hello", " world", "\u2581x"]),
    "deepseek4.block_count": (VT.UINT32, 4),
    "deepseek4.attention.compress_ratios": (VT.UINT32, [0, 0, 4, 128]),
    "deepseek4.swiglu_clamp_exp": (VT.FLOAT32, [10.0] * 4),
    "deepseek4.rope.freq_base": (VT.FLOAT32, 10000.0),
    "deepseek4.expert_weights_norm": (VT.BOOL, True),
}
SAMPLE_TENSORS = {"sample.f32": QT.F32, "sample.f16": QT.F16, "sample.bf16": QT.BF16,
                  "sample.q8_0": QT.Q8_0, "sample.q2_K": QT.Q2_K, "sample.q4_K": QT.Q4_K,
                  "sample.iq2_xxs": QT.IQ2_XXS, "sample.i32": QT.I32}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("mk") / "sample.gguf"
    r = run(DS4_MKGGUF, str(path), "--seed", "7")
    assert r.returncode == 0, r.stderr
    assert path.stat().st_size < 1 << 20
    return path


def test_mkgguf_metadata_read_by_gguf_py(sample):
    reader = GGUFReader(str(sample))
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert keys == list(EXPECTED)
    for key, (vt, want) in EXPECTED.items():
        f = reader.fields[key]
        if isinstance(want, list):
            assert f.types == [VT.ARRAY, vt], key
        else:
            assert f.types == [vt], key
        assert f.contents() == want, key
    assert reader.alignment == 64


def test_mkgguf_tensors_dump_matches_gguf_py_dequantize(sample):
    reader = GGUFReader(str(sample))
    assert {t.name: t.tensor_type for t in reader.tensors} == SAMPLE_TENSORS
    for t in reader.tensors:
        r = run(DS4_GGUF, "dump", str(sample), t.name)
        assert r.returncode == 0, r.stderr
        ours = np.array([float(x) for x in r.stdout.split()], dtype=np.float64).astype(F32)
        if t.tensor_type == QT.I32:
            want = t.data.astype(np.int64).ravel().astype(F32)
        else:
            want = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=F32).ravel()
        assert ours.shape == want.shape == (int(t.n_elements),), t.name
        mismatch = np.flatnonzero(ours.view(np.uint32) != want.view(np.uint32))
        assert mismatch.size == 0, f"{t.name}: {mismatch.size} values differ, first at " \
            f"{mismatch[:1]}: ds4 {ours[mismatch[:1]]} gguf-py {want[mismatch[:1]]}"


def unescape(s):
    """Inverse of ds4-gguf's string quoting: \\" \\\\ \\n \\t \\xNN, other bytes as UTF-8."""
    assert s[0] == '"' and s[-1] == '"', s
    out, i, body = bytearray(), 0, s[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\":
            n = body[i + 1]
            if n == "x":
                out.append(int(body[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\"}[n]
            i += 2
        else:
            out += c.encode()
            i += 1
    return out.decode()


def parse_scalar(vt, text):
    if vt == VT.STRING:
        return unescape(text)
    if vt == VT.BOOL:
        return {"true": True, "false": False}[text]
    if vt == VT.FLOAT32:
        return float(F32(float(text)))
    if vt == VT.FLOAT64:
        return float(text)
    return int(text)


def test_info_prints_what_gguf_py_reads(sample):
    reader = GGUFReader(str(sample))
    r = run(DS4_GGUF, "info", str(sample))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    meta = {}
    for line in lines[lines.index(next(l for l in lines if l.startswith("metadata"))) + 1:]:
        if not line.startswith("  "):
            break
        key, typ, val = line.split(None, 2)
        meta[key] = (typ, val)
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        typ, val = meta.pop(key)
        if f.types[0] == VT.ARRAY:
            sub = f.types[-1]
            assert typ == f"arr[{DS4_TYPE_NAME[sub]}]", key
            m = re.fullmatch(r"n=(\d+) \[(.*)\]", val)
            assert m and int(m.group(1)) == len(f.contents()), key
            if sub == VT.STRING:
                items = [unescape(x) for x in re.findall(r'"(?:[^"\\]|\\.)*"', m.group(2))]
            else:
                items = [parse_scalar(sub, x) for x in m.group(2).split(", ") if x != "..."]
            assert items == f.contents()[:8], key
        else:
            assert typ == DS4_TYPE_NAME[f.types[0]], key
            assert parse_scalar(f.types[0], val) == f.contents(), key
    assert not meta, f"info printed pairs gguf-py did not read: {meta}"

    rows = [re.fullmatch(r"\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s+(\d+)\s+(\d+)", l)
            for l in lines[lines.index(next(l for l in lines if l.startswith("tensors"))) + 2:]]
    assert all(rows) and len(rows) == len(reader.tensors)
    for m, t in zip(rows, reader.tensors):
        assert m.group(1) == t.name
        assert m.group(2).lower() == t.tensor_type.name.lower()
        assert [int(x) for x in m.group(3).split(", ")] == [int(x) for x in t.shape]
        assert int(m.group(4)) == t.data_offset
        assert int(m.group(5)) == t.n_bytes


# ---- 3. clean failures -----------------------------------------------------------------------

def assert_clean_failure(r, *needles):
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_tools_fail_cleanly(tmp_path, sample):
    missing = str(tmp_path / "missing.gguf")
    assert_clean_failure(run(DS4_GGUF, "info", missing), missing)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(sample.read_bytes()[:1000])
    assert_clean_failure(run(DS4_GGUF, "info", str(cut)), str(cut), "offset")
    assert_clean_failure(run(DS4_GGUF, "dump", str(sample), "no.such.tensor"),
                         str(sample), "no.such.tensor")
    py = tmp_path / "py.gguf"
    write_python_file(py, None)
    assert_clean_failure(run(DS4_GGUF, "dump", str(py), "q6_K.h"), "q6_K", "cannot dequantize")
    assert_clean_failure(run(DS4_GGUF, "copy", str(sample), str(tmp_path / "no" / "dir.gguf")),
                         "no/dir.gguf")
    assert_clean_failure(run(DS4_GGUF, "frobnicate"), "usage")
    assert_clean_failure(run(DS4_MKGGUF), "usage")
