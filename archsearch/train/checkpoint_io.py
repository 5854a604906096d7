"""Atomic checkpoint writes: a crash mid-save leaves the previous checkpoint whole and loadable.

The checkpoint is written to a temporary file in the same directory, flushed and fsynced, then moved over the
target with ``os.replace`` (atomic on POSIX and Windows within one file system), and the directory is fsynced so the
rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, all or nothing.

    Raises:
        Whatever ``torch.save`` or the file system raises; the temporary file is removed and ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover  (Windows cannot open directories)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover  (some file systems refuse)
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic saves and ``weights_only=True`` loads.

    Everything archsearch puts in a checkpoint is plain data (tensors, numbers, strings, lists, dicts), so loading
    never unpickles code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = lambda storage, loc: storage, weights_only=None
    ):
        return torch.load(path, map_location=map_location, weights_only=True)
