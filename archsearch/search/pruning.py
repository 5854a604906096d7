"""A Lightning callback that reports validation metrics to an Optuna trial by step and prunes hopeless trials.

A language-model proxy is one long epoch, so reports are keyed by the global step of each validation (not by epoch,
as Optuna's own Lightning integration does); several validations per run give the pruner several rungs.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L


class TrialReporter(L.Callback):
    """After each validation: record ``monitor`` at the global step, report it, and prune if the pruner says so.

    Args:
        trial: the live ``optuna.Trial``.
        monitor: the logged metric (``val/loss``, ``val/phonebook/acc`` ...); None records nothing.
        report: call ``trial.report`` (False for multi-objective studies, which Optuna cannot prune).
        extra: further logged metrics to record in the learning curve (e.g. ``val/loss`` beside a task accuracy).

    Attributes:
        curve: ``{step: {metric: value}}`` of every validation seen (kept as the trial's ``curve`` user attribute).
    """

    def __init__(self, trial: Any, monitor: str | None, *, report: bool = True, extra: tuple[str, ...] = ()):
        self.trial = trial
        self.monitor = monitor
        self.report = report and monitor is not None
        self.extra = tuple(m for m in extra if m != monitor)
        self.curve: dict[int, dict[str, float]] = {}
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking:
            return
        step = int(trainer.global_step)
        metrics = trainer.callback_metrics
        row = {}
        for name in (self.monitor, *self.extra):
            if name is not None and name in metrics:
                row[name] = float(metrics[name])
        if row:
            self.curve[step] = row
        if not self.report or self.monitor not in row:
            return
        value = row[self.monitor]
        if not math.isfinite(value):
            return  # the divergence guard stops such runs with its own reason
        if step in self._reported:
            return  # the final validation can land on a step already reported
        self._reported.add(step)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at step {step}: {self.monitor} {value:.4g} is worse than its peers"
            )
