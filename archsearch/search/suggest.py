"""From an Optuna trial to a concrete proxy: the sampled dimensions become a pattern, a model config and training
overrides.

The layer mix is allocated with ``archsearch.pattern.allocate`` (Megatron-LM's rule by default); a ``budget``
dimension re-solves the width per trial with ``archsearch.cost.sizing.fit_to_budget`` so every trial is
iso-parameter, as the paper's ablations compare models of one size.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

from archsearch.config_load import merge
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.search.space import Dimension, SearchSpace, _mixer_dims

# Dimensions that map onto a ModelConfig field.
MODEL_DIMS = {
    "rope": "attention.rope",
    "rope_fraction": "attention.rope_fraction",
    "kv_heads": "attention.n_kv_heads",
    "heads": "attention.n_heads",
    "d_model": "d_model",
    "d_ff": "mlp.d_ff",
}
CORNER_LIMIT = 48  # at most this many corner combinations are allocated and built up front


@dataclass
class TrialPlan:
    """What one trial trains.

    Attributes:
        values: every dimension's value for this trial, searched or fixed (positions as a list of floats).
        pattern: the allocated ``Pattern``.
        model: the resolved ``ModelConfig`` (after the budget fit).
        train: TrainConfig overrides from the space (lr, train.* dimensions).
        placement_seed: the seed used by the ``random`` spread.
    """

    values: dict[str, Any]
    pattern: Any
    model: Any
    train: dict[str, Any] = field(default_factory=dict)
    placement_seed: int | None = None

    @property
    def spread(self) -> str:
        return self.values.get("spread", "megatron")

    @property
    def rope(self) -> bool:
        return bool(self.model.attention.rope)


def suggest_value(trial: Any, name: str, dim: Dimension) -> Any:
    """The trial's value for one dimension (its fixed value when not searched)."""
    if not dim.searched:
        return dim.fixed
    if dim.type == "categorical":
        return trial.suggest_categorical(name, list(dim.choices))
    if dim.type == "int":
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)


def _positions(trial: Any, dim: Dimension) -> list[float]:
    if dim.searched and dim.type != "categorical":
        return sorted(suggest_value(trial, f"position_{i}", dim) for i in range(dim.count))
    text = suggest_value(trial, "positions", dim)
    return [float(x) for x in str(text).split(",") if x]


def sample(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Every dimension's value for ``trial`` (positions only when the spread uses them)."""
    values: dict[str, Any] = {}
    for name, dim in space.space.items():
        if name != "positions":
            values[name] = suggest_value(trial, name, dim)
    if "positions" in space.space and values.get("spread") == "positions":
        values["positions"] = _positions(trial, space.space["positions"])
    return values


def plan_trial(trial: Any, space: SearchSpace, *, placement_seed: int | None = None) -> TrialPlan:
    """Sample the trial's dimensions and resolve them into a pattern and model config.

    Raises:
        ArchsearchError: the values do not make a buildable model (an allocation or sizing error).
    """
    values = sample(trial, space)
    pattern = _allocate(values, space, placement_seed)
    model = _model_config(values, space, pattern)
    train = {}
    if "lr" in values:
        train["lr"] = float(values["lr"])
    for name, value in values.items():
        if name.startswith("train."):
            train[name[6:]] = value
    return TrialPlan(values=values, pattern=pattern, model=model, train=train, placement_seed=placement_seed)


def trial_config(
    plan: TrialPlan, space: SearchSpace, *, name: str, runs_dir: str, resume: bool = False
) -> Any:
    """The ``TrainConfig`` a trial trains: the space's fixed settings, its ``train:`` keys, then the trial's own.

    Its ``model`` is the plan's whole resolved ``ModelConfig`` (budget fit and the data's vocabulary included), so
    training, and everything that reads the trial's stored config (:func:`stored_config`), uses the model as planned
    here, without re-deriving it. The sweep alone decides where the run goes (``name``, ``runs_dir``) and whether it resumes; a space file may not
    set those keys (the space validation refuses them).

    Raises:
        ConfigError: a training value that TrainConfig refuses (naming the space file and the trial).
    """
    from archsearch.train.config import TrainConfig

    data: dict[str, Any] = {
        "pattern": str(plan.pattern),
        "preset": space.preset,
        "model": plan.model.to_dict(),
        "data": space.data,
        "tasks": space.tasks,
        "seq_len": space.seq_len,
        "batch_size": space.batch_size,
        "max_steps": space.steps,
        "seed": space.seed,
    }
    if space.val_every is not None:
        data["val_every"] = space.val_every
    if space.val_batches is not None:
        data["val_batches"] = space.val_batches
    data.update(space.train)
    data.update(plan.train)
    # a retry of a trial whose worker died (or that was interrupted) continues from that run's last checkpoint
    data.update(name=name, runs_dir=runs_dir, quiet=True, resume=resume, overwrite=not resume)
    return TrainConfig.from_dict(data, source=f"{space.source} ({name})")


CONFIG_ATTR = "config"  # the trial user attribute that holds its resolved training config


def stored_config(cfg: Any) -> dict[str, Any]:
    """The trial's resolved ``TrainConfig`` as plain JSON data, stored as its ``config`` user attribute before it
    trains (the storage keeps it when run directories are moved or deleted); ``TrainConfig.from_dict`` reads it
    back."""
    return cfg.to_dict()


def _allocate(values: dict[str, Any], space: SearchSpace, placement_seed: int | None) -> Any:
    from archsearch.pattern import registry
    from archsearch.pattern.allocate import allocate

    n_layers = values.get("layers")
    if n_layers is None:
        raise ConfigError("missing: the number of layers (space.layers)", space.source, "space.layers")
    attn_symbol = registry.by_name(values.get("attention_type", "attention")).symbol
    ratios: dict[str, float] = {}
    for name, symbol in _mixer_dims().items():
        if name in values and values[name] > 0:
            target = attn_symbol if name == "attention" else symbol
            ratios[target] = ratios.get(target, 0.0) + float(values[name])
    mlp = float(values.get("mlp", 0.0))
    if values.get("moe", 0) > 0 and mlp > 0:
        ratios["E"] = float(values["moe"]) * mlp  # moe is the MoE share of the MLPs
    kwargs: dict[str, Any] = {
        "mlp": mlp,
        "spread": values.get("spread", "megatron"),
        "mlp_spread": values.get("mlp_spread", "megatron"),
        "base": registry.by_name(values.get("base", "mamba2")).symbol,
    }
    if kwargs["spread"] == "positions":
        ratios.pop(attn_symbol, None)  # the positions set the count
        kwargs["positions"] = {attn_symbol: values["positions"]}
    if kwargs["spread"] == "random":
        kwargs["seed"] = placement_seed if placement_seed is not None else space.seed
    return allocate(int(n_layers), ratios, **kwargs).pattern


def _model_config(values: dict[str, Any], space: SearchSpace, pattern: Any) -> Any:
    from archsearch.model.config import ModelConfig
    from archsearch.model.presets import get_preset

    base, _ = get_preset(space.preset)
    data = merge(base.to_dict(), space.model)
    data["vocab_size"] = data_vocab_size(
        space.data, tuple(sorted((space.tasks or {}).items())), space.seq_len, _data_options(space)
    )
    data["max_seq_len"] = max(data.get("max_seq_len", 0), space.seq_len)
    cfg = ModelConfig.from_dict(data, source=f"{space.source}: model")
    overrides = {MODEL_DIMS[k]: v for k, v in values.items() if k in MODEL_DIMS}
    overrides.update({k[6:]: v for k, v in values.items() if k.startswith("model.")})
    if overrides:
        cfg = cfg.replace(**overrides)
    if "budget" in values:
        from archsearch.cost.sizing import DEFAULT_TOLERANCE, fit_to_budget

        # a relaxed budget_tolerance accepts what cannot fit; every pattern that can still lands within 0.5%
        aim = min(space.budget_tolerance, DEFAULT_TOLERANCE)
        cfg = fit_to_budget(pattern, cfg, int(values["budget"]), solve=space.budget_solve, tolerance=aim)
    return cfg


@functools.lru_cache(maxsize=8)
def data_vocab_size(
    data: str, tasks: tuple[tuple[str, float], ...], seq_len: int, data_options: str = "{}"
) -> int:
    """The vocabulary the trial's data gives the model (training replaces the preset's with it), so the budget
    fit and the cost model count the embedding that will really be trained; ``data_options`` (JSON of the space's
    ``train.data_options``) can change it (a task's own vocabulary, a larger text vocabulary)."""
    import json

    from archsearch.data import make_datamodule

    options = json.loads(data_options)
    dm = make_datamodule(data, dict(tasks) or None, seq_len=seq_len, batch_size=1, seed=0, **options)
    return int(dm.vocab_size)


def _data_options(space: SearchSpace) -> str:
    """The space's ``train.data_options`` that decide the vocabulary, as hashable JSON."""
    import json

    options = (space.train or {}).get("data_options") or {}
    keep = ("tokenizer", "vocab_size", "task_options")
    return json.dumps({k: options[k] for k in keep if k in options}, sort_keys=True)


# ---- up-front checks ----------------------------------------------------------------------------------------------


def corner_params(space: SearchSpace, limit: int = CORNER_LIMIT) -> list[dict[str, Any]]:
    """Optuna parameter sets at the extremes of the space (all when few, else a seeded selection)."""
    names: list[str] = []
    options: list[list[Any]] = []
    for name, dim in space.space.items():
        if not dim.searched:
            continue
        if name == "positions" and dim.type != "categorical":
            for i in range(dim.count):
                names.append(f"position_{i}")
                options.append(dim.corners())
        else:
            names.append(name)
            options.append(dim.corners())
    total = 1
    for o in options:
        total *= len(o)
    if total <= limit:
        combos = list(itertools.product(*options))
    else:
        rng = random.Random(space.seed)
        combos = [tuple(o[0] for o in options), tuple(o[-1] for o in options)]
        combos += [tuple(rng.choice(o) for o in options) for _ in range(limit - 2)]
    return [dict(zip(names, c, strict=True)) for c in combos]


def check_corners(space: SearchSpace) -> None:
    """Allocate, size and build (on the meta device) the space's extreme trials.

    Raises:
        ConfigError: naming the space file and the first corner that cannot be built, with the reason.
    """
    import optuna

    from archsearch.model.build import build_model

    try:
        data_vocab_size(
            space.data, tuple(sorted((space.tasks or {}).items())), space.seq_len, _data_options(space)
        )
    except ArchsearchError as exc:
        key = getattr(exc, "key", None) or "data"
        message = getattr(exc, "message", None) or str(exc)
        raise ConfigError(
            f"the data cannot be served: {message}", space.source, key, getattr(exc, "hint", None)
        ) from None
    from archsearch.search.cost_attrs import trial_attrs

    seen: set[tuple[str, str]] = set()
    worst: tuple[float, dict[str, Any], Any] | None = None  # (|deviation| from the budget, params, plan)
    for params in corner_params(space):
        trial = optuna.trial.FixedTrial(params)
        try:
            plan = plan_trial(trial, space, placement_seed=space.seed)
            # the training values too: a learning rate of "fast" or NaN would fail every trial
            trial_config(plan, space, name="trial-check", runs_dir="runs")
            key = (str(plan.pattern), repr(plan.model.to_dict()))
            if key in seen:
                continue
            seen.add(key)
            trial_attrs(plan, space)
            build_model(plan.pattern, plan.model, device="meta")
        except Exception as exc:  # noqa: BLE001 - any corner that cannot be built is the space's problem
            if isinstance(exc, ArchsearchError):
                why = exc.render().splitlines()[0]
            else:
                why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            raise ConfigError(
                f"the trial with {_shown(params)} cannot be built: {why}", space.source, "space"
            ) from None
        if "budget" in plan.values:
            dev = abs(budget_deviation(plan))
            if worst is None or dev > worst[0]:
                worst = (dev, params, plan)
    if worst is not None and worst[0] > space.budget_tolerance + 1e-12:
        _, params, plan = worst
        from archsearch.cost import count_params

        n, budget = count_params(plan.pattern, plan.model), int(plan.values["budget"])
        raise ConfigError(
            f"iso-parameter sizing misses the budget by more than {space.budget_tolerance:.2%}: the trial with "
            f"{_shown(params)} ({plan.pattern}) has {n:,} parameters against {budget:,} ({n / budget - 1:+.2%})",
            space.source,
            "space.budget",
            hint=f"relax it with budget_tolerance: {math.ceil(worst[0] * 1000) / 1000:g}, or give every pattern "
            "MLP layers (space.mlp > 0), whose width absorbs the difference",
        )


def corner_budget_spread(space: SearchSpace) -> tuple[float, float] | None:
    """(lowest, highest) params / budget - 1 over the space's corner trials; None without a budget dimension."""
    import optuna

    if "budget" not in space.space:
        return None
    devs = []
    for params in corner_params(space):
        try:
            devs.append(
                budget_deviation(
                    plan_trial(optuna.trial.FixedTrial(params), space, placement_seed=space.seed)
                )
            )
        except ArchsearchError:
            continue  # check_corners has already named any corner that cannot be built
    return (min(devs), max(devs)) if devs else None


def budget_deviation(plan: TrialPlan) -> float:
    """params / budget - 1 of a planned trial with a ``budget`` dimension (the cost model's count)."""
    from archsearch.cost import count_params

    return count_params(plan.pattern, plan.model) / int(plan.values["budget"]) - 1.0


def _shown(params: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "the fixed settings"
    return shown if len(shown) <= 200 else shown[:197] + "..."
