"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"): key-value pairs, then queried keys.

The task has its own vocabulary (``vocab_size``, 8,192 ids by default, as Zoology), independent of the text
tokenizer: keys are drawn from ``[1, V/2)``, values from ``[V/2, V)`` (each without repeats within a sample), every
other position holds random filler over the whole vocabulary (Zoology's random non-queries). A sample of context
length ``L`` with ``n`` pairs is::

    k1 v1 k2 v2 ... kn vn | filler with each key k_i once, in slot g_i of the (L - 2n) / 2 query slots

Query slots are token pairs after the block; slot ``g`` starts at ``2n + 2g``, and the slots are drawn without
repeats from Zoology's power law p(g) ~ g^(a - 1) (near queries far more likely) or uniformly. The label at a
queried key is its value (answer-only loss: nothing else is scored). As every archsearch task, the input after a
queried key is its value (teacher forcing); Zoology writes a random token there instead
(``answer_in_input=False`` reproduces that; the scored positions and what they see are the same either way).

Training mixes context lengths and pair counts with ``slices`` ((L, n) pairs, as Zoology's train configs); a sample
shorter than ``seq_len`` is followed by filler that is never scored. The difficulty level is the number of pairs;
accuracy is per query (``metric = "token"``). Baselines: a constant guess scores ``1 / number of values`` (chance);
guessing one of the book's ``n`` values (knowing the book, not the key) scores ``1 / n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from archsearch.data.rng import sample_rng
from archsearch.data.tasks.base import IGNORE, Task, check_levels, check_range
from archsearch.data.tokenizer import Tokenizer
from archsearch.errors import ConfigError

DEFAULT_VOCAB = 8192  # Zoology's MQAR vocabulary: large enough that keys rarely recur in the filler


@dataclass
class MQARConfig:
    """MQAR settings.

    Attributes:
        seq_len: tokens per sample.
        vocab_size: the task's own vocabulary (ids ``[0, vocab_size)``); in a mix with text these ids get their own
            block after the tokenizer's (docs/data.md).
        num_pairs: numbers of key-value pairs to draw from (the levels), each over the whole ``seq_len``; None (and
            no ``slices``) = 4, 8, 16, ... while ``4 * pairs <= seq_len``.
        slices: (context length, pairs) combinations instead of ``num_pairs``, e.g. ``[[64, 4], [128, 8]]``: a
            sample of level ``n`` uses the first ``L`` tokens, filler after them. Pair counts must differ.
        num_queries: queries per sample (at most the pairs); None = as many as pairs (Zoology).
        key_range: [low, high) ids of keys; None = ``[1, V/2)`` (Zoology: id 0 is never a key).
        value_range: [low, high) ids of values; None = ``[V/2, V)``.
        filler_range: [low, high) ids of the non-query positions; None = the whole vocabulary (Zoology).
        gaps: "power" (Zoology: p(slot g) ~ g^(power_a - 1)) or "uniform".
        power_a: the power-law parameter (Zoology's default 0.01).
        answer_in_input: the input after a queried key is its value (teacher forcing, as every archsearch task);
            False writes a filler token there, exactly as Zoology's inputs.
    """

    seq_len: int = 256
    vocab_size: int = DEFAULT_VOCAB
    num_pairs: tuple[int, ...] | None = None
    slices: tuple[tuple[int, int], ...] | None = None
    num_queries: int | None = None
    key_range: tuple[int, int] | None = None
    value_range: tuple[int, int] | None = None
    filler_range: tuple[int, int] | None = None
    gaps: str = "power"
    power_a: float = 0.01
    answer_in_input: bool = True


def _bad(key: str, message: str) -> ConfigError:
    return ConfigError(message, source="task mqar", key=key)


class MQARTask(Task):
    """Multi-query associative recall over its own token ids (see the module docstring for the layout)."""

    name = "mqar"
    Config = MQARConfig
    metric = "token"

    def __init__(self, config: MQARConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        v = config.vocab_size
        if isinstance(v, bool) or not isinstance(v, int) or v < 4:
            raise _bad("vocab_size", f"expected an integer >= 4, got {v!r}")
        half = v // 2
        self.key_range = check_range("mqar", "key_range", config.key_range or (1, half), v, min_size=1)
        self.value_range = check_range("mqar", "value_range", config.value_range or (half, v), v, 1)
        self.filler_range = check_range("mqar", "filler_range", config.filler_range or (0, v), v, 1)
        if config.gaps not in ("power", "uniform"):
            raise _bad("gaps", f"expected 'power' or 'uniform', got {config.gaps!r}")
        if config.gaps == "power" and not 0 < config.power_a <= 1:
            raise _bad("power_a", f"expected 0 < power_a <= 1, got {config.power_a}")
        q = config.num_queries
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 1):
            raise _bad("num_queries", f"expected an integer >= 1, got {q!r}")
        self._lengths = self._resolve_levels(config)

    # ---- levels -----------------------------------------------------------------------------------------------
    def _most_pairs(self, length: int) -> int:
        """The most pairs a context of ``length`` tokens holds with its queries, within the key and value ids."""
        cfg = self.config
        distinct = min(self.key_range[1] - self.key_range[0], self.value_range[1] - self.value_range[0])
        if cfg.num_queries is None:  # n pairs + n query slots: 4n tokens
            return min(length // 4, distinct)
        return min((length - 2 * cfg.num_queries) // 2, distinct)

    def _resolve_levels(self, cfg: MQARConfig) -> dict[int, int]:
        """Pairs -> context length of every level."""
        lo = cfg.num_queries or 1
        if cfg.slices is not None and cfg.num_pairs is not None:
            raise _bad("slices", "give num_pairs (every sample fills seq_len) or slices, not both")
        if cfg.slices is not None:
            return self._check_slices(cfg.slices, lo)
        most = self._most_pairs(cfg.seq_len)
        if most < lo:
            raise _bad("seq_len", f"seq_len {cfg.seq_len} cannot hold {lo} pair(s) and their queries")
        if cfg.num_pairs is None:
            auto = tuple(n for n in (2**k for k in range(2, 20)) if lo <= n <= most)
            levels = auto or (most,)
        else:
            levels = check_levels("mqar", "num_pairs", cfg.num_pairs, lo, most)
        return {n: cfg.seq_len for n in levels}

    def _check_slices(self, slices: Any, lo: int) -> dict[int, int]:
        seq_len = self.config.seq_len
        if not isinstance(slices, list | tuple) or not slices:
            raise _bad("slices", f"expected a non-empty list of [length, pairs], got {slices!r}")
        out: dict[int, int] = {}
        for item in slices:
            ok = isinstance(item, list | tuple) and len(item) == 2
            if not ok or any(isinstance(x, bool) or not isinstance(x, int) for x in item):
                raise _bad("slices", f"expected [length, pairs] integers, got {item!r}")
            length, pairs = int(item[0]), int(item[1])
            if not 8 <= length <= seq_len:
                raise _bad(
                    "slices", f"length {length} of slice {list(item)} must be in [8, seq_len {seq_len}]"
                )
            most = self._most_pairs(length)
            if not lo <= pairs <= most:
                raise _bad("slices", f"slice {list(item)}: a context of {length} holds {lo} to {most} pairs")
            if pairs in out:
                raise _bad(
                    "slices", f"two slices with {pairs} pairs: the pair count is the level, so it must differ"
                )
            out[pairs] = length
        return dict(sorted(out.items()))

    @classmethod
    def fit_seq_len(cls, seq_len: int, options: dict[str, Any] | None) -> int:
        """``seq_len`` raised to the longest slice in ``options`` (held-out sets may test longer contexts)."""
        slices = (options or {}).get("slices")
        lengths = [s[0] for s in slices or () if isinstance(s, list | tuple) and s and isinstance(s[0], int)]
        return max([seq_len, *lengths])

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(self._lengths)

    def context_length(self, pairs: int) -> int:
        """The context length of the level with ``pairs`` pairs."""
        return self._lengths[pairs]

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def own_vocab(self) -> bool:
        return True

    @property
    def num_values(self) -> int:
        return self.value_range[1] - self.value_range[0]

    def baselines(self, level: int) -> dict[str, float]:
        """Chance (a constant value) and book guessing (one of the book's distinct values) per query."""
        return {"chance": 1.0 / self.num_values, "book": 1.0 / level}

    # ---- samples ----------------------------------------------------------------------------------------------
    def sample(self, index: int, seed: int) -> dict:
        """Sample ``index``: ``level_for(index)`` pairs in its context length, queries at power-law/uniform slots."""
        cfg = self.config
        rng = sample_rng(seed, index, self.name)
        n = self.level_for(index)
        length = self._lengths[n]
        q = n if cfg.num_queries is None else cfg.num_queries
        # Keys and values without repeats (Zoology); choosing by index keeps large vocabularies cheap.
        keys = self.key_range[0] + rng.choice(self.key_range[1] - self.key_range[0], size=n, replace=False)
        values = self.value_range[0] + rng.choice(self.num_values, size=n, replace=False)
        ids = rng.integers(
            *self.filler_range, size=cfg.seq_len
        )  # filler everywhere, then the pairs and queries
        ids[0 : 2 * n : 2], ids[1 : 2 * n : 2] = keys, values
        space = (length - 2 * n) // 2  # query slots: (key, next) position pairs
        if cfg.gaps == "power":
            x = np.arange(1, space + 1, dtype=np.float64)
            p = cfg.power_a * x ** (cfg.power_a - 1)
            slots = rng.choice(space, size=q, replace=False, p=p / p.sum())
        else:
            slots = rng.choice(space, size=q, replace=False)
        asked = rng.choice(n, size=q, replace=False)
        pos = 2 * n + 2 * slots
        ids[pos] = keys[asked]
        if cfg.answer_in_input:
            ids[pos + 1] = values[asked]
        input_ids = torch.as_tensor(ids, dtype=torch.long)
        labels = torch.full((cfg.seq_len,), IGNORE, dtype=torch.long)
        labels[torch.as_tensor(pos)] = torch.as_tensor(values[asked], dtype=torch.long)
        return {"input_ids": input_ids, "labels": labels, "level": int(n)}
