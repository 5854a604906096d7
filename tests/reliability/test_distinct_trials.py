"""Every trial distinct and accounted for: two ``archsearch sweep`` commands on one study (SQLite, PostgreSQL), a
worker killed before its first heartbeat, Ctrl-C and resume, a killed sweep process, stopping short. Each test prints
its figures (requested / finished / distinct / duplicated / lost); run with ``-s`` to see them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from archsearch.cli import main
from archsearch.search import run_sweep
from archsearch.search.accounting import LOST_BEFORE_HEARTBEAT
from archsearch.search.study import make_storage
from tests.reliability.helpers import (
    SLOW,
    TINY,
    children_of,
    figures,
    load,
    start_sweep,
    sweep_argv,
    wait_for,
)

# 3 attention x 2 MLP fractions x 2 learning rates: 12 distinct settings, so 6 trials can all differ
WIDE = {**TINY["space"], "lr": {"type": "categorical", "choices": [0.003, 0.006]}}
# trials of about a second (8 steps of >= 0.1 s), so two commands' trials overlap
OVERLAP = {
    "steps": 8,
    "val_every": 4,
    "train": {"checkpoint": False, "fault_injection": {"step_sleep_s": 0.1}},
}


def _two_commands(write_space, tmp_path, sampler: str, extra: list[str], url: str, name: str):
    space = write_space(name, n_trials=6, sampler=sampler, space=WIDE, **OVERLAP)
    runs = tmp_path / "runs"
    procs = [start_sweep(sweep_argv(space, runs, *extra), tmp_path / f"sweep{i}.log") for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"sweep{i}.log").read_text() for i in range(2)]
    fig = figures(
        load(url, name), 6, label=f"two sweep commands on one study ({sampler}, {url.split(':')[0]})"
    )
    assert codes == [0, 0], (codes, logs[0][-2000:], logs[1][-2000:])
    assert fig.finished == 6 and fig.distinct == 6 and fig.duplicated == 0 and fig.lost == 0, str(fig)
    return fig


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_two_sweep_commands_on_one_sqlite_study(write_space, tmp_path, sampler):
    name = f"two-{sampler}"
    url = f"sqlite:///{(tmp_path / 'runs' / name / 'study.db').resolve()}"
    _two_commands(write_space, tmp_path, sampler, [], url, name)


def test_two_sweep_commands_on_one_postgres_study(write_space, tmp_path, pg):
    url = pg.url()
    _two_commands(write_space, tmp_path, "tpe", ["--storage", url, "--study-name", "two-pg"], url, "two-pg")


def test_a_worker_killed_before_its_first_heartbeat(write_space, tmp_path, caplog):
    """A trial asked but never beating (its worker died between ask and the first heartbeat) is failed with a
    reason after the grace period and retried; the sweep says what it waits for instead of waiting silently."""
    path = write_space("orphan", n_trials=1, space=WIDE)  # the orphan holds the only slot until it is failed
    url = f"sqlite:///{tmp_path / 'runs' / 'orphan' / 'study.db'}"
    (tmp_path / "runs" / "orphan").mkdir(parents=True)
    dead = optuna.create_study(study_name="orphan", storage=make_storage(url, heartbeat=False))
    orphan = dead.ask()  # RUNNING, no heartbeat row, nobody will tell it
    with caplog.at_level("INFO", logger="archsearch.search"):
        result = run_sweep(path, runs_dir=tmp_path / "runs")
    study = load(url, "orphan")
    fig = figures(study, 1, label="a worker killed before its first heartbeat")
    assert result.done and fig.finished == 1 and fig.duplicated == 0, str(fig)
    failed = study.trials[orphan.number]
    assert failed.state == TrialState.FAIL and failed.user_attrs["status_reason"] == LOST_BEFORE_HEARTBEAT
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED), retry.state
    assert "waiting: the remaining slots are taken by running trial(s) 0 (starting)" in caplog.text


def _running_with_checkpoint(url: str, name: str, n: int = 1):
    try:
        trials = load(url, name).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet
        return None
    running = [
        t
        for t in trials
        if t.state == TrialState.RUNNING
        and t.user_attrs.get("run_dir")
        and (Path(t.user_attrs["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
    ]
    return running if len(running) >= n else None


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: about 20 s
def test_ctrl_c_then_resume(write_space, tmp_path, workers):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it): exit 130, "interrupted", the trials'
    summaries say so and keep their checkpoints; the same command resumes them from those checkpoints."""
    name, runs = f"ctrlc{workers}", tmp_path / "runs"
    space = write_space(name, n_trials=3, **SLOW)
    url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    argv = sweep_argv(space, runs, "--workers", str(workers))
    proc = start_sweep(argv, tmp_path / "first.log")
    try:
        cut = wait_for(lambda: _running_with_checkpoint(url, name, workers), 180, "running trials with checkpoints",
                       proc)  # fmt: skip
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "first.log").read_text()
    assert rc == 130 and "archsearch: interrupted: " in log and "Traceback" not in log, log[-3000:]
    assert not children_of(proc.pid)
    study = load(url, name)
    interrupted = [t for t in study.trials if t.number in {c.number for c in cut}]
    for t in interrupted:
        assert t.state == TrialState.FAIL and t.user_attrs["status_reason"].startswith(
            "interrupted: Ctrl-C"
        ), t
        run_dir = Path(t.user_attrs["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "last checkpoint" in summary["reason"], summary
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    study = load(url, name)
    fig = figures(study, 3, label=f"Ctrl-C with {workers} worker(s), then resume")
    assert again.returncode == 0, f"{fig}\n{again.stderr[-3000:]}"
    assert "re-queued interrupted trial(s)" in again.stderr
    assert fig.finished == 3 and fig.distinct == 3 and fig.duplicated == 0 and fig.lost == 0, str(fig)
    for t in interrupted:
        (retry,) = [r for r in study.trials if r.system_attrs.get("failed_trial") == t.number]
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.params == t.params, (
            retry.state,
            retry.user_attrs.get("status_reason"),
            again.stderr[-3000:],
        )
        summary = json.loads((Path(retry.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0, summary


def test_workers_stop_when_the_sweep_process_dies(write_space, tmp_path):
    name, runs = "orphaned-workers", tmp_path / "runs"
    space = write_space(name, n_trials=3, **SLOW)
    url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    argv = sweep_argv(space, runs, "--workers", "2")
    proc = start_sweep(argv, tmp_path / "first.log")
    workers: set[int] = set()
    beaters: set[int] = set()
    try:
        wait_for(lambda: _running_with_checkpoint(url, name, 2), 180, "two running trials", proc)
        workers = children_of(proc.pid)
        beaters = set().union(*(children_of(w) for w in workers))  # each worker's heartbeat process
        assert len(workers) >= 2 and len(beaters) >= 2, (workers, beaters)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its workers must notice and stop
        proc.wait()
        wait_for(lambda: not any(_alive(p) for p in workers | beaters), 90,
                 "the workers and their heartbeat processes to exit")  # fmt: skip
    finally:
        for p in workers | beaters:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    study = load(url, name)
    stopped = [
        t for t in study.trials if str(t.user_attrs.get("status_reason", "")).startswith("interrupted")
    ]
    assert len(stopped) == 2, [(t.number, t.state, t.user_attrs.get("status_reason")) for t in study.trials]
    assert all(f"the sweep process {proc.pid} ended" in t.user_attrs["status_reason"] for t in stopped)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_worker_deaf_to_sigint_still_exits_when_its_sweep_dies(tmp_path):
    """The backstop: a worker whose main thread cannot be interrupted ends by itself after its sweep is killed."""
    worker = (
        "import os, signal, time, types\n"
        "from archsearch.search.worker import _watch_parent\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "_watch_parent(os.getppid(), types.SimpleNamespace(), exit_after=1.0)\n"
        "print(os.getpid(), flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    sweep = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {worker!r}])"
    proc = subprocess.Popen(
        [sys.executable, "-c", sweep], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    pid = int(proc.stdout.readline())
    try:
        assert _alive(pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not _alive(pid), 60, "the orphaned worker to exit")
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_all_workers_killed_is_a_short_sweep_with_counts(write_space, tmp_path):
    name, runs = "dead-workers", tmp_path / "runs"
    space = write_space(name, n_trials=3, **SLOW)
    url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    proc = start_sweep(sweep_argv(space, runs, "--workers", "2"), tmp_path / "sweep.log")
    try:
        wait_for(lambda: _running_with_checkpoint(url, name, 2), 180, "two running trials", proc)
        for w in children_of(proc.pid):
            os.kill(w, signal.SIGKILL)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "sweep.log").read_text()
    last = [ln for ln in log.splitlines() if ln.strip()][-1]
    assert rc == 1, log[-3000:]
    assert last.startswith(
        "archsearch: sweep stopped short: the workers ended with 2 trial(s) still RUNNING"
    ), last
    assert "0 of 3 trials finished (0 complete, 0 pruned), 0 failed, 2 running" in last


def test_max_failures_is_a_short_sweep_with_counts(write_space, tmp_path, capsys):
    path = write_space(n_trials=5, train={"checkpoint": False, "fault_injection": {"crash_at_step": 1}})
    rc = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--max-failures", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1] == (
        "archsearch: sweep stopped short: --max-failures reached: 2 trials failed in this sweep: "
        "0 of 5 trials finished (0 complete, 0 pruned), 2 failed, 0 running"
    )


def test_space_yaml_is_valid_for_the_helpers(tmp_path):
    # the WIDE space really has 12 distinct settings (so the two-command tests can finish 6 distinct ones)
    from archsearch.search.identity import enumerate_settings
    from archsearch.search.space_load import load_space

    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump({**TINY, "space": WIDE}))
    assert len(enumerate_settings(load_space(path, check_build=False))) == 12
