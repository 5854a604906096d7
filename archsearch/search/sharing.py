"""Several sweep workers on one card: how many share each visible GPU, and which GPU each worker sees.

A proxy trial uses a few percent of a large card, so a sweep fills each GPU with several worker processes, each
training its own trial. ``--workers-per-gpu auto`` (the default on a machine with GPUs when ``--workers`` is not
given) chooses that number from the memory plan of the space's largest trial and the free memory of the cards,
bounded by the CPU cores; ``--workers-per-gpu N`` sets it. The rule, with its constants:

- a worker needs ``plan x PLAN_SLACK + PROCESS_BYTES``: the plan (``archsearch.cost.training_memory``: parameters,
  gradients, AdamW state, one micro-batch's activations) leaves out the caching allocator's slack, the private
  memory pool a captured CUDA graph keeps, kernels' workspaces, and each process's CUDA context with its loaded
  kernels (cuBLAS, Triton, mamba_ssm), which the two constants cover;
- of a card's free memory (measured when the sweep starts, so what other jobs hold is left to them) only
  ``FREE_SHARE`` is handed out: the margin absorbs the plan's error and what other processes on the card allocate
  later, so that a trial is not the one that runs out of memory mid-sweep;
- the card with the least free memory decides (every GPU gets the same number, workers are dealt round robin);
- each worker needs a CPU core of its own to feed its GPU (a proxy's training loop is bound by the host: it launches
  kernels, or replays a graph, and loads its batches in-process), so there are at most ``cores // GPUs`` per GPU,
  where cores are the ones this process may run on (its affinity, which follows taskset and cgroup limits);
- at least one worker per GPU, also when the plan says the largest trial does not fit (its trial then fails with
  "out of memory", as it would have alone).

The free memory is read in a short-lived child process, so that the sweep process itself never holds a CUDA context
(it would keep ~0.5 GiB of each card for the whole sweep).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archsearch.errors import ConfigError

log = logging.getLogger("archsearch.search")

GiB = 1024**3
FREE_SHARE = (
    0.9  # of a card's free memory, the share handed out to workers (the margin: see the module docstring)
)
# A worker's peak memory over its plan: a graphed trial's eager warm-up steps leave their activations reserved by the
# caching allocator while the captured step allocates its own in the graph's private pool (about twice the
# activations), plus allocator rounding and kernel workspaces. The gpu test of tests/search/test_sharing.py checks it.
PLAN_SLACK = 2.0
PROCESS_BYTES = 1 * GiB  # a process's CUDA context, handles and loaded kernel modules
MAX_PER_GPU = 64
FLAG = "--workers-per-gpu"
PROBE_TIMEOUT_S = 180


@dataclass(frozen=True)
class Card:
    """One visible GPU as its workers see it: ``index`` is the CUDA_VISIBLE_DEVICES entry that selects it."""

    index: str
    name: str
    uuid: str | None
    free: int
    total: int


@dataclass(frozen=True)
class Share:
    """How many workers share each GPU, and why (the log line and the sweep's report say it)."""

    per_gpu: int
    reason: str


def parse_workers_per_gpu(text: str) -> int | str:
    """The flag's value: ``auto`` or a whole number from 1 to ``MAX_PER_GPU``.

    Raises:
        argparse.ArgumentTypeError: anything else (the CLI prints it as one line naming the flag, exit 2).
    """
    import argparse

    value = text.strip().lower()
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a number from 1 to {MAX_PER_GPU}, found {text!r}"
        ) from None
    if not 1 <= n <= MAX_PER_GPU:
        raise argparse.ArgumentTypeError(f"expected auto or a number from 1 to {MAX_PER_GPU}, found {n}")
    return n


def check_workers_per_gpu(value: int | str | None) -> int | str | None:
    """The same check for callers of ``run_sweep`` (a ``ConfigError`` naming the flag)."""
    import argparse

    if value is None:
        return None
    try:
        return parse_workers_per_gpu(str(value))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc), "command line", FLAG) from None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def per_worker_bytes(plan_bytes: int) -> int:
    """What one worker training a trial of ``plan_bytes`` (its memory plan) is expected to hold on its card."""
    return int(plan_bytes * PLAN_SLACK + PROCESS_BYTES)


def choose_workers_per_gpu(free: Sequence[int], plan_bytes: int, cores: int) -> Share:
    """Workers per GPU for cards with ``free`` bytes each, trials of at most ``plan_bytes``, and ``cores`` CPU cores.

    Pure (the module docstring states the rule). ``free`` holds one entry per GPU the sweep uses; it must not be
    empty.
    """
    if not free:
        raise ValueError("no GPUs to share")
    n_gpus = len(free)
    need = per_worker_bytes(plan_bytes)
    least = min(free)
    by_memory = int(least * FREE_SHARE // need)
    by_cores = max(1, cores // n_gpus)
    per_gpu = max(1, min(by_memory, by_cores, MAX_PER_GPU))
    memory = (
        f"memory: {FREE_SHARE:.0%} of {least / GiB:.1f} GiB free / ({plan_bytes / GiB:.2f} GiB plan x {PLAN_SLACK} "
        f"+ {PROCESS_BYTES / GiB:.1f} GiB per process) = {by_memory}"
    )
    cpu = f"cores: {cores} // {n_gpus} GPU(s) = {by_cores}"
    limit = "memory" if by_memory <= by_cores else "cores"
    if by_memory < 1:
        limit = "memory (the largest trial's plan does not fit: one worker per GPU)"
    elif per_gpu == MAX_PER_GPU and MAX_PER_GPU < min(by_memory, by_cores):
        limit = f"the cap of {MAX_PER_GPU}"
    return Share(per_gpu, f"{per_gpu} worker(s) per GPU, limited by {limit} ({memory}; {cpu})")


def assign_devices(n_workers: int, gpus: Sequence[str]) -> list[str | None]:
    """The CUDA_VISIBLE_DEVICES of each worker: GPUs dealt round robin (None everywhere without GPUs)."""
    if not gpus:
        return [None] * n_workers
    return [gpus[i % len(gpus)] for i in range(n_workers)]


def largest_plan_bytes(space: Any) -> int:
    """The memory plan (bytes) of the largest of the space's corner trials: the extremes of every dimension that
    the sweep's up-front check builds (``suggest.corner_params``), at the space's sequence length, micro-batch and
    precision (``auto`` counts as bf16-mixed, what a GPU trial runs)."""
    import optuna

    from archsearch.cost.memory import PRECISIONS, training_memory
    from archsearch.search.suggest import corner_params, plan_trial, trial_config

    largest = 0
    for params in corner_params(space):
        plan = plan_trial(optuna.trial.FixedTrial(params), space, placement_seed=space.seed)
        cfg = trial_config(plan, space, name="trial-plan", runs_dir="runs")
        precision = {"auto": "bf16-mixed", "32": "32-true"}.get(cfg.precision, cfg.precision)
        if precision not in PRECISIONS:
            precision = "32-true"
        plan_bytes = training_memory(
            plan.pattern, plan.model, cfg.seq_len, cfg.batch_size, precision=precision
        )
        largest = max(largest, int(plan_bytes["total"]))
    return largest


_PROBE = """
import json, torch
cards = []
for i in range(torch.cuda.device_count()):
    free, total = torch.cuda.mem_get_info(i)
    p = torch.cuda.get_device_properties(i)
    uuid = getattr(p, "uuid", None)
    cards.append({"name": p.name, "uuid": f"GPU-{uuid}" if uuid is not None else None, "free": free, "total": total})
print(json.dumps(cards))
"""


def probe_cards(gpus: Sequence[str]) -> list[Card]:
    """Free and total memory of each of ``gpus`` (CUDA_VISIBLE_DEVICES entries), read in a child process.

    Raises:
        RuntimeError: the child failed (its last line of stderr says why).
    """
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    if len(rows) != len(gpus):
        raise RuntimeError(f"expected {len(gpus)} GPU(s), the probe saw {len(rows)}")
    return [
        Card(g, r["name"], r["uuid"], int(r["free"]), int(r["total"]))
        for g, r in zip(gpus, rows, strict=True)
    ]


def plan_sharing(space: Any, gpus: Sequence[str], setting: int | str) -> tuple[Share, list[Card]]:
    """Workers per GPU for ``setting`` (a number, or ``auto``), with the cards it saw (empty when not probed).

    A failed probe or plan leaves ``auto`` at one worker per GPU, saying why.
    """
    cards: list[Card] = []
    try:
        cards = probe_cards(gpus)
    except Exception as exc:  # noqa: BLE001 - the sweep runs without the numbers, saying why
        log.warning("[sweep] could not read the GPUs' free memory (%s)", exc)
    if setting != "auto":
        return Share(int(setting), f"{setting} worker(s) per GPU ({FLAG})"), cards
    if not cards:
        return Share(1, "1 worker per GPU (auto, without the GPUs' free memory)"), cards
    try:
        plan_bytes = largest_plan_bytes(space)
    except Exception as exc:  # noqa: BLE001 - the space was checked; a plan that cannot be made is not fatal
        log.warning("[sweep] could not plan the largest trial's memory (%s)", exc)
        return Share(1, "1 worker per GPU (auto, without a memory plan)"), cards
    return choose_workers_per_gpu([c.free for c in cards], plan_bytes, usable_cores()), cards
