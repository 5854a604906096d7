"""Language-model samples from a flat token array: random windows for training, contiguous ones for validation."""

from __future__ import annotations

import numpy as np
import torch

from archsearch.data.rng import sample_rng
from archsearch.errors import DataError


class LMWindows:
    """Windows of ``seq_len + 1`` tokens: ``input_ids = window[:-1]``, ``labels = window[1:]``, level -1.

    Args:
        tokens: flat token ids (an in-memory array or a read-only memmap; only the window is read).
        seq_len: tokens per sample.
        description: names the split in errors ("train split of data.txt").

    Raises:
        DataError: when the split is shorter than one sample (``seq_len + 1`` tokens).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, description: str = "corpus"):
        if len(tokens) < seq_len + 1:
            raise DataError(
                f"{description} has {len(tokens)} tokens, fewer than one sample of seq_len + 1 = {seq_len + 1}; "
                "use more data, a shorter --seq-len or a smaller validation fraction"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.description = description

    def _window(self, offset: int) -> dict:
        window = torch.from_numpy(
            np.asarray(self.tokens[offset : offset + self.seq_len + 1]).astype(np.int64)
        )
        return {"input_ids": window[:-1], "labels": window[1:], "level": -1}

    def sample(self, index: int, seed: int) -> dict:
        """A window at a random offset that is a pure function of ``(seed, index)``."""
        offset = int(sample_rng(seed, index, "lm").integers(0, len(self.tokens) - self.seq_len))
        return self._window(offset)

    @property
    def num_windows(self) -> int:
        """Non-overlapping windows in the array (validation reads these in order)."""
        return (len(self.tokens) - 1) // self.seq_len

    def window(self, k: int) -> dict:
        """The ``k``-th non-overlapping window (tokens ``k*seq_len .. (k+1)*seq_len``)."""
        if not 0 <= k < self.num_windows:
            raise IndexError(k)
        return self._window(k * self.seq_len)
