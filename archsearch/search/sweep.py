"""Run a sweep: validate the space, create or resume the study, run local workers, summarise the best trials.

Several machines join one study by running the same command with the same ``--storage`` URL and ``--study-name``;
``--workers N`` starts N local worker processes (spawned; one GPU each when there are GPUs).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError, StudyError
from archsearch.search.space import SearchSpace, load_space
from archsearch.search.worker import WorkerJob, quiet_optuna, setup_logging, worker_main

log = logging.getLogger("archsearch.search")


@dataclass
class SweepResult:
    """What a finished sweep reports (also printed by the CLI)."""

    study_name: str
    storage_url: str
    study_dir: Path
    n_trials: int
    counts: dict[str, int]
    best: list[dict[str, Any]] = field(default_factory=list)
    objectives: list[dict[str, str]] = field(default_factory=list)


def run_sweep(
    space: str | Path | SearchSpace,
    *,
    n_trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    runs_dir: str | Path = "runs",
    seed: int | None = None,
    data: str | None = None,
    max_failures: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> SweepResult:
    """Run (or resume) a sweep until ``n_trials`` trials are COMPLETE or PRUNED.

    Args:
        space: a space file (validated in full first) or an already validated ``SearchSpace``.
        n_trials: trials to finish in total (already finished ones count); default the space's ``n_trials``.
        workers: local worker processes.
        storage: a database URL; default SQLite at ``<runs_dir>/<study>/study.db``.
        study_name: default the space's ``study`` (its file name).
        runs_dir: where ``<study>/`` (storage, trial runs) goes.
        seed: overrides the space's seed (sampler and training).
        data: overrides the space's ``data:`` (the LM corpus: a path or ``hf:<dataset>``); checked before any trial.
        max_failures: stop after this many FAILED trials in this invocation (default: ``n_trials``).
        heartbeat_interval, grace_period: seconds (default: the space's); a RUNNING trial silent for
            ``grace_period`` is failed and retried.

    Returns:
        The ``SweepResult`` with the best trial (single objective) or the Pareto front.
    """
    from archsearch.search.study import create_or_load, default_storage_url, make_storage, record_study_attrs

    if not isinstance(space, SearchSpace):
        space = load_space(space, check_build=data is None)
    if data is not None:
        from archsearch.search.suggest import check_corners

        space = replace(space, data=data)
        try:
            check_corners(space)
        except ConfigError as exc:  # a corpus that cannot be served is the flag's fault, not the file's
            if exc.key != "data":
                raise
            raise ConfigError(exc.message, "command line", "--data", exc.hint) from None
    if seed is not None:
        space = replace(space, seed=seed)
    if workers < 1:
        raise ConfigError(f"expected at least 1 worker, found {workers}", "command line", "--workers")
    n_trials = _trial_count(space, n_trials)
    if max_failures is None:
        max_failures = n_trials
    study_name = study_name or space.study
    study_dir = Path(runs_dir) / study_name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage_url(study_dir)
    setup_logging()
    quiet_optuna()
    if storage:
        _write_storage_file(study_dir, storage)
    study = create_or_load(space, make_storage(url), study_name)
    record_study_attrs(study, space)
    _announce(space, study, n_trials, url, workers)

    job = WorkerJob(
        space=space,
        storage_url=url,
        study_name=study_name,
        n_trials=n_trials,
        runs_dir=str(runs_dir),
        session_start=datetime.now(),
        max_failures=max_failures,
        n_workers=workers,
        heartbeat_interval=heartbeat_interval or space.heartbeat_interval,
        grace_period=grace_period or space.grace_period,
        threads=max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None,
    )
    t0 = time.time()
    if workers == 1:
        worker_main(job)
    else:
        _run_processes(job, workers)
    log.info("[sweep] finished in %.0fs", time.time() - t0)
    return summarize(study, space, url, study_dir, n_trials)


def _write_storage_file(study_dir: Path, url: str) -> None:
    """``storage.txt`` (how dashboard/plot/report find the study) never holds the password: files are shared."""
    from archsearch.search.study import redact_url

    kept = redact_url(url, mask=None)
    (study_dir / "storage.txt").write_text(kept + "\n")
    if kept != url:
        log.info(
            "[sweep] %s keeps the storage URL without its password: for dashboard/plot/report set PGPASSWORD "
            "(or ~/.pgpass), or pass the full URL instead of the directory",
            study_dir / "storage.txt",
        )


def _trial_count(space: SearchSpace, n_trials: int | None) -> int:
    from archsearch.search.study import grid_size

    if n_trials is not None and n_trials < 1:
        raise ConfigError(
            f"expected a positive number of trials, found {n_trials}", "command line", "--n-trials"
        )
    n = n_trials or space.n_trials
    if space.sampler_name == "grid":
        size = grid_size(space)
        if n > size:
            log.info("[sweep] the grid has %d points: running %d trials, not %d", size, size, n)
            n = size
    return n


def _announce(space: SearchSpace, study: Any, n_trials: int, url: str, workers: int) -> None:
    from optuna.trial import TrialState

    from archsearch.search.study import _redact

    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    objs = ", ".join(f"{o.direction} {o.name}" for o in space.objectives)
    log.info(
        "[sweep] study %r in %s: %s, sampler %s", study.study_name, _redact(url), objs, space.sampler_name
    )
    if done:
        log.info("[sweep] resuming: %d of %d trials already finished", done, n_trials)
    if space.multi_objective and space.pruner["type"] != "none":
        log.warning(
            "[sweep] pruning is disabled: Optuna cannot prune a multi-objective study "
            "(every trial trains to the end; learning curves are kept in the trial attribute 'curve')"
        )
    from archsearch.search.suggest import corner_budget_spread

    if (spread := corner_budget_spread(space)) is not None:
        log.info(
            "[sweep] iso-parameter: the corner trials land %+.2f%% to %+.2f%% from the budget (tolerance %.2f%%)",
            100 * spread[0], 100 * spread[1], 100 * space.budget_tolerance,
        )  # fmt: skip
    log.info("[sweep] %d trials to finish with %d worker(s)", max(0, n_trials - done), workers)


def _run_processes(job: WorkerJob, workers: int) -> None:
    """Spawn ``workers`` processes; with GPUs, each sees one (round robin) through CUDA_VISIBLE_DEVICES."""
    ctx = mp.get_context("spawn")
    gpus = _visible_gpus()
    procs = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for i in range(workers):
            if gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            p = ctx.Process(target=worker_main, args=(replace(job, index=i),), name=f"archsearch-worker-{i}")
            p.start()
            procs.append(p)
            if i == 0:
                time.sleep(0.5)  # the first worker creates the storage's tables before the others connect
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        raise
    bad = [f"worker {i} (exit {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if bad:
        log.warning(
            "[sweep] %s ended abnormally; a trial it left RUNNING is failed by heartbeat and retried by a live worker, "
            "or by the next sweep if none is left",
            ", ".join(bad),
        )


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


def summarize(study: Any, space: SearchSpace, url: str, study_dir: Path, n_trials: int) -> SweepResult:
    """Counts by state and the best trial(s): the best one, or the Pareto front with several objectives."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    best = study.best_trials if any(t.state == TrialState.COMPLETE for t in trials) else []
    if not space.multi_objective and best:
        best = [study.best_trial]
    rows = []
    for t in sorted(best, key=lambda t: t.number):
        rows.append(
            {
                "number": t.number,
                "values": list(t.values or []),
                "searched": dict(t.params),
                **{
                    k: t.user_attrs.get(k)
                    for k in ("pattern", "params", "kv_bytes_per_token", "decode_ms_est", "run_dir")
                },
            }
        )
    objs = [{"name": o.name, "direction": o.direction} for o in space.objectives]
    return SweepResult(study.study_name, url, study_dir, n_trials, counts, rows, objs)


def format_result(result: SweepResult) -> str:
    """The text the CLI prints to stdout."""
    from archsearch.search.study import _redact

    c = result.counts
    lines = [
        f"study {result.study_name} ({_redact(result.storage_url)}): {c.get('COMPLETE', 0)} complete, "
        f"{c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed",
    ]
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

    from archsearch.search.space import space_from_dict
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
