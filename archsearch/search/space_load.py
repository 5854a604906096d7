"""Reading a search-space file: from YAML (or parsed data) to a validated :class:`~archsearch.search.space.SearchSpace`.

Every problem is one ``ConfigError`` naming the file, the dotted key, what was expected and what was found (and
"did you mean" for misspelt keys); ``load_space`` checks the whole file, and by default builds its extreme corners,
before anything runs. Shipped spaces (``search_spaces/*.yaml``) can be named instead of given as a path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from archsearch.config_load import check_keys
from archsearch.errors import ConfigError, describe, did_you_mean
from archsearch.search import replicates
from archsearch.search.space import (
    BASE_OBJECTIVES,
    MAX_GRACE_S,
    MAX_HEARTBEAT_S,
    SAMPLERS,
    SEED_RANGE,
    TASK_METRICS,
    SearchSpace,
)
from archsearch.search.space_rules import check_combinations, check_model_and_train
from archsearch.search.space_validate import Validator
from archsearch.search.suggest import check_corners
from archsearch.yamlfile import load_yaml_file


def load_space(path: str | Path, *, check_build: bool = True) -> SearchSpace:
    """Read and validate a space file.

    Args:
        path: the YAML file.
        check_build: also allocate, size and build (on the meta device) the extreme corners of the space, so that a
            space whose sampled patterns cannot be built fails now rather than in trial 17.

    Returns:
        The validated ``SearchSpace``.

    Raises:
        ConfigError: naming the file and the dotted key of the first problem.
    """
    path = resolve_space_path(path)
    source = str(path)
    data = load_yaml_file(path)
    space = space_from_dict(data, source=source, default_study=path.stem)
    if check_build:
        check_corners(space)
    return space


def shipped_spaces_dir() -> Path | None:
    """Where the shipped ``search_spaces/*.yaml`` are: beside the package in a source checkout, or inside it
    (``archsearch/search_spaces``) when installed from a wheel."""
    here = Path(__file__).resolve().parent.parent  # archsearch/
    for candidate in (here.parent / "search_spaces", here / "search_spaces"):
        if candidate.is_dir():
            return candidate
    return None


def shipped_space_names() -> list[str]:
    d = shipped_spaces_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d is not None else []


def resolve_space_path(path: str | Path) -> Path:
    """A space file path, or the name of a shipped space (``quickstart`` for ``search_spaces/quickstart.yaml``).

    Raises:
        ConfigError: neither a file nor a shipped space's name.
    """
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_spaces_dir()
    if shipped is not None and p.suffix in ("", ".yaml") and len(p.parts) == 1:
        candidate = shipped / f"{p.stem}.yaml"
        if candidate.is_file():
            return candidate
    names = shipped_space_names()
    hint = did_you_mean(p.stem, names) or (f"shipped spaces: {', '.join(names)}" if names else None)
    what = "is a directory, not a space file" if p.is_dir() else "no such file"
    raise ConfigError(what, str(path), hint=hint)


def space_from_dict(data: Any, *, source: str = "search space", default_study: str = "study") -> SearchSpace:
    """Validate a parsed space file (see ``load_space``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of settings at the top level, found {describe(data)}", source)
    check_keys(data, {f.name for f in dataclasses.fields(SearchSpace)} - {"source"}, source)
    v = Validator(source)
    d = data
    sp = SearchSpace(study=v.name(d.get("study", default_study), "study"), source=source)
    sp.description = v.typed(d, "description", str, "")
    sp.preset = v.typed(d, "preset", str, sp.preset)
    sp.model = v.typed(d, "model", dict, {})
    sp.data = v.typed(d, "data", str, sp.data)
    if not sp.data.strip():
        raise v.fail("data", "expected a corpus (default, a path or hf:NAME), found an empty string")
    sp.tasks = v.tasks(d.get("tasks"))
    sp.seq_len = v.positive_int(d, "seq_len", sp.seq_len)
    sp.batch_size = v.positive_int(d, "batch_size", sp.batch_size)
    sp.steps = v.positive_int(d, "steps", sp.steps)
    sp.val_every = v.positive_int(d, "val_every", None)
    sp.val_batches = v.positive_int(d, "val_batches", None)
    sp.train = v.typed(d, "train", dict, {})
    sp.n_trials = v.positive_int(d, "n_trials", sp.n_trials)
    sp.sampler = v.choice(d, "sampler", SAMPLERS, sp.sampler)
    sp.pruner = v.pruner(d.get("pruner", "median"))
    sp.seed = v.seed(d, "seed", sp.seed)
    sp.decode_context = v.positive_int(d, "decode_context", sp.decode_context)
    sp.card = v.typed(d, "card", str, sp.card)
    sp.budget_solve = v.choice(d, "budget_solve", ("d_model", "d_ff"), sp.budget_solve)
    sp.budget_tolerance = v.fraction_below_one(d, "budget_tolerance", sp.budget_tolerance)
    sp.heartbeat_interval = v.bounded_int(d, "heartbeat_interval", sp.heartbeat_interval, 1, MAX_HEARTBEAT_S)
    sp.grace_period = v.bounded_int(d, "grace_period", sp.grace_period, 2, MAX_GRACE_S)
    if sp.grace_period <= sp.heartbeat_interval:  # a live trial would be failed between two heartbeats
        raise v.fail(
            "grace_period",
            f"expected more than heartbeat_interval ({sp.heartbeat_interval} s), found {sp.grace_period}",
            hint="a few heartbeats' worth, e.g. 4x",
        )
    sp.objectives = v.objectives(d.get("objectives", "val_loss"), sp.tasks)
    dims = d.get("space")
    per_arch_lr = None
    if isinstance(dims, dict) and replicates.is_per_architecture(dims.get("lr")):
        dims = {k: val for k, val in dims.items() if k != "lr"}
        per_arch_lr = d["space"]["lr"]
    sp.space = v.dimensions(dims)
    sp.replicates = replicates.parse(d.get("replicates"), per_arch_lr, source, sp.seed, SEED_RANGE)
    replicates.check_conflicts(sp)
    if d.get("analysis") is not None:
        from archsearch.stats import AnalysisRule

        sp.analysis = AnalysisRule.from_value(d["analysis"], source, "analysis")
        task_metrics = [f"val/{t}/{m}" for t in (sp.tasks or {}) if t != "lm" for m in TASK_METRICS]
        known = list(dict.fromkeys([*(o.name for o in sp.objectives), *BASE_OBJECTIVES, *task_metrics]))
        if sp.analysis.objective is not None and sp.analysis.objective not in known:
            raise v.fail(
                "analysis.objective",
                f"unknown objective; expected one of {', '.join(known)}, found {sp.analysis.objective!r}",
                hint=did_you_mean(sp.analysis.objective, known),
            )
    check_model_and_train(sp, v)
    check_combinations(sp, v)
    return sp
