"""Replicates and a learning rate per architecture: every architecture the sampler proposes trains once per
(learning rate, seed), each run its own Optuna trial.

A space declares them with a top-level ``replicates: {seeds: 3}`` (or ``seeds: [0, 1, 2]``; 3 means the space's seed
and the next two) and, where ``lr`` lives, ``space: {lr: {per_architecture: [1e-3, 3e-3]}}``. The sampler proposes an
architecture in one trial, the *lead*, which trains the first run (first rate, first seed); when it decides to train
it queues the others as *siblings* with ``study.enqueue_trial``: the same parameters (so every sampler, the grid
included, leaves them alone and a seed or a rate is never something to optimise) and the user attributes
``group`` (the lead's number) and ``replicate`` (``{"lr": ..., "seed": ...}``). Any worker takes a queued sibling,
as it takes a retry. A group is one architecture: ``n_trials`` counts groups (:mod:`archsearch.search.accounting`).

Queuing is idempotent: the lead (or its retry after an interrupt) queues only the runs its group does not have yet,
so an interrupted sweep resumes with exactly the missing runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from archsearch.errors import ConfigError, describe, did_you_mean

FUSE = ("auto", "on", "off")
MAX_RUNS = 1000  # runs of one architecture (lrs x seeds)


@dataclass(frozen=True)
class Replicates:
    """What each architecture trains with.

    Attributes:
        seeds: a count (the space's seed and the next ones) or the seeds themselves; None: the space's seed only.
        lrs: the peak learning rates of ``space.lr.per_architecture``; None: the space's learning rate.
        fuse: ``auto``: an architecture's runs train as one fused model where the engine can fuse them, on CUDA;
            ``on``: on any device (a CPU too); ``off``: each run alone (:mod:`archsearch.search.fused_group`).
    """

    seeds: int | tuple[int, ...] | None = None
    lrs: tuple[float, ...] | None = None
    fuse: str = "auto"

    def seed_list(self, base: int) -> list[int] | None:
        if self.seeds is None:
            return None
        if isinstance(self.seeds, int):
            return [base + i for i in range(self.seeds)]
        return list(self.seeds)

    def runs(self, base_seed: int) -> list[dict[str, Any]]:
        """Every run of one architecture, the lead's first: ``{"lr": float | None, "seed": int | None}``
        (None: the space's value), rates outer, seeds inner."""
        seeds: list[int | None] = list(self.seed_list(base_seed) or [None])
        lrs: list[float | None] = list(self.lrs or [None])
        return [{"lr": lr, "seed": s} for lr in lrs for s in seeds]

    def to_dict(self) -> dict[str, Any]:
        """``replicates:`` as written back into a space file (the rates go under ``space.lr``)."""
        out: dict[str, Any] = {"fuse": self.fuse}
        if self.seeds is not None:
            out["seeds"] = self.seeds if isinstance(self.seeds, int) else list(self.seeds)
        return out


def runs_per_architecture(space: Any) -> int:
    rep = getattr(space, "replicates", None)
    return len(rep.runs(space.seed)) if rep is not None else 1


def replicate_runs(space: Any) -> list[dict[str, Any]]:
    """The runs of one architecture (one run with the space's own seed and rate when there are no replicates)."""
    rep = getattr(space, "replicates", None)
    return rep.runs(space.seed) if rep is not None else [{"lr": None, "seed": None}]


# ---- validation (the space file) --------------------------------------------------------------------------------
def parse(value: Any, lr: Any, source: str, base_seed: int, seed_range: tuple[int, int]) -> Replicates | None:
    """``replicates:`` and ``space.lr`` when it is ``{per_architecture: [...]}`` (None: neither given).

    Raises:
        ConfigError: naming the file and the key, e.g. ``replicates.seeds: expected a positive integer``.
    """
    lrs = _lrs(lr, source) if lr is not None else None
    if value is None:
        return Replicates(lrs=lrs) if lrs is not None else None
    if not isinstance(value, dict):
        raise ConfigError(
            f"expected a mapping like {{seeds: 3}}, found {describe(value)}", source, "replicates"
        )
    for key in value:
        if key not in ("seeds", "fuse"):
            raise ConfigError(
                "unknown key; expected seeds, fuse", source, f"replicates.{key}",
                hint=did_you_mean(str(key), ("seeds", "fuse")),
            )  # fmt: skip
    seeds: int | tuple[int, ...] | None = None
    low, high = seed_range
    raw = value.get("seeds")
    key = "replicates.seeds"
    if raw is None:
        if "seeds" in value:
            raise ConfigError("expected a positive integer or a list of seeds, found nothing", source, key)
    elif isinstance(raw, list):
        if not raw:
            raise ConfigError("expected at least one seed, found an empty list", source, key)
        for i, s in enumerate(raw):
            if isinstance(s, bool) or not isinstance(s, int) or not low <= s <= high:
                raise ConfigError(
                    f"expected an integer from {low} to 2**32 - 1, found {describe(s)}", source, f"{key}.{i}"
                )
            if s in raw[:i]:
                raise ConfigError(f"seed {s} is listed twice", source, f"{key}.{i}")
        seeds = tuple(raw)
    elif isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(
            f"expected a positive integer or a list of seeds, found {describe(raw)}", source, key
        )
    else:
        if base_seed + raw - 1 > high:
            raise ConfigError(
                f"seeds {base_seed} to {base_seed + raw - 1} pass 2**32 - 1 (the seed is {base_seed})",
                source,
                key,
            )
        seeds = raw
    fuse = value.get("fuse", "auto")
    if isinstance(fuse, bool):  # YAML 1.1 reads on/off as booleans
        fuse = "on" if fuse else "off"
    if fuse not in FUSE:
        raise ConfigError(f"expected auto, on or off, found {describe(fuse)}", source, "replicates.fuse")
    rep = Replicates(seeds=seeds, lrs=lrs, fuse=fuse)
    if len(rep.runs(base_seed)) > MAX_RUNS:
        raise ConfigError(
            f"{len(rep.runs(base_seed))} runs per architecture (rates x seeds), more than {MAX_RUNS}",
            source,
            key,
        )
    return rep


def _lrs(value: Any, source: str) -> tuple[float, ...]:

    key = "space.lr.per_architecture"
    extra = [k for k in value if k != "per_architecture"]
    if extra:
        raise ConfigError(
            "unknown key; expected per_architecture (or a plain dimension without it)",
            source,
            f"space.lr.{extra[0]}",
        )
    raw = value.get("per_architecture")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"expected a non-empty list of learning rates, found {describe(raw)}", source, key)
    out: list[float] = []
    for i, x in enumerate(raw):
        if isinstance(x, str):
            try:
                x = float(x)  # YAML 1.1 reads 3e-3 as a string
            except ValueError:
                pass
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            raise ConfigError(f"expected a positive learning rate, found {describe(x)}", source, f"{key}.{i}")
        if float(x) in out:
            raise ConfigError(f"learning rate {x!r} is listed twice", source, f"{key}.{i}")
        out.append(float(x))
    return tuple(out)


def is_per_architecture(value: Any) -> bool:
    """Whether ``space.lr`` is the per-architecture list rather than a dimension."""
    return isinstance(value, dict) and "per_architecture" in value


def check_conflicts(sp: Any) -> None:
    """A seed or rate set by replicates may not be searched or fixed elsewhere as well.

    Raises:
        ConfigError: naming the key that conflicts.
    """
    rep = sp.replicates
    if rep is None:
        return
    if rep.seeds is not None:
        if "train.seed" in sp.space:
            raise ConfigError(
                "replicates.seeds sets every run's seed; remove the train.seed dimension",
                sp.source,
                "space.train.seed",
            )
        if "seed" in sp.train:
            raise ConfigError(
                "replicates.seeds sets every run's seed; remove train.seed", sp.source, "train.seed"
            )
    if rep.lrs is not None:
        for name in ("train.lr",):
            if name in sp.space:
                raise ConfigError(
                    "space.lr.per_architecture sets every run's learning rate; remove this dimension",
                    sp.source, f"space.{name}",
                )  # fmt: skip
        if "lr" in sp.train:
            raise ConfigError(
                "space.lr.per_architecture sets every run's learning rate; remove train.lr",
                sp.source,
                "train.lr",
            )


# ---- the sweep ------------------------------------------------------------------------------------------------
def run_of(trial_attrs: dict[str, Any], space: Any) -> dict[str, Any]:
    """The run a trial trains: its ``replicate`` attribute (a sibling, or a retry of any run), else the first."""
    rep = trial_attrs.get("replicate")
    if isinstance(rep, dict):
        return {"lr": rep.get("lr"), "seed": rep.get("seed")}
    return replicate_runs(space)[0]


def overrides(run: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides of one run."""
    return {k: v for k, v in (("lr", run["lr"]), ("seed", run["seed"])) if v is not None}


def queue_siblings(study: Any, trial: Any, group: int, space: Any) -> list[dict[str, Any]]:
    """Queue the runs of ``group`` that no trial of the study holds yet (beside ``trial``'s own); returns them.

    Called by the lead (or its retry) once it decides to train; each queued run is a WAITING trial with the lead's
    parameters and the attributes ``group`` and ``replicate``.
    """
    own = run_of(trial.user_attrs, space)
    have = [_key(own)]
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("group") == group and isinstance(t.user_attrs.get("replicate"), dict):
            have.append(_key(t.user_attrs["replicate"]))
    missing = [r for r in replicate_runs(space) if _key(r) not in have]
    for r in missing:
        study.enqueue_trial(dict(trial.params), user_attrs={"group": group, "replicate": dict(r)})
    return missing


def _key(run: dict[str, Any]) -> tuple[Any, Any]:
    lr = run.get("lr")
    return (None if lr is None else float(lr), run.get("seed"))
