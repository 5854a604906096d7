"""The default corpus (stdlib pydoc_data) and the byte tokenizer."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from archsearch.data import corpus as corpus_mod
from archsearch.data.corpus import corpus_stats, default_documents, load_default_corpus, split_documents
from archsearch.data.tokenizer import ByteTokenizer, get_tokenizer
from archsearch.errors import DataError


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer()
    text = "Größe: naïve café ✓\n"
    ids = tok.encode(text)
    assert max(ids) < 256 and tok.decode(ids) == text
    assert tok.vocab_size == 260 and tok.pad_id == 256 and tok.eos_id == 257
    assert tok.decode([72, 105, tok.specials["sep"], tok.pad_id]) == "Hi<sep><pad>"
    assert np.array_equal(tok.encode_bytes(text.encode()), np.array(ids, dtype=np.uint16))


def test_get_tokenizer_errors():
    assert get_tokenizer("byte").name == "byte"
    with pytest.raises(DataError, match="unknown tokenizer 'gpt2'"):
        get_tokenizer("gpt2")


def test_hf_tokenizer_without_transformers_is_a_data_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(DataError, match="needs the 'transformers' package"):
        get_tokenizer("hf:gpt2")


def test_default_corpus_loads_offline_with_fixed_split():
    docs = default_documents()
    train_docs, val_docs = split_documents(docs)
    assert len(docs) > 150 and val_docs == docs[9::10] and len(train_docs) + len(val_docs) == len(docs)
    assert "assert" in docs[0]  # sorted topic keys: "assert" comes first
    splits = load_default_corpus("byte")
    assert splits.train.dtype == np.uint16 and int(splits.train.max()) <= 257
    stats = corpus_stats()
    # ~465-510K characters of real prose on Python 3.11-3.13; validation 6-11 % depending on the version
    assert 300_000 < stats["train_chars"] + stats["val_chars"] < 1_000_000
    assert 0.04 < stats["val_tokens"] / (stats["train_tokens"] + stats["val_tokens"]) < 0.2
    assert stats["train_tokens"] == len(splits.train) and stats["val_tokens"] == len(splits.val)
    # deterministic: a second load is the same array
    again = corpus_mod._load_default.__wrapped__("byte")
    assert np.array_equal(again.train, splits.train) and np.array_equal(again.val, splits.val)
    text = ByteTokenizer().decode(splits.val[:2000])
    assert text.count(" the ") > 5  # English prose


def test_missing_pydoc_data_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(DataError, match="lacks .*pydoc_data|pydoc_data module"):
        default_documents()
