"""Multi-query associative recall (MQAR; Arora et al. 2023, Zoology): key-value pairs, then queried keys.

Layout (token ids used directly): ``k1 v1 k2 v2 ... kn vn`` then, in the rest of the sequence, each queried key
followed by its value at a position drawn from a power-law (as Zoology) or uniform gap distribution; other
positions hold random filler ids (by default key/value ids, as Zoology's random non-queries; ``filler_range``
picks others). The label at each query key is its value. The difficulty level is the number
of pairs; accuracy is per query (``metric = "token"``), so a constant guess scores about 1/(number of values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archsearch.data.rng import sample_rng
from archsearch.data.tasks.base import IGNORE, Task, check_levels, check_range
from archsearch.data.tokenizer import Tokenizer
from archsearch.errors import ConfigError


@dataclass
class MQARConfig:
    """MQAR settings.

    Attributes:
        seq_len: tokens per sample (the whole sequence is used; no padding).
        num_pairs: numbers of key-value pairs to draw from (the levels); None = 4, 8, 16, ... while
            ``4 * pairs <= seq_len``.
        num_queries: queries per sample (at most the pairs); None = as many as pairs (Zoology).
        key_range: [low, high) token ids of keys; None = the lower half of the tokenizer's base vocabulary.
        value_range: [low, high) token ids of values; None = the upper half.
        filler_range: [low, high) token ids of the non-query positions; None = the key and value ids (Zoology).
            With a small key range (a byte vocabulary) every key then also appears in the filler beside a random
            value, a distractor the model must learn to ignore; a range disjoint from keys and values removes it.
        gaps: "power" (Zoology: near queries far more likely, p(g) ~ g^(power_a - 1)) or "uniform".
        power_a: the power-law exponent parameter (Zoology's default 0.01).
    """

    seq_len: int = 256
    num_pairs: tuple[int, ...] | None = None
    num_queries: int | None = None
    key_range: tuple[int, int] | None = None
    value_range: tuple[int, int] | None = None
    filler_range: tuple[int, int] | None = None
    gaps: str = "power"
    power_a: float = 0.01


class MQARTask(Task):
    """Multi-query associative recall over raw token ids."""

    name = "mqar"
    Config = MQARConfig
    metric = "token"

    def __init__(self, config: MQARConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        half = tokenizer.base_vocab_size // 2
        self.key_range = check_range(
            "mqar", "key_range", config.key_range or (0, half), tokenizer.vocab_size, min_size=2
        )
        self.value_range = check_range(
            "mqar",
            "value_range",
            config.value_range or (half, tokenizer.base_vocab_size),
            tokenizer.vocab_size,
            2,
        )
        self.filler_range = (
            None
            if config.filler_range is None
            else check_range("mqar", "filler_range", config.filler_range, tokenizer.vocab_size, 1)
        )
        if config.gaps not in ("power", "uniform"):
            raise ConfigError(
                f"expected 'power' or 'uniform', got {config.gaps!r}", source="task mqar", key="gaps"
            )
        if config.gaps == "power" and not 0 < config.power_a <= 1:
            raise ConfigError(
                f"expected 0 < power_a <= 1, got {config.power_a}", source="task mqar", key="power_a"
            )
        n_keys = self.key_range[1] - self.key_range[0]
        most = min(config.seq_len // 4, n_keys) if config.num_queries is None else None
        if config.num_queries is not None:
            if config.num_queries < 1:
                raise ConfigError(
                    f"expected >= 1, got {config.num_queries}", source="task mqar", key="num_queries"
                )
            most = min((config.seq_len - 2 * config.num_queries) // 2, n_keys)
        lo = 1 if config.num_queries is None else config.num_queries
        if most < lo:
            raise ConfigError(
                f"seq_len {config.seq_len} cannot hold {lo} pair(s) and their queries",
                source="task mqar",
                key="seq_len",
            )
        if config.num_pairs is None:
            auto = tuple(n for n in (2**k for k in range(2, 20)) if lo <= n <= most)
            self._levels = auto or (most,)
        else:
            self._levels = check_levels("mqar", "num_pairs", config.num_pairs, lo, most)

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    @property
    def num_values(self) -> int:
        return self.value_range[1] - self.value_range[0]

    def sample(self, index: int, seed: int) -> dict:
        """Sample ``index``: ``level_for(index)`` pairs, then the queries with power-law or uniform gaps."""
        cfg = self.config
        rng = sample_rng(seed, index, self.name)
        n = self.level_for(index)
        q = n if cfg.num_queries is None else cfg.num_queries
        keys = rng.choice(np.arange(*self.key_range), size=n, replace=False)
        values = rng.integers(*self.value_range, size=n)
        # Filler everywhere (Zoology's random non-queries), then the kv block and the queries on top.
        if self.filler_range is None:
            pool = np.concatenate([np.arange(*self.key_range), np.arange(*self.value_range)])
        else:
            pool = np.arange(*self.filler_range)
        ids = rng.choice(pool, size=cfg.seq_len)
        ids[0 : 2 * n : 2], ids[1 : 2 * n : 2] = keys, values
        space = (cfg.seq_len - 2 * n) // 2  # query slots, each a (key, value) position pair
        if cfg.gaps == "power":
            x = np.arange(1, space + 1, dtype=np.float64)
            p = cfg.power_a * x ** (cfg.power_a - 1)
            slots = rng.choice(space, size=q, replace=False, p=p / p.sum())
        else:
            slots = rng.choice(space, size=q, replace=False)
        asked = rng.choice(n, size=q, replace=False)
        pos = 2 * n + 2 * slots
        ids[pos], ids[pos + 1] = keys[asked], values[asked]
        input_ids = torch.as_tensor(ids, dtype=torch.long)
        labels = torch.full((cfg.seq_len,), IGNORE, dtype=torch.long)
        labels[torch.as_tensor(pos)] = torch.as_tensor(values[asked], dtype=torch.long)
        return {"input_ids": input_ids, "labels": labels, "level": int(n)}
