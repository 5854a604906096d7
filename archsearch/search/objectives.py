"""Objective values of a trial: quality from the training summary, cost from the cost model.

Quality objectives (``val_loss``, ``val_ppl``, ``val/<task>/acc``, ``val/<task>/loss``) are read from the run's
final validation; cost objectives (``params``, ``kv_bytes_per_token``, ``state_bytes``, ``decode_ms_est`` ...) are the
trial's user attributes, computed before training from ``archsearch.cost.estimate``.
"""

from __future__ import annotations

import math
from typing import Any

from archsearch.search.space import Objective, SearchSpace

# Names that Lightning logs during validation, by objective name (for reporting intermediate values / pruning).
LOGGED_NAME = {"val_loss": "val/loss", "val_ppl": "val/ppl"}


def logged_name(objective: str) -> str:
    """The key under which training logs this objective at each validation (``val_loss`` -> ``val/loss``)."""
    return LOGGED_NAME.get(objective, objective)


def prune_metric(space: SearchSpace) -> str | None:
    """The logged metric a single-objective study reports for pruning (None: nothing to report or prune on).

    Optuna cannot prune multi-objective studies (``Trial.report`` refuses them), so those report nothing.
    """
    if space.multi_objective:
        return None
    obj = space.objectives[0]
    return logged_name(obj.name) if obj.is_training_metric else None


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The final validation metrics of a run summary, under the objective names (``val_loss``, ``val/x/acc`` ...)."""
    out: dict[str, float] = {}
    sources = [summary]
    for key in ("metrics", "val_metrics", "final_metrics", "val"):
        if isinstance(summary.get(key), dict):
            sources.append(summary[key])
    for src in sources:
        for key, value in src.items():
            if not key.startswith("val") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = {"val/loss": "val_loss", "val/ppl": "val_ppl"}.get(key, key)
            out.setdefault(name, float(value))
    return out


def objective_values(space: SearchSpace, metrics: dict[str, float], attrs: dict[str, Any]) -> list[float]:
    """One value per objective, in the space's order.

    Raises:
        KeyError: an objective the run did not produce (the message names it and what the run did produce).
        ValueError: an objective that came out NaN or infinite.
    """
    values = []
    for obj in space.objectives:
        values.append(_value(obj, metrics, attrs))
    return values


def _value(obj: Objective, metrics: dict[str, float], attrs: dict[str, Any]) -> float:
    if obj.is_training_metric:
        if obj.name not in metrics:
            raise KeyError(
                f"objective {obj.name!r} is missing from the run's metrics (has: {', '.join(sorted(metrics))})"
            )
        value = metrics[obj.name]
    else:
        value = attrs.get(obj.name)
        if value is None:
            raise KeyError(f"objective {obj.name!r} is missing from the trial's attributes")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"objective {obj.name!r} is {value}")
    return value


def format_values(space: SearchSpace, values: list[float] | None) -> str:
    if not values:
        return "-"
    return " ".join(f"{o.name}={_fmt(v)}" for o, v in zip(space.objectives, values, strict=False))


def _fmt(value: float) -> str:
    if abs(value) >= 1e5 and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"
