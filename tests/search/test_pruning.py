"""TrialReporter: validation metrics reported to the Optuna trial by global step, and pruning on the pruner's word."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest

from archsearch.search.pruning import TrialReporter


def _trainer(step, sanity=False, **metrics):
    return SimpleNamespace(sanity_checking=sanity, global_step=step, callback_metrics=metrics)


def _trial(pruner=None):
    study = optuna.create_study(pruner=pruner or optuna.pruners.NopPruner())
    return study, study.ask()


def test_reports_by_step_once_and_keeps_the_curve():
    study, trial = _trial()
    reporter = TrialReporter(trial, "val/loss", extra=("val/loss", "val/x/acc"))
    assert reporter.extra == ("val/x/acc",)  # the monitored metric is not listed twice
    reporter.on_validation_end(
        _trainer(0, sanity=True, **{"val/loss": 9.0}), None
    )  # the sanity check: ignored
    reporter.on_validation_end(_trainer(2, **{"val/loss": 3.0, "val/x/acc": 0.25}), None)
    reporter.on_validation_end(
        _trainer(2, **{"val/loss": 2.9}), None
    )  # the final validation on the same step
    reporter.on_validation_end(_trainer(4, **{"val/loss": math.nan}), None)  # left to the divergence guard
    assert sorted(reporter.curve) == [2, 4] and reporter.curve[2] == {
        "val/loss": 2.9
    }  # the last row of a step
    assert math.isnan(reporter.curve[4]["val/loss"])
    study.tell(trial, 2.9)
    assert study.trials[0].intermediate_values == {2: 3.0}


def test_no_report_records_the_curve_only():
    study, trial = _trial()
    reporter = TrialReporter(trial, "val/loss", report=False)
    reporter.on_validation_end(_trainer(2, **{"val/loss": 3.0}), None)
    assert reporter.curve == {2: {"val/loss": 3.0}}
    study.tell(trial, 3.0)
    assert study.trials[0].intermediate_values == {}


def test_a_hopeless_trial_is_pruned_with_its_step_and_value():
    # percentile 1 after one finished trial: a trial is pruned unless it beats every peer at that step
    study = optuna.create_study(
        pruner=optuna.pruners.PercentilePruner(1.0, n_startup_trials=1, n_warmup_steps=0)
    )
    first = study.ask()
    first.report(1.0, 2)
    study.tell(first, 1.0)
    reporter = TrialReporter(study.ask(), "val/loss")
    with pytest.raises(optuna.TrialPruned, match="pruned at step 2: val/loss 5 is worse than its peers"):
        reporter.on_validation_end(_trainer(2, **{"val/loss": 5.0}), None)
