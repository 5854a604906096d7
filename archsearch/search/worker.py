"""One sweep worker: Optuna's ``study.optimize`` asks trials, the objective plans and trains each, until the study
has ``n_trials`` distinct settings finished (see :mod:`archsearch.search.accounting` for what counts).

Workers coordinate through the storage only:

- before asking, a worker waits while the trials finished or running elsewhere already fill ``n_trials`` (one may
  still fail and free a slot), saying what it waits for;
- a trial beyond that (two workers asked at once for the last slot) ends FAIL "surplus" without training;
- each trial publishes its ``setting`` (:mod:`archsearch.search.identity`) before it decides to train: a setting
  that finished already is reused (``duplicate_of``, not counted); one that an earlier trial is training is waited
  for and then reused; one queued as a retry is left to that retry ("duplicate", not trained). "Earlier" orders
  trials by the number of the trial they retry, then their own, so exactly one trial trains each setting;
- a trial whose worker died is failed by the heartbeat check (:mod:`archsearch.search.liveness`) and retried in
  the same run directory, resuming its last checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from archsearch.errors import ArchsearchError
from archsearch.search.accounting import (  # noqa: F401 - SURPLUS is imported from here by tests
    SURPLUS,
    count,
    failures_since,
    group_of,
    holds_slot,
    interrupted_reason,
    kind,
    lost_reason,
    units,
)
from archsearch.search.fused_group import fusing, train_group
from archsearch.search.liveness import quiet_experimental
from archsearch.search.objectives import flat_metrics, objective_values, prune_metric
from archsearch.search.outcome import TrialFailed, record_curve
from archsearch.search.outcome import describe_crash as _describe_crash
from archsearch.search.outcome import reporter as _reporter
from archsearch.search.progress import progress_line, setup_logging, trial_head
from archsearch.search.replicates import overrides, queue_siblings, run_of, runs_per_architecture
from archsearch.search.space import SearchSpace
from archsearch.search.twins import decide, reuse

log = logging.getLogger("archsearch.search")

POLL_S = 1.0  # between looks at the storage while waiting for other workers' trials
REMIND_S = 60.0  # a wait that goes on is announced again this often
ORPHAN_EXIT_S = 60.0  # a worker whose sweep died and that has not stopped on SIGINT by then exits at once
DUPLICATE_STREAK = (
    50  # settings proposed in a row that had run already: the sampler is stuck, the space used up
)


class TakenOver(Exception):
    """This worker's trial was ended by someone else (the heartbeat check judged it dead) while it ran."""


@dataclass
class WorkerJob:
    """Everything a (spawned) worker needs; picklable.

    Attributes:
        settings: every distinct setting of a finite space (None: unknown or infinite), to stop when all have run.
        done_at_start: runs trained (COMPLETE or PRUNED) when the sweep started (for the ETA).
        parent_pid: the sweep process a spawned worker watches (it stops its trial and exits when that ends).
        usage_file: where the sweep's GPU sampler writes its running summary (the progress line shows it).
    """

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
    settings: frozenset[str] | None = None
    done_at_start: int = 0
    parent_pid: int | None = None
    tag: str = field(default="")
    usage_file: str | None = None


def worker_main(job: WorkerJob) -> int:
    """Run trials until the study has its ``n_trials`` (also called in-process for one worker).

    Returns:
        The number of settings this worker trained to COMPLETE or PRUNED.

    Raises:
        KeyboardInterrupt: Ctrl-C (or the sweep process ended): the running trial was recorded "interrupted".
    """
    setup_logging()
    quiet_optuna()
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGINT, _first_interrupt)
    worker = Worker(job)
    try:
        if job.parent_pid is not None:
            _watch_parent(job.parent_pid, worker)
        return worker.run()
    finally:
        worker.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def verdict(trials: list[Any], job: WorkerJob, *, duplicate_streak: int = 0) -> str | None:
    """Why the sweep must stop now (None: it goes on). Shared by the workers and the sweep's final report."""
    c = count(trials, runs_per_architecture(job.space))
    if c.finished >= job.n_trials:
        return "done"
    failed = failures_since(trials, job.session_start)
    if failed >= job.max_failures:
        return f"--max-failures reached: {failed} trials failed in this sweep"
    if c.running or c.waiting:
        return None
    if job.settings is not None:
        tried = {t.user_attrs.get("setting") for t in trials if kind(t) in ("complete", "pruned", "reused")}
        if job.settings <= tried:
            return f"the space has only {len(job.settings)} distinct settings and every one has run"
    if duplicate_streak >= DUPLICATE_STREAK:
        return f"the sampler proposed {duplicate_streak} settings in a row that had run already (the space looks used up)"
    return None


class Worker:
    """The state of one worker: its study, storage, beater and the trial it runs."""

    def __init__(self, job: WorkerJob):
        import optuna

        from archsearch.search.liveness import Beater, Watch
        from archsearch.search.study import make_pruner, make_sampler, make_storage

        self.job = job
        self.tag = job.tag or (f"[worker {job.index}]" if job.n_workers > 1 else "[sweep]")
        self.storage = make_storage(
            job.storage_url, heartbeat_interval=job.heartbeat_interval, grace_period=job.grace_period
        )
        self.study = optuna.load_study(
            study_name=job.study_name,
            storage=self.storage,
            sampler=make_sampler(job.space),
            pruner=make_pruner(job.space),
        )
        self.study_id = self.storage.get_study_id_from_name(job.study_name)
        self.watch = Watch(self.storage, self.study_id)
        self.beater = Beater(job.storage_url, job.heartbeat_interval)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.current: int | None = None
        self.stop_reason: str | None = None
        self.interrupt_reason = "Ctrl-C"
        self.trained = 0
        self.duplicate_streak = 0
        self._started = time.time()

    def close(self) -> None:
        self.beater.close()

    # ---- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        import optuna

        while self.stop_reason is None:
            self.stop_reason = self.wait_for_slot()
            if self.stop_reason is not None:
                break
            try:
                self.study.optimize(self.objective, callbacks=[self._after_trial], catch=(TrialFailed,))
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError, TakenOver) as exc:
                if not self._taken_over():
                    raise
                log.warning(
                    "%s trial %d was failed by the heartbeat check while this worker still ran it (%s); its retry "
                    "trains it from the last checkpoint",
                    self.tag, self.current, type(exc).__name__,
                )  # fmt: skip
        if self.stop_reason not in (None, "done"):
            log.warning("%s stopping: %s", self.tag, self.stop_reason)
        return self.trained

    def _after_trial(self, study: Any, frozen: Any) -> None:
        self.current = None  # told: from here on an exception is not about this trial's state
        head = trial_head(self.tag, frozen, self.job.space, time.time() - self._started)
        job = self.job
        line = progress_line(study, job.space, job.n_trials, job.session_start, job.done_at_start, head)
        log.info("%s", " | ".join([line, *sharing_progress(study, job)]))
        self.stop_reason = self.wait_for_slot()
        if self.stop_reason is not None:
            study.stop()

    def wait_for_slot(self) -> str | None:
        """Return None when this worker may ask a trial; else why the sweep ends. Says what it waits for."""
        import optuna

        shown, since = "", 0.0
        while True:
            with quiet_experimental():
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            self.watch.mark_orphans(trials)
            stop = verdict(trials, self.job, duplicate_streak=self.duplicate_streak)
            if stop is not None:
                return stop
            if any(t.state.name == "WAITING" for t in trials):
                return None  # a retry or a replicate is queued: ask() takes it
            if sum(u.holds_slot for u in units(trials).values()) < self.job.n_trials:
                return None
            busy = [t for t in trials if holds_slot(t) and t.state.name == "RUNNING"]
            text = _waiting_text(busy)
            if text != shown or time.time() - since > REMIND_S:
                log.info("%s %s", self.tag, text)
                shown, since = text, time.time()
            time.sleep(POLL_S)

    def _taken_over(self) -> bool:
        if self.current is None:
            return False
        trial = self._frozen(self.current)
        return trial is not None and trial.state.is_finished()

    def _frozen(self, number: int) -> Any:
        try:
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            return self.storage.get_trial(tid)
        except KeyError:
            return None

    # ---- one trial --------------------------------------------------------------------------------------------
    def objective(self, trial: Any) -> Any:
        """Plan, settle duplicates, train and return the objective values (or raise TrialPruned / TrialFailed)."""
        import optuna

        self.current = trial.number
        self._started = time.time()
        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.beater.beat_for(tid)
        try:
            # a sign of life first, and the reason the trial keeps if this worker dies from here on
            self.storage.record_heartbeat(tid)
            trial.set_user_attr("worker", self.name)
            if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the card(s) this worker trains on
                trial.set_user_attr("gpu", os.environ["CUDA_VISIBLE_DEVICES"])
            trial.set_user_attr("status_reason", lost_reason(self.name, self.job.grace_period))
            root = self.storage.get_trial(tid).system_attrs.get("failed_trial")
            return self._run(trial, root)
        except TrialFailed as exc:
            trial.set_user_attr("status_reason", str(exc))
            raise
        except KeyboardInterrupt:
            if _main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            reason = interrupted_reason(self.interrupt_reason)
            log.warning("%s trial %d interrupted (%s)", self.tag, trial.number, self.interrupt_reason)
            try:
                trial.set_user_attr("status_reason", reason)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
            raise
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            raise TakenOver(str(exc)) from None
        finally:
            self.beater.beat_for(None)

    def _run(self, trial: Any, root: int | None) -> Any:
        job, space = self.job, self.job.space
        number = root if root is not None else trial.number
        group = group_of(trial) if "group" in trial.user_attrs else number
        lead = group == number  # proposed by the sampler (or its retry), not a queued replicate
        if lead and self._slots_before(trial, group) >= job.n_trials:
            raise TrialFailed(SURPLUS)
        run = self.prepare(trial, root)
        twin = self.settle(trial, run)
        if twin is not None:
            return reuse(trial, twin)
        if lead and self._slots_before(trial, group) >= job.n_trials:
            raise TrialFailed(SURPLUS)  # slots filled while this trial waited for a twin
        if lead and space.replicates is not None:
            queued = queue_siblings(self.study, trial, group, space)
            if queued:
                log.info(
                    "%s trial %d queued %d more run(s) of %s (learning rates x seeds)",
                    self.tag, trial.number, len(queued), run.ident.arch,
                )  # fmt: skip
        if fusing(space, run.cfg):
            return train_group(self, trial, run)
        return self._train(trial, run.cfg, run.attrs)

    def prepare(self, trial: Any, root: int | None) -> PreparedRun:
        """Plan the trial's run (its architecture, and its learning rate and seed among the replicates) and publish
        its attributes.

        Raises:
            TrialFailed: the values do not make a buildable model or a valid training configuration.
        """
        from archsearch.search.cost_attrs import trial_attrs
        from archsearch.search.identity import identify
        from archsearch.search.suggest import CONFIG_ATTR, plan_trial, stored_config, trial_config

        job, space = self.job, self.job.space
        number = root if root is not None else trial.number
        group = group_of(trial) if "group" in trial.user_attrs else number
        rep = run_of(trial.user_attrs, space)
        try:
            # a retry keeps its original trial's placement seed, run directory and checkpoint; the runs of one
            # architecture share its lead's placement seed (a random spread places their layers alike)
            plan = plan_trial(trial, space, placement_seed=space.seed + group)
            plan.train.update(overrides(rep))
            cfg = trial_config(
                plan, space, name=f"trial-{number:04d}", runs_dir=str(Path(job.runs_dir) / job.study_name / "trials"),
                resume=root is not None,
            )  # fmt: skip
            attrs = trial_attrs(plan, space)
            ident = identify(plan, cfg, space)
        except ArchsearchError as exc:
            raise TrialFailed(exc.render().splitlines()[0]) from None
        if space.replicates is not None:  # before publishing: a retry inherits them
            trial.set_user_attr("group", group)
            trial.set_user_attr("replicate", dict(rep))
        # the config is resolved once, here: training, report, plots and export read this one
        for key, value in {**attrs, **ident.attrs(), CONFIG_ATTR: stored_config(cfg)}.items():
            trial.set_user_attr(key, value)
        return PreparedRun(number, group, cfg, attrs, ident)

    def settle(self, trial: Any, run: PreparedRun) -> Any:
        """The finished twin to reuse, or None to train (see ``_settle``); counts settings proposed again."""
        twin = self._settle(trial, run.ident.setting, (run.number, trial.number))
        self.duplicate_streak = self.duplicate_streak + 1 if twin is not None else 0
        return twin

    def _slots_before(self, trial: Any, group: int) -> int:
        """Groups (architectures; a trial alone without replicates) other than ``group``, begun before ``trial``,
        that hold one of the ``n_trials`` slots."""
        groups = units(self.study.get_trials(deepcopy=False))
        return sum(u.first < trial.number and u.holds_slot for g, u in groups.items() if g != group)

    def _settle(self, trial: Any, setting: str, prio: tuple[int, int]) -> Any:
        """The finished trial to reuse (after waiting for an earlier trial training ``setting``), or None to train.

        Raises:
            TrialFailed: "duplicate" when the setting is queued as a retry, which trains it from its checkpoint.
        """
        import optuna

        waiting = None
        while True:
            trials = self.study.get_trials(deepcopy=False)
            d = decide(trials, trial.number, setting, prio)
            if d.action == "reuse":
                return d.twin
            if d.action == "step_aside":
                raise TrialFailed(
                    f"duplicate: setting {setting} is queued as trial {d.twin.number} (a retry), which trains it"
                )
            if d.action == "train":
                if waiting is not None:
                    trial.set_user_attr("waiting_for", None)
                return None
            if d.twin is not None and waiting != d.twin.number:
                waiting = d.twin.number
                trial.set_user_attr("waiting_for", waiting)
                log.info(
                    "%s trial %d waits for trial %d, which trains the same setting (%s), to reuse its result",
                    self.tag, trial.number, waiting, setting,
                )  # fmt: skip
            time.sleep(POLL_S if d.twin is not None else 0.2)
            with quiet_experimental():
                optuna.storages.fail_stale_trials(self.study)
            self.watch.mark_orphans(trials)

    def _train(self, trial: Any, cfg: Any, attrs: dict[str, Any]) -> Any:
        import optuna

        space = self.job.space
        trial.set_user_attr("run_dir", str(cfg.run_dir()))
        reporter = _reporter(trial, space, prune_metric(space))
        try:
            summary = _train_run(cfg, reporter)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("status_reason", str(exc) or "pruned")
            self.trained += 1
            raise
        except (KeyboardInterrupt, optuna.exceptions.UpdateFinishedTrialError):
            raise
        except ArchsearchError as exc:
            raise TrialFailed(exc.render().splitlines()[0]) from None
        except Exception as exc:  # a trial's crash must not end the sweep
            log.warning("%s trial %d raised:\n%s", self.tag, trial.number, traceback.format_exc())
            raise TrialFailed(_describe_crash(exc)) from None
        finally:
            record_curve(trial, reporter)
        return self.conclude(trial, summary, attrs)

    def conclude(self, trial: Any, summary: dict[str, Any], attrs: dict[str, Any]) -> Any:
        """Record a trained run's summary on its trial; return its objective values.

        Raises:
            optuna.TrialPruned: the run was pruned or diverged.
            TrialFailed: it failed, or its metrics lack an objective.
        """
        import optuna

        space = self.job.space
        metrics = flat_metrics(summary)
        trial.set_user_attr("metrics", metrics)
        _record_summary(trial, summary, attrs)
        status = summary.get("status", "ok")
        reason = f"{status}: {summary.get('reason') or 'no reason given'}"
        if status in ("diverged", "pruned"):
            trial.set_user_attr("status_reason", reason)
            self.trained += 1
            raise optuna.TrialPruned(reason)
        if status != "ok":
            raise TrialFailed(reason)
        try:
            values = objective_values(space, metrics, {**attrs, **_summary_costs(summary)})
        except (KeyError, ValueError) as exc:
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from None
        trial.set_user_attr("status_reason", None)
        self.trained += 1
        return values


# ---- helpers ------------------------------------------------------------------------------------------------------
@dataclass
class PreparedRun:
    """A planned run: the trial it retries (or its own number), its architecture group, config, attributes and
    identity."""

    number: int
    group: int
    cfg: Any
    attrs: dict[str, Any]
    ident: Any


def _waiting_text(busy: list[Any]) -> str:
    shown = ", ".join(f"{t.number} ({t.user_attrs.get('worker', 'starting')})" for t in busy[:6])
    more = f" and {len(busy) - 6} more" if len(busy) > 6 else ""
    return (
        f"waiting: the remaining slots are taken by running trial(s) {shown}{more}; a trial that fails frees its "
        "slot, one whose worker died is failed after the grace period and retried"
    )


def _train_run(cfg: Any, reporter: Any) -> dict[str, Any]:
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
    if isinstance(summary.get("tokens"), int):  # for the tokens/s that concurrent trials reach together
        trial.set_user_attr("tokens", summary["tokens"])


def sharing_progress(study: Any, job: WorkerJob) -> list[str]:
    """The progress line's view of a shared card: the sampler's running summary and, with several workers, the
    tokens/s this session's trials reach together."""
    from archsearch.search.gpu_usage import format_tokens, read_running, together, trial_spans

    parts = [p for p in (read_running(job.usage_file),) if p]
    if job.n_workers > 1:
        both = together(trial_spans(study.get_trials(deepcopy=False), job.session_start))
        if both is not None and both.trials > 1:
            parts.append(f"{format_tokens(both.mean)} tokens/s together")
    return parts


def _summary_costs(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("params", "non_embedding_params", "tokens_per_s") if k in summary}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _first_interrupt(signum: int, frame: Any) -> None:
    """The first Ctrl-C interrupts the trial; later ones are ignored while it is recorded and the worker exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int, worker: Any, exit_after: float = ORPHAN_EXIT_S) -> None:
    """A spawned worker interrupts itself when the sweep process that started it is gone (killed, crashed), and
    ends outright if it is still there ``exit_after`` seconds later (its main thread stuck in a call that a signal
    does not cut short): a worker must never outlive its sweep. A trial it leaves RUNNING is failed by the
    heartbeat check and retried by the next sweep."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        worker.interrupt_reason = f"the sweep process {parent_pid} ended"
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(exit_after)
        log.warning(
            "[worker %d] the sweep process %d ended %.0f s ago; exiting", os.getpid(), parent_pid, exit_after
        )
        os._exit(130)

    threading.Thread(target=watch, name="archsearch-parent-watch", daemon=True).start()


def quiet_optuna() -> None:
    """Optuna's own per-trial log lines (the progress line says more) and its experimental-API warnings."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
