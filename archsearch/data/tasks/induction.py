"""Induction heads (Olsson et al. 2022; Zoology): recall the token that followed a trigger earlier.

Layout: random tokens, with ``<sep> x`` somewhere, and ``<sep>`` again at position ``seq_len - 2`` followed by
``x`` (teacher forcing); the label at the final ``<sep>`` is ``x``. The difficulty level is the gap: the number of
tokens between ``x`` and the final ``<sep>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from archsearch.data.rng import sample_rng
from archsearch.data.tasks.base import Task, check_levels, check_range
from archsearch.data.tokenizer import Tokenizer


@dataclass
class InductionConfig:
    """Induction-head settings.

    Attributes:
        seq_len: tokens per sample (fully used).
        gaps: gaps between the recalled token and the final trigger (the levels); None = seq_len/16, seq_len/4 and
            the largest possible gap ``seq_len - 4``.
        token_range: [low, high) ids of the random tokens; None = the whole base vocabulary (bytes 0-255).
    """

    seq_len: int = 256
    gaps: tuple[int, ...] | None = None
    token_range: tuple[int, int] | None = None


class InductionTask(Task):
    """Induction heads with ``<sep>`` as the trigger."""

    name = "induction"
    Config = InductionConfig
    metric = "sequence"

    def __init__(self, config: InductionConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        self.token_range = check_range(
            "induction",
            "token_range",
            config.token_range or (0, tokenizer.base_vocab_size),
            tokenizer.vocab_size,
            2,
        )
        most = config.seq_len - 4
        if config.gaps is None:
            self._levels = tuple(sorted({max(1, config.seq_len // 16), max(1, config.seq_len // 4), most}))
        else:
            self._levels = check_levels("induction", "gaps", config.gaps, 0, most)

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    def sample(self, index: int, seed: int) -> dict:
        """Sample ``index``: the first trigger ``level_for(index)`` tokens before the final one."""
        rng = sample_rng(seed, index, self.name)
        gap = self.level_for(index)
        seq_len, trigger = self.config.seq_len, self.tokenizer.specials["sep"]
        ids = rng.integers(*self.token_range, size=seq_len).tolist()
        first = seq_len - 4 - gap  # trigger at first, x at first + 1, gap tokens, trigger at seq_len - 2, x
        ids[first] = ids[seq_len - 2] = trigger
        ids[seq_len - 1] = ids[first + 1]
        return self._pack(ids, [(seq_len - 1, seq_len)], gap)
