"""How a run ends and what it prints: Ctrl-C ("interrupted", checkpoint kept, resumable), a full disk (one line
naming the run), ``--json`` (pure JSON on stdout) and progress by step on stderr without Lightning's banners."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import lightning.pytorch as pl
import pytest

from archsearch.cli import main
from archsearch.errors import StudyError
from archsearch.train.run import train


class InterruptAt(pl.Callback):
    """Sends this process SIGINT (what Ctrl-C does) when ``step`` is reached."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_is_interrupted_keeps_the_checkpoint_and_resumes(small):
    before = signal.getsignal(signal.SIGINT)
    cfg = small(max_steps=8, val_every=2, checkpoint=True)
    with pytest.raises(
        KeyboardInterrupt, match="stopped at step 5; its last checkpoint \\(step 4\\) is kept"
    ):
        train(cfg, callbacks=(InterruptAt(5),))
    assert signal.getsignal(signal.SIGINT) is before  # the handler of the caller is back
    run = cfg.run_dir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 5, summary
    assert "last checkpoint (step 4) is kept" in summary["reason"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    again = train(small(max_steps=8, val_every=2, checkpoint=True, resume=True))
    assert again["status"] == "ok" and again["resumed_from_step"] == 4 and again["steps"] == 8


def test_a_full_disk_names_the_run(small, monkeypatch):
    """Checkpoint writes that hit ENOSPC (a real one: /dev/full) end in one line, not torch's inline_container.cc."""
    import archsearch.train.checkpoint_io as io

    def full(prefix="", suffix="", dir=None):  # noqa: A002 - tempfile's signature
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, f"{prefix}x{suffix}")

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    cfg = small(max_steps=4, val_every=2, checkpoint=True)
    with pytest.raises(StudyError) as info:
        train(cfg)
    text = info.value.render()
    assert "no space left" in text and str(cfg.run_dir()) in text and "inline_container" not in text, text
    summary = json.loads((cfg.run_dir() / "summary.json").read_text())
    assert summary["status"] == "failed" and "no space left" in summary["reason"]


def test_train_cli_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    import archsearch.train.checkpoint_io as io

    monkeypatch.setattr(
        io.tempfile,
        "mkstemp",
        lambda prefix="", suffix="", dir=None: (os.open("/dev/full", os.O_WRONLY), f"{dir}/t"),
    )
    argv = ["train", "--pattern", "M*", "--seq-len", "32", "--batch-size", "2", "--max-steps", "2", "--val-every",
            "2", "--val-batches", "1", "--quiet", "--runs-dir", str(tmp_path), "--name", "r"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and str(tmp_path / "r") in err[0], err


def test_json_is_alone_on_stdout_and_progress_goes_to_stderr_by_step(tmp_path):
    argv = [sys.executable, "-m", "archsearch", "train", "--pattern", "M*", "--seq-len", "32", "--batch-size", "2",
            "--max-steps", "6", "--val-every", "3", "--val-batches", "1", "--runs-dir", str(tmp_path), "--json"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert summary["status"] == "ok" and summary["steps"] == 6
    err = proc.stderr
    assert "step 6/6 (100%)" in err and "step 3/6 validation: val/loss" in err, err
    for noise in ("Epoch 0", "litlogger", "GPU available", "TPU available", "Tip:", "max_steps=6` reached"):
        assert noise not in err, (noise, err)


def test_ctrl_c_of_the_train_command(tmp_path):
    """As a terminal does it: SIGINT to the process group; exit 130 and one line saying what was kept."""
    argv = [sys.executable, "-m", "archsearch", "train", "--pattern", "M*", "--seq-len", "32", "--batch-size", "2",
            "--max-steps", "400", "--val-every", "2", "--val-batches", "1", "--runs-dir", str(tmp_path), "--name",
            "r", "--quiet", "--config", str(tmp_path / "slow.yaml")]  # fmt: skip
    (tmp_path / "slow.yaml").write_text("fault_injection: {step_sleep_s: 0.05}\n")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    try:
        for _ in range(1200):
            if ckpt.is_file() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"])
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130 and lines[-1].startswith(
        f"archsearch: interrupted: run {tmp_path / 'r'}"
    ), err
    assert "Traceback" not in err and "--resume" in lines[-1]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and ckpt.is_file()
