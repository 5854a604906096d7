"""Run a sweep: check every input before writing anything, create or resume the study, run local workers, report.

Several machines join one study by running the same command with the same ``--storage`` URL and ``--study-name``;
``--workers N`` starts N local worker processes (spawned; dealt round robin over the GPUs when there are GPUs); on a
machine with GPUs, ``--workers-per-gpu N|auto`` (auto is the default when ``--workers`` is not given) puts several
workers on each card (:mod:`archsearch.search.sharing` says how auto chooses), and the sweep samples the cards'
utilisation and memory while it runs (:mod:`archsearch.search.gpu_usage`). The result says whether the sweep got its
``n_trials`` (``done``) or why it stopped short, with the counts, and how busy the cards were.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from archsearch.errors import ArchsearchError, ConfigError, StudyError
from archsearch.search.accounting import count
from archsearch.search.gpu_usage import GpuMonitor, record_session, together, trial_spans, usage_lines
from archsearch.search.progress import duration, setup_logging
from archsearch.search.replicates import runs_per_architecture
from archsearch.search.results import SweepResult, load_result, summarize  # noqa: F401 - load_result: public here too
from archsearch.search.sharing import FLAG, Card, assign_devices, check_workers_per_gpu, plan_sharing
from archsearch.search.space import SEED_RANGE, SearchSpace
from archsearch.search.space_load import load_space
from archsearch.search.worker import WorkerJob, quiet_optuna, verdict, worker_main

log = logging.getLogger("archsearch.search")

MAX_WORKERS = 256
STOP_WAIT_S = 60  # seconds the sweep waits for interrupted workers to record their trials before ending them
FORWARD_AFTER_S = 5  # seconds before Ctrl-C is passed on to workers that did not get it themselves


def run_sweep(
    space: str | Path | SearchSpace,
    *,
    n_trials: int | None = None,
    workers: int | None = None,
    workers_per_gpu: int | str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    runs_dir: str | Path = "runs",
    seed: int | None = None,
    data: str | None = None,
    max_failures: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> SweepResult:
    """Run (or resume) a sweep until ``n_trials`` distinct settings have finished (COMPLETE or PRUNED).

    Args:
        space: a space file or a shipped space's name (validated in full first), or a validated ``SearchSpace``.
        n_trials: settings to finish in total (already finished ones count); default the space's ``n_trials``.
        workers: local worker processes (default: ``workers_per_gpu`` per visible GPU, else 1).
        workers_per_gpu: workers sharing each visible GPU, or ``"auto"`` (the default with GPUs when ``workers`` is
            not given): chosen from the largest trial's memory plan, the cards' free memory and the CPU cores.
            Without GPUs it is ignored (said on stderr).
        storage: a database URL; default SQLite at ``<runs_dir>/<study>/study.db``.
        study_name: default the space's ``study`` (its file name).
        runs_dir: where ``<study>/`` (storage, trial runs) goes.
        seed: overrides the space's seed (sampler and training).
        data: overrides the space's ``data:`` (the LM corpus: a path or ``hf:<dataset>``); checked before any trial.
        max_failures: stop after this many trials failed on their own in this invocation (default: ``n_trials``).
        heartbeat_interval, grace_period: seconds (default: the space's); a RUNNING trial silent for
            ``grace_period`` is failed and retried.

    Returns:
        The ``SweepResult``: ``done``, or ``stop_reason`` and the counts when it stopped short.

    Raises:
        ArchsearchError: a bad input (nothing written).
        KeyboardInterrupt: Ctrl-C; its message says what finished and how to resume.
    """
    space = _checked_space(space, data=data, seed=seed)
    n_trials = _positive(n_trials, "--n-trials")
    max_failures = _positive(max_failures, "--max-failures")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"expected 1 to {MAX_WORKERS} workers, found {workers}", "command line", "--workers"
        )
    workers_per_gpu = check_workers_per_gpu(workers_per_gpu)
    if workers is not None and workers_per_gpu is not None:
        raise ConfigError(
            "give --workers (in all) or --workers-per-gpu (on each GPU), not both", "command line", FLAG
        )
    interval = _positive(heartbeat_interval, "heartbeat_interval") or space.heartbeat_interval
    grace = _positive(grace_period, "grace_period") or space.grace_period
    if grace <= interval:
        raise ConfigError(
            f"the grace period ({grace} s) must be longer than the heartbeat interval ({interval} s)",
            "command line", "grace_period",
        )  # fmt: skip
    from archsearch.search.study import check_study_name

    study_name = check_study_name(study_name) if study_name is not None else space.study
    study_dir = Path(runs_dir) / study_name
    _check_writable(study_dir)
    setup_logging()
    quiet_optuna()
    workers, sharing = _decide_workers(space, workers, workers_per_gpu)
    study, url = _open_study(space, study_dir, storage, study_name)
    requested = n_trials or space.n_trials
    archs = _architectures(space)
    settings = frozenset().union(*archs.values()) if archs is not None else None
    n_trials = _target(archs, requested, runs_per_architecture(space))
    max_failures = max_failures or n_trials
    workers = _cap_workers(workers, sharing, study, n_trials)
    done_at_start = _announce(space, study, n_trials, url, workers)

    job = WorkerJob(
        space=space,
        storage_url=url,
        study_name=study_name,
        n_trials=n_trials,
        runs_dir=str(runs_dir),
        session_start=datetime.now(),
        max_failures=max_failures,
        n_workers=workers,
        heartbeat_interval=interval,
        grace_period=grace,
        threads=max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None,
        settings=settings,
        done_at_start=done_at_start,
        usage_file=str(study_dir / "gpu_usage.json") if sharing.gpus else None,
    )
    t0 = time.time()
    monitor = _start_monitor(sharing, study_dir)
    try:
        if workers == 1:
            worker_main(job)
        else:
            _run_processes(job, workers, sharing.gpus)
    except KeyboardInterrupt:
        for line in usage_lines(_report_usage(study, job, sharing, monitor, study_dir)):
            log.info("[sweep] %s", line)
        c = count(study.get_trials(deepcopy=False), runs_per_architecture(space))
        raise KeyboardInterrupt(
            f"{c.line(n_trials)}; run the same command to resume (interrupted trials continue from their "
            "last checkpoints)"
        ) from None
    log.info("[sweep] finished in %s", duration(time.time() - t0))
    result = summarize(study, space, url, study_dir, n_trials)
    result.requested = requested
    result.stop_reason = verdict(study.get_trials(deepcopy=False), job) or _stuck(result)
    result.usage = _report_usage(study, job, sharing, monitor, study_dir)
    return result


# ---- workers per GPU and the cards' utilisation ----------------------------------------------------------------
@dataclass
class _Sharing:
    gpus: list[str]  # CUDA_VISIBLE_DEVICES entries the workers are dealt over (empty: no GPU)
    per_gpu: int | None = None
    rule: str | None = None
    cards: list[Card] = field(default_factory=list)


def _decide_workers(
    space: SearchSpace, workers: int | None, per_gpu: int | str | None
) -> tuple[int, _Sharing]:
    """The number of local workers and how they share the GPUs (said on stderr)."""
    gpus = _visible_gpus()
    if not gpus:
        if per_gpu is not None:
            log.info(
                "[sweep] no GPU is visible: %s is ignored, running %d worker(s) (see --workers)",
                FLAG,
                workers or 1,
            )
        return workers or 1, _Sharing([])
    if workers is not None:  # the total, dealt round robin as before
        _, cards = plan_sharing(space, gpus, 1)
        return workers, _Sharing(gpus, cards=cards)
    share, cards = plan_sharing(space, gpus, per_gpu or "auto")
    total = min(share.per_gpu * len(gpus), MAX_WORKERS)
    log.info("[sweep] %d GPU(s) visible: %s", len(gpus), share.reason)
    return total, _Sharing(gpus, share.per_gpu, share.reason, cards)


def _cap_workers(workers: int, sharing: _Sharing, study: Any, n_trials: int) -> int:
    """Workers chosen per GPU are no more than the trials left (a small sweep does not start idle processes); an
    explicit ``--workers`` is kept."""
    if sharing.per_gpu is None:
        return workers
    left = max(1, n_trials - count(study.get_trials(deepcopy=False)).finished)
    if workers > left:
        log.info("[sweep] %d trial(s) left: starting %d worker(s), not %d", left, left, workers)
        return left
    return workers


def _start_monitor(sharing: _Sharing, study_dir: Path) -> GpuMonitor | None:
    if not sharing.gpus:
        return None
    ids = [c.uuid for c in sharing.cards if c.uuid] or None
    monitor = GpuMonitor(ids, path=study_dir / "gpu_usage.json")
    if not monitor.available:
        log.info(
            "[sweep] no GPU utilisation: neither pynvml (pip install nvidia-ml-py) nor nvidia-smi is available"
        )
    return monitor.start()


def _report_usage(
    study: Any, job: WorkerJob, sharing: _Sharing, monitor: GpuMonitor | None, study_dir: Path
) -> dict[str, Any]:
    """This session's report: workers, how they shared the GPUs, the cards' utilisation, tokens/s together
    (appended to ``<study_dir>/gpu_usage.jsonl`` when there are GPUs, and returned)."""
    report: dict[str, Any] = {"workers": job.n_workers}
    if sharing.gpus:
        report.update(gpus=sharing.gpus, workers_per_gpu=sharing.per_gpu, rule=sharing.rule)
    if monitor is not None:
        report["utilisation"] = monitor.stop()
    both = together(trial_spans(study.get_trials(deepcopy=False), job.session_start))
    if both is not None:
        report["tokens_per_s_together"] = both.as_dict()
    if sharing.gpus:
        record_session(study_dir, report)
    return report


# ---- checks before anything is written ------------------------------------------------------------------------
def _checked_space(space: str | Path | SearchSpace, *, data: str | None, seed: int | None) -> SearchSpace:
    if not isinstance(space, SearchSpace):
        space = load_space(space, check_build=data is None)
    if seed is not None:
        low, high = SEED_RANGE
        if not low <= seed <= high:
            raise ConfigError(
                f"expected a seed from {low} to 2**32 - 1, found {seed}", "command line", "--seed"
            )
        space = replace(space, seed=seed)
    if data is not None:
        from archsearch.search.suggest import check_corners

        if not data.strip():
            raise ConfigError(
                "expected a corpus (default, a path or hf:NAME), found ''", "command line", "--data"
            )
        space = replace(space, data=data)
        try:
            check_corners(space)
        except ConfigError as exc:  # a corpus that cannot be served is the flag's fault, not the file's
            if exc.key != "data":
                raise
            raise ConfigError(exc.message, "command line", "--data", exc.hint) from None
    return space


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise ConfigError(f"expected a positive number, found {value}", "command line", flag)
    return value


def _check_writable(study_dir: Path) -> None:
    """The study directory exists or can be made, and is writable (checked without writing)."""
    probe = study_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"{probe} is not writable"
    if problem:
        raise ConfigError(f"cannot write the study to {study_dir}: {problem}", "command line", "--runs-dir")


def _open_study(space: SearchSpace, study_dir: Path, storage: str | None, name: str) -> tuple[Any, str]:
    """Open (or create) the study; writes nothing before the storage has opened.

    Raises:
        ConfigError: a bad storage URL (naming --storage, with hints).
        StudyError: an empty or corrupt study file; a new study where an old one's trial runs are.
    """
    import optuna

    from archsearch.search.liveness import requeue_interrupted
    from archsearch.search.study import (
        check_storage_url,
        create_or_load,
        default_storage_url,
        make_storage,
        record_study_attrs,
    )

    url = check_storage_url(storage) if storage else default_storage_url(study_dir)
    if not storage:  # the default SQLite file lives in the study directory
        _make_dir(study_dir)
    backend = make_storage(url)
    new = name not in optuna.study.get_all_study_names(backend)
    trials_dir = study_dir / "trials"
    if new and trials_dir.is_dir() and any(trials_dir.iterdir()):
        raise StudyError(
            f"{trials_dir} holds the runs of an earlier study named {name!r}, but the storage has no such study "
            "(a new one would overwrite them); use another --study-name or --runs-dir, or move them away"
        )
    _make_dir(study_dir)
    if storage:
        _write_storage_file(study_dir, storage)
    study = create_or_load(space, backend, name)
    record_study_attrs(study, space)
    requeued = requeue_interrupted(study)
    if requeued:
        log.info(
            "[sweep] re-queued interrupted trial(s) %s: they continue from their last checkpoints",
            ", ".join(map(str, requeued)),
        )
    return study, url


def _make_dir(study_dir: Path) -> None:
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {study_dir}: {exc.strerror or exc}", "command line", "--runs-dir"
        ) from None


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


def _listed(values: Any) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]" if values else "(the space's)"


def _architectures(space: SearchSpace) -> dict[str, frozenset[str]] | None:
    from archsearch.search.identity import enumerate_architectures

    return enumerate_architectures(space)


def _target(archs: dict[str, frozenset[str]] | None, requested: int, per_arch: int = 1) -> int:
    """``requested``, capped at the number of distinct settings (architectures with replicates) of a finite space
    (said on stderr)."""
    if archs is not None and len(archs) < requested:
        what = "architectures" if per_arch > 1 else "settings"
        unit = "architectures" if per_arch > 1 else "trials"
        log.info(
            "[sweep] the space has %d distinct %s: running %d %s, not %d",
            len(archs), what, len(archs), unit, requested,
        )  # fmt: skip
        return max(1, len(archs))
    return requested


def _announce(space: SearchSpace, study: Any, n_trials: int, url: str, workers: int) -> int:
    from archsearch.search.study import redact_url

    c = count(study.get_trials(deepcopy=False), runs_per_architecture(space))
    objs = ", ".join(f"{o.direction} {o.name}" for o in space.objectives)
    log.info(
        "[sweep] study %r in %s: %s, sampler %s", study.study_name, redact_url(url), objs, space.sampler_name
    )
    if c.finished or c.running or c.waiting:
        log.info(
            "[sweep] resuming: %d of %d %s already finished %s", c.finished, n_trials, c.unit, c.detail()
        )
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
    if c.per_arch > 1:
        rep = space.replicates
        log.info(
            "[sweep] each architecture trains %d runs (learning rates %s x seeds %s), each its own trial; n_trials "
            "counts architectures",
            c.per_arch, _listed(rep.lrs), _listed(rep.seed_list(space.seed)),
        )  # fmt: skip
    log.info("[sweep] %d %s to finish with %d worker(s)", max(0, n_trials - c.finished), c.unit, workers)
    return c.runs


# ---- worker processes -----------------------------------------------------------------------------------------
def _run_processes(job: WorkerJob, workers: int, gpus: list[str]) -> None:
    """Spawn ``workers`` processes; with GPUs, each sees one (round robin) through CUDA_VISIBLE_DEVICES. On Ctrl-C,
    the workers record their trials as interrupted before the sweep ends."""
    ctx = mp.get_context("spawn")
    procs = []
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for i, device in enumerate(assign_devices(workers, gpus)):
            if device is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = device
            p = ctx.Process(
                target=_worker_process,
                args=(replace(job, index=i, parent_pid=os.getpid()),),
                name=f"archsearch-worker-{i}",
            )
            p.start()
            procs.append(p)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        _stop(procs)
        raise
    bad = [f"worker {i} (exit {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if bad:
        log.warning(
            "[sweep] %s ended abnormally; a trial it left RUNNING is failed by heartbeat and retried by a live "
            "worker, or by the next sweep if none is left",
            ", ".join(bad),
        )


def _stop(procs: list[Any]) -> None:
    """Let the workers record their trials as interrupted, then end those that do not.

    A terminal's Ctrl-C reaches the workers too (one process group), so they get a moment to stop on their own; only
    the ones still running then (the sweep alone was sent SIGINT) get it passed on: a second SIGINT while a worker
    records its first is what the delay avoids."""
    deadline, forward = time.time() + STOP_WAIT_S, time.time() + FORWARD_AFTER_S
    while time.time() < forward and any(p.is_alive() for p in procs):
        time.sleep(0.1)
    for p in procs:
        if p.is_alive() and p.pid is not None:
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    for p in procs:
        p.join(max(0.1, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(10)


def _worker_process(job: WorkerJob) -> None:
    """A spawned worker: exit 130 when interrupted, 2 with one line for a bad input, as the CLI does."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        worker_main(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except ArchsearchError as exc:
        print(f"archsearch: [worker {job.index}] {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


def _stuck(result: SweepResult) -> str:
    running = result.tally.get("running", 0)
    if running:
        return (
            f"the workers ended with {running} trial(s) still RUNNING (a worker died?); run the same command to "
            "resume: they are failed after the grace period and retried"
        )
    return "the workers ended before the study had its trials (see the log above)"
