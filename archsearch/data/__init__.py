"""Proxy data: the default corpus (stdlib Python docs), user corpora, synthetic recall tasks, metrics, mixing.

``make_datamodule(data, tasks, seq_len, batch_size, seed, ...)`` is the entry point; see docs/data.md. The
DataModule parts (which import Lightning) load on first use, so ``archsearch.data.tasks`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from archsearch.data.metrics import TaskAccuracy, exact_match, token_hits
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.data.tasks import TASKS, Task, make_task, task_names
from archsearch.data.tokenizer import ByteTokenizer, Tokenizer, get_tokenizer

_LAZY = {
    "make_datamodule": "archsearch.data.build",
    "normalise_weights": "archsearch.data.build",
    "HybridDataModule": "archsearch.data.datamodule",
    "Mixture": "archsearch.data.datamodule",
    "TrainStream": "archsearch.data.datamodule",
    "collate": "archsearch.data.datamodule",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'archsearch.data' has no attribute {name!r}")


__all__ = [
    "HELDOUT_SEED_OFFSET",
    "TASKS",
    "ByteTokenizer",
    "HybridDataModule",
    "Mixture",
    "Task",
    "TaskAccuracy",
    "Tokenizer",
    "TrainStream",
    "collate",
    "exact_match",
    "get_tokenizer",
    "make_datamodule",
    "make_task",
    "normalise_weights",
    "task_names",
    "token_hits",
]
