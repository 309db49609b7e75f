#!/usr/bin/env python3
"""gen_gguf_corpus.py — writes the seed corpus of the GGUF fuzzer (fuzz/corpus/gguf/).

Small files assembled field by field with struct (no gguf package, so malformed ones are
easy): valid files of several kinds (every value type, arrays, tensors of every type ds4
dequantizes plus size-only types, alignments 1/64/4096, 8 dims, empty tensors) and one
malformed file per check of the reader. Names carry no .gguf extension (*.gguf is ignored
by git). Deterministic: same script, same bytes.

    tools/gen_gguf_corpus.py [OUTDIR] [--mkgguf build/bin/ds4-mkgguf]

With --mkgguf, the sample written by ds4-mkgguf (seed 1) is added as `valid_mkgguf_sample`.
Crash inputs found by the fuzzer are added to the corpus by hand (named crash_<what>) and are
not touched by this script.
"""
import os
import random
import struct
import subprocess
import sys
import tempfile

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type id -> (block elements, block bytes)
TYPES = {0: (1, 4), 1: (1, 2), 8: (32, 34), 10: (256, 84), 12: (256, 144), 16: (256, 66),
         26: (1, 4), 30: (1, 2), 14: (256, 210), 13: (256, 176), 23: (256, 136), 2: (32, 18),
         24: (1, 1), 28: (1, 8), 15: (256, 292)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(value(et, x) for x in items)
    return struct.pack(FMT[t], v)


def kv(key, t, v):
    return gstr(key) + struct.pack("<I", t) + value(t, v)


def tensor_info(name, ne, ttype, offset):
    return (gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            + struct.pack("<IQ", ttype, offset))


def nbytes(ne, ttype):
    be, bb = TYPES[ttype]
    n = 1
    for d in ne[1:]:
        n *= d
    return ne[0] // be * bb * n


def gguf(kvs, tensors, align=32, version=3, rng=None):
    """kvs: list of (key, type, value); tensors: list of (name, ne, type[, data bytes])."""
    rng = rng or random.Random(0)
    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(kvs))
    out += b"".join(kv(*x) for x in kvs)
    offs, datas, off = [], [], 0
    for t in tensors:
        size = nbytes(t[1], t[2])
        data = t[3] if len(t) > 3 else bytes(rng.randrange(256) for _ in range(size))
        offs.append(off)
        datas.append(data)
        off += (size + align - 1) // align * align
    out += b"".join(tensor_info(t[0], t[1], t[2], o) for t, o in zip(tensors, offs))
    out += b"\0" * (-len(out) % align)
    for d in datas:
        out += d + b"\0" * (-len(d) % align)
    return out


def corpus():
    rng = random.Random(1234)
    c = {}
    c["valid_header_only"] = gguf([], [])
    c["valid_scalars"] = gguf([("general.architecture", STR, "deepseek4"),
                               ("u8", U8, 255), ("i8", I8, -128), ("u16", U16, 65535),
                               ("i16", I16, -32768), ("u32", U32, 2**32 - 1),
                               ("i32", I32, -2**31), ("f32", F32, 1.5), ("bool", BOOL, 1),
                               ("str", STR, "h\u00e9llo"), ("u64", U64, 2**64 - 1),
                               ("i64", I64, -2**63), ("f64", F64, -0.1),
                               ("empty.str", STR, "")], [])
    c["valid_arrays"] = gguf([(f"arr.{t}", ARR, (t, [v] * 3)) for t, v in
                              [(U8, 7), (I8, -7), (U16, 7), (I16, -7), (U32, 7), (I32, -7),
                               (F32, 0.5), (BOOL, 1), (U64, 7), (I64, -7), (F64, 0.25)]]
                             + [("arr.str", ARR, (STR, ["a", "", "bc"])),
                                ("arr.empty", ARR, (U32, [])),
                                ("arr.empty_str", ARR, (STR, []))], [])
    c["valid_tensors_f32"] = gguf([("general.alignment", U32, 32)],
                                  [("a", [8], 0), ("b", [4, 3], 0), ("c", [2, 2, 2], 0)], rng=rng)
    c["valid_tensors_ds4_types"] = gguf(
        [("general.architecture", STR, "deepseek4")],
        [("f32", [16], 0), ("f16", [16, 2], 1), ("bf16", [8], 30), ("q8_0", [64, 2], 8),
         ("q2_K", [256], 10), ("q4_K", [256, 2], 12), ("iq2_xxs", [256], 16), ("i32", [6, 4], 26),
         ("q8_K", [256], 15)], rng=rng)
    c["valid_tensors_size_only"] = gguf([], [("q6_K", [256], 14), ("q5_K", [256], 13),
                                             ("iq4_xs", [256], 23), ("q4_0", [64], 2),
                                             ("i8", [5], 24), ("f64", [3], 28)], rng=rng)
    for a in (1, 64, 4096):
        c[f"valid_align_{a}"] = gguf([("general.alignment", U32, a)],
                                     [("x", [3], 0), ("y", [5], 1)], align=a, rng=rng)
    c["valid_dims8"] = gguf([], [("t", [2, 1, 3, 1, 1, 2, 1, 1], 0)], rng=rng)
    c["valid_empty_tensor"] = gguf([], [("z", [0, 4], 12, b""), ("t", [4], 0)], rng=rng)
    c["valid_ds4_like"] = gguf(
        [("general.architecture", STR, "deepseek4"), ("deepseek4.block_count", U32, 2),
         ("deepseek4.attention.compress_ratios", ARR, (U32, [0, 0])),
         ("deepseek4.swiglu_clamp_exp", ARR, (F32, [10.0, 10.0])),
         ("deepseek4.expert_weights_norm", BOOL, 1),
         ("deepseek4.rope.scaling.original_context_length", U64, 65536),
         ("tokenizer.ggml.tokens", ARR, (STR, ["<bos>", "<eos>", "a", "b"])),
         ("tokenizer.ggml.merges", ARR, (STR, ["a b"]))],
        [("token_embd.weight", [32, 4], 1), ("output_norm.weight", [32], 0),
         ("blk.0.attn_kv.weight", [32, 2], 8), ("blk.0.ffn_gate_tid2eid.weight", [6, 4], 26)],
        rng=rng)

    good = gguf([("k", U32, 1)], [("t", [8], 0)])
    c["bad_magic"] = b"GGUG" + good[4:]
    c["bad_version_2"] = good[:4] + struct.pack("<I", 2) + good[8:]
    c["bad_truncated_header"] = good[:20]
    c["bad_truncated_data"] = good[:-32]
    c["bad_tensor_count_huge"] = good[:8] + struct.pack("<Q", 2**64 - 1) + good[16:]
    c["bad_kv_count_huge"] = good[:16] + struct.pack("<Q", 2**62) + good[24:]
    c["bad_key_len_huge"] = good[:24] + struct.pack("<Q", 2**64 - 1) + good[32:]
    c["bad_nested_array"] = gguf([("a", ARR, (U32, [1]))], [])[:-8].replace(
        struct.pack("<IIQ", ARR, U32, 1), struct.pack("<IIQ", ARR, ARR, 1)) + b"\0" * 8
    c["bad_bool_2"] = gguf([("b", BOOL, 2)], [])
    c["bad_value_type_13"] = gguf([("k", U32, 1)], []).replace(struct.pack("<I", U32), struct.pack("<I", 13), 1)
    c["bad_dup_key"] = gguf([("k", U8, 1), ("k", U8, 2)], [])
    c["bad_dup_tensor"] = gguf([], [("t", [4], 0), ("t", [4], 0)], rng=rng)
    c["bad_unknown_type_4"] = gguf([], [("t", [32], 8)], rng=rng).replace(
        struct.pack("<IQ", 8, 0), struct.pack("<IQ", 4, 0))
    c["bad_ndims_0"] = (struct.pack("<IIQQ", 0x46554747, 3, 1, 0) + gstr("t")
                        + struct.pack("<IIQ", 0, 0, 0) + b"\0" * 64)
    c["bad_ndims_9"] = gguf([], [("t", [1] * 9, 0)], rng=rng)
    c["bad_dims_overflow"] = (struct.pack("<IIQQ", 0x46554747, 3, 1, 0)
                              + tensor_info("t", [2**32, 2**32], 0, 0) + b"\0" * 64)
    c["bad_misaligned"] = (struct.pack("<IIQQ", 0x46554747, 3, 1, 0)
                           + tensor_info("t", [4], 0, 16) + b"\0" * 96)
    c["bad_overlap"] = (struct.pack("<IIQQ", 0x46554747, 3, 2, 0) + tensor_info("a", [16], 0, 0)
                        + tensor_info("b", [8], 0, 32) + b"\0" * 128)
    c["bad_past_eof"] = gguf([], [("t", [64], 0)], rng=rng)[:-8]
    c["bad_align_3"] = gguf([("general.alignment", U32, 3)], [])
    c["bad_align_u64"] = gguf([("general.alignment", U64, 32)], [])
    c["bad_q8_0_ne33"] = (struct.pack("<IIQQ", 0x46554747, 3, 1, 0)
                          + tensor_info("t", [33], 8, 0) + b"\0" * 96)
    c["bad_string_past_end"] = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + kv("s", STR, "abcdef")[:-3]
    return c


def main():
    args = sys.argv[1:]
    mk = None
    if "--mkgguf" in args:
        i = args.index("--mkgguf")
        mk = args[i + 1]
        del args[i:i + 2]
    out = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "fuzz", "corpus",
                                            "gguf")
    os.makedirs(out, exist_ok=True)
    files = corpus()
    if mk:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "s.gguf")
            subprocess.run([mk, p, "--seed", "1"], check=True)
            with open(p, "rb") as fp:
                files["valid_mkgguf_sample"] = fp.read()
    for name, data in sorted(files.items()):
        with open(os.path.join(out, name), "wb") as fp:
            fp.write(data)
    print(f"wrote {len(files)} files to {out}")


if __name__ == "__main__":
    main()
