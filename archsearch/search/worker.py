"""One sweep worker: ask a trial, plan it, train it in-process, tell the result; until the study has its trials.

Counting rule: ``n_trials`` counts trials that ended COMPLETE or PRUNED (a diverged run is recorded as PRUNED with
its reason). FAILED trials do not count: a trial that raised (out of memory, a bug, a bad corner) is recorded with
its ``status_reason`` and stops the sweep after ``max_failures`` such failures in this invocation; a trial whose
worker died is failed by the heartbeat check and retried (same parameters) by another worker. Workers coordinate
through the storage only: before running, a worker checks that fewer than ``n_trials`` trials are finished or
running ahead of its own trial; a trial beyond that (two workers asking at once for the last slot) is told FAIL
with reason "surplus" without training, so the study ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from archsearch.errors import ArchsearchError
from archsearch.search.objectives import flat_metrics, format_values, objective_values, prune_metric
from archsearch.search.space import SearchSpace

log = logging.getLogger("archsearch.search")

SURPLUS = "surplus: the study already had n_trials trials finished or running; not trained"
POLL_S = 1.0  # while other workers finish the last trials


@dataclass
class WorkerJob:
    """Everything a (spawned) worker needs; picklable."""

    space: SearchSpace
    storage_url: str
    study_name: str
    n_trials: int
    runs_dir: str
    session_start: datetime
    max_failures: int
    index: int = 0
    n_workers: int = 1
    heartbeat_interval: int = 5
    grace_period: int = 20
    threads: int | None = None


def worker_main(job: WorkerJob) -> int:
    """Entry point of a worker process (also called in-process for one worker). Returns the trials it finished."""
    import optuna

    from archsearch.search.study import make_pruner, make_sampler, make_storage

    setup_logging()
    quiet_optuna()
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    storage = make_storage(
        job.storage_url, heartbeat_interval=job.heartbeat_interval, grace_period=job.grace_period
    )
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=make_sampler(job.space, seed=job.space.seed + job.index),
        pruner=make_pruner(job.space),
    )
    done_here = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        tally = Tally.of(study, job.session_start)
        if tally.done >= job.n_trials:
            break
        if tally.failures >= job.max_failures:
            log.warning(
                "%s stopping: %d trials failed in this sweep (--max-failures %d)",
                _tag(job),
                tally.failures,
                job.max_failures,
            )
            break
        if _grid_exhausted(study, job.space):
            log.warning("%s stopping: every point of the grid has been tried", _tag(job))
            break
        if tally.done + tally.running >= job.n_trials:
            time.sleep(POLL_S)  # the last trials are running elsewhere; one may still fail and free a slot
            continue
        trial = study.ask()
        with optuna.storages._heartbeat.get_heartbeat_thread(trial._trial_id, study._storage):
            if _ahead_of(study, trial.number) >= job.n_trials:
                trial.set_user_attr("status_reason", SURPLUS)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            state = run_trial(study, trial, job)
        done_here += state in ("COMPLETE", "PRUNED")
    return done_here


@dataclass
class Tally:
    done: int
    running: int
    failures: int

    @classmethod
    def of(cls, study: Any, since: datetime) -> Tally:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        failures = sum(
            t.state == TrialState.FAIL
            and t.user_attrs.get("status_reason") not in (None, SURPLUS)
            and t.datetime_complete is not None
            and t.datetime_complete >= since
            for t in trials
        )
        return cls(done, running, failures)


def _ahead_of(study: Any, number: int) -> int:
    """Trials finished or running with a lower number than ``number`` (the slots taken before this trial)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(t.number < number and t.state in states for t in study.get_trials(deepcopy=False))


def _grid_exhausted(study: Any, space: SearchSpace) -> bool:
    if space.sampler_name != "grid":
        return False
    from archsearch.search.study import grid_size

    finished = {
        t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False) if t.state.is_finished()
    }
    finished.discard(None)
    return len(finished) >= grid_size(space)


def run_trial(study: Any, trial: Any, job: WorkerJob) -> str:
    """Plan, train and tell one trial; never raises for a trial's own failure. Returns the final state's name."""
    import optuna
    from optuna.trial import TrialState

    from archsearch.search.cost_attrs import trial_attrs
    from archsearch.search.suggest import plan_trial

    space = job.space
    t0 = time.time()
    reporter = None
    state, values, reason = TrialState.FAIL, None, None
    # who to look at when the trial goes silent (host:pid)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        # a retry keeps its original trial's placement (a random spread would otherwise differ from the
        # checkpoint it resumes)
        plan = plan_trial(trial, space, placement_seed=space.seed + _original_number(trial))
        attrs = trial_attrs(plan, space)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        twin = _finished_twin(study, trial, attrs.get("pattern"))
        if twin is not None:  # samplers re-propose settings; training is deterministic, so reuse the result
            values, state = _reuse_twin(trial, twin), TrialState.COMPLETE
        else:
            cfg, run_dir = _train_config(plan, space, trial, job)
            trial.set_user_attr("run_dir", str(run_dir))
            metric = prune_metric(space)
            reporter = _reporter(trial, space, metric)
            summary = _train(cfg, reporter)
            metrics = flat_metrics(summary)
            trial.set_user_attr("metrics", metrics)
            _record_summary(trial, summary, attrs)
            status = summary.get("status", "ok")
            if status == "ok":
                values = objective_values(space, metrics, {**attrs, **_summary_costs(summary)})
                state = TrialState.COMPLETE
            elif status in ("diverged", "pruned"):
                state, reason = TrialState.PRUNED, f"{status}: {summary.get('reason') or 'no reason given'}"
            else:
                reason = f"{status}: {summary.get('reason') or 'no reason given'}"
    except optuna.TrialPruned as exc:
        state, reason = TrialState.PRUNED, str(exc) or "pruned"
    except ArchsearchError as exc:
        reason = exc.render().splitlines()[0]
    except (KeyError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.debug("%s", traceback.format_exc())
    except Exception as exc:  # a trial's crash must not end the sweep
        reason = _describe_crash(exc)
        log.warning("%s trial %d raised:\n%s", _tag(job), trial.number, traceback.format_exc())
    if reporter is not None and reporter.curve:
        trial.set_user_attr("curve", {str(k): v for k, v in sorted(reporter.curve.items())})
    if reason:
        trial.set_user_attr("status_reason", reason)
    try:
        study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except Exception as exc:  # e.g. the heartbeat check already failed this trial
        log.warning("%s could not record trial %d: %s", _tag(job), trial.number, exc)
        return "FAIL"
    tally = Tally.of(study, job.session_start)
    log.info(
        "%s trial %d %s in %.0fs: %s %s | %d/%d done",
        _tag(job), trial.number, state.name, time.time() - t0, format_values(space, values) if values else (reason or ""),
        trial.user_attrs.get("pattern", "")
        + (f" (reused trial {trial.user_attrs['duplicate_of']})" if "duplicate_of" in trial.user_attrs else ""),
        tally.done, job.n_trials,
    )  # fmt: skip
    return state.name


def _finished_twin(study: Any, trial: Any, pattern: str | None) -> Any:
    """A COMPLETE trial with this trial's parameters and pattern (its training would be identical), or None.

    A retried trial never has a twin: it resumes its own run.
    """
    from optuna.trial import TrialState

    if pattern is None or _retried_number(trial) is not None:
        return None
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.params == trial.params and other.user_attrs.get("pattern") == pattern:
            return other
    return None


def _reuse_twin(trial: Any, twin: Any) -> list[float]:
    """Copy a finished twin's results onto ``trial`` (marked ``duplicate_of``); returns its objective values."""
    for key in ("run_dir", "metrics", "tokens_per_s", "curve"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duplicate_of", twin.number)
    if len(twin.values) == 1:  # Optuna takes reports only in single-objective studies
        for step, value in sorted(twin.intermediate_values.items()):
            trial.report(value, step)
    return list(twin.values)


def _reporter(trial: Any, space: SearchSpace, metric: str | None) -> Any:
    """Reports ``metric`` by step (single objective; the NopPruner never prunes) and records a learning curve."""
    from archsearch.search.pruning import TrialReporter

    extra = ("val/loss", *(f"val/{t}/acc" for t in (space.tasks or {}) if t != "lm"))
    return TrialReporter(trial, metric, report=metric is not None, extra=extra)


def _train_config(plan: Any, space: SearchSpace, trial: Any, job: WorkerJob) -> tuple[Any, Path]:
    from archsearch.train.config import TrainConfig

    retried = _retried_number(trial)
    name = f"trial-{_original_number(trial):04d}"
    runs_dir = Path(job.runs_dir) / job.study_name / "trials"
    model = plan.model.to_dict()
    model.pop("vocab_size", None)  # the data decides the vocabulary
    data: dict[str, Any] = {
        "pattern": str(plan.pattern),
        "preset": space.preset,
        "model": model,
        "data": space.data,
        "tasks": space.tasks,
        "seq_len": space.seq_len,
        "batch_size": space.batch_size,
        "max_steps": space.steps,
        "seed": space.seed,
        "name": name,
        "runs_dir": str(runs_dir),
        "quiet": True,
        # a retry of a trial whose worker died continues from that run's last checkpoint
        "resume": retried is not None,
        "overwrite": retried is None,
    }
    if space.val_every is not None:
        data["val_every"] = space.val_every
    if space.val_batches is not None:
        data["val_batches"] = space.val_batches
    data.update(space.train)
    data.update(plan.train)
    cfg = TrainConfig.from_dict(data, source=f"{space.source} (trial {trial.number})")
    return cfg, runs_dir / name


def _retried_number(trial: Any) -> int | None:
    """The number of the trial whose dead worker this trial retries (None for a fresh trial)."""
    # a live Trial has no system_attrs in Optuna 5; the stored (frozen) trial has them
    return trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")


def _original_number(trial: Any) -> int:
    retried = _retried_number(trial)
    return retried if retried is not None else trial.number


def _train(cfg: Any, reporter: Any) -> dict[str, Any]:
    try:
        from archsearch.train import train
    except ImportError:
        from archsearch.train.run import train
    return train(cfg, callbacks=(reporter,))


def _record_summary(trial: Any, summary: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Prefer the trained model's real counts and throughput over the cost model's."""
    for key in ("params", "non_embedding_params"):
        if isinstance(summary.get(key), int) and summary[key] != attrs.get(key):
            trial.set_user_attr(key, summary[key])
    tps = summary.get("tokens_per_s")
    if isinstance(tps, (int, float)) and math.isfinite(tps):
        trial.set_user_attr("tokens_per_s", float(tps))


def _summary_costs(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("params", "non_embedding_params", "tokens_per_s") if k in summary}


def _describe_crash(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text[:200]}"
    return f"{type(exc).__name__}: {text[:300]}"


def _tag(job: WorkerJob) -> str:
    return f"[worker {job.index}]" if job.n_workers > 1 else "[sweep]"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (not the one at setup), so redirections and pytest's capture work."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ assigns it
        pass


def setup_logging() -> None:
    """Progress lines on stderr (once per process)."""
    logger = logging.getLogger("archsearch.search")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines and its warnings about the heartbeat API used with ask/tell (what the
    workers do on purpose, to count trials across workers) would drown the sweep's own progress lines."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )
