"""Iso-parameter spaces are checked against their tolerance up front; ``analysis:`` states the verdict rule."""

from __future__ import annotations

import optuna
import pytest

from archsearch.errors import ConfigError
from archsearch.search.cost_attrs import trial_attrs
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.suggest import corner_budget_spread, plan_trial
from archsearch.stats import AnalysisRule
from tests.search.conftest import TINY

WITH_MLP = {**TINY["space"], "mlp": 0.5, "budget": 100_000}
MLP_OPTIONAL = {**TINY["space"], "budget": 100_000}  # mlp 0.0 or 0.5


def test_every_corner_lands_within_the_tolerance_and_records_its_deviation(write_space):
    space = load_space(write_space(space=WITH_MLP))
    lo, hi = corner_budget_spread(space)
    assert -0.005 <= lo <= hi <= 0.005
    plan = plan_trial(optuna.trial.FixedTrial({"attention": 0.25}), space)
    attrs = trial_attrs(plan, space)
    assert attrs["budget"] == 100_000
    assert attrs["budget_deviation"] == pytest.approx(attrs["params"] / 100_000 - 1, abs=1e-6)
    assert abs(attrs["budget_deviation"]) <= 0.005


def test_a_space_that_cannot_meet_the_budget_says_so_up_front(write_space):
    path = write_space(space=MLP_OPTIONAL)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    text = err.value.render()
    assert text.startswith(f"{path}: space.budget: iso-parameter sizing misses the budget by more than 0.50%")
    assert "(M**M) has 109,744 parameters against 100,000 (+9.74%)" in text
    assert "budget_tolerance: 0.098" in text and "\n" not in text
    relaxed = load_space(write_space(space=MLP_OPTIONAL, budget_tolerance=0.1))
    assert relaxed.budget_tolerance == 0.1
    # relaxing accepts the MLP-free corners without loosening the others: those still land within 0.5%
    plan = plan_trial(optuna.trial.FixedTrial({"attention": 0.5, "mlp": 0.5}), relaxed)
    assert abs(trial_attrs(plan, relaxed)["budget_deviation"]) <= 0.005


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "2%", None])
def test_bad_budget_tolerance(bad):
    with pytest.raises(ConfigError, match=r"^f\.yaml: budget_tolerance: expected a number in \[0, 1\)"):
        space_from_dict({**TINY, "budget_tolerance": bad}, source="f.yaml")


def test_analysis_round_trips_and_defaults():
    data = {**TINY, "analysis": {"reference": "M-M-", "margin": 0.005, "correction": "bonferroni"}}
    space = space_from_dict(data, source="f.yaml")
    assert space.analysis == AnalysisRule("M-M-", 0.005, 0.05, "bonferroni", None)
    stored = space.to_dict()
    assert stored["analysis"] == {
        "reference": "M-M-",
        "margin": 0.005,
        "alpha": 0.05,
        "correction": "bonferroni",
    }
    assert space_from_dict(stored, source="again").to_dict() == stored
    assert "analysis" not in space_from_dict(TINY, source="f.yaml").to_dict()


@pytest.mark.parametrize(
    "value, key, words",
    [
        ("M-M-", "analysis", "expected a mapping"),
        ({"referense": "M-"}, "analysis.referense", "did you mean 'reference'?"),
        ({"margin": -0.01}, "analysis.margin", "expected a number >= 0, found float -0.01"),
        ({"margin": True}, "analysis.margin", "found the boolean True"),
        ({"alpha": 0.9}, "analysis.alpha", "expected a number in (0, 0.5]"),
        ({"correction": "holms"}, "analysis.correction", "did you mean 'holm'?"),
        ({"reference": ""}, "analysis.reference", "expected a non-empty string"),
        ({"objective": "val_los"}, "analysis.objective", "did you mean 'val_loss'?"),
    ],
)
def test_bad_analysis_values_are_one_line_errors(value, key, words):
    with pytest.raises(ConfigError) as err:
        space_from_dict({**TINY, "analysis": value}, source="f.yaml")
    text = err.value.render()
    assert text.startswith(f"f.yaml: {key}: ") and words in text and "\n" not in text
