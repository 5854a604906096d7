"""The sweep's progress line: durations, the tally, the best so far, the time left and a finished trial's head."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from archsearch.search.accounting import Counts
from archsearch.search.progress import best_so_far, duration, eta, progress_line, tally, trial_head
from archsearch.search.space_load import space_from_dict

from .conftest import TINY

SPACE = space_from_dict(TINY, source="f.yaml")


def test_duration():
    assert [duration(s) for s in (-1, 42, 185, 7800)] == ["0s", "42s", "3m05s", "2h10m"]


def test_tally_and_eta():
    assert (
        tally(Counts(complete=4, pruned=1, running=2), 10)
        == "5/10 done (4 complete, 1 pruned, 0 failed, 2 running)"
    )
    started = datetime.now() - timedelta(seconds=6000)
    assert eta(started, 2, 2, 10) is None  # nothing finished in this session yet
    assert eta(started, 0, 10, 10) is None  # done
    assert (
        eta(started, 0, 2, 10) == "ETA 6h40m"
    )  # 3000 s a trial, 8 left (minutes: the test's own time is noise)


def test_best_so_far_and_the_line():
    study = optuna.create_study()
    assert best_so_far(study, SPACE) is None
    for value in (3.5, 3.1):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={}))
    assert best_so_far(study, SPACE) == "best val_loss=3.1 (#1)"
    line = progress_line(study, SPACE, 4, datetime.now(), 2, "[sweep] trial 1 COMPLETE in 1s")
    assert (
        line
        == "[sweep] trial 1 COMPLETE in 1s | 2/4 done (2 complete, 0 pruned, 0 failed, 0 running) | best val_loss=3.1 (#1)"
    )


def test_trial_head():
    def frozen(state, values=None, **attrs):
        return SimpleNamespace(number=7, state=state, values=values, user_attrs=attrs)

    done = frozen(TrialState.COMPLETE, [3.21], pattern="M*M-", duplicate_of=3)
    assert (
        trial_head("[w1]", done, SPACE, 12)
        == "[w1] trial 7 COMPLETE in 12s: val_loss=3.21 M*M- (reused trial 3)"
    )
    pruned = frozen(TrialState.PRUNED, status_reason="x" * 200, arch="M*")
    assert trial_head("[w1]", pruned, SPACE, 61) == f"[w1] trial 7 PRUNED in 1m01s: {'x' * 157}... M*"
