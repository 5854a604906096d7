"""search/identity.py: a trial's setting (what it trains), arch, seed and lr, and a finite space's settings."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from archsearch.search.identity import enumerate_settings, identify, setting_of
from archsearch.search.space import Dimension
from archsearch.search.space_load import load_space
from archsearch.search.suggest import plan_trial, trial_config

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
