"""The default LM corpus: the Python documentation text shipped with the standard library (``pydoc_data``).

``pydoc_data.topics.topics`` holds the Language Reference topics that ``help()`` shows (about 465K characters of
real English technical prose on Python 3.11). It is present on every normal CPython install, so proxies train on a
fresh machine with no network. Documents are the sections of the topics (a topic split at its reStructuredText
headings), in sorted-topic order; every 10th document (indices 9, 19, 29, ...) is validation, the rest train, each
document followed by ``<eos>``. The exact size depends on the Python version: see docs/data.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from archsearch.data.tokenizer import Tokenizer, get_tokenizer
from archsearch.errors import DataError

VAL_EVERY = 10  # document i is validation when i % VAL_EVERY == VAL_EVERY - 1

# A heading is a text line underlined by a run of one punctuation character (reStructuredText).
_UNDERLINE = re.compile(r"([=*\-~^\"'`#+])\1{2,}")


@dataclass(frozen=True)
class TokenSplits:
    """A corpus as token arrays (in memory or memory-mapped), one per split.

    Attributes:
        train: flat token ids of the training split.
        val: flat token ids of the validation split.
        description: where the tokens came from (for logs and errors).
    """

    train: np.ndarray
    val: np.ndarray
    description: str


def default_documents() -> list[str]:
    """The default corpus as documents: the sections of every ``pydoc_data`` topic, in sorted-topic order.

    Raises:
        DataError: when this Python was installed without ``pydoc_data`` (some stripped distributions).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise DataError(
            "the default corpus needs the standard library's pydoc_data module (the Python documentation "
            "topics), which this Python installation lacks (a stripped or minimal build); install the full "
            "Python standard library, or pass your own data: a text file, a folder of .txt/.md files, JSONL "
            "or a token .bin file"
        ) from exc
    if not topics:
        raise DataError("the default corpus (pydoc_data.topics) is empty in this Python installation")
    docs: list[str] = []
    for key in sorted(topics):
        docs.extend(_sections(topics[key]))
    return docs


def _sections(text: str) -> list[str]:
    """Split one topic at its headings (a line followed by an underline at least as long)."""
    lines = text.split("\n")
    out: list[list[str]] = [[]]
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_heading = line.strip() and _UNDERLINE.fullmatch(nxt) and len(nxt) >= len(line.rstrip()) - 1
        if is_heading and any(s.strip() for s in out[-1]):
            out.append([])
        out[-1].append(line)
    return [d for d in ("\n".join(s).strip("\n") for s in out) if d]


def split_documents(docs: list[str]) -> tuple[list[str], list[str]]:
    """(train, validation) documents: every ``VAL_EVERY``-th document goes to validation."""
    train = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_EVERY - 1]
    val = [d for i, d in enumerate(docs) if i % VAL_EVERY == VAL_EVERY - 1]
    return train, val


def encode_documents(docs: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """Documents to one flat token array, each document followed by ``<eos>``."""
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer.encode(d))
        ids.append(tokenizer.eos_id)
    return np.asarray(ids, dtype=tokenizer.token_dtype)


@lru_cache(maxsize=4)
def _load_default(tokenizer_name: str) -> TokenSplits:
    tokenizer = get_tokenizer(tokenizer_name)
    train_docs, val_docs = split_documents(default_documents())
    train, val = encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer)
    train.setflags(write=False)
    val.setflags(write=False)
    return TokenSplits(
        train=train, val=val, description=f"default corpus (pydoc_data topics, {tokenizer_name})"
    )


def load_default_corpus(tokenizer: Tokenizer | str = "byte") -> TokenSplits:
    """The default corpus tokenised with ``tokenizer``, fixed train/validation split (cached per process).

    Raises:
        DataError: when ``pydoc_data`` is missing.
    """
    tok = get_tokenizer(tokenizer)
    if isinstance(tokenizer, str) or tok.name == "byte":
        return _load_default(tok.name)
    train_docs, val_docs = split_documents(default_documents())
    return TokenSplits(
        train=encode_documents(train_docs, tok),
        val=encode_documents(val_docs, tok),
        description=f"default corpus (pydoc_data topics, {tok.name})",
    )


def corpus_stats(tokenizer: Tokenizer | str = "byte") -> dict[str, int]:
    """Sizes of the default corpus: documents, characters and tokens per split (the numbers docs/data.md quotes)."""
    from pydoc_data.topics import topics

    docs = default_documents()
    train_docs, val_docs = split_documents(docs)
    splits = load_default_corpus(tokenizer)
    return {
        "topics": len(topics),
        "documents": len(docs),
        "train_documents": len(train_docs),
        "val_documents": len(val_docs),
        "train_chars": sum(len(d) for d in train_docs),
        "val_chars": sum(len(d) for d in val_docs),
        "train_tokens": int(len(splits.train)),
        "val_tokens": int(len(splits.val)),
    }
