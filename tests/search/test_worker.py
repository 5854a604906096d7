"""search/worker.py: when a sweep stops (the verdict the workers and the final report share)."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

from optuna.trial import TrialState

from archsearch.search.accounting import lost_reason
from archsearch.search.worker import DUPLICATE_STREAK, WorkerJob, verdict

from .fakes import fake_trial as _trial


def _job(**kw):
    space = SimpleNamespace()
    base = dict(space=space, storage_url="", study_name="s", n_trials=2, runs_dir="", max_failures=2,
                session_start=datetime.now() - timedelta(seconds=5))  # fmt: skip
    return WorkerJob(**{**base, **kw})


def test_verdict():
    ok = [_trial(0, TrialState.COMPLETE, setting="a")]
    assert verdict(ok, _job()) is None
    assert verdict([*ok, _trial(1, TrialState.PRUNED, setting="b")], _job()) == "done"
    fails = [_trial(i, TrialState.FAIL, status_reason="failed: boom") for i in range(2)]
    assert verdict(fails, _job()).startswith("--max-failures reached: 2 trials failed")
    lost = [_trial(i, TrialState.FAIL, status_reason=lost_reason("h:1", 3)) for i in range(5)]
    assert verdict(lost, _job()) is None  # lost trials are retried, not failures
    used_up = _job(n_trials=3, settings=frozenset({"a", "b"}))
    both = [*ok, _trial(1, TrialState.COMPLETE, setting="b")]
    assert verdict(both, used_up) == "the space has only 2 distinct settings and every one has run"
    assert verdict([*both, _trial(2, TrialState.RUNNING)], used_up) is None  # still running: wait
    assert "in a row" in verdict(ok, _job(), duplicate_streak=DUPLICATE_STREAK)
