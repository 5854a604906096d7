"""Selective copying (Gu & Dao 2023, Mamba; Zoology): copy the data tokens scattered among blanks, in order.

Layout: a context of ``seq_len - 1 - n`` positions where ``n`` data tokens sit at random positions and every
other position is ``<blank>``, then ``<sep>``, then the ``n`` data tokens in order (teacher forcing). The copied
tokens are labelled; the difficulty level is ``n``; accuracy is per copied token (``metric = "token"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from archsearch.data.rng import sample_rng
from archsearch.data.tasks.base import Task, check_levels, check_range
from archsearch.data.tokenizer import ByteTokenizer, Tokenizer


@dataclass
class SelectiveCopyConfig:
    """Selective-copying settings.

    Attributes:
        seq_len: tokens per sample (no padding: the context shrinks as ``n`` grows).
        num_tokens: numbers of data tokens to copy (the levels); None = 4, 8, 16 (those that fit).
        token_range: [low, high) ids of data tokens; None = the 16 letters "a".."p" for the byte tokenizer
            (16 symbols as in the Mamba paper), ids 0-15 otherwise.
    """

    seq_len: int = 256
    num_tokens: tuple[int, ...] | None = None
    token_range: tuple[int, int] | None = None


class SelectiveCopyTask(Task):
    """Selective copying with ``<blank>`` noise and a ``<sep>`` marker."""

    name = "selective_copy"
    Config = SelectiveCopyConfig
    metric = "token"

    def __init__(self, config: SelectiveCopyConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        default = (97, 113) if isinstance(tokenizer, ByteTokenizer) else (0, 16)
        self.token_range = check_range(
            "selective_copy", "token_range", config.token_range or default, tokenizer.vocab_size, 2
        )
        most = (config.seq_len - 1) // 2  # at least as many context positions as tokens
        if config.num_tokens is None:
            self._levels = tuple(n for n in (4, 8, 16) if n <= most) or (most,)
        else:
            self._levels = check_levels("selective_copy", "num_tokens", config.num_tokens, 1, most)

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    def sample(self, index: int, seed: int) -> dict:
        """Sample ``index``: ``level_for(index)`` data tokens among blanks, ``<sep>``, then the copy."""
        rng = sample_rng(seed, index, self.name)
        n = self.level_for(index)
        context = self.config.seq_len - 1 - n
        data = rng.integers(*self.token_range, size=n)
        where = np.sort(rng.choice(context, size=n, replace=False))
        ids = np.full(context, self.tokenizer.specials["blank"], dtype=np.int64)
        ids[where] = data
        seq = ids.tolist() + [self.tokenizer.specials["sep"]] + data.tolist()
        return self._pack(seq, [(context + 1, len(seq))], n)
