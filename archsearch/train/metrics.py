"""Validation metrics per validation set, through torchmetrics (so DDP ranks are summed before computing).

For every validation set (``datamodule.val_names``: "lm", "phonebook", ...) one :class:`TaskMetrics` keeps the
token-weighted loss. Task accuracy comes from the datamodule's own metrics when it offers them
(``make_metrics()``: archsearch's data gives each task its ``TaskAccuracy``, exact match or per-token as the task
defines); otherwise :class:`TaskMetrics` also counts exact matches overall and per difficulty level.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric

MAX_LEVELS = 256  # difficulty levels 0..255 are tracked separately; higher ones are refused


class TaskMetrics(Metric):
    """Sums for one validation set: loss over labelled tokens, exact matches over samples, both per level."""

    full_state_update = False

    def __init__(self, max_levels: int = MAX_LEVELS, track_accuracy: bool = True):
        super().__init__()
        self.max_levels = max_levels
        self.track_accuracy = track_accuracy
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "level_correct", default=torch.zeros(max_levels, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("level_count", default=torch.zeros(max_levels, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, loss_sum: torch.Tensor, tokens: torch.Tensor, correct: torch.Tensor, level: torch.Tensor
    ) -> None:
        """Add one batch.

        Args:
            loss_sum: summed cross-entropy over the batch's labelled tokens (scalar).
            tokens: number of labelled tokens (scalar).
            correct: (B,) bool, every labelled position of the sample argmax-correct.
            level: (B,) long difficulty level; samples with level < 0 (LM text) get no accuracy.
        """
        self.loss_sum += loss_sum.detach().to(torch.float64)
        self.tokens += tokens.detach().to(torch.long)
        scored = level >= 0
        if self.track_accuracy and scored.any():
            lv = level[scored].long()
            if int(lv.max()) >= self.max_levels:
                from archsearch.errors import DataError

                raise DataError(
                    f"difficulty level {int(lv.max())} is out of range (at most {self.max_levels - 1})"
                )
            # one-hot sums rather than bincount/index_add: deterministic on CUDA too
            onehot = torch.nn.functional.one_hot(lv, self.max_levels)  # (n, L)
            self.level_count += onehot.sum(0)
            self.level_correct += (onehot * correct[scored].long().unsqueeze(1)).sum(0)

    def compute(self) -> dict[str, float]:
        """``loss`` (mean over tokens), ``acc`` and ``acc_L<level>`` when the set has levelled samples."""
        out: dict[str, float] = {}
        tokens = int(self.tokens)
        out["loss"] = float(self.loss_sum) / tokens if tokens else math.nan
        out["tokens"] = float(tokens)
        total = int(self.level_count.sum())
        if total:
            out["acc"] = float(self.level_correct.sum()) / total
            for lvl in torch.nonzero(self.level_count).flatten().tolist():
                out[f"acc_L{lvl}"] = float(self.level_correct[lvl]) / float(self.level_count[lvl])
        return out


def accuracy_names(result: dict[str, Any]) -> dict[str, float]:
    """``TaskAccuracy.compute()`` keys (``acc``, ``acc/level_<n>``) as ours (``acc``, ``acc_L<n>``)."""
    out = {}
    for key, value in result.items():
        name = "acc_L" + key.rsplit("_", 1)[-1] if key.startswith("acc/level_") else key
        out[name] = float(value)
    return out


def summarise(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flatten per-set results into logged names.

    ``val/loss`` and ``val/ppl`` come from the "lm" set when there is one, otherwise from the token-weighted mean
    over every set; each task set adds ``val/<task>/loss``, ``val/<task>/acc`` and ``val/<task>/acc_L<level>``.
    """
    out: dict[str, float] = {}
    for name, res in per_task.items():
        if name != "lm":
            out[f"val/{name}/loss"] = res["loss"]
        for key, value in res.items():
            if key.startswith("acc"):
                out[f"val/{name}/{key}"] = value
    if "lm" in per_task:
        loss = per_task["lm"]["loss"]
    else:
        tokens = sum(r["tokens"] for r in per_task.values())
        loss = (
            sum(r["loss"] * r["tokens"] for r in per_task.values() if r["tokens"]) / tokens
            if tokens
            else math.nan
        )
    out["val/loss"] = loss
    out["val/ppl"] = math.exp(min(loss, 80.0)) if math.isfinite(loss) else math.nan
    return out
