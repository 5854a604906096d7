"""A trial's cost attributes: its parameters and, under a budget, how far it lands from it."""

from __future__ import annotations

import optuna
import pytest

from archsearch.search.cost_attrs import trial_attrs
from archsearch.search.space_load import load_space
from archsearch.search.suggest import corner_budget_spread, plan_trial

from .conftest import TINY

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
