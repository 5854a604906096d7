"""Objective values of a trial: quality from the run's summary, cost from its attributes, in the space's order."""

from __future__ import annotations

import math

import pytest

from archsearch.search.objectives import (
    flat_metrics,
    format_values,
    logged_name,
    objective_values,
    prune_metric,
)
from archsearch.search.space_load import space_from_dict

from .conftest import TINY


def _space(objectives):
    return space_from_dict({**TINY, "objectives": objectives}, source="f.yaml")


def test_logged_names_and_the_prune_metric():
    assert logged_name("val_loss") == "val/loss" and logged_name("val/phonebook/acc") == "val/phonebook/acc"
    assert prune_metric(_space(["val_loss"])) == "val/loss"
    assert prune_metric(_space(["params"])) is None  # a cost is known before training: nothing to prune on
    assert prune_metric(_space(["val_loss", "params"])) is None  # Optuna cannot prune several objectives


def test_flat_metrics_reads_nested_summaries_and_skips_non_numbers():
    summary = {"val/loss": 3.0, "metrics": {"val/ppl": 20.0, "val/x/acc": 0.5, "val_flag": True, "loss": 1.0},
               "val": {"val/loss": 9.0}, "val_note": "text"}  # fmt: skip
    assert flat_metrics(summary) == {"val_loss": 3.0, "val_ppl": 20.0, "val/x/acc": 0.5}  # the top level wins


def test_objective_values_in_order_and_their_errors():
    space = _space(["val_loss", "kv_bytes_per_token"])
    assert objective_values(space, {"val_loss": 2.5}, {"kv_bytes_per_token": 1024}) == [2.5, 1024.0]
    with pytest.raises(KeyError, match="'val_loss' is missing from the run's metrics \\(has: val_ppl\\)"):
        objective_values(space, {"val_ppl": 12.0}, {"kv_bytes_per_token": 1024})
    with pytest.raises(KeyError, match="'kv_bytes_per_token' is missing from the trial's attributes"):
        objective_values(space, {"val_loss": 2.5}, {})
    with pytest.raises(ValueError, match="'val_loss' is nan"):
        objective_values(space, {"val_loss": math.nan}, {"kv_bytes_per_token": 1024})


def test_format_values():
    space = _space(["val_loss", "params"])
    assert format_values(space, [3.14159, 1_234_567.0]) == "val_loss=3.142 params=1,234,567"
    assert format_values(space, None) == "-"
