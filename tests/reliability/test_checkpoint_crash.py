"""A crash while a checkpoint is being written (an exception, or kill -9 of the training process in the middle of
the write) leaves the previous checkpoint whole: it loads, and the run resumes from it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from archsearch.train import checkpoint_io
from archsearch.train.config import TrainConfig
from archsearch.train.run import train


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(pattern="M*", seq_len=32, batch_size=2, max_steps=4, val_every=2, val_batches=1, log_every=2,
                runs_dir=str(tmp_path / "runs"), name="run", quiet=True)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_exception_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    checkpoint_io.atomic_torch_save({"global_step": 1, "w": torch.ones(3)}, target)
    before = target.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_io.atomic_torch_save({"global_step": 2, "w": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the temporary file is cleaned up"


# The child trains with a checkpoint every 2 steps; its second checkpoint write dies with SIGKILL half-way.
_CHILD = """
import os, signal, sys
import torch
from archsearch.train import checkpoint_io
from archsearch.train.config import TrainConfig
from archsearch.train.run import train

real_save, calls = torch.save, []

def dying_save(obj, fh):
    calls.append(1)
    if len(calls) == 2:
        fh.write(b"PK\\x03\\x04 half a checkpoint")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, fh)

checkpoint_io.torch.save = dying_save
train(TrainConfig(**{cfg!r}))
"""


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume(tmp_path):
    cfg = _cfg(tmp_path, max_steps=6)
    child = textwrap.dedent(_CHILD).format(cfg={**cfg.to_dict(), "betas": list(cfg.betas)})
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt_dir = tmp_path / "runs" / "run" / "checkpoints"
    leftovers = sorted(p.name for p in ckpt_dir.iterdir())
    assert "last.ckpt" in leftovers and any(n.endswith(".tmp") for n in leftovers), leftovers
    state = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2, "the first checkpoint survives the killed second write"

    summary = train(_cfg(tmp_path, max_steps=6, resume=True))
    print(f"\n[reliability] killed mid-write at step 4; resumed from step {summary['resumed_from_step']}")
    assert summary["status"] == "ok" and summary["resumed_from_step"] == 2 and summary["steps"] == 6
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 6
