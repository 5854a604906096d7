"""An architecture's runs trained as one fused model (``replicates: {fuse: auto | on}``), each keeping its trial.

When a worker trains a run of an architecture group (:mod:`archsearch.search.replicates`), it claims the group's
other queued runs (WAITING trials with the same ``group``, in the same state: fresh, or all retries resuming their
checkpoints) through the storage's atomic WAITING -> RUNNING step, the one ``study.ask`` uses, so no two workers
take one run. Each claimed run is planned, published and settled against twins like any trial; the ones that train
go with the worker's own run into :func:`archsearch.fused.train_fused`, each with its own ``TrialReporter`` (its
pruning decision), run directory and checkpoint. Afterwards every claimed trial is told its own result (values,
pruned, failed) with ``study.tell``; the worker's own trial returns to ``study.optimize`` as usual. The heartbeat
process beats for all of them; if the worker dies, each goes stale and is retried alone or in a new fused group.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from archsearch.errors import ArchsearchError

log = logging.getLogger("archsearch.search")
_SAID: set[str] = set()  # patterns this process said it trains unfused


def fusing(space: Any, cfg: Any) -> bool:
    """Whether an architecture's runs train as one fused model: ``fuse: on``, or ``auto`` on CUDA; more than one run
    per architecture; a pattern and device the engine can fuse."""
    from archsearch.search.replicates import runs_per_architecture

    rep = space.replicates
    if rep is None or rep.fuse == "off" or runs_per_architecture(space) < 2:
        return False
    if rep.fuse == "auto" and not _cuda(cfg):
        return False
    return fusable(cfg)


def _cuda(cfg: Any) -> bool:
    if str(cfg.accelerator) not in ("auto", "gpu", "cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def fusable(cfg: Any) -> bool:
    """Whether the proxy engine can train this run's pattern fused (every layer type supported, one device)."""
    try:
        from archsearch.fused.model import check_fusable
    except ImportError:  # pragma: no cover - the fused engine is part of the package
        return False
    try:
        check_fusable(cfg.pattern)
    except ArchsearchError as exc:
        if cfg.pattern not in _SAID:
            _SAID.add(cfg.pattern)
            log.info("[sweep] %s trains unfused: %s", cfg.pattern, exc.render().splitlines()[0])
        return False
    return str(cfg.devices) in ("1", "auto") and cfg.strategy in ("auto", "single")


def claim(worker: Any, trial: Any, group: int, retry: bool) -> list[tuple[Any, int]]:
    """The group's queued runs this worker now owns (RUNNING): ``(optuna.trial.Trial, trial id)`` pairs."""
    import optuna
    from optuna.trial import TrialState

    storage, study = worker.storage, worker.study
    owned = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if t.number == trial.number or t.user_attrs.get("group") != group:
            continue
        if ("failed_trial" in t.system_attrs) != retry:
            continue  # a fresh run and a resumed one cannot share a fused job
        tid = storage.get_trial_id_from_study_id_trial_number(worker.study_id, t.number)
        if storage.set_trial_state_values(tid, TrialState.RUNNING):
            storage.record_heartbeat(tid)
            owned.append((optuna.trial.Trial(study, tid), tid))
    return owned


def train_group(worker: Any, trial: Any, run: Any) -> Any:
    """Train ``trial``'s run with the group's other queued runs as one fused model; returns ``trial``'s values.

    Raises:
        optuna.TrialPruned, TrialFailed: for ``trial`` itself, as ``Worker._train`` does.
    """
    from archsearch.search.accounting import lost_reason

    claimed = claim(worker, trial, run.group, retry=run.number != trial.number)
    if not claimed:
        return worker._train(trial, run.cfg, run.attrs)
    members = [m for m, _ in claimed]
    own = worker.storage.get_trial_id_from_study_id_trial_number(worker.study_id, trial.number)
    worker.beater.beat_for([own, *(tid for _, tid in claimed)])
    ready: list[tuple[Any, Any]] = []
    try:
        for m, tid in claimed:
            m.set_user_attr("worker", worker.name)
            m.set_user_attr("status_reason", lost_reason(worker.name, worker.job.grace_period))
            root = worker.storage.get_trial(tid).system_attrs.get("failed_trial")
            member_run = _settled(worker, m, root)
            if member_run is not None:
                ready.append((m, member_run))
        log.info(
            "%s trial %d trains fused with trial(s) %s (%s)",
            worker.tag, trial.number, ", ".join(str(m.number) for m, _ in ready) or "-", run.ident.arch,
        )  # fmt: skip
        return _train_fused(worker, trial, run, ready)
    except KeyboardInterrupt:
        _interrupted(worker, members)
        raise


def _settled(worker: Any, m: Any, root: int | None) -> Any:
    """Plan and settle a claimed run: its prepared run when it trains, None once it was told (reused, failed)."""
    import optuna
    from optuna.trial import TrialState

    from archsearch.search.outcome import TrialFailed
    from archsearch.search.twins import reuse

    try:
        member_run = worker.prepare(m, root)
        twin = worker.settle(m, member_run)
        if twin is None:
            return member_run
        _tell(worker, m, values=reuse(m, twin))
    except optuna.TrialPruned:
        _tell(worker, m, state=TrialState.PRUNED)
    except TrialFailed as exc:
        m.set_user_attr("status_reason", str(exc))
        _tell(worker, m, state=TrialState.FAIL)
    return None


def _train_fused(worker: Any, trial: Any, run: Any, ready: list[tuple[Any, Any]]) -> Any:
    import optuna
    from optuna.trial import TrialState

    from archsearch.search.objectives import prune_metric
    from archsearch.search.outcome import TrialFailed, describe_crash, record_curve, reporter

    space = worker.job.space
    trials = [trial, *(m for m, _ in ready)]
    runs = [run, *(r for _, r in ready)]
    reporters = [reporter(t, space, prune_metric(space)) for t in trials]
    for t, r in zip(trials, runs, strict=True):
        t.set_user_attr("run_dir", str(r.cfg.run_dir()))
        t.set_user_attr("fused_with", [o.number for o in trials if o is not t])
    crash = None
    try:
        summaries = _train_fused_run([r.cfg for r in runs], [[rep] for rep in reporters])
    except (KeyboardInterrupt, optuna.exceptions.UpdateFinishedTrialError):
        raise
    except ArchsearchError as exc:
        crash = exc.render().splitlines()[0]
    except Exception as exc:  # a crash of the fused job must not end the sweep
        log.warning(
            "%s fused trials %s raised:\n%s", worker.tag, [t.number for t in trials], traceback.format_exc()
        )
        crash = describe_crash(exc)
    finally:
        for t, rep in zip(trials, reporters, strict=True):
            record_curve(t, rep)
    for i in range(1, len(trials)):
        m = trials[i]
        try:
            if crash is not None:
                raise TrialFailed(crash)
            _tell(worker, m, values=worker.conclude(m, summaries[i], runs[i].attrs))
        except optuna.TrialPruned:
            _tell(worker, m, state=TrialState.PRUNED)
        except TrialFailed as exc:
            m.set_user_attr("status_reason", str(exc))
            _tell(worker, m, state=TrialState.FAIL)
        _progress(worker, m)
    if crash is not None:
        raise TrialFailed(crash)
    return worker.conclude(trial, summaries[0], run.attrs)


def _train_fused_run(cfgs: list[Any], callbacks: list[list[Any]]) -> list[dict[str, Any]]:
    from archsearch.fused import train_fused

    return train_fused(cfgs, callbacks_per_member=callbacks)


def _tell(worker: Any, m: Any, **kwargs: Any) -> None:
    worker.study.tell(m, **kwargs)


def _progress(worker: Any, m: Any) -> None:
    from archsearch.search.progress import progress_line, trial_head

    frozen = worker._frozen(m.number)
    job = worker.job
    head = trial_head(worker.tag, frozen, job.space, time.time() - worker._started)
    log.info(
        "%s", progress_line(worker.study, job.space, job.n_trials, job.session_start, job.done_at_start, head)
    )


def _interrupted(worker: Any, members: list[Any]) -> None:
    """Record every claimed run still open as interrupted (the next sweep retries each from its checkpoint)."""
    import optuna
    from optuna.trial import TrialState

    from archsearch.search.accounting import interrupted_reason

    reason = interrupted_reason(worker.interrupt_reason)
    for m in members:
        try:
            if worker._frozen(m.number).state.is_finished():
                continue
            m.set_user_attr("status_reason", reason)
            worker.study.tell(m, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
