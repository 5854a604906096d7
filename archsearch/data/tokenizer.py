"""Tokenizers: a byte-level one (always available) and an optional Hugging Face one (local cache only).

The byte tokenizer maps UTF-8 bytes to ids 0-255 and adds four special ids the synthetic tasks need:
``<pad>`` 256 (padding, never scored), ``<eos>`` 257 (end of a document in a corpus), ``<sep>`` 258 (the "copy now"
marker of selective copying and the trigger of induction heads) and ``<blank>`` 259 (the noise of selective
copying). Its vocabulary size is 260.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from archsearch.errors import DataError

SPECIAL_NAMES = ("pad", "eos", "sep", "blank")


@dataclass
class Tokenizer:
    """What the data pipeline needs from a tokenizer.

    Attributes:
        name: the spec that recreates it ("byte" or "hf:<name>"); part of the cache key of tokenised corpora.
        vocab_size: number of ids (all ids are < vocab_size).
        base_vocab_size: ids below this are ordinary tokens (bytes or the HF vocabulary); specials sit above or
            are the HF tokenizer's own.
        specials: id of each special token, keys ``pad``, ``eos``, ``sep``, ``blank``.
    """

    name: str
    vocab_size: int
    base_vocab_size: int
    specials: dict[str, int] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.specials["pad"]

    @property
    def eos_id(self) -> int:
        return self.specials["eos"]

    @property
    def token_dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id (uint16 up to 65536 ids, else uint32)."""
        return np.dtype(np.uint16) if self.vocab_size <= 2**16 else np.dtype(np.uint32)

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, ids) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0-255, plus ``<pad>`` 256, ``<eos>`` 257, ``<sep>`` 258, ``<blank>`` 259."""

    def __init__(self):
        super().__init__(
            name="byte",
            vocab_size=256 + len(SPECIAL_NAMES),
            base_vocab_size=256,
            specials={n: 256 + i for i, n in enumerate(SPECIAL_NAMES)},
        )

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Raw bytes straight to ids (the fast path for large files)."""
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        """Bytes back to text; special ids render as ``<pad>`` etc."""
        out: list[str] = []
        run = bytearray()
        names = {v: k for k, v in self.specials.items()}
        for i in (int(t) for t in ids):
            if i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            out.append(f"<{names.get(i, str(i))}>")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer loaded from the local cache (``HF_HUB_OFFLINE``); specials it lacks are appended.

    Args:
        name: a hub name already in the local cache, a local directory, or a ``tokenizer.json`` file.

    Raises:
        DataError: when neither ``transformers`` nor ``tokenizers`` is installed, or the tokenizer is not cached.
    """

    def __init__(self, name: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self._encode, self._decode, base, eos, pad = _load_hf(name)
        specials: dict[str, int] = {}
        next_id = base
        for key, own in (("eos", eos), ("pad", pad)):
            if own is None:
                own, next_id = next_id, next_id + 1
            specials[key] = own
        for key in ("sep", "blank"):
            specials[key], next_id = next_id, next_id + 1
        super().__init__(name=f"hf:{name}", vocab_size=next_id, base_vocab_size=base, specials=specials)

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids if int(i) < self.base_vocab_size])


def _load_hf(name: str):
    """(encode, decode, vocab size, eos id or None, pad id or None) for an HF tokenizer, from local files only."""
    if name.endswith(".json") and os.path.isfile(name):
        try:
            from tokenizers import Tokenizer as RawTokenizer
        except ImportError as exc:
            raise DataError(
                f"tokenizer file '{name}' needs the 'tokenizers' package, which is not installed "
                "(pip install tokenizers)"
            ) from exc
        tok = RawTokenizer.from_file(name)
        return (
            lambda s: tok.encode(s, add_special_tokens=False).ids,
            tok.decode,
            tok.get_vocab_size(with_added_tokens=True),
            None,
            None,
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise DataError(
            f"tokenizer 'hf:{name}' needs the 'transformers' package, which is not installed "
            "(pip install transformers), or pass a tokenizer.json file (needs 'tokenizers')"
        ) from exc
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors for a missing cache entry
        raise DataError(
            f"tokenizer 'hf:{name}' is not in the local Hugging Face cache ({type(exc).__name__}: {exc}); "
            "archsearch loads tokenizers offline only: download it once with network access"
        ) from exc
    return (
        lambda s: tok.encode(s, add_special_tokens=False),
        tok.decode,
        len(tok),
        tok.eos_token_id,
        tok.pad_token_id,
    )


def get_tokenizer(spec: str | Tokenizer = "byte") -> Tokenizer:
    """The tokenizer named by ``spec``: ``"byte"`` or ``"hf:<name or path>"`` (or a Tokenizer, returned as is).

    Raises:
        DataError: for an unknown spec or an HF tokenizer that cannot be loaded offline.
    """
    if isinstance(spec, Tokenizer):
        return spec
    if spec in ("byte", "bytes", None):
        return ByteTokenizer()
    if isinstance(spec, str) and spec.startswith("hf:") and len(spec) > 3:
        return HFTokenizer(spec[3:])
    raise DataError(f"unknown tokenizer {spec!r}: expected 'byte' or 'hf:<name or path>'")
