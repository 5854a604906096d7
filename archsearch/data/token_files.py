"""Pre-tokenised corpora: raw token ``.bin`` files (nanoGPT, Megatron-LM) and ``.npy`` arrays, memory-mapped.

A raw ``.bin`` is a flat array of token ids (nanoGPT's prepare scripts write uint16; a Megatron-LM indexed dataset's
``.bin`` is the same, with its dtype in the ``.idx`` header beside it). Nothing is read whole: files are
memory-mapped and the vocabulary check scans them in chunks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from archsearch.errors import DataError

TOKEN_DTYPES = ("uint8", "uint16", "uint32", "int32", "int64")
# Megatron-LM indexed datasets: the dtype code in the .idx header (megatron/core/datasets/indexed_dataset.py).
MEGATRON_DTYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float64",
    7: "float32",
    8: "uint16",
}
_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
_CHECK_CHUNK = 1 << 24  # max-id scan: 16M tokens at a time


def _dtype_from_name(path: Path) -> str | None:
    for part in path.name.lower().split(".")[1:]:
        if part in ("u16", "uint16"):
            return "uint16"
        if part in ("u32", "uint32"):
            return "uint32"
    return None


def megatron_dtype(idx_path: Path) -> str:
    """The token dtype named in a Megatron-LM ``.idx`` header.

    Raises:
        DataError: when the file is not a Megatron index or names a non-integer dtype.
    """
    with open(idx_path, "rb") as f:
        head = f.read(len(_MEGATRON_MAGIC) + 9)
    if len(head) < len(_MEGATRON_MAGIC) + 9 or not head.startswith(_MEGATRON_MAGIC):
        raise DataError(f"{idx_path}: not a Megatron-LM index file (expected the MMIDIDX header)")
    (code,) = struct.unpack("<B", head[len(_MEGATRON_MAGIC) + 8 :])
    name = MEGATRON_DTYPES.get(code)
    if name is None or name.startswith("float"):
        raise DataError(f"{idx_path}: dtype code {code} ({name or 'unknown'}) is not an integer token dtype")
    return name


def infer_token_dtype(path: Path, dtype: str | None = None) -> tuple[str, str]:
    """(dtype, how it was decided) for a raw token file.

    Order: the ``dtype`` argument (the flag); a Megatron ``.idx`` beside the ``.bin``; a JSON sidecar
    ``<file>.json`` with a ``"dtype"`` key; a ``.u16``/``.u32`` (or ``.uint16``/``.uint32``) part in the file name;
    otherwise uint16, the dtype nanoGPT's prepare scripts write.

    Raises:
        DataError: for a dtype that is not an integer token dtype.
    """
    how = "--token-dtype"
    if dtype is None:
        idx = path.with_suffix(".idx")
        sidecar = path.with_name(path.name + ".json")
        if path.suffix == ".bin" and idx.is_file():
            dtype, how = megatron_dtype(idx), f"Megatron index {idx.name}"
        elif sidecar.is_file():
            try:
                dtype, how = str(json.loads(sidecar.read_text())["dtype"]), f"sidecar {sidecar.name}"
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f'{sidecar}: expected a JSON object with a "dtype" key ({exc})') from exc
        elif (named := _dtype_from_name(path)) is not None:
            dtype, how = named, "file name"
        else:
            dtype, how = "uint16", "default (nanoGPT's uint16)"
    if dtype not in TOKEN_DTYPES:
        raise DataError(
            f"{path}: token dtype {dtype!r} (from {how}) is not supported: expected one of {', '.join(TOKEN_DTYPES)}"
        )
    return dtype, how


class MappedTokens:
    """A read-only range of a token file, memory-mapped lazily in each process.

    Unlike ``np.memmap`` (which pickles its whole contents), this pickles as (path, dtype, offset, range), so
    DataLoader workers reopen the file instead of copying a corpus larger than RAM. Indexing returns numpy data;
    ``sub(a, b)`` gives another range without reading anything.

    Args:
        path: the file.
        dtype: its token dtype.
        offset: bytes before the first token (a .npy header).
        start: first token of the range.
        length: tokens in the range (None: to the end of the file).
    """

    def __init__(
        self, path: str | Path, dtype: str, offset: int = 0, start: int = 0, length: int | None = None
    ):
        self.path, self.dtype, self.offset, self.start = str(path), np.dtype(dtype), int(offset), int(start)
        if length is None:
            length = (Path(path).stat().st_size - self.offset) // self.dtype.itemsize - self.start
        self.length = int(length)
        self._map: np.ndarray | None = None

    def _array(self) -> np.ndarray:
        if self._map is None:
            full = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset)
            self._map = full[self.start : self.start + self.length]
        return self._map

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        return self._array()[key]

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self._array())
        return arr if dtype is None else arr.astype(dtype)

    def sub(self, a: int, b: int) -> MappedTokens:
        """Tokens ``a .. b`` of this range, as another lazily mapped range."""
        a, b, _ = slice(a, b).indices(self.length)
        return MappedTokens(self.path, self.dtype.name, self.offset, self.start + a, max(0, b - a))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_map"} | {"_map": None}

    def __repr__(self) -> str:
        return (
            f"MappedTokens({self.path!r}, {self.dtype.name}, tokens {self.start}..{self.start + self.length})"
        )


def sub_range(tokens, a: int, b: int):
    """``tokens[a:b]`` without reading a mapped file (an array slice otherwise)."""
    return tokens.sub(a, b) if isinstance(tokens, MappedTokens) else tokens[a:b]


def open_token_file(path: str | Path, dtype: str | None = None) -> MappedTokens:
    """Map a flat token file (``.bin`` raw ids or ``.npy``) read-only.

    Raises:
        DataError: for a missing or empty file, a size that is not a whole number of tokens, or a bad dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token file {path} does not exist")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from exc
        if arr.ndim != 1 or arr.dtype.name not in TOKEN_DTYPES:
            raise DataError(
                f"{path}: expected a 1-D array of token ids with dtype in {', '.join(TOKEN_DTYPES)}, "
                f"found shape {arr.shape} dtype {arr.dtype}"
            )
    else:
        name, how = infer_token_dtype(path, dtype)
        itemsize = np.dtype(name).itemsize
        size = path.stat().st_size
        if size % itemsize:
            raise DataError(
                f"{path}: size {size} bytes is not a multiple of {itemsize} (dtype {name} from {how}); "
                "wrong --token-dtype?"
            )
        if size == 0:
            raise DataError(f"token file {path} is empty")
        return MappedTokens(path, name)
    if len(arr) == 0:
        raise DataError(f"token file {path} is empty")
    return MappedTokens(path, arr.dtype.name, offset=arr.offset)


def check_token_ids(tokens: np.ndarray, vocab_size: int, description: str) -> int:
    """Scan ``tokens`` in chunks (memory stays bounded) and return the largest id.

    Raises:
        DataError: when an id is negative or >= ``vocab_size``, naming the first offending position.
    """
    top = -1
    for start in range(0, len(tokens), _CHECK_CHUNK):
        chunk = np.asarray(tokens[start : start + _CHECK_CHUNK])
        lo, hi = int(chunk.min()), int(chunk.max())
        if lo < 0 or hi >= vocab_size:
            bad = int(np.flatnonzero((chunk < 0) | (chunk >= vocab_size))[0])
            raise DataError(
                f"{description}: token id {int(chunk[bad])} at position {start + bad} is outside the model "
                f"vocabulary [0, {vocab_size}) (largest id in this chunk {hi}); pass the tokenizer that made "
                "these tokens (--tokenizer) or a larger --vocab-size, or check --token-dtype"
            )
        top = max(top, hi)
    return top
