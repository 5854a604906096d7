"""User corpora: token files (nanoGPT / Megatron / .npy), text, folders, JSONL, HF datasets, and every bad-data
error."""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from archsearch.data import files, token_files
from archsearch.data.files import load_user_corpus
from archsearch.data.token_files import MappedTokens, check_token_ids, infer_token_dtype, open_token_file
from archsearch.data.tokenizer import ByteTokenizer
from archsearch.errors import DataError

TOK = ByteTokenizer()


def _write_megatron(prefix, tokens: np.ndarray, code: int):
    tokens.tofile(f"{prefix}.bin")
    with open(f"{prefix}.idx", "wb") as f:
        f.write(
            b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code) + struct.pack("<QQ", 1, 2)
        )
        f.write(np.array([len(tokens)], np.int32).tobytes() + np.array([0], np.int64).tobytes())
        f.write(np.array([0, 1], np.int64).tobytes())


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_memmap_round_trip(tmp_path, dtype):
    tokens = np.random.default_rng(0).integers(0, 60_000, size=5000).astype(dtype)
    path = tmp_path / f"train.{'u32.' if dtype == 'uint32' else ''}bin"
    tokens.tofile(path)  # nanoGPT's format: a flat array of ids
    back = open_token_file(path)
    assert isinstance(back, MappedTokens) and back.dtype == np.dtype(dtype)
    assert np.array_equal(back, tokens)
    splits = load_user_corpus(str(path), TOK, val_fraction=0.1)
    assert len(splits.val) == 500 and np.array_equal(np.concatenate([splits.train, splits.val]), tokens)
    assert np.array_equal(splits.val[10:20], tokens[4510:4520])
    # workers receive a pickled split: it must carry the file's location, not its contents
    blob = pickle.dumps(splits.val)
    assert len(blob) < 1000 and np.array_equal(pickle.loads(blob), tokens[4500:])


def test_dtype_inference_order(tmp_path):
    path = tmp_path / "data.bin"
    np.arange(10, dtype=np.uint16).tofile(path)
    assert infer_token_dtype(path) == ("uint16", "default (nanoGPT's uint16)")
    (tmp_path / "data.bin.json").write_text(json.dumps({"dtype": "uint32"}))
    assert infer_token_dtype(path)[0] == "uint32"
    assert infer_token_dtype(path, "uint16")[0] == "uint16"  # the flag wins
    _write_megatron(tmp_path / "mega", np.arange(100, dtype=np.int32), code=4)
    assert infer_token_dtype(tmp_path / "mega.bin") == ("int32", "Megatron index mega.idx")
    assert np.array_equal(open_token_file(tmp_path / "mega.bin"), np.arange(100))
    np.save(tmp_path / "t.npy", np.arange(50, dtype=np.uint32))
    assert open_token_file(tmp_path / "t.npy").dtype == np.uint32


def test_nanogpt_folder_uses_train_and_val_bins(tmp_path):
    np.arange(3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(700, dtype=np.uint16).tofile(tmp_path / "val.bin")
    splits = load_user_corpus(str(tmp_path), TOK)
    assert len(splits.train) == 3000 and len(splits.val) == 700


def test_text_file_is_tokenised_once_into_a_cache(tmp_path, monkeypatch):
    text = "The quick brown fox jumps over the lazy dog.\n" * 200
    src = tmp_path / "corpus.txt"
    src.write_text(text)
    cache = tmp_path / "cache"
    splits = load_user_corpus(str(src), TOK, val_fraction=0.1, cache_dir=cache)
    both = np.concatenate([splits.train, splits.val])
    assert TOK.decode(both[:-1]) == text and both[-1] == TOK.eos_id
    assert len(list(cache.glob("*.bin"))) == 1
    # a second load memory-maps the cache without tokenising again
    monkeypatch.setattr(
        files, "_file_pieces", lambda *a: (pytest.fail("re-tokenised a cached file") for _ in [0])
    )
    again = load_user_corpus(str(src), TOK, val_fraction=0.1, cache_dir=cache)
    assert isinstance(again.train, MappedTokens) and np.array_equal(again.train, splits.train)
    monkeypatch.undo()
    # an edited file (new size and mtime) is tokenised again
    src.write_text(text + "More.\n")
    os.utime(src, ns=(1, 10**18))
    edited = load_user_corpus(str(src), TOK, val_fraction=0.1, cache_dir=cache)
    assert len(edited.train) + len(edited.val) == len(both) + 6
    assert len(list(cache.glob("*.bin"))) == 2


def test_folder_and_jsonl(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha " * 100)
    (folder / "sub" / "b.md").write_text("# beta\n" * 100)
    (folder / "skip.py").write_text("ignored = True\n")
    splits = load_user_corpus(str(folder), TOK, cache_dir=tmp_path / "c")
    text = TOK.decode(np.concatenate([splits.train, splits.val]))
    assert text == "alpha " * 100 + "<eos>" + "# beta\n" * 100 + "<eos>"

    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"body": f"record {i} " * 20, "id": i}) for i in range(30)))
    splits = load_user_corpus(str(jl), TOK, text_field="body", cache_dir=tmp_path / "c")
    text = TOK.decode(np.concatenate([splits.train, splits.val]))
    assert text.count("<eos>") == 30 and text.startswith("record 0 record 0")


def test_hf_dataset_through_a_stub_module(tmp_path, monkeypatch):
    rows = [{"text": f"row {i} " * 30} for i in range(20)]
    stub = types.SimpleNamespace(load_dataset=lambda name, split: _Rows(rows))
    monkeypatch.setitem(sys.modules, "datasets", stub)
    splits = load_user_corpus("hf:tiny/stories:validation", TOK, cache_dir=tmp_path)
    assert TOK.decode(np.concatenate([splits.train, splits.val])).count("<eos>") == 20


class _Rows(list):
    column_names = ["text"]
    _fingerprint = "abc"


# ---------------------------------------------------------------------------------------------------------------
# Bad data: each one a DataError that says what is wrong
# ---------------------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_user_corpus(str(tmp_path / "nope.txt"), TOK)


def test_empty_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        load_user_corpus(str(tmp_path / "empty.txt"), TOK, cache_dir=tmp_path / "c")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load_user_corpus(str(tmp_path / "empty.bin"), TOK)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        load_user_corpus(str(tmp_path / "blank"), TOK, cache_dir=tmp_path / "c")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="holds no .txt or .md files"):
        load_user_corpus(str(tmp_path / "none"), TOK)
    assert not list((tmp_path / "c").glob("*.tmp"))  # no half-written cache left behind


def test_wrong_dtype(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="not a multiple of 2 .*wrong --token-dtype"):
        open_token_file(path)
    with pytest.raises(DataError, match="token dtype 'float32'.*not supported"):
        open_token_file(path, "float32")
    _write_megatron(tmp_path / "f", np.zeros(4, np.float32), code=7)
    with pytest.raises(DataError, match="dtype code 7 .*float32.* not an integer"):
        open_token_file(tmp_path / "f.bin")
    np.save(tmp_path / "f.npy", np.zeros(4, np.float32))
    with pytest.raises(DataError, match="expected a 1-D array of token ids"):
        open_token_file(tmp_path / "f.npy")


def test_token_id_outside_vocabulary_is_found_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(token_files, "_CHECK_CHUNK", 1000)  # force several chunks
    tokens = np.full(5000, 7, dtype=np.uint16)
    tokens[3456] = 50_000
    assert check_token_ids(tokens[:3000], 260, "x") == 7
    with pytest.raises(DataError, match="token id 50000 at position 3456 is outside the model vocabulary"):
        check_token_ids(tokens, 260, "x")


def test_bad_jsonl(tmp_path):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "fine"}\n{"content": "no text key"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no text field 'text' \(found: content\)"):
        load_user_corpus(str(jl), TOK, cache_dir=tmp_path / "c")
    jl.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        load_user_corpus(str(jl), TOK, cache_dir=tmp_path / "c")


def test_hf_dataset_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="needs the 'datasets' package"):
        load_user_corpus("hf:roneneldan/TinyStories", TOK)


class _WordTokenizer(ByteTokenizer):
    """A stand-in for an HF tokenizer: not the byte fast path, so text goes through line-aligned chunks."""

    def __init__(self):
        super().__init__()
        self.name = "test-words"
        self.calls = 0

    def encode(self, text):
        self.calls += 1
        return super().encode(text)


def test_text_is_streamed_in_line_aligned_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_TEXT_CHUNK_BYTES", 64)
    text = "".join(f"line {i}: some words here\n" for i in range(100))
    (tmp_path / "big.txt").write_text(text)
    tok = _WordTokenizer()
    splits = load_user_corpus(str(tmp_path / "big.txt"), tok, cache_dir=tmp_path / "c")
    assert tok.calls > 30  # many chunks, never the whole file at once
    assert TOK.decode(np.concatenate([splits.train, splits.val])) == text + "<eos>"
