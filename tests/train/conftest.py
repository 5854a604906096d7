"""Small, fast training configurations for the train tests (toy preset, tiny batches, quiet)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from archsearch.train.config import TrainConfig


def small_config(runs_dir, **overrides) -> TrainConfig:
    """A run of a few seconds on CPU: the toy preset with a two-layer hybrid, 32-token sequences, batch 2."""
    base = dict(
        preset="toy",
        pattern="M*",
        seq_len=32,
        batch_size=2,
        max_steps=6,
        val_every=3,
        val_batches=1,
        log_every=2,
        runs_dir=str(runs_dir),
        name="run",
        quiet=True,
        deterministic=True,
    )
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture
def small(tmp_path):
    """``small(**overrides)`` -> a TrainConfig writing under this test's tmp_path."""
    return lambda **overrides: small_config(tmp_path / "runs", **overrides)


class LossRecorder(pl.Callback):
    """Every micro-batch's training loss in order, and each validation's metrics by step."""

    def __init__(self):
        self.losses: list[float] = []
        self.val: dict[int, dict[str, float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(pl_module.last_loss.item())

    def on_validation_end(self, trainer, pl_module):
        self.val[trainer.global_step] = dict(pl_module.last_val)
