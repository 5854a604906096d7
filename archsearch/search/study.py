"""Optuna plumbing: study names, samplers, pruners, study creation. Storage lives in
:mod:`archsearch.search.storage` (re-exported here).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from typing import Any

from archsearch.errors import BackendError, ConfigError, StudyError, describe
from archsearch.search.liveness import quiet_experimental as _quiet_experimental
from archsearch.search.storage import (  # noqa: F401 - the names other modules and tests import from here
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    MAX_RETRY,
    SQLITE_TIMEOUT,
    check_sqlite_file,
    check_storage_url,
    default_storage_url,
    make_storage,
    redact_url,
    scrub,
    sqlite_path,
    storage_url_for,
    url_secrets,
)

log = logging.getLogger("archsearch.search")

_redact = redact_url  # the name the sweep and its tests use
MAX_NAME = 128


def check_study_name(
    value: Any, source: str | None = "command line", key: str | None = "--study-name"
) -> str:
    """The one rule for study names (the space's ``study:`` and every ``--study-name``): a plain directory name,
    since ``runs/<study>/`` and ``plots/<study>/`` are made from it.

    Raises:
        ConfigError: naming ``source`` and ``key``.
    """
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_NAME
        or value in (".", "..")
        or value.startswith("-")
        or any(c in value for c in "/\\:")
        or any(not c.isprintable() or c.isspace() for c in value)
    ):
        raise ConfigError(
            f"expected a plain name (letters, digits, '-', '_', '.'; no spaces, slashes or '..'; at most "
            f"{MAX_NAME} characters), found {describe(value)}",
            source,
            key,
        )
    return value


# ---- samplers and pruners -----------------------------------------------------------------------------------------


def make_sampler(space: Any) -> Any:
    """The sampler named by the space (``auto``: TPE for one objective, NSGA-II for several).

    Every sampler but the grid is rebuilt for each trial with the seed ``hash(space seed, trial number)``: a trial's
    proposal depends only on the seed, its number and the study's history, so a sweep is reproducible, while workers
    and separate ``archsearch sweep`` commands on one study (whose trials have distinct numbers) never share a random
    stream and propose the same settings in lockstep. The grid keeps one seed: GridSampler shuffles its points by
    seed and maps a trial's grid id through that order, so every worker must share it.
    """
    name = space.sampler_name
    if name == "grid":
        return _grid_sampler_class()(grid_space(space), seed=space.seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise BackendError(
                "the cmaes sampler needs the Python package 'cmaes' (pip install cmaes); or use sampler: tpe"
            ) from None
    if name not in ("tpe", "random", "nsga2", "cmaes"):
        raise ConfigError(f"unknown sampler {name!r}", space.source, "sampler")
    return _per_trial_class()(functools.partial(_sampler, name), space.seed)


def _sampler(name: str, seed: int) -> Any:
    import optuna

    with _quiet_experimental():
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a study seeded ``seed`` (numpy and Optuna take 0 .. 2**32 - 1)."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@functools.cache
def _per_trial_class() -> type:
    import optuna

    class PerTrialSampler(optuna.samplers.BaseSampler):
        """Delegates each trial to a sampler built for it with ``trial_seed(seed, trial.number)``."""

        def __init__(self, factory: Any, seed: int):
            self._factory = factory
            self._seed = seed
            self._inner = factory(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._inner = self._factory(trial_seed(self._seed, trial.number))
            self._inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            return None  # the seed of each trial is fixed by its number

    return PerTrialSampler


@functools.cache
def _grid_sampler_class() -> type:
    """GridSampler without its ``after_trial`` hook, which calls ``study.stop()`` once every point was proposed:
    the workers decide when a sweep ends (a point proposed is not a point finished: its worker may die and its retry
    must still run)."""
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridSampler


def grid_space(space: Any) -> dict[str, list[Any]]:
    """Optuna GridSampler's search space: every searched dimension's values by parameter name."""
    out: dict[str, list[Any]] = {}
    for name, dim in space.space.items():
        if not dim.searched:
            continue
        if name == "positions" and dim.type != "categorical":
            for i in range(dim.count):
                out[f"position_{i}"] = dim.grid()
        else:
            out[name] = dim.grid()
    return out


def grid_size(space: Any) -> int:
    n = 1
    for values in grid_space(space).values():
        n *= len(values)
    return n


def pruner_options(kind: str) -> list[str]:
    """The keyword options a pruner type accepts (for validating ``pruner:`` in space files)."""
    cls = _pruner_class(kind)
    if cls is None:
        return []
    return [p for p in inspect.signature(cls).parameters if p not in ("self",)]


def _pruner_class(kind: str) -> Any:
    import optuna

    return {
        "none": None,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "halving": optuna.pruners.SuccessiveHalvingPruner,
    }[kind]


def make_pruner(space: Any) -> Any:
    """The pruner of the space, with defaults in training steps (reports are made at validation steps).

    Defaults: median waits for 2 finished trials and prunes from the second validation on; Hyperband and successive
    halving take the first validation step as the minimum resource and the run length as the maximum.
    """
    import optuna

    opts = {k: v for k, v in space.pruner.items() if k != "type"}
    kind = space.pruner["type"]
    if kind == "none" or space.multi_objective:
        return optuna.pruners.NopPruner()
    first_val = space.val_every or max(1, space.steps // 4)
    if kind in ("median", "percentile"):
        opts.setdefault("n_startup_trials", 2)
        opts.setdefault("n_warmup_steps", first_val)
    elif kind == "hyperband":
        opts.setdefault("min_resource", first_val)
        opts.setdefault("max_resource", space.steps)
        opts.setdefault("reduction_factor", 3)
    elif kind == "halving":
        opts.setdefault("min_resource", first_val)
        opts.setdefault("reduction_factor", 3)
    for key, value in opts.items():  # counts of steps or trials: YAML may spell them 1.0 or 1e3
        if key != "percentile" and isinstance(value, float) and value.is_integer():
            opts[key] = int(value)
    pruner = _pruner_class(kind)(**opts)
    if kind in ("median", "percentile"):
        return _distinct_startup_class()(pruner, int(opts["n_startup_trials"]))
    return pruner


@functools.cache
def _distinct_startup_class() -> type:  # defined on first use: importing optuna is slow
    import optuna
    from optuna.trial import TrialState

    class DistinctStartup(optuna.pruners.BasePruner):
        """A median or percentile pruner whose startup waits for ``n_startup_trials`` trained trials: a trial that
        reused a finished twin (``duplicate_of``) is COMPLETE to Optuna but is no new evidence about the space."""

        def __init__(self, inner: Any, n_startup_trials: int):
            self.inner = inner
            self.n_startup_trials = n_startup_trials

        def prune(self, study: Any, trial: Any) -> bool:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if sum("duplicate_of" not in t.user_attrs for t in done) < self.n_startup_trials:
                return False
            return self.inner.prune(study, trial)

    return DistinctStartup


# ---- studies ------------------------------------------------------------------------------------------------------


def directions(space: Any) -> list[str]:
    return [o.direction for o in space.objectives]


def create_or_load(
    space: Any, storage: Any, study_name: str, *, sampler: Any = None, pruner: Any = None
) -> Any:
    """Create the study or load it when it exists (resume); refuses a study whose objectives differ.

    Raises:
        StudyError: the stored study has other objectives or directions than the space.
    """
    import optuna

    sampler = sampler if sampler is not None else make_sampler(space)
    pruner = pruner if pruner is not None else make_pruner(space)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=directions(space),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.user_attrs.get("objectives")
    wanted = [{"name": o.name, "direction": o.direction} for o in space.objectives]
    if stored is not None and stored != wanted:
        raise StudyError(
            f"study {study_name!r} exists with objectives {stored}, but {space.source} asks for {wanted}; "
            "use another --study-name"
        )
    if [d.name.lower() for d in study.directions] != directions(space):
        raise StudyError(f"study {study_name!r} exists with other directions; use another --study-name")
    return study


def record_study_attrs(study: Any, space: Any) -> None:
    """The study-level user attributes the dashboard, plots and reports read."""
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("space_file", space.source)
    study.set_user_attr("objectives", [{"name": o.name, "direction": o.direction} for o in space.objectives])
    study.set_user_attr("archsearch_version", archsearch_version())
    with _quiet_experimental():  # optuna-dashboard labels the objectives by these instead of "Objective 0"
        study.set_metric_names([o.name for o in space.objectives])


def archsearch_version() -> str:
    from archsearch import __version__

    return __version__
