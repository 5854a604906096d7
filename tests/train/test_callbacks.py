"""The run's callbacks on their own: each reacts to Lightning's hooks (a checkpoint save included) without
references to the others."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from archsearch.train import callbacks
from archsearch.train.callbacks import Diverged, DivergenceGuard, PeriodicCheckpoint, TokenThroughput
from archsearch.train.config import DivergenceConfig


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", c)
    return c


def module():
    logged = {}
    return SimpleNamespace(
        device=torch.device("cpu"),
        log=lambda k, v, **_: logged.__setitem__(k, v),
        logged=logged,
        _trainer=None,
    )


def test_throughput_leaves_a_save_out_and_notes_the_first_step(clock):
    meter = TokenThroughput(tokens_per_step=100, flops_per_token=None, peak_flops=None, log_every=2)
    pl_module, trainer = module(), SimpleNamespace(global_step=0, sanity_checking=False)
    meter.on_train_start(trainer, pl_module)
    clock.now, trainer.global_step = 1.0, 1
    meter.on_train_batch_end(trainer, pl_module, None, None, 0)
    assert meter.first_step_at == 1.0
    meter.on_save_checkpoint(trainer, pl_module, {})  # some callback saves: 3 s of writing
    clock.now = 4.0
    meter.on_train_batch_start(trainer, pl_module, None, 1)
    clock.now, trainer.global_step = 5.0, 2
    meter.on_train_batch_end(trainer, pl_module, None, None, 1)  # window of 2 steps: 5 s minus 3 s of saving
    assert meter.train_time == pytest.approx(2.0) and pl_module.logged["perf/tokens_per_s"] == pytest.approx(
        100
    )
    meter.on_train_end(trainer, pl_module)
    meter.on_save_checkpoint(trainer, pl_module, {})  # the run's last save, after training: not training time
    assert meter._save_start is None


def test_throughput_save_inside_validation_counts_once(clock):
    meter = TokenThroughput(tokens_per_step=100, flops_per_token=None, peak_flops=None, log_every=1)
    pl_module, trainer = module(), SimpleNamespace(global_step=0, sanity_checking=False)
    meter.on_train_start(trainer, pl_module)
    clock.now = 1.0
    meter.on_validation_start(trainer, pl_module)
    clock.now = 2.0
    meter.on_save_checkpoint(trainer, pl_module, {})  # a save before validation's own end hook: its time
    clock.now = 3.0
    meter.on_validation_end(trainer, pl_module)
    clock.now, trainer.global_step = 4.0, 1
    meter.on_train_batch_end(trainer, pl_module, None, None, 0)
    assert meter.train_time == pytest.approx(2.0)


def test_guard_settles_its_pending_loss_when_a_checkpoint_is_saved():
    guard = DivergenceGuard(DivergenceConfig(), vocab_size=256, warmup_steps=0)
    done = SimpleNamespace(synchronize=lambda: None)  # a CUDA event whose copy has landed
    guard._pending = (3, torch.tensor(2.0), done)
    ckpt = {"callbacks": {guard.state_key: {"ema": None, "min_ema": math.inf}}}
    guard.on_save_checkpoint(None, None, ckpt)
    assert ckpt["callbacks"][guard.state_key] == {"ema": 2.0, "min_ema": 2.0}
    guard._pending = (4, torch.tensor(math.nan), done)
    with pytest.raises(Diverged, match="non-finite training loss .* at step 4"):
        guard.on_save_checkpoint(None, None, {})


def test_checkpoint_callback_knows_no_other_callback():
    assert list(inspect.signature(PeriodicCheckpoint).parameters) == ["dirpath", "every", "val_every"]
