"""Exact resume: 20 steps straight equal 10 steps, a crash, and 10 resumed steps, loss for loss (fp32, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.train.callbacks import InjectedCrash
from archsearch.train.resume import capture_rng, restore_rng
from archsearch.train.run import train
from tests.train.conftest import LossRecorder


def test_resume_continues_the_same_loss_curve(small):
    common = dict(pattern="M-*-", max_steps=20, val_every=5, tasks={"lm": 1.0, "mqar": 0.5})
    straight = LossRecorder()
    s1 = train(small(name="straight", **common), callbacks=[straight])
    assert s1["status"] == "ok" and len(straight.losses) == 20

    first = LossRecorder()
    with pytest.raises(InjectedCrash):
        train(
            small(name="cut", ckpt_every=10, fault_injection={"crash_at_step": 12}, **common),
            callbacks=[first],
        )
    failed = json.loads((s1_dir := (small().run_dir().parent / "cut")).joinpath("summary.json").read_text())
    assert failed["status"] == "failed" and "InjectedCrash" in failed["reason"]

    second = LossRecorder()
    s2 = train(small(name="cut", ckpt_every=10, resume=True, **common), callbacks=[second])
    assert s2["status"] == "ok" and s2["resumed_from_step"] == 10 and s2["steps"] == 20
    assert len(second.losses) == 10
    # bit-identical: same weights, optimizer and scheduler state, data position and RNG
    assert first.losses[:10] == straight.losses[:10]
    assert second.losses == straight.losses[10:]
    assert s2["metrics"] == s1["metrics"]
    assert s2["val_history"] == s1["val_history"]
    assert s2["best_val_loss"] == s1["best_val_loss"]
    ckpt = torch.load(s1_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 20 and ckpt["archsearch"]["pattern"] == "M-*-"


def test_resume_with_grad_accumulation(small):
    common = dict(max_steps=6, val_every=2, grad_accum=2)
    straight = LossRecorder()
    train(small(name="a", **common), callbacks=[straight])
    with pytest.raises(InjectedCrash):
        train(small(name="b", fault_injection={"crash_at_step": 3}, **common))
    resumed = LossRecorder()
    s = train(small(name="b", resume=True, **common), callbacks=[resumed])
    assert s["resumed_from_step"] == 2
    assert resumed.losses == straight.losses[4:]  # 2 micro-batches per step


def test_existing_run_needs_resume_or_overwrite(small):
    train(small(max_steps=3))
    with pytest.raises(ConfigError, match="already holds a checkpoint") as info:
        train(small(max_steps=3))
    assert "--resume" in info.value.hint
    s = train(small(max_steps=3, overwrite=True))
    assert s["status"] == "ok" and s["resumed_from_step"] is None


def test_resume_refuses_another_pattern(small):
    train(small(max_steps=3))
    with pytest.raises(ConfigError, match="checkpoint trained pattern 'M\\*'"):
        train(small(max_steps=6, pattern="*M", resume=True))


def test_resume_without_checkpoint_starts_fresh(small):
    s = train(small(max_steps=3, resume=True))
    assert s["status"] == "ok" and s["resumed_from_step"] is None and s["steps"] == 3


def test_rng_capture_restore_round_trip():
    import random

    import numpy as np

    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    # the captured state survives a weights-only round trip
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restore_rng(torch.load(buf, weights_only=True))
    assert torch.rand(1).item() == a[2]
