"""The divergence guard: a NaN or an exploding loss stops the run with status "diverged" and a reason."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from archsearch.train.callbacks import Diverged, DivergenceGuard
from archsearch.train.config import DivergenceConfig
from archsearch.train.run import train
from tests.train.conftest import LossRecorder


def test_injected_nan_stops_the_run(small):
    rec = LossRecorder()
    s = train(small(max_steps=20, val_every=2, fault_injection={"nan_at_step": 4}), callbacks=[rec])
    assert s["status"] == "diverged"
    assert "non-finite training loss (nan) at step 4" in s["reason"]
    assert s["steps"] == 4  # stopped before the NaN's backward: no update with it
    assert len(rec.losses) == 4 and all(math.isfinite(x) for x in rec.losses)
    on_disk = json.loads((small().run_dir() / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["reason"] == s["reason"]
    # the last checkpoint is from before the NaN and holds finite weights
    ckpt = torch.load(small().run_dir() / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_guard_disabled_trains_on(small):
    s = train(small(max_steps=4, divergence={"enabled": False}, fault_injection={"nan_at_step": 2}))
    assert s["status"] == "ok" and s["steps"] == 4


def feed(guard: DivergenceGuard, losses: list[float], start_step: int = 0) -> None:
    for i, loss in enumerate(losses):
        module = SimpleNamespace(last_loss=torch.tensor(loss))
        guard.on_before_backward(SimpleNamespace(global_step=start_step + i), module, module.last_loss)


def test_exploding_loss_after_warmup():
    guard = DivergenceGuard(DivergenceConfig(smoothing=0.0), vocab_size=256, warmup_steps=3)
    feed(guard, [5.5, 4.0, 3.0, 2.0, 1.5, 2.5])  # noise well within 3x the minimum
    with pytest.raises(Diverged, match=r"exceeds 3x its running minimum 1\.500"):
        feed(guard, [4.6], start_step=6)


def test_small_losses_need_an_absolute_jump_too():
    guard = DivergenceGuard(DivergenceConfig(smoothing=0.0), vocab_size=256, warmup_steps=0)
    feed(guard, [0.05, 0.01, 0.2, 0.9])  # 90x the minimum but under 1 nat above it: noise on an easy task


def test_loss_far_above_uniform_guess():
    guard = DivergenceGuard(DivergenceConfig(smoothing=0.0, factor=100.0), vocab_size=256, warmup_steps=1)
    with pytest.raises(Diverged, match=r"exceeds ln\(vocab\) \+ 3"):
        feed(guard, [5.5, 5.6, math.log(256) + 3.5])


def test_no_ratio_rule_during_warmup():
    guard = DivergenceGuard(DivergenceConfig(smoothing=0.0), vocab_size=256, warmup_steps=10)
    feed(guard, [5.5, 1.0, 5.0, 6.0])  # early spikes are normal


def test_state_round_trip():
    guard = DivergenceGuard(DivergenceConfig(), vocab_size=256, warmup_steps=0)
    feed(guard, [3.0, 2.0])
    other = DivergenceGuard(DivergenceConfig(), vocab_size=256, warmup_steps=0)
    other.load_state_dict(guard.state_dict())
    assert other.ema == guard.ema and other.min_ema == guard.min_ema


@pytest.mark.gpu
def test_injected_nan_on_cuda_never_reaches_a_checkpoint(small):
    cfg = small(
        max_steps=20, val_every=2, ckpt_every=1, fault_injection={"nan_at_step": 4}, deterministic=False
    )
    s = train(cfg)  # not deterministic: CUDA's deterministic mode refuses some kernels the layers use
    assert s["status"] == "diverged" and "at step 4" in s["reason"], s
    ckpt = torch.load(small().run_dir() / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] <= 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
