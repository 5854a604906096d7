"""Kill -9 one of two sweep workers mid-trial (SQLite and PostgreSQL): the heartbeat fails its trial, the other
worker retries it from its last checkpoint, and the study still ends with exactly n_trials finished trials."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.reliability.helpers import (
    SLOW,
    children_of,
    figures,
    load,
    snapshot,
    start_sweep,
    sweep_argv,
    wait_for,
)

N_TRIALS = 3


def victim_trial(url: str, name: str, sweep_pid: int):
    """A RUNNING trial with a checkpoint on disk whose worker is one of the sweep's processes, else None."""
    try:
        study = load(url, name)
    except Exception:  # noqa: BLE001 - the study or its tables may not exist yet
        return None
    workers = children_of(sweep_pid)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir, worker = t.user_attrs.get("run_dir"), t.user_attrs.get("worker")
        if not run_dir or not worker or not (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
            continue
        pid = int(worker.rsplit(":", 1)[1])
        if pid in workers:  # only ever kill a process this test started
            return t, pid
    return None


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_one_worker_mid_trial(backend, write_space, tmp_path, request):
    runs = tmp_path / "runs"
    name = f"kill-{backend}"
    space = write_space(name, n_trials=N_TRIALS, **SLOW)
    extra = ["--workers", "2"]
    if backend == "postgresql":
        url = request.getfixturevalue("pg").url()
        extra += ["--storage", url, "--study-name", name]
    else:
        url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    log = tmp_path / "sweep.log"
    proc = start_sweep(sweep_argv(space, runs, *extra), log)
    try:
        trial, pid = wait_for(
            lambda: victim_trial(url, name, proc.pid), 120, "a running trial with a checkpoint", proc
        )
        before = {
            t.number: snapshot(t)
            for t in load(url, name).get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        }
        os.kill(pid, signal.SIGKILL)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    study = load(url, name)
    fig = figures(study, N_TRIALS, before, label=f"kill -9 one of 2 workers ({backend})")
    assert rc == 0, f"{fig}\n{out[-3000:]}"
    assert fig.finished == N_TRIALS and fig.lost == 0 and fig.duplicated == 0, f"{fig}\n{out[-3000:]}"

    trials = {t.number: t for t in study.trials}
    killed = trials[trial.number]
    assert killed.state == TrialState.FAIL, f"the killed trial is {killed.state.name}; {fig}"
    # it says why: its worker stopped beating (written when the trial started, replaced when a trial ends)
    assert killed.user_attrs["status_reason"].startswith(
        f"lost: no heartbeat for 3 s from worker {trial.user_attrs['worker']}"
    )
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1, f"expected one retry of trial {trial.number}, found {len(retries)}; {fig}"
    retry = retries[0]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED), f"retry ended {retry.state.name}; {fig}"
    assert retry.params == killed.params
    # the retry continued the killed trial's run from its last checkpoint, keeping the steps reported before
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]
    summary = json.loads((Path(retry.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0, summary
    assert summary["steps"] == 16 or summary["status"] != "ok", summary
    assert set(killed.intermediate_values) <= set(retry.intermediate_values)
    # nobody else was failed: the survivor's live trials kept their heartbeat within the 3 s grace period
    others = [t for t in study.trials if t.state == TrialState.FAIL and t.number != trial.number]
    assert all(t.user_attrs.get("status_reason", "").startswith("surplus") for t in others), [
        (t.number, t.user_attrs.get("status_reason")) for t in others
    ]
    assert fig.retried == 1 and fig.failed == 1 and fig.distinct == N_TRIALS, str(fig)
