"""test_backend_cli.py — the backend flags of ds4 and ds4-logits (--backend cpu|cuda, --gpu,
--n-cpu-moe) as a user meets them: documented in --help; --backend cpu runs and gives the same
logits as the forward without a backend (bit for bit); in a build without CUDA, --backend cuda
(or --gpu / --n-cpu-moe, which imply it) fails with one clear line naming `make cuda` and a
non-zero exit; bad values are refused. Uses a tiny generated model; run by `make test-py`.
The CUDA build (build/cuda/bin) is exercised on a GPU by tests/cuda/test_cuda_forward.
"""
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DS4_BUILD", "build"))
DS4 = os.path.join(BUILD, "bin", "ds4")
LOGITS = os.path.join(BUILD, "bin", "ds4-logits")
MKMODEL = os.path.join(BUILD, "bin", "ds4-mkmodel")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("backend") / "tiny.gguf")
    p = subprocess.run([MKMODEL, path, "--preset", "tiny", "--vocab", "1024", "--fill",
                        "random", "--layers", "3", "--quant", "q2"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return path


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, errors="replace",
                          timeout=120)


def test_help_documents_the_flags():
    p = run(DS4, "--help")
    assert p.returncode == 0
    for flag in ("--backend", "--gpu", "--n-cpu-moe", "DS4_CUDA_DEVICE", "make cuda"):
        assert flag in p.stdout, flag
    p = run(LOGITS, "--help")
    for flag in ("--backend", "--gpu", "--n-cpu-moe"):
        assert flag in p.stderr, flag


def test_ds4_cpu_backend(model):
    a = run(DS4, "-m", model, "-p", "Hello", "-n", "8", "--seed", "4")
    b = run(DS4, "-m", model, "-p", "Hello", "-n", "8", "--seed", "4", "--backend", "cpu")
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert "experts of layers 0..2 on the cpu backend" in b.stderr
    assert a.stdout == b.stdout


def test_logits_cpu_backend_bit_identical(model, tmp_path):
    toks = ",".join(str(i) for i in range(10, 90))
    for extra in ([], ["--decode"]):
        ref, got = tmp_path / "ref.npy", tmp_path / "got.npy"
        a = run(LOGITS, "-m", model, "--tokens", toks, "--fast", "--out", str(ref), *extra)
        b = run(LOGITS, "-m", model, "--tokens", toks, "--backend", "cpu", "--out", str(got),
                *extra)
        assert a.returncode == 0 and b.returncode == 0, b.stderr
        assert np.array_equal(np.load(ref), np.load(got))


@pytest.mark.parametrize("args", [["--backend", "cuda"], ["--gpu", "0"], ["--n-cpu-moe", "1"],
                                  ["--backend", "cuda", "--gpu", "1", "--n-cpu-moe", "2"]])
def test_cuda_in_a_cpu_build_fails_clearly(model, tmp_path, args):
    p = run(DS4, "-m", model, "-p", "hi", "-n", "2", *args)
    assert p.returncode != 0
    assert "built without CUDA" in p.stderr and "make cuda" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not p.stdout
    p = run(LOGITS, "-m", model, "--tokens", "1,2", "--out", str(tmp_path / "x.npy"), *args)
    assert p.returncode != 0
    assert "built without CUDA" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("args,words", [
    (["--backend", "metal"], "bad value"),
    (["--backend"], "needs a value"),
    (["--gpu", "-1"], "bad value"),
    (["--n-cpu-moe", "x"], "bad value"),
    (["--backend", "cpu", "--n-cpu-moe", "1"], "for --backend cuda"),
])
def test_bad_backend_arguments(model, args, words):
    p = run(DS4, "-m", model, "-p", "hi", *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_logits_unknown_backend(model, tmp_path):
    p = run(LOGITS, "-m", model, "--tokens", "1", "--out", str(tmp_path / "x.npy"),
            "--backend", "metal")
    assert p.returncode == 2 and "unknown backend 'metal'" in p.stderr
