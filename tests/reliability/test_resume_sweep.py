"""Kill a whole sweep (every process, -9) mid-trial and run the same command again: it resumes where it stopped, the
finished trials are unchanged, and the interrupted trial continues from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.reliability.helpers import SLOW, figures, load, snapshot, start_sweep, sweep_argv, wait_for

N_TRIALS = 3


def _ready(url: str, name: str):
    """(finished snapshot, interrupted trial) once a trial finished and another runs with a checkpoint."""
    try:
        trials = load(url, name).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return None
    done = {t.number: snapshot(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    running = [
        t
        for t in trials
        if t.state == TrialState.RUNNING
        and t.user_attrs.get("run_dir")
        and (Path(t.user_attrs["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
    ]
    return (done, running[0]) if done and running else None


@pytest.mark.slow
def test_killed_sweep_resumes_where_it_stopped(write_space, tmp_path):
    runs, name = tmp_path / "runs", "resume"
    space = write_space(name, n_trials=N_TRIALS, **SLOW)
    url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    argv = sweep_argv(space, runs)
    proc = start_sweep(argv, tmp_path / "first.log")
    try:
        before, cut = wait_for(
            lambda: _ready(url, name), 120, "a finished trial and a checkpointed one", proc
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and anything it started
        proc.wait()
    stranded = load(url, name).trials[cut.number]
    assert stranded.state == TrialState.RUNNING  # nobody told the storage: the heartbeat must catch it

    again = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    study = load(url, name)
    fig = figures(study, N_TRIALS, before, label="kill -9 the whole sweep, run it again")
    assert again.returncode == 0, f"{fig}\n{again.stderr[-3000:]}"
    assert "resuming" in again.stderr, again.stderr[-2000:]
    assert fig.finished == N_TRIALS and fig.lost == 0 and fig.duplicated == 0, str(fig)
    assert study.trials[cut.number].state == TrialState.FAIL, str(fig)
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == cut.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.params == cut.params, str(fig)
    summary = json.loads((Path(retry.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0, summary
    assert fig.retried == 1 and fig.failed == 1 and fig.distinct == N_TRIALS, str(fig)
    assert study.trials[cut.number].user_attrs["status_reason"].startswith("lost: no heartbeat")
