"""Validation of fused members: one fused forward per batch, each member's metrics exactly as an ordinary run's.

The metric objects and names are the ordinary run's (``archsearch.train.metrics``: ``val/loss``, ``val/ppl``,
``val/<task>/acc`` ...), updated as ``HybridLMModule.validation_step`` updates them.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from archsearch.data.metrics import exact_match
from archsearch.fused.model import FusedLM
from archsearch.train.metrics import TaskMetrics, accuracy_names, summarise


class MemberEval:
    """One member's validation metrics over its own held-out sets (its datamodule's ``val_names``)."""

    def __init__(self, datamodule: Any, device: torch.device):
        self.val_names: list[str] = list(getattr(datamodule, "val_names", None) or ["lm"])
        make_metrics = getattr(datamodule, "make_metrics", None)
        task_acc = make_metrics() if callable(make_metrics) else None
        self.task_acc = {n: m.to(device) for n, m in (task_acc or {}).items()}
        self.metrics = {n: TaskMetrics(track_accuracy=task_acc is None).to(device) for n in self.val_names}

    def update(
        self, name: str, logits: torch.Tensor, labels: torch.Tensor, level: torch.Tensor | None
    ) -> None:
        """One batch of set ``name``: logits (B, T, V), labels (B, T), level (B,) or None."""
        mask = labels != -100
        loss_sum = F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
        if level is None:
            level = torch.full((labels.shape[0],), -1, dtype=torch.long, device=labels.device)
        metric = self.metrics[name]
        acc = self.task_acc.get(name)
        if acc is not None:
            acc.update(logits, labels, level)
        correct = exact_match(logits, labels) if metric.track_accuracy else mask[:, 0]
        metric.update(loss_sum, mask.sum(), correct, level)

    def compute(self) -> dict[str, float] | None:
        """The logged values (``summarise``), or None when no batch was seen; resets for the next validation."""
        per_task = {}
        for name in self.val_names:
            metric = self.metrics[name]
            if metric.update_count:
                per_task[name] = metric.compute()
                acc = self.task_acc.get(name)
                if acc is not None and acc.update_count:
                    per_task[name].update(accuracy_names(acc.compute()))
            metric.reset()
            if name in self.task_acc:
                self.task_acc[name].reset()
        return {k: float(v) for k, v in summarise(per_task).items()} if per_task else None


def validate(
    model: FusedLM,
    datamodules: Sequence[Any],
    evals: Sequence[MemberEval | None],
    *,
    val_batches: int,
    autocast: torch.dtype | None,
) -> list[dict[str, float] | None]:
    """Validate every member of ``model`` on its own held-out sets; members whose ``evals`` entry is None are skipped.

    Returns:
        Per member, its logged values (``val/loss`` ...) or None (skipped, or no validation data).
    """
    device = model.flat.device
    names = next(e for e in evals if e is not None).val_names
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with torch.no_grad(), amp:
        for index, name in enumerate(names):
            loaders = [dm.val_dataloader()[index] for dm in datamodules]
            for batches in itertools.islice(zip(*loaders, strict=True), val_batches):
                ids = torch.stack([b["input_ids"] for b in batches]).to(device)
                hidden = model.hidden_states(ids)
                for k, (batch, ev) in enumerate(zip(batches, evals, strict=True)):
                    if ev is None:
                        continue
                    labels = batch["labels"].to(device)
                    level = batch.get("level")
                    ev.update(
                        name,
                        model.member_logits(hidden, k),
                        labels,
                        None if level is None else level.to(device),
                    )
    return [ev.compute() if ev is not None else None for ev in evals]
