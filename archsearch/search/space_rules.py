"""Space-file rules that involve several keys, or config fields beyond the file (``model:``, ``train:``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from archsearch.errors import ConfigError, did_you_mean
from archsearch.search.space import OUTPUT_KEYS, SearchSpace, _mixer_dims
from archsearch.search.space_validate import Validator


def check_model_and_train(sp: SearchSpace, v: Validator) -> None:
    """The preset and card exist; keys under model:/train: and the model./train. dimensions name real config
    fields; train: values have TrainConfig's types; no key sets where a trial's outputs go."""
    from archsearch.cost.cards import get_card
    from archsearch.model.config import ModelConfig
    from archsearch.model.presets import get_preset

    for key, check in (("preset", get_preset), ("card", get_card)):
        try:
            check(getattr(sp, key))
        except ConfigError as exc:
            raise v.fail(key, exc.message, exc.hint) from None
    try:
        ModelConfig.from_dict(sp.model, source=v.source)
    except ConfigError as exc:
        raise v.fail(f"model.{exc.key}" if exc.key else "model", exc.message, exc.hint) from None
    for key in (*sp.train, *(n[6:] for n in sp.space if n.startswith("train."))):
        if key in OUTPUT_KEYS:
            where = f"train.{key}" if key in sp.train else f"space.train.{key}"
            raise v.fail(
                where,
                f"the sweep decides {', '.join(OUTPUT_KEYS)} for every trial (runs/<study>/trials/trial-NNNN, "
                "resumed only when retried)",
                hint="use --runs-dir / --study-name to move a study's outputs",
            )
    model_keys = _dotted_keys(ModelConfig().to_dict())
    train_keys = _train_fields()
    for name in sp.space:
        if name.startswith("model.") and name[6:] not in model_keys:
            raise v.fail(f"space.{name}", "unknown model option", did_you_mean(name[6:], model_keys))
        if name.startswith("train.") and name[6:] not in train_keys:
            raise v.fail(f"space.{name}", "unknown training option", did_you_mean(name[6:], train_keys))
    for key in sp.train:
        if key not in train_keys:
            raise v.fail(f"train.{key}", "unknown training option", did_you_mean(str(key), train_keys))
    _check_train_values(sp, v)


def _check_train_values(sp: SearchSpace, v: Validator) -> None:
    """``train:`` values with TrainConfig's own type and range checks (a wrong one would fail every trial)."""
    from archsearch.train.config import TrainConfig

    try:
        TrainConfig.from_dict(dict(sp.train), source=v.source)
    except ConfigError as exc:
        raise v.fail(f"train.{exc.key}" if exc.key else "train", exc.message, exc.hint) from None


def _dotted_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, val in d.items():
        if isinstance(val, dict):
            out.extend(_dotted_keys(val, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k}")
    return out


def _train_fields() -> list[str]:
    from archsearch.train.config import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


MAX_GRID = 100_000  # points a grid sampler enumerates (it lists them all up front)


def check_combinations(sp: SearchSpace, v: Validator) -> None:
    """Rules that involve several keys."""
    dims = sp.space
    if "budget" in dims and "d_model" in dims:
        raise v.fail("space.budget", "budget and d_model are exclusive: the budget solves the width")
    fractions = [n for n in (*_mixer_dims(), "mlp") if n in dims]  # moe is a share of the MLPs
    highest = sum(max(dims[n].corners()) for n in fractions)
    if highest > 1.0 + 1e-9:
        parts = " + ".join(f"{n} {max(dims[n].corners())!r}" for n in fractions)
        raise v.fail(
            "space",
            f"the largest fractions add up to {highest:.3g} > 1 ({parts}); lower the highs so every trial fits",
        )
    pos = dims.get("positions")
    spread = dims.get("spread")
    if pos is not None:
        spreads = spread.corners() if spread is not None else ["megatron"]
        if "positions" not in spreads:
            raise v.fail(
                "space.positions", "positions are only used with spread: positions (set space.spread)"
            )
    elif spread is not None and "positions" in spread.corners():
        raise v.fail("space.spread", "spread 'positions' needs a positions dimension (space.positions)")
    if sp.sampler_name == "grid":
        points = 1
        for name, dim in dims.items():
            if dim.type == "float" and dim.step is None:
                raise v.fail(f"space.{name}.step", "the grid sampler needs a step for float dimensions")
            points *= dim.size() ** (dim.count if name == "positions" and dim.type != "categorical" else 1)
        if points > MAX_GRID:
            raise v.fail(
                "space", f"the grid has {points:,} points, more than {MAX_GRID:,}", "use sampler: tpe"
            )
    if sp.sampler_name == "cmaes" and sp.multi_objective:
        raise v.fail("sampler", "CMA-ES optimises one objective; use nsga2 or tpe for several")
    if sp.val_every is not None and sp.val_every > sp.steps:
        raise v.fail("val_every", f"expected at most steps ({sp.steps}), found {sp.val_every}")
    _check_pruner(sp, v)


def _check_pruner(sp: SearchSpace, v: Validator) -> None:
    """Build the pruner now: Optuna checks its options' ranges only when it is constructed."""
    from archsearch.search.study import make_pruner

    try:
        make_pruner(sp)
    except (ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise v.fail("pruner", f"Optuna refuses these {sp.pruner['type']} pruner options: {text}") from None
