"""Accuracy on the synthetic tasks: exact match per sample, correct tokens per sample, and a torchmetrics Metric
that reports both overall and per difficulty level."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from archsearch.data.tasks.base import IGNORE


def _predictions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit (B,T) bool, scored (B,T) bool): argmax equals the label, and the label is not -100."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    scored = labels != IGNORE
    return (logits.argmax(dim=-1) == labels) & scored, scored


def exact_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample exact match: every labelled position's argmax is right.

    Args:
        logits: (B, T, V) model outputs (V may be the padded vocabulary).
        labels: (B, T) targets aligned with the inputs, -100 where not scored.

    Returns:
        (B,) bool. A sample with no labelled position counts as wrong (it was not tested).
    """
    hit, scored = _predictions(logits, labels)
    return (hit.sum(dim=1) == scored.sum(dim=1)) & scored.any(dim=1)


def token_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (correct labelled positions, labelled positions), each (B,) long."""
    hit, scored = _predictions(logits, labels)
    return hit.sum(dim=1), scored.sum(dim=1)


class TaskAccuracy(Metric):
    """Accuracy of one task, overall and per difficulty level (``compute()`` gives both).

    Args:
        levels: the task's difficulty levels; samples of other levels count only in the overall accuracy.
        mode: "sequence" (a sample is right when all its labelled positions are: exact match) or "token" (the
            fraction of all labelled positions right, as Zoology reports MQAR).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, levels: tuple[int, ...] = (), mode: str = "sequence", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("sequence", "token"):
            raise ValueError(f"mode must be 'sequence' or 'token', got {mode!r}")
        self.levels = tuple(int(v) for v in levels)
        self.mode = mode
        self.add_state(
            "correct", default=torch.zeros(len(self.levels) + 1, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state(
            "total", default=torch.zeros(len(self.levels) + 1, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, logits: torch.Tensor, labels: torch.Tensor, level: torch.Tensor | None = None) -> None:
        """Add a batch: logits (B, T, V), labels (B, T), level (B,) (None: overall only)."""
        if self.mode == "sequence":
            right = exact_match(logits, labels).long()
            count = torch.ones_like(right)
        else:
            hits, scored = token_hits(logits, labels)
            right, count = hits, scored
        # slot 0 is "all"; slot 1 + i is levels[i]
        self.correct[0] += right.sum()
        self.total[0] += count.sum()
        if level is None:
            return
        level = level.to(right.device)
        for i, value in enumerate(self.levels):
            mask = level == value
            self.correct[i + 1] += right[mask].sum()
            self.total[i + 1] += count[mask].sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"acc": overall, "acc/level_<n>": per level}`` (levels never seen are left out)."""
        correct, total = self.correct.float(), self.total.float()
        out = {"acc": correct[0] / total[0].clamp(min=1)}
        for i, value in enumerate(self.levels):
            if total[i + 1] > 0:
                out[f"acc/level_{value}"] = correct[i + 1] / total[i + 1]
        return out
