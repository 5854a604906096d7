"""The model's vocabulary for a mix of sources: the tokenizer's ids first, then one block per own-vocabulary task.

Text (the LM corpus, phonebook, selective copying, induction) speaks the tokenizer's ids ``[0, text)``. A task with
its own vocabulary (MQAR: 8,192 ids by default) gets the block ``[offset, offset + V)`` after them, blocks in
mixture order, so its ids never collide with text and the model's embedding grows by exactly ``V`` rows. Without
any text source (MQAR alone) the first task's block starts at 0: the model's vocabulary is the task's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from archsearch.data.tasks import IGNORE, Task


@dataclass(frozen=True)
class VocabLayout:
    """Where each source's ids sit in the model's vocabulary.

    Attributes:
        size: the model's vocabulary (every id of every source is below it).
        text: ids ``[0, text)`` belong to the tokenizer (0 when no source uses text).
        offsets: own-vocabulary task -> the first id of its block.
    """

    size: int
    text: int
    offsets: dict[str, int] = field(default_factory=dict)

    def describe(self, tasks: dict[str, Task]) -> dict[str, list[int]]:
        """``{"text": [0, text], "<task>": [start, end], ...}`` ([start, end) id ranges) for run descriptions."""
        out = {"text": [0, self.text]} if self.text else {}
        for name, start in self.offsets.items():
            out[name] = [start, start + tasks[name].vocab_size]
        return out


def vocab_layout(weights: dict[str, float], tasks: dict[str, Task], text_size: int) -> VocabLayout:
    """The layout for a mixture (``weights`` names the sources, "lm" included; weight-0 tasks count too).

    Args:
        weights: source name -> weight (only the names matter).
        tasks: every synthetic task of the run, in mixture order.
        text_size: the tokenizer's vocabulary (or a larger one the user asked for).
    """
    uses_text = "lm" in weights or any(not t.own_vocab for t in tasks.values())
    start = text_size if uses_text else 0
    offsets: dict[str, int] = {}
    for name, task in tasks.items():
        if task.own_vocab:
            offsets[name] = start
            start += task.vocab_size
    return VocabLayout(size=start, text=text_size if uses_text else 0, offsets=offsets)


class Shifted:
    """A task whose ids are moved by ``offset`` into its block of the model's vocabulary (labels too, -100 kept).

    Args:
        task: the task.
        offset: the first id of its block.
    """

    def __init__(self, task: Task, offset: int):
        self.task, self.offset = task, offset

    def sample(self, index: int, seed: int) -> dict[str, Any]:
        s = self.task.sample(index, seed)
        labels = s["labels"]
        return {
            "input_ids": s["input_ids"] + self.offset,
            "labels": torch.where(labels == IGNORE, labels, labels + self.offset),
            "level": s["level"],
        }


def placed(task: Task, layout: VocabLayout, name: str) -> Task | Shifted:
    """``task`` as it feeds the model: shifted into its block when the block does not start at 0."""
    offset = layout.offsets.get(name, 0)
    return Shifted(task, offset) if offset else task
