"""test_tokenizer_ref.py — ds4's tokenizer against the `tokenizers` package (Hugging Face,
an independent implementation pinned in requirements-dev.txt).

The vocabulary ds4 trains for generated models (`ds4-tok vocab`, the same function
ds4-mkmodel calls) is read from its GGUF with the gguf package and loaded into a
tokenizers ByteLevel BPE: Split(ds4's pre-tokenizer regex, isolated), then ByteLevel
without its own regex. Both must give the same ids for every line of
tests/data/tokenizer_corpus.txt (English, Italian, code, CJK, emoji, whitespace runs, other
scripts, special-token strings as plain text), for the whole corpus at once, and for the
training text; decoding must give the text back. Run by `make test-py`.
"""
import os
import subprocess

import pytest

import gguf

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DS4_BUILD", "build"))
DS4_TOK = os.path.join(BUILD, "bin", "ds4-tok")
CORPUS = os.path.join(ROOT, "tests", "data", "tokenizer_corpus.txt")
TRAIN_TEXT = os.path.join(ROOT, "data", "bpe_text.txt")


def run(*args, **kw):
    p = subprocess.run([DS4_TOK, *args], capture_output=True, **kw)
    assert p.returncode == 0, p.stderr
    return p.stdout


def strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


@pytest.fixture(scope="module", params=[512, 4096, 129280])
def vocab(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vocab") / f"vocab{request.param}.gguf")
    run("vocab", path, "--n-vocab", str(request.param))
    r = gguf.GGUFReader(path)
    tokens = strings(r, "tokenizer.ggml.tokens")
    merges = strings(r, "tokenizer.ggml.merges")
    assert len(tokens) == request.param
    regex = run("regex").decode("utf-8").rstrip("\n")
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                     merges=[tuple(m.split(" ", 1)) for m in merges], ignore_merges=False)
    tk = Tokenizer(bpe)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    return path, tk, tokens


def lines_of(text):
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def test_corpus_lines(vocab):
    path, tk, tokens = vocab
    text = open(CORPUS, encoding="utf-8", newline="").read()
    ours = run("encode", path, "--lines", CORPUS).decode().splitlines()
    lines = lines_of(text)
    assert len(ours) == len(lines)
    bad = []
    for line, o in zip(lines, ours):
        ref = tk.encode(line, add_special_tokens=False).ids
        mine = [int(x) for x in o.split()]
        if ref != mine:
            bad.append((line, [tokens[i] for i in ref], [tokens[i] for i in mine]))
    assert not bad, bad[:3]


@pytest.mark.parametrize("which", ["corpus", "training text"])
def test_whole_text(vocab, which):
    path, tk, _ = vocab
    f = CORPUS if which == "corpus" else TRAIN_TEXT
    text = open(f, encoding="utf-8", newline="").read()
    mine = [int(x) for x in run("encode", path, f).split()]
    ref = tk.encode(text, add_special_tokens=False).ids
    assert mine == ref
    assert tk.decode(ref) == text
    back = run("decode", path, *map(str, mine))
    assert back == text.encode("utf-8")


def test_special_strings_are_plain_text(vocab):
    path, tk, tokens = vocab
    specials = [t for t in tokens[:7]]
    text = "x".join(specials)
    mine = [int(x) for x in run("encode", path, input=text.encode()).split()]
    assert not set(mine) & set(range(7))
    assert mine == tk.encode(text, add_special_tokens=False).ids
    templ = [int(x) for x in run("encode", path, "--template", input=text.encode()).split()]
    assert [i for i in templ if i < 7] == list(range(7))
