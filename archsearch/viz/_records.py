"""Open a study and extract plain per-trial records for the plots, the report and the exporters.

Plots are split as Optuna's own: "extract records" (here) and "draw" (one module per plot family). A study lives in
``runs/<study>/`` as ``study.db`` (SQLite), ``study.log`` (Optuna journal file) or ``storage.txt`` (a database URL);
the study name defaults to the directory name. The trial user attributes read here are the ones ``archsearch sweep``
records (pattern, params, kv_bytes_per_token, fractions, metrics ...).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError, StudyError, did_you_mean
from archsearch.viz._patterns import fractions_of

if TYPE_CHECKING:  # pragma: no cover
    import optuna

STORAGE_FILES = ("storage.txt", "study.db", "study.log")
_LEVEL_KEY = re.compile(r"(?P<name>.+)_L(?P<level>\d+)")  # a per-level metric, e.g. "val/mqar/acc_L16"
_SQLITE_MAGIC = b"SQLite format 3\x00"


class PlotNotApplicable(StudyError):
    """A plot that does not apply to this study (e.g. RoPE was never searched); the CLI skips it with this note."""


@dataclass(frozen=True)
class Objective:
    """A quantity to plot or rank by, with the direction that is better."""

    name: str
    direction: str  # "minimize" | "maximize"

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.minimize else a > b

    @property
    def label(self) -> str:
        return f"{self.name} ({'lower' if self.minimize else 'higher'} is better)"


@dataclass
class TrialRecord:
    """What the plots need from one trial, with missing attributes as None/empty rather than KeyErrors."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    duration_s: float | None = None

    @property
    def pattern(self) -> str | None:
        p = self.attrs.get("pattern")
        return str(p) if p is not None else None

    @property
    def fractions(self) -> dict[str, float]:
        f = self.attrs.get("fractions")
        if isinstance(f, dict) and f:
            return {str(k): float(v) for k, v in f.items()}
        return fractions_of(self.pattern) if self.pattern else {}

    @property
    def metrics(self) -> dict[str, Any]:
        m = self.attrs.get("metrics")
        return m if isinstance(m, dict) else {}

    @functools.cached_property
    def level_metrics(self) -> dict[str, dict[int, float]]:
        """Finite per-level metrics by name, then level (``val/mqar/acc_L16`` is ``["val/mqar/acc"][16]``); parsed
        once per record (the levels plot reads it several times per trial)."""
        out: dict[str, dict[int, float]] = {}
        for key, raw in self.metrics.items():
            m = _LEVEL_KEY.fullmatch(str(key))
            v = _as_float(raw)
            if m and v is not None and math.isfinite(v):
                out.setdefault(m["name"], {})[int(m["level"])] = v
        return out

    @property
    def spread(self) -> str | None:
        s = self.attrs.get("spread", self.params.get("spread"))
        return None if s is None else str(s)

    @property
    def rope(self) -> bool | None:
        r = self.attrs.get("rope", self.params.get("rope"))
        if r is None:
            return None
        if isinstance(r, str):
            return r.lower() in ("on", "true", "1", "yes")
        return bool(r)

    @property
    def run_dir(self) -> str | None:
        r = self.attrs.get("run_dir")
        return str(r) if r else None

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved training config the sweep stored with the trial (a ``TrainConfig`` dict: ``pattern``,
        the whole ``model``, ``seq_len`` ...); None for trials of older sweeps, which did not store it."""
        c = self.attrs.get("config")
        return c if isinstance(c, dict) and c.get("pattern") else None

    @property
    def status_reason(self) -> str | None:
        r = self.attrs.get("status_reason")
        return str(r) if r else None

    def get(self, name: str) -> float | None:
        """A numeric value by name: an objective, then a final metric, then a user attribute, then a parameter."""
        for source in (self.values, self.metrics, self.attrs, self.params):
            if name in source:
                return _as_float(source[name])
        if name == "val_loss" and "val/loss" in self.metrics:
            return _as_float(self.metrics["val/loss"])
        return None


@dataclass
class StudyRecords:
    """A study as plain records: its objectives, search space and trials (all states)."""

    name: str
    objectives: list[Objective]
    trials: list[TrialRecord]
    space: dict[str, Any] = field(default_factory=dict)
    space_file: str | None = None
    storage: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)

    # ---- selections -------------------------------------------------------------------------------------------
    def by_state(self, *states: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.state in states]

    @property
    def complete(self) -> list[TrialRecord]:
        return self.by_state("COMPLETE")

    def trial(self, number: int) -> TrialRecord:
        for t in self.trials:
            if t.number == number:
                return t
        span = (
            f"trials are numbered {self.trials[0].number}..{self.trials[-1].number}" if self.trials else None
        )
        raise study_error(f"study {self.name!r} has no trial {number}", span)

    def objective(self, name: str | None = None) -> Objective:
        """The named objective (or metric/attribute with a guessed direction); the first objective when None."""
        if name is None:
            if not self.objectives:
                raise StudyError(f"study {self.name!r} records no objectives")
            return self.objectives[0]
        for o in self.objectives:
            if o.name == name:
                return o
        if any(t.get(name) is not None for t in self.complete):
            return Objective(name, guess_direction(name))
        known = [o.name for o in self.objectives] + sorted({k for t in self.complete for k in t.metrics})
        raise ConfigError(
            f"the study records no objective or metric {name!r} (known: {', '.join(known) or 'none'})",
            key="--objective",
            hint=did_you_mean(name, known),
        )

    def valued(self, objective: Objective) -> list[tuple[TrialRecord, float]]:
        """Complete trials with a finite value for ``objective``."""
        out = []
        for t in self.complete:
            v = t.get(objective.name)
            if v is not None and math.isfinite(v):
                out.append((t, v))
        return out

    def ranked(self, objective: Objective | str | None = None) -> list[tuple[TrialRecord, float]]:
        """Complete trials, best first by ``objective`` (ties broken by trial number)."""
        obj = objective if isinstance(objective, Objective) else self.objective(objective)
        sign = 1.0 if obj.minimize else -1.0
        return sorted(self.valued(obj), key=lambda tv: (sign * tv[1], tv[0].number))

    def best(self, objective: Objective | str | None = None) -> TrialRecord:
        ranked = self.ranked(objective)
        if not ranked:
            raise StudyError(f"study {self.name!r} has no complete trial with a value to rank by")
        return ranked[0][0]

    def searched_fractions(self, trials: Iterable[TrialRecord] | None = None) -> list[str]:
        """Symbols whose layer fraction differs between trials, in order of first appearance."""
        seen: dict[str, set[float]] = {}
        pool = list(self.complete if trials is None else trials)
        for t in pool:
            for s in t.fractions:
                seen.setdefault(s, set())
        for t in pool:
            f = t.fractions
            for s in seen:
                seen[s].add(round(f.get(s, 0.0), 6))
        return [s for s, vals in seen.items() if len(vals) > 1]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def study_error(message: str, hint: str | None = None) -> StudyError:
    """A StudyError whose message ends with an optional hint, as the other error types render theirs."""
    return StudyError(f"{message} ({hint})" if hint else message)


def guess_direction(name: str) -> str:
    """Accuracies are maximised, everything else (loss, bytes, time, parameters) minimised."""
    low = name.lower()
    return (
        "maximize" if low.endswith("acc") or "accuracy" in low or low.endswith("tokens_per_s") else "minimize"
    )


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---- opening storage --------------------------------------------------------------------------------------------
def _storage_for(path_or_url: str | Path) -> tuple[Any, str, str | None]:
    """(Optuna storage, description, default study name) for a study directory, a storage file or a URL."""
    import optuna

    from archsearch.search.study import redact_url

    text = str(path_or_url)
    if "://" in text:
        shown = redact_url(text)  # messages and reports never show a password
        return _open_url(text, shown), shown, None
    path = Path(text)
    if path.is_dir():
        found = [path / f for f in STORAGE_FILES if (path / f).is_file()]
        if not found:
            raise study_error(
                f"{path}: no study storage found (expected one of {', '.join(STORAGE_FILES)})",
                "run `archsearch sweep SPACE.yaml` first, or pass the storage URL",
            )
        file = found[0]
        default_name = path.resolve().name
    elif path.is_file():
        file = path
        default_name = path.resolve().parent.name
    else:
        raise StudyError(f"{path}: no such study directory or storage file")

    if file.name == "storage.txt":
        url = file.read_text().strip()
        if not url:
            raise StudyError(f"{file}: empty (expected a database URL)")
        return _open_url(url, str(file)), redact_url(url), default_name
    if file.suffix == ".log":
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(file))), str(file), default_name
        except Exception as exc:  # a corrupt journal fails while replaying its log
            raise StudyError(f"{file}: cannot read the Optuna journal ({_first_line(exc)})") from exc
    with open(file, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise StudyError(f"{file}: not an SQLite database (corrupt or not a study file)")
    return _open_url(f"sqlite:///{file.resolve()}", str(file)), str(file), default_name


def _open_url(url: str, where: str) -> Any:
    import optuna

    from archsearch.search.study import scrub

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        raise StudyError(f"{where}: cannot open study storage ({scrub(_first_line(exc), url)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def load_study(path_or_url: str | Path, study_name: str | None = None) -> optuna.Study:
    """Open a sweep's study.

    Args:
        path_or_url: ``runs/<study>`` (holding ``study.db``, ``study.log`` or ``storage.txt``), one of those files,
            or a database URL.
        study_name: defaults to the directory's name; when that is absent and the storage holds exactly one study,
            that one.

    Returns:
        The ``optuna.Study``.

    Raises:
        StudyError: the directory, file or study is missing, or the storage is corrupt.
    """
    import optuna

    storage, where, default_name = _storage_for(path_or_url)
    try:
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as exc:
        raise StudyError(f"{where}: cannot read studies ({_first_line(exc)})") from exc
    name = study_name or default_name
    if name is None or name not in names:
        if study_name is None and len(names) == 1:
            name = names[0]
        elif not names:
            raise StudyError(f"{where}: holds no study")
        else:
            raise study_error(
                f"{where}: no study named {name!r} (found: {', '.join(sorted(names))})",
                did_you_mean(str(name), names) or "pass --study-name",
            )
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except Exception as exc:
        raise StudyError(f"{where}: cannot load study {name!r} ({_first_line(exc)})") from exc


def records_from_study(study: optuna.Study) -> StudyRecords:
    """Extract plain records from an Optuna study (all trial states)."""
    attrs = dict(study.user_attrs)
    directions = [d.name.lower() for d in study.directions]
    declared = attrs.get("objectives")
    names: list[str] = []
    if isinstance(declared, list) and len(declared) == len(directions):
        names = [
            str(o.get("name", f"objective_{i}")) if isinstance(o, dict) else str(o)
            for i, o in enumerate(declared)
        ]
    elif study.metric_names and len(study.metric_names) == len(directions):
        names = list(study.metric_names)
    else:
        names = ["objective"] if len(directions) == 1 else [f"objective_{i}" for i in range(len(directions))]
    objectives = [Objective(n, d) for n, d in zip(names, directions, strict=True)]

    trials = []
    for ft in study.get_trials(deepcopy=False):
        values = {}
        if ft.values is not None:
            values = {o.name: float(v) for o, v in zip(objectives, ft.values, strict=False)}
        duration = ft.duration.total_seconds() if ft.duration is not None else None
        trials.append(
            TrialRecord(
                number=ft.number,
                state=ft.state.name,
                values=values,
                params=dict(ft.params),
                attrs=dict(ft.user_attrs),
                curve=_curve_of(ft),
                duration_s=duration,
            )
        )
    space = attrs.get("space")
    return StudyRecords(
        name=study.study_name,
        objectives=objectives,
        trials=trials,
        space=space if isinstance(space, dict) else {},
        space_file=attrs.get("space_file"),
        user_attrs=attrs,
    )


def _curve_of(ft: optuna.trial.FrozenTrial) -> list[tuple[int, float]]:
    """Intermediate values by step; for multi-objective studies (where Optuna refuses ``trial.report``) the sweep
    records them in the ``curve`` user attribute instead."""
    raw: Any = ft.intermediate_values
    if not raw and isinstance(ft.user_attrs.get("curve"), dict):
        raw = ft.user_attrs["curve"]
    out = []
    for k, v in (raw or {}).items():
        try:
            out.append((int(k), float(v)))
        except (TypeError, ValueError):
            continue
    return sorted(out)


def as_records(study: optuna.Study | StudyRecords) -> StudyRecords:
    """Plot functions accept either a study or already-extracted records."""
    return study if isinstance(study, StudyRecords) else records_from_study(study)


def load_records(path_or_url: str | Path, study_name: str | None = None) -> StudyRecords:
    """:func:`load_study` then :func:`records_from_study`, remembering where the study came from."""
    study = load_study(path_or_url, study_name)
    rec = records_from_study(study)
    rec.storage = str(path_or_url)
    return rec
