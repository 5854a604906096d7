"""The identity of a trial: the setting it trains (a stable hash of everything that determines the training) and the
architecture, seed and learning rate that statistics group by.

Two trials with one ``setting`` would train the same model on the same data with the same seed and get the same
result, so a sweep trains each setting once. Replicates are distinct settings by construction: a second seed or
learning rate changes the hash while ``arch`` stays the same, which is what the statistics compare across.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from archsearch.search.space import OUTPUT_KEYS, SearchSpace

# searched dimensions that change the architecture without changing the pattern string
ARCH_DIMS = ("rope", "rope_fraction", "kv_heads", "heads", "d_model", "d_ff", "budget")


@dataclass(frozen=True)
class TrialIdentity:
    """What a trial records as user attributes ``arch``, ``seed``, ``lr`` and ``setting``.

    Attributes:
        arch: the canonical pattern, then the searched non-pattern model settings (``M-*-M- d_model=96 rope=off``).
        seed: the training seed.
        lr: the peak learning rate.
        setting: 12 hex digits of the SHA-256 of the resolved training configuration (model, data, optimisation,
            seed), without the output-control keys (run name, runs directory, resume, overwrite, quiet).
    """

    arch: str
    seed: int
    lr: float
    setting: str

    def attrs(self) -> dict[str, Any]:
        return {"arch": self.arch, "seed": self.seed, "lr": self.lr, "setting": self.setting}


def identify(plan: Any, cfg: Any, space: SearchSpace) -> TrialIdentity:
    """The identity of a planned trial whose training configuration is ``cfg`` (a ``TrainConfig``)."""
    return TrialIdentity(
        arch=arch_of(plan, space), seed=int(cfg.seed), lr=float(cfg.lr), setting=setting_of(cfg)
    )


def setting_of(cfg: Any) -> str:
    """The setting hash of a ``TrainConfig``: its resolved fields minus the output-control ones; the faults a run
    gets by its name (``fault_injection.by_run``) are resolved for that name first."""
    data = cfg.to_dict()
    faults = cfg.fault_injection.for_run(cfg.name)
    data["fault_injection"] = {k: v for k, v in faults.__dict__.items() if k != "by_run"}
    for key in OUTPUT_KEYS:
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def arch_of(plan: Any, space: SearchSpace) -> str:
    parts = [str(plan.pattern)]
    for name in sorted(space.space):
        dim = space.space[name]
        if dim.searched and (name in ARCH_DIMS or name.startswith("model.")) and name in plan.values:
            parts.append(f"{name}={_show(plan.values[name])}")
    return " ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return str(value)


ENUMERATE_LIMIT = 5000  # parameter combinations looked at to list a finite space's settings


def enumerate_settings(space: SearchSpace, limit: int = ENUMERATE_LIMIT) -> frozenset[str] | None:
    """Every distinct setting of a finite space, replicates included (None: continuous, too large, or
    name-dependent).

    Many parameter combinations can make one setting (two MLP fractions that round to the same pattern; positions
    that the chosen spread ignores), so this is what a sweep can run at most, not the grid's size.
    """
    archs = enumerate_architectures(space, limit)
    return None if archs is None else frozenset().union(*archs.values())


def enumerate_architectures(
    space: SearchSpace, limit: int = ENUMERATE_LIMIT
) -> dict[str, frozenset[str]] | None:
    """Every distinct architecture of a finite space: the setting of its first run (what the sampler proposes) ->
    the settings of all its runs (learning rates x seeds, :mod:`archsearch.search.replicates`); None as for
    :func:`enumerate_settings`."""
    import itertools

    import optuna

    from archsearch.errors import ArchsearchError
    from archsearch.search.replicates import overrides, replicate_runs
    from archsearch.search.study import grid_space
    from archsearch.search.suggest import plan_trial, sample, trial_config

    dims = space.space
    if any(d.searched and d.type == "float" and d.step is None for d in dims.values()):
        return None
    if "random" in (dims["spread"].corners() if "spread" in dims else ["megatron"]):
        return None  # its placement depends on the trial's number
    if space.train.get("fault_injection", {}).get("by_run"):
        return None  # faults by run name make a setting depend on the trial's number
    grid = grid_space(space)
    size = 1
    for values in grid.values():
        size *= len(values)
        if size > limit:
            return None
    names = list(grid)
    archs: dict[str, frozenset[str]] = {}
    seen: set[str] = set()
    for combo in itertools.product(*(grid[n] for n in names)):
        trial = optuna.trial.FixedTrial(dict(zip(names, combo, strict=True)))
        key = repr(sorted(sample(trial, space).items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            plan = plan_trial(trial, space, placement_seed=space.seed)
            runs = []
            for run in replicate_runs(space):
                plan.train.update(overrides(run))
                runs.append(setting_of(trial_config(plan, space, name="trial-settings", runs_dir="runs")))
        except ArchsearchError:
            continue  # a setting that cannot be built never finishes; the sweep does not wait for it
        archs.setdefault(runs[0], frozenset(runs))
    return archs
