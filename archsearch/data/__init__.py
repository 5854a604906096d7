"""Proxy data: the default corpus (stdlib Python docs), user corpora, synthetic recall tasks, metrics, mixing.

``make_datamodule(data, tasks, seq_len, batch_size, seed, ...)`` is the entry point; see docs/data.md.
"""

from __future__ import annotations

from archsearch.data.build import make_datamodule, normalise_weights
from archsearch.data.datamodule import HybridDataModule, Mixture, TrainStream, collate
from archsearch.data.metrics import TaskAccuracy, exact_match, token_hits
from archsearch.data.rng import HELDOUT_SEED_OFFSET
from archsearch.data.tasks import TASKS, Task, make_task, task_names
from archsearch.data.tokenizer import ByteTokenizer, Tokenizer, get_tokenizer

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
