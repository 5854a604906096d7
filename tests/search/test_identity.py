"""Trial identity (setting, arch, seed, lr), the accounting rules, the stop verdict and per-trial sampler seeds."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from archsearch.search.accounting import SURPLUS, count, interrupted_reason, kind, lost_reason
from archsearch.search.identity import enumerate_settings, identify, setting_of
from archsearch.search.space import Dimension, load_space
from archsearch.search.study import make_sampler, trial_seed
from archsearch.search.suggest import plan_trial, trial_config
from archsearch.search.worker import DUPLICATE_STREAK, WorkerJob, verdict

from .conftest import TINY


def _identity(space, params, **train):
    plan = plan_trial(optuna.trial.FixedTrial(params), space, placement_seed=space.seed)
    plan.train.update(train)
    cfg = trial_config(plan, space, name="trial-0003", runs_dir="/somewhere")
    return identify(plan, cfg, space), cfg


def test_setting_is_what_trains_and_nothing_else(write_space):
    space = load_space(
        write_space(space={**TINY["space"], "rope": {"type": "categorical", "choices": [True, False]}})
    )
    a, cfg = _identity(space, {"attention": 0.25, "mlp": 0.5, "rope": True})
    again, _ = _identity(space, {"attention": 0.25, "mlp": 0.5, "rope": True})
    assert a == again and len(a.setting) == 12
    assert a.seed == 0 and a.lr == pytest.approx(cfg.lr)
    assert a.arch == f"{cfg.pattern} rope=on"
    # where the run goes does not change the setting
    moved = replace(cfg, name="trial-0099", runs_dir="/elsewhere", resume=True, overwrite=False)
    assert setting_of(moved) == a.setting
    # a replicate (another seed or learning rate) is another setting of the same architecture
    seed1, _ = _identity(space, {"attention": 0.25, "mlp": 0.5, "rope": True}, seed=1)
    lr2, _ = _identity(space, {"attention": 0.25, "mlp": 0.5, "rope": True}, lr=1e-2)
    assert seed1.arch == lr2.arch == a.arch and len({seed1.setting, lr2.setting, a.setting}) == 3
    assert seed1.seed == 1 and lr2.lr == 1e-2
    other, _ = _identity(space, {"attention": 0.25, "mlp": 0.5, "rope": False})
    assert other.arch.endswith("rope=off") and other.setting != a.setting


def test_two_parameter_sets_of_one_pattern_are_one_setting(write_space):
    # with 4 layers, attention 0.0 and 0.05 both allocate no attention layer: the same model, trained alike
    space = load_space(
        write_space(space={"layers": 4, "attention": {"type": "categorical", "choices": [0.0, 0.05]}})
    )
    a, _ = _identity(space, {"attention": 0.0})
    b, _ = _identity(space, {"attention": 0.05})
    assert a.setting == b.setting
    assert enumerate_settings(space) == frozenset({a.setting})


def test_enumerated_settings_of_shipped_spaces():
    quick = load_space("quickstart", check_build=False)
    settings = enumerate_settings(quick)
    # attention nowhere, first or everywhere, three seeds each: nine settings
    assert settings is not None and len(settings) == 9
    assert enumerate_settings(load_space("placement", check_build=False)) is not None
    continuous = replace(quick, space={**quick.space, "lr": Dimension("lr", "float", low=1e-4, high=1e-2)})
    assert enumerate_settings(continuous) is None


def _trial(number, state, **attrs):
    return SimpleNamespace(
        number=number, state=state, user_attrs=attrs, system_attrs={},
        datetime_complete=datetime.now() if state.is_finished() else None,
    )  # fmt: skip


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


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_are_seeded_by_trial_number(write_space, sampler):
    space = load_space(write_space(sampler=sampler, space={**TINY["space"], "lr": {"type": "float", "low": 1e-4,
                                                                                      "high": 1e-2, "log": True}}))  # fmt: skip

    def proposals(n_first_skipped: int, n: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler(space))
        for _ in range(n_first_skipped):  # another command's trials took the first numbers
            study.tell(study.ask(), state=TrialState.FAIL)
        out = []
        for _ in range(n):
            t = study.ask()
            out.append(t.suggest_float("lr", 1e-4, 1e-2, log=True))
            study.tell(t, state=TrialState.FAIL)
        return out

    first = proposals(0, 3)
    assert first == proposals(0, 3)  # reproducible
    assert proposals(3, 3) != first  # a second command (trials 3..5) does not repeat trials 0..2
    assert trial_seed(0, 1) != trial_seed(0, 2) and 0 <= trial_seed(2**32 - 1, 10**9) < 2**32


def _t(number, state, setting=None, failed_trial=None, **attrs):
    t = _trial(number, state, **({"setting": setting} if setting else {}), **attrs)
    if failed_trial is not None:
        t.system_attrs = {"failed_trial": failed_trial}
    return t


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


def test_pruner_startup_counts_trained_trials_not_reused_twins(write_space):
    from archsearch.search.study import make_pruner

    space = load_space(write_space(), check_build=False)  # median: waits for 2 finished trials
    study = optuna.create_study(pruner=make_pruner(space))
    trained = optuna.trial.create_trial(value=1.0, intermediate_values={2: 1.0}, user_attrs={"setting": "a"})
    twin = optuna.trial.create_trial(
        value=1.0, intermediate_values={2: 1.0}, user_attrs={"setting": "a", "duplicate_of": 0}
    )
    study.add_trials([trained, twin])
    trial = study.ask()
    trial.report(9.0, 2)  # far worse than the one trained peer
    assert not trial.should_prune()  # one trained trial is not yet two
    study.add_trial(optuna.trial.create_trial(value=1.5, intermediate_values={2: 1.5}))
    assert trial.should_prune()
