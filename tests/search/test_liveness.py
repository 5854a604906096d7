"""Heartbeats and retries: the beater process ends with its worker, a failed heartbeat write does not stop the
beating, interrupted trials are queued for retry once, and a retry does not inherit the failed attempt's attributes."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from archsearch.search.accounting import interrupted_reason
from archsearch.search.liveness import make_retry_callback, requeue_interrupted
from archsearch.search.study import make_storage


def _pid_alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_beater_ends_with_its_worker(tmp_path):
    """A killed worker's trial must go stale: its beater process sees the pipe close and exits."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=url)
    script = (
        "import os, sys\n"
        "from archsearch.search.liveness import Beater\n"
        f"b = Beater({url!r}, 1)\n"
        "print(b._proc.pid, flush=True)\n"
        "os._exit(0)\n"  # a worker that dies without closing anything
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    beater = int(proc.stdout.split()[0])
    for _ in range(
        600
    ):  # the pipe closes with the worker; the beater notices at once (60 s cap for a slow machine)
        if not _pid_alive(beater):
            break
        time.sleep(0.1)
    assert not _pid_alive(beater)


def test_a_failed_heartbeat_write_does_not_stop_the_beating(tmp_path, monkeypatch, caplog):
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=3)

    def broken(self, trial_id):
        raise optuna.exceptions.StorageInternalError("database is locked")

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", broken)
    with caplog.at_level(logging.WARNING, logger="archsearch.search"):
        storage.record_heartbeat(1)  # Optuna's heartbeat thread would have died here
    assert "heartbeat not recorded (StorageInternalError: database is locked); trying again" in caplog.text


def test_interrupted_trials_are_queued_once_without_the_attempts_attributes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=make_storage(url, heartbeat=False))
    t = study.ask()
    t.suggest_float("x", 0, 1)
    for key, value in {"setting": "abc", "worker": "h:1", "run_dir": "r", "curve": {"1": 2.0}}.items():
        t.set_user_attr(key, value)
    t.set_user_attr("status_reason", interrupted_reason("Ctrl-C"))
    study.tell(t, state=TrialState.FAIL)
    assert requeue_interrupted(study) == [0]
    assert requeue_interrupted(study) == []  # already queued
    (retry,) = [r for r in study.trials if r.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == t.params
    assert retry.user_attrs == {"setting": "abc", "run_dir": "r"}  # identity kept, the attempt's left behind


def test_heartbeat_retries_are_capped(tmp_path):
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=False))
    retry = make_retry_callback(max_retry=1)
    t = study.ask()
    study.tell(t, state=TrialState.FAIL)
    retry(study, study.trials[0])
    second = study.ask()  # the retry
    study.tell(second, state=TrialState.FAIL)
    retry(study, study.trials[1])  # a second retry of the same trial is refused
    assert [x.state for x in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_orphans_are_marked_from_the_storage_not_from_a_stale_list(tmp_path):
    """A RUNNING trial without ``worker`` in an old snapshot, signed by its worker since, is alive: left alone; one
    still unsigned in the storage is an orphan: one beat and its reason."""
    from archsearch.search.accounting import LOST_BEFORE_HEARTBEAT
    from archsearch.search.liveness import Watch

    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    alive, orphan = study.ask(), study.ask()
    snapshot = study.get_trials(deepcopy=True)  # taken before the first worker signs its trial
    alive.set_user_attr("worker", "w0")
    Watch(storage, storage.get_study_id_from_name("s")).mark_orphans(snapshot)
    after = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert "status_reason" not in after[alive.number].user_attrs
    assert after[orphan.number].user_attrs["status_reason"] == LOST_BEFORE_HEARTBEAT
