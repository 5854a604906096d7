"""Where an export's model comes from: a study trial, or a plain run directory.

A trial's model is the resolved training config the sweep stored with it (user attribute ``config``: the canonical
``pattern``, the ``preset`` and the whole ``model``). Trials of older sweeps, which did not store it, are read from
their run's ``config.yaml`` (written by training, same keys); when that is gone too, the trial is re-planned from
its parameters and the study's search space exactly as the sweep planned it, and checked against the pattern the
trial recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.config_load import merge
from archsearch.errors import ArchsearchError, ConfigError, StudyError
from archsearch.model.config import ModelConfig
from archsearch.viz import STORAGE_FILES, StudyRecords, TrialRecord, load_records


@dataclass
class ExportSource:
    """A model to export.

    Attributes:
        pattern: canonical pattern text.
        model: the full model configuration.
        origin: a phrase naming where it came from (for file headers and messages).
        seq_len: the training sequence length, when known.
        train: the run's full training config (a TrainConfig dict), when it came from a run directory.
        trial: the trial it came from, if any.
    """

    pattern: str
    model: ModelConfig
    origin: str
    seq_len: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    trial: TrialRecord | None = None


def read_run_config(run_dir: str | Path) -> ExportSource:
    """The model of a training run from its ``config.yaml``.

    Raises:
        StudyError: the file is missing or unreadable, or has no pattern.
        ConfigError: its model section holds an unknown key.
    """
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the run's config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:  # one line: where and what (PyYAML's own text spans several)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise StudyError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or not data.get("pattern"):
        raise StudyError(f"{path}: expected a training config with a 'pattern' key")
    return _config_source(data, str(path), f"run {Path(run_dir)}")


def _config_source(data: dict[str, Any], source: str, origin: str) -> ExportSource:
    """The model of a training config (a run's config.yaml or a trial's stored config) with a ``pattern``."""
    seq = data.get("seq_len")
    return ExportSource(
        pattern=str(data["pattern"]),
        model=_model_from(data, source),
        origin=origin,
        seq_len=int(seq) if isinstance(seq, int) else None,
        train=data,
    )


def _model_from(data: dict[str, Any], source: str) -> ModelConfig:
    """The preset's config with the ``model`` dict (full or partial, nested) laid over it."""
    over = data.get("model") or {}
    if not isinstance(over, dict):
        raise ConfigError(f"expected a mapping, found {type(over).__name__}", source, "model")
    preset = data.get("preset")
    if preset:
        from archsearch.model.presets import get_preset

        base = get_preset(str(preset))[0].to_dict()
    else:
        base = ModelConfig().to_dict()
    return ModelConfig.from_dict(merge(base, over), source=source)


def pick_trial(records: StudyRecords, which: str | int = "best", objective: str | None = None) -> TrialRecord:
    """``best`` (by ``objective``, the first objective by default; a multi-objective study ranks by that one
    objective) or a trial number.

    Raises:
        StudyError: no such trial, or it is not complete.
        ConfigError: ``which`` is neither ``best`` nor a number.
    """
    if str(which) == "best":
        return records.best(objective)
    try:
        number = int(which)
    except ValueError:
        raise ConfigError(f"expected 'best' or a trial number, found {which!r}", key="--trial") from None
    t = records.trial(number)
    if t.state != "COMPLETE":
        reason = f": {t.status_reason}" if t.status_reason else ""
        raise StudyError(
            f"trial {number} of study {records.name!r} is {t.state}{reason} (export a complete trial)"
        )
    return t


def trial_source(
    records: StudyRecords, trial: TrialRecord, study_dir: str | Path | None = None
) -> ExportSource:
    """The model of one trial: the config the sweep stored with it, else (a trial of an older sweep) its run's
    config.yaml, else re-planned from the study's search space.

    Raises:
        StudyError: none of these works (the message names the missing config file).
    """
    if trial.config is not None:  # resolved once by the sweep: no re-allocation, no budget re-fit
        where = f"trial {trial.number} of study {records.name!r}"
        # a reused trial never ran under its own name: its twin's run holds the result
        run = trial.config.get("name") if trial.attrs.get("duplicate_of") is None else None
        origin = f"{where} (its stored config{f', run {run}' if run else ''})"
        src = _config_source(trial.config, f"{where}: stored config", origin)
        src.trial = trial
        return src
    candidates = []
    if trial.run_dir:
        candidates.append(Path(trial.run_dir))
        if study_dir is not None and not Path(trial.run_dir).is_absolute():
            candidates.append(Path(study_dir) / trial.run_dir)
    if study_dir is not None:  # a study directory moved or copied since the sweep: its runs sit under trials/
        trials = Path(study_dir) / "trials"
        if trial.run_dir:  # a retried trial runs in the directory named after the trial it retries
            candidates.append(trials / Path(trial.run_dir).name)
        candidates.append(trials / f"trial-{trial.number:04d}")  # the name a sweep gives a trial's run
    for c in candidates:
        if (c / "config.yaml").is_file():
            src = read_run_config(c)
            src.origin = f"trial {trial.number} of study {records.name!r} ({c})"
            src.trial = trial
            return src
    missing = candidates[0] / "config.yaml" if candidates else Path("<no run_dir recorded>")
    try:
        src = replan(records, trial)
    except ArchsearchError as exc:
        raise StudyError(
            f"{missing}: missing, and trial {trial.number} cannot be re-planned from the study's space "
            f"({exc.render().splitlines()[0]}) (keep the trial's run directory, or export from a copy of it)"
        ) from None
    return src


def replan(records: StudyRecords, trial: TrialRecord) -> ExportSource:
    """Re-plan a trial from its parameters and the study's space, as the sweep did, and check its pattern.

    Raises:
        StudyError: the study records no space, or the re-planned pattern differs from the recorded one.
    """
    if not records.space:
        raise StudyError(f"study {records.name!r} records no search space")
    import optuna

    from archsearch.search.space_load import space_from_dict
    from archsearch.search.suggest import plan_trial

    space = space_from_dict(records.space, source=records.space_file or f"study {records.name}")
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    plan = plan_trial(fixed, space, placement_seed=getattr(space, "seed", 0) + trial.number)
    pattern = str(plan.pattern)
    if trial.pattern and trial.pattern != pattern:
        raise StudyError(
            f"re-planning trial {trial.number} gives pattern {pattern!r}, but the trial recorded {trial.pattern!r}"
        )
    seq = getattr(space, "seq_len", None)
    train = {"pattern": pattern, "preset": space.preset, "seq_len": seq, **plan.train}
    return ExportSource(
        pattern=pattern,
        model=plan.model,
        origin=f"trial {trial.number} of study {records.name!r} (re-planned from its search space)",
        seq_len=seq if isinstance(seq, int) else None,
        train=train,
        trial=trial,
    )


def is_run_dir(path: str | Path) -> bool:
    """A training run directory (config.yaml, no study storage)."""
    p = Path(path)
    return (p / "config.yaml").is_file() and not any((p / f).is_file() for f in STORAGE_FILES)


def load_source(
    path: str | Path,
    trial: str | int = "best",
    *,
    objective: str | None = None,
    study_name: str | None = None,
) -> ExportSource:
    """The model at ``path``: a run directory, or a trial (``best`` or a number) of the study there.

    Raises:
        StudyError: no study or run there, no such trial, or its config is missing and cannot be re-planned.
    """
    if is_run_dir(path):
        return read_run_config(path)
    records = load_records(path, study_name)
    t = pick_trial(records, trial, objective)
    study_dir = Path(path) if Path(path).is_dir() else None
    return trial_source(records, t, study_dir)
