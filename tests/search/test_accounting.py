"""search/accounting.py: what kind of trial each one is and what counts toward n_trials."""

from __future__ import annotations

from optuna.trial import TrialState

from archsearch.search.accounting import SURPLUS, count, interrupted_reason, kind, lost_reason

from .fakes import fake_trial as _trial


def test_kinds_and_counts():
    trials = [
        _trial(0, TrialState.COMPLETE),
        _trial(1, TrialState.PRUNED, status_reason="pruned at step 2"),
        _trial(2, TrialState.COMPLETE, duplicate_of=0),
        _trial(3, TrialState.FAIL, status_reason=SURPLUS),
        _trial(4, TrialState.FAIL, status_reason=lost_reason("h:1", 20)),
        _trial(5, TrialState.FAIL, status_reason=interrupted_reason("Ctrl-C")),
        _trial(6, TrialState.FAIL, status_reason="failed: out of memory"),
        _trial(7, TrialState.RUNNING),
        _trial(8, TrialState.WAITING),
    ]
    assert [kind(t) for t in trials] == ["complete", "pruned", "reused", "not_trained", "lost", "interrupted",
                                         "failed", "running", "waiting"]  # fmt: skip
    c = count(trials)
    assert c.finished == 2
    assert c.line(5) == (
        "2 of 5 trials finished (1 complete, 1 pruned), 1 failed, 1 running; 1 queued for retry, "
        "1 lost with their worker, 1 interrupted, 1 reused a finished twin, 1 not trained (surplus or duplicate)"
    )
