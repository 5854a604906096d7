"""The user's own corpora: text files and folders, JSONL, token .bin/.npy files, Hugging Face datasets.

Token files are memory-mapped, never read whole. Text is tokenised once, streamed in chunks, into a cached flat
token file keyed by the sources' paths, sizes and modification times and the tokenizer, and memory-mapped from
there, so a corpus larger than RAM works. See docs/data.md for the accepted formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from archsearch.data.corpus import TokenSplits
from archsearch.data.token_files import MappedTokens, open_token_file, sub_range
from archsearch.data.tokenizer import ByteTokenizer, Tokenizer
from archsearch.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_CACHE_VERSION = 1
_TEXT_CHUNK_BYTES = 1 << 24  # tokenise 16 MiB at a time


# ----------------------------------------------------------------------------------------------------------------
# Text -> cached token file
# ----------------------------------------------------------------------------------------------------------------


def _byte_level(tokenizer: Tokenizer) -> bool:
    """True for the plain byte tokenizer, whose ids are the file's bytes (no decoding, any chunk boundary)."""
    return isinstance(tokenizer, ByteTokenizer) and tokenizer.name == "byte"


def default_cache_dir() -> Path:
    """``$ARCHSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/archsearch/tokens`` (``~/.cache/...``)."""
    if env := os.environ.get("ARCHSEARCH_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archsearch" / "tokens"


def _writable_cache(cache_dir: str | Path | None) -> Path:
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
        return path
    except OSError:
        if cache_dir is not None:
            raise DataError(f"token cache directory {path} is not writable") from None
        fallback = Path(tempfile.gettempdir()) / "archsearch-tokens"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _fingerprint(files: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f.resolve()), st.st_size, st.st_mtime_ns))
    return out


def cached_tokens(
    key_parts: dict, documents: Iterable[str | bytes], tokenizer: Tokenizer, cache_dir: str | Path | None
) -> tuple[np.ndarray, Path]:
    """Tokenise ``documents`` once into ``<cache>/<key>.bin`` (each followed by ``<eos>``) and memory-map it.

    The key hashes ``key_parts`` (sources with sizes and mtimes) and the tokenizer, so an edited file is
    re-tokenised. ``documents`` is only iterated on a cache miss; ``bytes`` items are pieces of one document
    (the byte tokenizer's fast path), a ``None`` item ends a document.

    Raises:
        DataError: when the documents hold no tokens at all.
    """
    key = dict(key_parts, tokenizer=tokenizer.name, version=_CACHE_VERSION)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    cache = _writable_cache(cache_dir)
    bin_path, meta_path = cache / f"{digest}.bin", cache / f"{digest}.json"
    dtype = tokenizer.token_dtype
    if not (bin_path.is_file() and meta_path.is_file()):
        print(f"archsearch: tokenising {key_parts.get('source')} into {bin_path}", file=sys.stderr)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        count = content = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in documents:
                    if piece is None:
                        ids = np.asarray([tokenizer.eos_id], dtype=dtype)
                    elif isinstance(piece, bytes) and _byte_level(tokenizer):
                        ids = tokenizer.encode_bytes(piece).astype(dtype, copy=False)
                        content += len(ids)
                    else:
                        text = piece.decode("utf-8", errors="replace") if isinstance(piece, bytes) else piece
                        ids = np.asarray(tokenizer.encode(text), dtype=dtype)
                        content += len(ids)
                    out.write(ids.tobytes())
                    count += len(ids)
            if content == 0:
                raise DataError(f"{key_parts.get('source')}: the corpus is empty (no text to tokenise)")
            os.replace(tmp, bin_path)
            meta = {"dtype": dtype.name, "tokens": count, "key": key}
            meta_path.write_text(json.dumps(meta, indent=1))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    meta = json.loads(meta_path.read_text())
    return MappedTokens(bin_path, meta["dtype"]), bin_path


def _file_pieces(files: list[Path], tokenizer: Tokenizer) -> Iterator[str | bytes | None]:
    """Each file as one document: byte chunks (byte tokenizer) or line-aligned text chunks, then ``None``."""
    for f in files:
        with open(f, "rb") as fh:
            leftover = b""
            while chunk := fh.read(_TEXT_CHUNK_BYTES):
                if _byte_level(tokenizer):
                    yield chunk
                    continue
                chunk = leftover + chunk
                cut = chunk.rfind(b"\n") + 1 or len(chunk)
                leftover = chunk[cut:]
                yield chunk[:cut].decode("utf-8", errors="replace")
            if leftover:
                yield leftover.decode("utf-8", errors="replace")
        yield None


def _jsonl_pieces(path: Path, text_field: str) -> Iterator[str | None]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict) or text_field not in record:
                keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                raise DataError(
                    f"{path}:{lineno}: no text field {text_field!r} (found: {keys}); choose the field with --text-field"
                )
            value = record[text_field]
            if not isinstance(value, str):
                raise DataError(
                    f"{path}:{lineno}: field {text_field!r} is {type(value).__name__}, expected a string"
                )
            yield value
            yield None


# ----------------------------------------------------------------------------------------------------------------
# Data spec -> train/validation tokens
# ----------------------------------------------------------------------------------------------------------------


def split_tail(tokens: np.ndarray, val_fraction: float, description: str) -> TokenSplits:
    """Train = all but the last ``val_fraction`` of the tokens, validation = the last part (views, no copy)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(len(tokens) * val_fraction)))
    return TokenSplits(
        train=sub_range(tokens, 0, len(tokens) - n_val),
        val=sub_range(tokens, len(tokens) - n_val, len(tokens)),
        description=description,
    )


def load_user_corpus(
    data: str,
    tokenizer: Tokenizer,
    *,
    val_fraction: float = 0.05,
    text_field: str = "text",
    token_dtype: str | None = None,
    cache_dir: str | Path | None = None,
) -> TokenSplits:
    """Train/validation tokens for a data spec other than ``default``.

    Args:
        data: a path (text file, folder of .txt/.md, .jsonl, token .bin/.npy, folder with train.bin [+ val.bin])
            or ``hf:<dataset>[:split]``.
        tokenizer: tokenises text sources; token files are taken as already tokenised.
        val_fraction: the last fraction of the tokens that is validation (unless a val.bin is given).
        text_field: the JSONL / dataset field holding the text.
        token_dtype: dtype of raw .bin token files (else inferred, see ``infer_token_dtype``).
        cache_dir: where tokenised text is cached (default ``default_cache_dir()``).

    Raises:
        DataError: for a missing path, an unsupported file type, an empty corpus or a malformed file.
    """
    if data.startswith("hf:"):
        return _load_hf_dataset(data, tokenizer, val_fraction, text_field, cache_dir)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"data path {data!r} does not exist (expected 'default', a file, a folder or hf:<dataset>)"
        )
    if path.is_dir():
        if (path / "train.bin").is_file():
            train = open_token_file(path / "train.bin", token_dtype)
            if (path / "val.bin").is_file():
                val = open_token_file(path / "val.bin", token_dtype)
                return TokenSplits(train=train, val=val, description=f"{path}/train.bin + val.bin")
            return split_tail(train, val_fraction, f"{path}/train.bin")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"folder {path} holds no .txt or .md files (and no train.bin)")
        tokens, _ = cached_tokens(
            {"source": str(path), "files": _fingerprint(files)},
            _file_pieces(files, tokenizer),
            tokenizer,
            cache_dir,
        )
        return split_tail(tokens, val_fraction, f"{path} ({len(files)} text files)")
    suffix = path.suffix.lower()
    if suffix in (".bin", ".npy"):
        return split_tail(open_token_file(path, token_dtype), val_fraction, str(path))
    if suffix in JSONL_SUFFIXES:
        tokens, _ = cached_tokens(
            {"source": str(path), "files": _fingerprint([path]), "text_field": text_field},
            _jsonl_pieces(path, text_field),
            tokenizer,
            cache_dir,
        )
        return split_tail(tokens, val_fraction, str(path))
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the corpus is empty (no text to tokenise)")
    tokens, _ = cached_tokens(
        {"source": str(path), "files": _fingerprint([path])},
        _file_pieces([path], tokenizer),
        tokenizer,
        cache_dir,
    )
    return split_tail(tokens, val_fraction, str(path))


def _load_hf_dataset(
    data: str, tokenizer: Tokenizer, val_fraction: float, text_field: str, cache_dir: str | Path | None
) -> TokenSplits:
    spec = data[3:]
    name, _, split = spec.partition(":")
    split = split or "train"
    if not name:
        raise DataError(f"data spec {data!r}: expected hf:<dataset>[:split]")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"data {data!r} needs the 'datasets' package, which is not installed (pip install datasets)"
        ) from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types for a missing cache entry or split
        raise DataError(
            f"Hugging Face dataset {name!r} split {split!r} could not be loaded from the local cache "
            f"({type(exc).__name__}: {exc}); archsearch reads datasets offline only"
        ) from exc
    columns = getattr(ds, "column_names", None)
    if columns is not None and text_field not in columns:
        raise DataError(
            f"dataset {name!r}: no text field {text_field!r} (columns: {', '.join(columns)}); use --text-field"
        )

    def pieces() -> Iterator[str | None]:
        for row in ds:
            yield str(row[text_field])
            yield None

    fingerprint = getattr(ds, "_fingerprint", None)
    tokens, _ = cached_tokens(
        {"source": data, "fingerprint": fingerprint, "text_field": text_field, "rows": len(ds)},
        pieces(),
        tokenizer,
        cache_dir,
    )
    return split_tail(tokens, val_fraction, data)
