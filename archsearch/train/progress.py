"""Training progress on stderr, by optimizer step (a proxy run is one long epoch, so Lightning's "Epoch 0" bar says
nothing; and its bar writes to stdout, which ``archsearch train --json`` keeps for the JSON alone)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning.pytorch as pl


class StepProgress(pl.Callback):
    """``step 50/200 (25%) train/loss 3.2104 | 1,234 tok/s | ETA 30s`` about 20 times a run, and every validation.

    Args:
        max_steps: the run's length in optimizer steps.
        every: steps between lines (at least; a run prints about 20 lines).
        tokens_per_step: for the throughput.
    """

    def __init__(self, max_steps: int, every: int, tokens_per_step: int):
        self.max_steps = max_steps
        self.every = max(1, every, math.ceil(max_steps / 20))
        self.tokens_per_step = tokens_per_step
        self._t0 = 0.0
        self._step0 = 0
        self._shown = -1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.monotonic()
        self._step0 = int(trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        if step == self._shown or not (step % self.every == 0 or step == self.max_steps):
            return
        self._shown = step
        parts = [f"step {step}/{self.max_steps} ({100 * step // max(1, self.max_steps)}%)"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts[0] += f" train/loss {float(loss):.4f}"
        elapsed = time.monotonic() - self._t0
        done = step - self._step0
        if done > 0 and elapsed > 0:
            parts.append(f"{done * self.tokens_per_step / elapsed:,.0f} tok/s")
            if step < self.max_steps:
                parts.append(f"ETA {_duration(elapsed / done * (self.max_steps - step))}")
        _write(" | ".join(parts))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        shown = [
            f"{k} {float(v):.4f}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith("val/") and v.numel() == 1
        ]
        if shown:
            _write(f"step {int(trainer.global_step)}/{self.max_steps} validation: " + ", ".join(shown[:6]))


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return (
        f"{s}s"
        if s < 60
        else f"{s // 60}m{s % 60:02d}s"
        if s < 3600
        else f"{s // 3600}h{s % 3600 // 60:02d}m"
    )


def _write(text: str) -> None:
    print(f"archsearch train: {text}", file=sys.stderr, flush=True)
