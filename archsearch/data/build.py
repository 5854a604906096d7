"""``make_datamodule``: resolve a data spec, a tokenizer and a task mixture into a ``HybridDataModule``.

Every check that can fail on the user's data runs here, before training starts: missing or empty files, a wrong
token dtype, token ids outside the vocabulary, a corpus shorter than one sample, unknown tasks or options.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from archsearch.data.corpus import TokenSplits, load_default_corpus
from archsearch.data.datamodule import HybridDataModule
from archsearch.data.files import load_user_corpus
from archsearch.data.tasks import TASKS, Task, make_task, task_names
from archsearch.data.token_files import check_token_ids
from archsearch.data.tokenizer import Tokenizer, get_tokenizer
from archsearch.data.vocab import vocab_layout
from archsearch.errors import ConfigError, did_you_mean


def _positive_int(value: Any, key: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"expected an integer >= {low}, got {value!r}", key=key)
    return value


def normalise_weights(tasks: dict[str, float] | None) -> dict[str, float]:
    """Check a task mixture and scale its weights to sum to 1 ("lm" first when present).

    Raises:
        ConfigError: for an unknown name, a negative or non-numeric weight, or weights summing to 0.
    """
    if tasks is None:
        return {"lm": 1.0}
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"expected a mapping of task name to weight, got {tasks!r}", key="tasks")
    names = task_names()
    for name, weight in tasks.items():
        if name not in names:
            raise ConfigError(
                f"unknown task {name!r} (tasks: {', '.join(names)})",
                key="tasks",
                hint=did_you_mean(name, names),
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ConfigError(f"weight of {name!r} must be a finite number >= 0, got {weight!r}", key="tasks")
    total = float(sum(tasks.values()))
    if total <= 0:
        raise ConfigError("task weights sum to 0: at least one task must have a positive weight", key="tasks")
    ordered = sorted(tasks, key=lambda n: n != "lm")  # stable: "lm" first, the rest as given
    return {n: float(tasks[n]) / total for n in ordered}


def make_datamodule(
    data: str = "default",
    tasks: dict[str, float] | None = None,
    seq_len: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    *,
    val_batches: int | None = 16,
    num_workers: int = 0,
    tokenizer: str = "byte",
    vocab_size: int | None = None,
    val_fraction: float = 0.05,
    text_field: str = "text",
    token_dtype: str | None = None,
    cache_dir: str | Path | None = None,
    task_options: dict[str, dict[str, Any]] | None = None,
    eval_task_options: dict[str, dict[str, Any]] | None = None,
) -> HybridDataModule:
    """The data of a run: an LM corpus and/or synthetic tasks, mixed by weight.

    Args:
        data: "default" (the stdlib Python docs), a path (text file, folder of .txt/.md, .jsonl, token
            .bin/.npy, folder with train.bin [+ val.bin]) or "hf:<dataset>[:split]". Unused when no "lm" task.
        tasks: name -> weight, e.g. ``{"lm": 0.7, "phonebook": 0.3}``; None = LM only. A weight of 0 evaluates a
            task without training on it.
        seq_len: tokens per sample.
        batch_size: samples per batch (per rank).
        seed: data seed; held-out task sets use ``seed + 1_000_003``.
        val_batches: batches per validation set (None: every LM validation window, 64 batches per task).
        num_workers: DataLoader workers (0 = in the main process, the cheap default on CPU).
        tokenizer: "byte" or "hf:<name>" (local cache only).
        vocab_size: a text vocabulary larger than the tokenizer's (e.g. for token files made elsewhere). The
            model's vocabulary is this (or the tokenizer's) plus one block per own-vocabulary task (MQAR):
            ``dm.vocab_size`` (docs/data.md, "Vocabulary").
        val_fraction: the last fraction of a user corpus used for validation (default corpus: fixed split).
        text_field: the JSONL / dataset field with the text.
        token_dtype: dtype of raw token .bin files: uint16 (nanoGPT), uint32, int32 ... (else inferred).
        cache_dir: where tokenised text is cached.
        task_options: per-task config overrides, e.g. ``{"phonebook": {"shots": 2}}``.
        eval_task_options: overrides for a task's held-out set only, on top of its ``task_options``: evaluate on
            other (harder) levels than training, e.g. ``{"mqar": {"slices": [[512, 128]]}}`` or
            ``{"phonebook": {"entries": [4, 16, 32], "shots": 1}}``; the held-out samples may be longer than
            ``seq_len`` where the task needs it (MQAR slices).

    Raises:
        ConfigError: bad sizes, unknown tasks or task options.
        DataError: data that is missing, empty, malformed, too short or outside the vocabulary.
    """
    seq_len = _positive_int(seq_len, "seq_len", 8)
    batch_size = _positive_int(batch_size, "batch_size")
    seed = _positive_int(seed, "seed", 0)
    num_workers = _positive_int(num_workers, "num_workers", 0)
    if val_batches is not None:
        val_batches = _positive_int(val_batches, "val_batches")
    weights = normalise_weights(tasks)
    task_options = _options_of_tasks(task_options, weights, "task_options")
    eval_task_options = _options_of_tasks(eval_task_options, weights, "eval_task_options")
    tok = get_tokenizer(tokenizer)
    if vocab_size is None:
        vocab_size = tok.vocab_size
    elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < tok.vocab_size:
        raise ConfigError(
            f"vocabulary size must be an integer >= the tokenizer's {tok.vocab_size} ({tok.name}), got {vocab_size!r}",
            key="vocab_size",
        )

    corpus: TokenSplits | None = None
    if "lm" in weights:
        if data in ("default", None):
            corpus = load_default_corpus(tok)
        else:
            corpus = load_user_corpus(
                str(data),
                tok,
                val_fraction=val_fraction,
                text_field=text_field,
                token_dtype=token_dtype,
                cache_dir=cache_dir,
            )
            check_token_ids(corpus.train, vocab_size, f"train split of {corpus.description}")
            check_token_ids(corpus.val, vocab_size, f"validation split of {corpus.description}")

    built = {n: make_task(n, seq_len, tok, task_options.get(n)) for n in weights if n != "lm"}
    held_out = {n: _eval_task(n, t, seq_len, tok, task_options, eval_task_options) for n, t in built.items()}
    layout = vocab_layout(weights, built, vocab_size)
    description: dict[str, Any] = {
        "tokenizer": tok.name,
        "vocab_size": layout.size,
        "vocab": layout.describe(built),
        "seq_len": seq_len,
        "seed": seed,
        "weights": weights,
    }
    if corpus is not None:
        description["data"] = {
            "source": corpus.description,
            "train_tokens": int(len(corpus.train)),
            "val_tokens": int(len(corpus.val)),
        }
    description["tasks"] = {
        n: {"levels": list(t.levels), "metric": t.metric, "config": dataclasses.asdict(t.config)}
        for n, t in built.items()
    }
    for n in eval_task_options:
        t = held_out[n]
        description["tasks"][n]["eval"] = {"levels": list(t.levels), "config": dataclasses.asdict(t.config)}
    return HybridDataModule(
        tokenizer=tok,
        vocab_size=layout.size,
        corpus=corpus,
        tasks=built,
        eval_tasks=held_out,
        layout=layout,
        weights=weights,
        seq_len=seq_len,
        batch_size=batch_size,
        seed=seed,
        val_batches=val_batches,
        num_workers=num_workers,
        description=description,
    )


def _options_of_tasks(options: Any, weights: dict[str, float], key: str) -> dict[str, dict[str, Any]]:
    """Per-task options, checked to name synthetic tasks of this run."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"expected a mapping of task name to options, got {options!r}", key=key)
    for name in options:
        if name not in weights or name == "lm":
            raise ConfigError(
                f"options given for {name!r}, which is not a synthetic task of this run ({', '.join(weights)})",
                key=key,
                hint=did_you_mean(name, list(weights)),
            )
    return dict(options)


def _eval_task(
    name: str,
    train: Task,
    seq_len: int,
    tok: Tokenizer,
    task_options: dict[str, dict[str, Any]],
    eval_task_options: dict[str, dict[str, Any]],
) -> Task:
    """The task of ``name``'s held-out set: the training task, or one built with the eval options on top.

    Raises:
        ConfigError: eval options that change the task's vocabulary (the model has one block for it).
    """
    if name not in eval_task_options:
        return train
    options = {**(task_options.get(name) or {}), **(eval_task_options[name] or {})}
    task = make_task(name, TASKS[name].fit_seq_len(seq_len, options), tok, options)
    if task.vocab_size != train.vocab_size:
        raise ConfigError(
            f"the held-out {name} set would use {task.vocab_size} ids, training {train.vocab_size}: set the "
            "vocabulary in task_options, not eval_task_options",
            key=f"eval_task_options.{name}",
        )
    return task
