"""Optuna plumbing: storage (SQLite or any database URL, with heartbeats), samplers, pruners, study creation.

Storage choice: every study uses Optuna's ``RDBStorage``, because it is the storage with heartbeats (a worker killed
mid-trial gets that trial failed and retried). The default is SQLite at ``runs/<study>/study.db`` in WAL mode with a
long busy timeout, which is safe for a handful of local worker processes; PostgreSQL (``--storage
postgresql+psycopg2://...``) is the way to run many workers on many machines. A non-default URL is written to
``runs/<study>/storage.txt`` so ``archsearch dashboard|plot|report runs/<study>`` find the study again.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

from archsearch.errors import BackendError, ConfigError, StudyError

log = logging.getLogger("archsearch.search")

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a RUNNING trial silent this long belongs to a dead worker: failed and retried
MAX_RETRY = 2  # retries of a trial whose worker died (not of trials that raised)
SQLITE_TIMEOUT = 120  # seconds a writer waits for the SQLite lock


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def storage_url_for(study_dir: str | Path) -> str:
    """The storage URL of a study directory (its storage.txt, else its study.db); StudyError when neither exists."""
    study_dir = Path(study_dir)
    txt = study_dir / "storage.txt"
    if txt.is_file():
        url = txt.read_text().strip()
        if url:
            return url
    db = study_dir / "study.db"
    if db.is_file():
        return default_storage_url(study_dir)
    raise StudyError(
        f"{study_dir}: no study here (expected study.db or storage.txt, as `archsearch sweep` writes)"
    )


def make_storage(
    url: str,
    *,
    heartbeat: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
) -> Any:
    """An ``optuna.storages.RDBStorage`` for ``url`` with heartbeats and retry of trials whose worker died.

    Raises:
        ConfigError: the URL is not one SQLAlchemy understands or the database refuses the connection.
        BackendError: the URL's database driver (e.g. psycopg2) is not installed.
    """
    import optuna
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
            _enable_wal(path)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    elif "://" not in url:
        raise ConfigError(
            "expected a database URL like sqlite:///path/study.db or postgresql+psycopg2://user@host:port/db",
            "command line", "--storage", hint=f"found {url!r}",
        )  # fmt: skip
    if heartbeat:
        # the retry resumes the dead trial's run from its last checkpoint: it keeps the steps reported before
        with _quiet_experimental():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY, inherit_intermediate_values=True
            )
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    try:
        with _quiet_experimental():
            return RDBStorage(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"the storage {_redact(url)} needs the Python package {exc.name!r}",
            ) from None  # fmt: skip
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError ...
        raise ConfigError(
            f"cannot open the storage {_redact(url)}: {type(exc).__name__}: "
            f"{scrub((str(exc).splitlines() or [''])[0], url)}",
            "command line", "--storage",
        ) from None  # fmt: skip


# user:password@ right after the scheme (greedy up to the last "@" before a query, so an unescaped "@" in the
# password is hidden too), and a libpq-style ?password=... parameter
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@?#]*):(?P<secret>[^?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#]*)", re.IGNORECASE)


def redact_url(url: str, mask: str | None = "***") -> str:
    """``url`` with its password replaced by ``mask``, or removed when ``mask`` is None (what ``storage.txt`` keeps:
    libpq then takes the password from ``PGPASSWORD`` or ``~/.pgpass``)."""
    if mask is None:
        url = _URL_PASSWORD.sub(lambda m: m["head"] + "@", url)
        url = re.sub(r"[?&]password=[^&#]*", "", url, flags=re.IGNORECASE)
        return url if "?" in url or "&" not in url else url.replace("&", "?", 1)
    url = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{mask}@", url)
    return _QUERY_PASSWORD.sub(lambda m: m["head"] + mask, url)


def url_secrets(url: str) -> list[str]:
    """The password text(s) in ``url`` (to scrub from messages that quote the URL's parts)."""
    found = [m["secret"] for m in (_URL_PASSWORD.search(url), *_QUERY_PASSWORD.finditer(url)) if m]
    pieces = [p for s in found for p in (s, *s.split("@")) if len(p) >= 3]
    return sorted(set(pieces), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every password text of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


_redact = redact_url  # the name the sweep and its tests use


def _enable_wal(path: Path) -> None:
    """WAL lets readers (the dashboard, other workers) proceed while one worker writes; it persists in the file."""
    con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:  # a corrupt or foreign file where the study should be
        raise StudyError(
            f"{path}: not a readable study database ({exc}); restore it or use another --study-name"
        ) from None
    finally:
        con.close()


class _quiet_experimental:
    """Silence Optuna's ExperimentalWarning for the heartbeat options (stable in practice since 2.x)."""

    def __enter__(self):
        import warnings

        import optuna

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# ---- samplers and pruners -----------------------------------------------------------------------------------------


def make_sampler(space: Any, *, seed: int | None = None) -> Any:
    """The sampler named by the space (``auto``: TPE for one objective, NSGA-II for several), seeded.

    Workers of one study get different seeds (``seed + worker index``) so that they do not propose the same trials,
    except for the grid: GridSampler shuffles its points by seed and maps a trial's grid id through that order, so
    every worker must share the space's seed or grid ids taken by different workers name the same point.
    """
    import optuna

    name = space.sampler_name
    seed = space.seed if seed is None else seed
    if name == "tpe":
        with _quiet_experimental():
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        return _grid_sampler_class()(grid_space(space), seed=space.seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise BackendError(
                "the cmaes sampler needs the Python package 'cmaes' (pip install cmaes); or use sampler: tpe"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"unknown sampler {name!r}", space.source, "sampler")


@functools.cache
def _grid_sampler_class() -> type:
    """GridSampler without its ``after_trial`` hook, which calls ``study.stop()`` once the grid is covered: outside
    ``study.optimize`` (our workers ask and tell) that raises after the trial is stored, so the worker that told the
    last point logged a false "could not record". The workers stop on a covered grid themselves."""
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
    for key in ("n_startup_trials", "n_warmup_steps", "interval_steps", "min_resource", "max_resource"):
        if key in opts and isinstance(opts[key], float) and opts[key].is_integer():
            opts[key] = int(opts[key])
    return _pruner_class(kind)(**opts)


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


def archsearch_version() -> str:
    from archsearch import __version__

    return __version__
