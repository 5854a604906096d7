"""What a sweep reports: counts by state and by what happened, the best trial or the Pareto front, why it stopped;
the text the CLI prints, and the summary of an existing study directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.errors import StudyError
from archsearch.search.accounting import Counts, count
from archsearch.search.space import SearchSpace


@dataclass
class SweepResult:
    """What a sweep reports (also printed by the CLI).

    Attributes:
        counts: trials by Optuna state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING).
        tally: trials by what happened to them (``archsearch.search.accounting.Counts``).
        n_trials: the target (the request, capped at the number of distinct settings of a finite space).
        requested: what was asked for.
        stop_reason: "done", or why the sweep stopped short.
        usage: this session's workers, how they shared the GPUs, the cards' utilisation and the tokens/s its trials
            trained together (``archsearch.search.gpu_usage``); None for a summary of an existing study.
    """

    study_name: str
    storage_url: str
    study_dir: Path
    n_trials: int
    counts: dict[str, int]
    best: list[dict[str, Any]] = field(default_factory=list)
    objectives: list[dict[str, str]] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    requested: int | None = None
    stop_reason: str = "done"
    usage: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.stop_reason == "done"


def summarize(study: Any, space: SearchSpace, url: str, study_dir: Path, n_trials: int) -> SweepResult:
    """Counts and the best trial(s): the best one, or the Pareto front with several objectives."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    best = best_trials(study, space)
    rows = []
    for t in sorted(best, key=lambda t: t.number):
        rows.append(
            {
                "number": t.number,
                "values": list(t.values or []),
                "searched": dict(t.params),
                **{
                    k: t.user_attrs.get(k)
                    for k in ("pattern", "arch", "params", "kv_bytes_per_token", "decode_ms_est", "run_dir")
                },
            }
        )
    objs = [{"name": o.name, "direction": o.direction} for o in space.objectives]
    from archsearch.search.replicates import runs_per_architecture

    tally = dataclasses.asdict(count(trials, runs_per_architecture(space)))
    return SweepResult(study.study_name, url, study_dir, n_trials, counts, rows, objs, tally)


def best_trials(study: Any, space: SearchSpace) -> list[Any]:
    """The best trial, or the Pareto front with several objectives, among the trials that trained (a reused twin
    repeats its original's values and would only repeat it on the front)."""
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    if space.multi_objective:
        return [t for t in study.best_trials if "duplicate_of" not in t.user_attrs]
    best = study.best_trial
    if "duplicate_of" in best.user_attrs:  # an identical value: show the trial that trained it
        best = next(
            t for t in study.get_trials(deepcopy=False) if t.number == best.user_attrs["duplicate_of"]
        )
    return [best]


def format_result(result: SweepResult) -> str:
    """The text the CLI prints to stdout."""
    from archsearch.search.gpu_usage import usage_lines
    from archsearch.search.study import redact_url

    c = Counts(**result.tally) if result.tally else count([])
    lines = [f"study {result.study_name} ({redact_url(result.storage_url)}): {c.line(result.n_trials)}"]
    lines += usage_lines(result.usage or {})
    if not result.best:
        lines.append("no trial completed")
        return "\n".join(lines)
    head = "best trial" if len(result.objectives) == 1 else f"Pareto front ({len(result.best)} trials)"
    lines.append(head + ":")
    for row in result.best:
        vals = " ".join(
            f"{o['name']}={v:.4g}" for o, v in zip(result.objectives, row["values"], strict=False)
        )
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["searched"].items())
        lines.append(f"  #{row['number']}: {vals}")
        lines.append(f"    pattern {row['pattern']}")
        lines.append(f"    params {row['params']:,}  searched: {params or '-'}")
        lines.append(f"    run {row['run_dir']}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def load_result(study_dir: str | Path, study_name: str | None = None) -> SweepResult:
    """The summary of an existing study directory (no training)."""
    import optuna

    from archsearch.search.space_load import space_from_dict
    from archsearch.search.study import make_storage, storage_url_for

    study_dir = Path(study_dir)
    url = storage_url_for(study_dir)
    name = study_name or study_dir.name
    try:
        study = optuna.load_study(study_name=name, storage=make_storage(url, heartbeat=False))
    except KeyError:
        raise StudyError(f"{study_dir}: no study named {name!r} in {url}") from None
    space = space_from_dict(
        study.user_attrs["space"], source=study.user_attrs.get("space_file", str(study_dir))
    )
    return summarize(study, space, url, study_dir, space.n_trials)
