"""The synthetic-task contract: a config dataclass, ``sample(index, seed)``, difficulty levels, a metric mode."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from archsearch.data.tokenizer import Tokenizer
from archsearch.errors import ConfigError, DataError, did_you_mean

IGNORE = -100  # label of a position that is not scored


class Task:
    """A generated task whose sample ``i`` is a pure function of ``(seed, i)``.

    Subclasses set ``name``, ``Config`` (a dataclass with at least ``seq_len``), ``metric`` ("sequence": a sample
    is right when every labelled position is; "token": the fraction of labelled positions right, as Zoology
    reports MQAR) and implement ``levels`` and ``sample``.

    Args:
        config: the task's config (its ``seq_len`` is the exact length of every sample).
        tokenizer: gives the special ids (pad, sep, blank) and encodes text tasks.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    metric: ClassVar[str] = "sequence"

    def __init__(self, config: Any, tokenizer: Tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        if config.seq_len < 8:
            raise DataError(f"task {self.name}: seq_len must be at least 8, got {config.seq_len}")

    @property
    def levels(self) -> tuple[int, ...]:
        """The difficulty levels this task draws from (sample ``i`` has level ``levels[i % len(levels)]``)."""
        raise NotImplementedError

    @property
    def own_vocab(self) -> bool:
        """Whether the task speaks its own ids (MQAR) rather than the tokenizer's (text tasks, specials)."""
        return False

    @property
    def vocab_size(self) -> int:
        """Ids the task's samples use: ``[0, vocab_size)`` (the tokenizer's vocabulary unless ``own_vocab``)."""
        return self.tokenizer.vocab_size

    @classmethod
    def fit_seq_len(cls, seq_len: int, options: dict[str, Any] | None) -> int:
        """The sample length a task with ``options`` needs given the run's ``seq_len`` (held-out sets may ask
        for longer contexts than training, e.g. MQAR slices); ``seq_len`` unless a task says otherwise."""
        return seq_len

    def baselines(self, level: int) -> dict[str, float]:
        """Accuracies of recall-free strategies at ``level`` (e.g. ``chance``, ``book``), for plots; {} if none."""
        return {}

    def level_for(self, index: int) -> int:
        """The level of sample ``index``: levels cycle with the index, so every set is balanced across levels."""
        return self.levels[index % len(self.levels)]

    def sample(self, index: int, seed: int) -> dict:
        """``{"input_ids": (T,) long, "labels": (T,) long (-100 = not scored), "level": int}``, T = seq_len."""
        raise NotImplementedError

    def _pack(self, ids: list[int], answer_starts: list[tuple[int, int]], level: int) -> dict:
        """Pad ``ids`` to seq_len and label the answers: ``labels[t] = ids[t+1]`` for each answer token ``t+1``.

        Args:
            ids: the full sequence, answers included (teacher forcing).
            answer_starts: (start, end) spans of answer tokens in ``ids``; a span must not start at 0.
            level: the sample's difficulty level.
        """
        seq_len = self.config.seq_len
        if len(ids) > seq_len:
            raise DataError(
                f"task {self.name}: a sample of {len(ids)} tokens does not fit seq_len {seq_len} "
                "(choose smaller levels or a longer seq_len)"
            )
        input_ids = torch.full((seq_len,), self.tokenizer.pad_id, dtype=torch.long)
        input_ids[: len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        labels = torch.full((seq_len,), IGNORE, dtype=torch.long)
        for start, end in answer_starts:
            labels[start - 1 : end - 1] = input_ids[start:end]
        return {"input_ids": input_ids, "labels": labels, "level": int(level)}


def check_levels(task: str, key: str, levels: tuple[int, ...], lo: int, hi: int) -> tuple[int, ...]:
    """Validate a tuple of difficulty levels lies in [lo, hi]; return it sorted without duplicates.

    Raises:
        ConfigError: for an empty tuple, a non-integer or a level out of range.
    """
    if isinstance(levels, int) and not isinstance(levels, bool):
        levels = (levels,)
    if not levels or any(isinstance(v, bool) or not isinstance(v, int) for v in levels):
        raise ConfigError(
            f"expected a non-empty list of integers, got {levels!r}", source=f"task {task}", key=key
        )
    bad = [v for v in levels if not lo <= v <= hi]
    if bad:
        raise ConfigError(
            f"level {bad[0]} is out of range: with this seq_len it must be in [{lo}, {hi}]",
            source=f"task {task}",
            key=key,
        )
    return tuple(sorted(set(levels)))


def check_range(task: str, key: str, rng: tuple[int, int], vocab_size: int, min_size: int) -> tuple[int, int]:
    """Validate a token-id range [lo, hi) inside the vocabulary holding at least ``min_size`` ids."""
    if len(rng) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rng):
        raise ConfigError(f"expected [low, high) token ids, got {rng!r}", source=f"task {task}", key=key)
    lo, hi = rng
    if not 0 <= lo < hi <= vocab_size or hi - lo < min_size:
        raise ConfigError(
            f"token range [{lo}, {hi}) must lie in [0, {vocab_size}) and hold at least {min_size} ids",
            source=f"task {task}",
            key=key,
        )
    return int(lo), int(hi)


def make_config(task_cls: type[Task], seq_len: int, options: dict[str, Any] | None) -> Any:
    """Build ``task_cls.Config`` from ``seq_len`` and user ``options``, naming any unknown option.

    Raises:
        ConfigError: for an option the task's config does not have.
    """
    fields = {f.name for f in dataclasses.fields(task_cls.Config)}
    options = dict(options or {})
    for key in options:
        if key not in fields or key == "seq_len":
            raise ConfigError(
                f"unknown option {key!r} (options: {', '.join(sorted(fields - {'seq_len'}))})",
                source=f"task {task_cls.name}",
                key=key,
                hint=did_you_mean(key, fields),
            )
    for key, value in options.items():  # YAML gives lists where the dataclass wants tuples
        if isinstance(value, list):
            options[key] = tuple(value)
    return task_cls.Config(seq_len=seq_len, **options)
