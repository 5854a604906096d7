"""search/suggest.py: a trial's plan and its training config, resolved once and stored as plain data."""

from __future__ import annotations

import json

import optuna
import pytest

from archsearch.errors import ConfigError
from archsearch.model.presets import get_preset
from archsearch.search.cost_attrs import trial_attrs
from archsearch.search.space_load import load_space, space_from_dict
from archsearch.search.suggest import plan_trial, stored_config, trial_config
from archsearch.train.config import TrainConfig
from archsearch.train.resolve import resolve_model_config

from .conftest import TINY

BUDGETED = {**TINY, "space": {"layers": 4, "attention": 0.25, "mlp": 0.5, "budget": 400_000}}


def _planned(data=BUDGETED, params=None):
    space = space_from_dict(data, source="tiny.yaml")
    plan = plan_trial(optuna.trial.FixedTrial(params or {}), space, placement_seed=0)
    return space, plan, trial_config(plan, space, name="trial-0000", runs_dir="runs/tiny/trials")


def test_the_trial_config_carries_the_whole_resolved_model():
    space, plan, cfg = _planned()
    assert cfg.model == plan.model.to_dict()  # vocabulary and budget-fitted width included
    assert cfg.model["d_model"] != get_preset("toy")[0].d_model  # the fit changed the width
    assert cfg.pattern == str(plan.pattern) and cfg.target_params is None


def test_training_resolves_the_stored_model_to_itself():
    """Training lays the config's model over its preset: a whole model leaves nothing for the preset to decide,
    so the model trained is the one planned (no second budget fit, no second allocation)."""
    _, plan, cfg = _planned()
    for preset in ("toy", "10m"):
        base, _ = get_preset(preset)
        assert resolve_model_config(cfg, base, plan.pattern, plan.model.vocab_size) == plan.model


def test_the_stored_config_is_json_and_reads_back():
    _, _, cfg = _planned()
    data = stored_config(cfg)
    assert json.loads(json.dumps(data)) == data  # an Optuna user attribute must be JSON
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == cfg


def test_a_searched_model_dimension_lands_in_the_stored_model():
    data = {
        **TINY,
        "space": {"layers": 4, "attention": 0.25, "kv_heads": {"type": "categorical", "choices": [1, 2]}},
    }
    _, plan, cfg = _planned(data, {"kv_heads": 1})
    assert cfg.model["attention"]["n_kv_heads"] == 1 == plan.model.attention.n_kv_heads


def test_a_bad_training_value_names_the_space_and_trial():
    data = {
        **TINY,
        "space": {"layers": 4, "attention": 0.25, "lr": {"type": "categorical", "choices": [0.001]}},
    }
    space, plan, _ = _planned(data, {"lr": 0.001})
    plan.train["lr"] = -1.0
    with pytest.raises(Exception, match=r"tiny\.yaml \(trial-0001\): lr: must be positive"):
        trial_config(plan, space, name="trial-0001", runs_dir="runs")


MLP_OPTIONAL = {**TINY["space"], "budget": 100_000}  # mlp 0.0 or 0.5


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
