"""Heartbeats, and what happens to the trials of workers that die: failed with a reason and retried.

Optuna's heartbeat thread beats from inside the worker process, so it shares the interpreter lock with the training
loop. On a loaded machine the training thread, preempted while holding the lock, delayed that thread's beats by
seconds (measured: 3.9 s between beats meant to come every second, 4 workers and 2 CPU hogs on 2 cores), and another
worker's stale check failed a trial that was still training. A ``Beater`` therefore beats from a small process of
its own, for the trial its worker runs now, and ends with its worker (its pipe closes), so a dead worker's trial still
goes stale. Optuna's own thread keeps beating too.

A trial whose worker dies between creating it and its first beat has no heartbeat row, which Optuna never fails:
``Watch.mark_orphans`` gives such a trial one beat (and its reason), after which Optuna's stale check fails and
retries it like any other. Trials interrupted by Ctrl-C are re-queued by ``requeue_interrupted`` when the sweep runs
again.
"""

from __future__ import annotations

import copy
import functools
import logging
import multiprocessing as mp
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from archsearch.search.accounting import LOST_BEFORE_HEARTBEAT, kind

log = logging.getLogger("archsearch.search")

MAX_RETRY = 2  # retries of a trial whose worker died (not of trials that raised)
# attributes of one attempt that a retry must not inherit (it records its own)
ATTEMPT_ATTRS = ("worker", "status_reason", "duplicate_of", "waiting_for", "curve", "metrics", "tokens_per_s")


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the heartbeat options (stable in practice since 2.x)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@functools.cache
def heartbeat_storage_class() -> type:
    """``RDBStorage`` whose heartbeat survives a failed write: Optuna's heartbeat thread ends at the first exception,
    after which a live trial would be failed as stale; here the failure is logged and the next beat tries again."""
    from optuna.storages import RDBStorage

    class HeartbeatStorage(RDBStorage):
        claim_lock: Any = None  # SQLite: a file that serialises taking queued trials across processes

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            """Taking a WAITING trial (RUNNING) is atomic on PostgreSQL (a row lock) but not on SQLite, where two
            workers could both take one queued trial (measured with replicates: both trained trial 3); there the
            check and the write run under an exclusive lock on a file beside the database."""
            if self.claim_lock is None or state.name != "RUNNING":
                return super().set_trial_state_values(trial_id, state, values)
            with file_lock(self.claim_lock):
                return super().set_trial_state_values(trial_id, state, values)

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - a lost beat must not end the beating
                log.warning("heartbeat not recorded (%s: %s); trying again", type(exc).__name__, exc)

    return HeartbeatStorage


@contextmanager
def file_lock(path: Any) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if absent); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _RetryStale:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (a WAITING copy with the same parameters, keeping the steps
    reported so far), with the attributes of the failed attempt left out of the copy."""

    def __init__(self, max_retry: int | None):
        import optuna

        with quiet_experimental():
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry, inherit_intermediate_values=True
            )

    def __call__(self, study: Any, trial: Any) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
        with quiet_experimental():
            self._retry(study, trial)


def make_retry_callback(max_retry: int | None = MAX_RETRY) -> Any:
    return _RetryStale(max_retry)


def requeue_interrupted(study: Any) -> list[int]:
    """Queue a retry of every interrupted trial not retried yet (it resumes from its checkpoint); returns their
    numbers. Interruptions are not the trial's fault, so they are retried however often they happen."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    queued = [t for t in trials if kind(t) == "interrupted" and t.number not in retried]
    retry = make_retry_callback(max_retry=None)
    for t in queued:
        retry(study, t)
    return [t.number for t in queued]


class Watch:
    """Gives each RUNNING trial without a sign of life (the ``worker`` attribute its objective writes first, after a
    heartbeat) one heartbeat, once: a dead worker's trial then goes stale and is retried; a live one is unharmed."""

    def __init__(self, storage: Any, study_id: int):
        self.storage = storage
        self.study_id = study_id
        self._seen: set[int] = set()

    def mark_orphans(self, trials: list[Any]) -> None:
        import optuna

        for t in trials:
            if t.state.name != "RUNNING" or "worker" in t.user_attrs or t.number in self._seen:
                continue
            try:
                tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
                # ``trials`` may be a second old: its worker may have signed it since (under load, the reason of a
                # live trial was overwritten), so ask the storage again
                now = self.storage.get_trial(tid)
                if now.state.name != "RUNNING" or "worker" in now.user_attrs:
                    continue
                self._seen.add(t.number)
                self.storage.record_heartbeat(tid)
                self.storage.set_trial_user_attr(tid, "status_reason", LOST_BEFORE_HEARTBEAT)
            except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
                continue  # it ended meanwhile


class Beater:
    """Records the heartbeat of one trial at a time from a separate process (see the module docstring).

    Args:
        url: the storage URL.
        interval: seconds between beats.
    """

    def __init__(self, url: str, interval: int):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_beat, args=(url, interval, child, os.getpid()), name="archsearch-heartbeat", daemon=True
        )
        self._proc.start()
        child.close()

    def beat_for(self, trial_id: int | list[int] | None) -> None:
        """Beat for ``trial_id`` from now on (a list: for each, as a fused group's trials; None: stop beating)."""
        try:
            self._conn.send(trial_id)
        except OSError:  # the beater is gone; Optuna's own heartbeat thread still beats
            pass

    def close(self) -> None:
        try:
            self._conn.send("exit")
        except OSError:
            pass
        self._proc.join(5)
        if self._proc.is_alive():  # pragma: no cover - stuck in a database call
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()


def _beat(url: str, interval: int, conn: Any, worker_pid: int) -> None:
    """The beater process: a command on the pipe changes the trial; otherwise beat every ``interval`` seconds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker; this process ends with it
    storage = None
    trial: int | None = None
    due = 0.0
    while True:
        wait = max(0.0, due - time.monotonic()) if trial is not None else 1.0
        try:
            if conn.poll(wait):
                msg = conn.recv()
                if msg == "exit":
                    return
                trial, due = msg, 0.0
                continue
        except (EOFError, OSError):
            return  # the worker died: its trial must go stale
        if os.getppid() != worker_pid:
            return
        if trial is None:
            continue
        if storage is None:
            storage = _beat_storage(url)
        for tid in trial if isinstance(trial, list) else [trial]:
            try:
                storage.record_heartbeat(tid)
            except Exception:  # noqa: BLE001 - the worker's own thread beats too; try again next time
                pass
        due = time.monotonic() + interval


def _beat_storage(url: str) -> Any:
    """A plain storage for beating only (no schema checks beyond what RDBStorage does)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 5}}
    from optuna.storages import RDBStorage

    with quiet_experimental():
        return RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True, **kwargs)
