"""search/twins.py: which trial trains a setting, which waits and which reuses a finished twin."""

from __future__ import annotations

from optuna.trial import TrialState

from .fakes import fake_trial as _trial


def _t(number, state, setting=None, failed_trial=None, **attrs):
    return _trial(number, state, failed_trial, **({"setting": setting} if setting else {}), **attrs)


def test_one_trial_trains_each_setting():
    from archsearch.search.twins import decide

    R, W, C, F = TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE, TrialState.FAIL
    me = 5
    assert decide([_t(5, R, "s")], me, "s", (5, 5)).action == "train"
    assert decide([_t(2, C, "s"), _t(5, R, "s")], me, "s", (5, 5)).twin.number == 2  # reuse the finished one
    assert decide([_t(2, C, "s", duplicate_of=1), _t(5, R, "s")], me, "s", (5, 5)).action == "train"
    # an earlier running trial of the setting trains it; a later one waits for the earlier, never the reverse
    assert decide([_t(3, R, "s"), _t(5, R, "s")], me, "s", (5, 5)).action == "wait"
    assert decide([_t(7, R, "s"), _t(5, R, "s")], me, "s", (5, 5)).action == "train"
    # an earlier trial waiting for a twin is still ahead: if that twin fails, it trains the setting
    waiter = _t(3, R, "s", waiting_for=1)
    assert decide([_t(1, F, "s"), waiter, _t(5, R, "s")], me, "s", (5, 5)).twin is waiter
    # a queued retry of the setting trains it from its checkpoint: step aside, even when the retry's number is later
    retry = _t(9, W, "s", failed_trial=0)
    assert decide([retry, _t(5, R, "s")], me, "s", (5, 5)).action == "step_aside"
    # an earlier trial that has not said what it trains yet: wait for it to say
    assert decide([_t(4, R), _t(5, R, "s")], me, "s", (5, 5)) == type(decide([], 0, "", (0, 0)))("wait")
    assert decide([_t(6, R), _t(5, R, "s")], me, "s", (5, 5)).action == "train"
