"""What counts toward a sweep's ``n_trials``, and the one-line tally every message uses.

Counting rule: ``n_trials`` counts distinct settings that finished training, COMPLETE or PRUNED (a diverged run is
PRUNED with its reason: the search learned that the setting is bad). With replicates
(:mod:`archsearch.search.replicates`) it counts architectures: a group (the lead trial and the runs it queued, user
attribute ``group``) counts once none of its runs is running or queued and at least one trained to COMPLETE or PRUNED;
the line then says ``2 of 4 architectures finished, 6 runs each (...)``. A trial that reused a finished twin's result
(user attribute ``duplicate_of``) does not count, nor does any FAIL trial. FAIL trials carry a ``status_reason``
whose prefix says what happened:

- ``surplus:`` / ``duplicate:``: never trained (two workers took the last slot at once; the setting was already
  queued as a retry);
- ``lost:``: its worker died (the heartbeat check failed it); a new trial retries it from its last checkpoint;
- ``interrupted:``: Ctrl-C or the sweep process ended; the next ``archsearch sweep`` retries it from its checkpoint;
- anything else: the trial itself failed (out of memory, an exception); these count toward ``--max-failures``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SURPLUS = "surplus: the study already had n_trials trials finished or running; not trained"
INTERRUPTED = "interrupted"
NOT_TRAINED = ("surplus:", "duplicate:")  # FAIL trials that never trained (not failures)
LOST = "lost:"  # the worker died; retried by the heartbeat machinery


def lost_reason(worker: str, grace_period: int) -> str:
    """What a trial whose worker dies mid-trial says: written when the trial starts, replaced when it ends."""
    return (
        f"lost: no heartbeat for {grace_period} s from worker {worker} (killed, frozen or cut off from the storage); "
        "a new trial retries it from its last checkpoint"
    )


LOST_BEFORE_HEARTBEAT = (
    "lost: its worker stopped between creating the trial and its first heartbeat; a new trial retries it"
)


def interrupted_reason(why: str) -> str:
    return (
        f"{INTERRUPTED}: {why}; the next `archsearch sweep` of this study retries it from its last checkpoint"
    )


def kind(trial: Any) -> str:
    """One of complete, pruned, reused, running, waiting, failed, lost, interrupted, not_trained."""
    state = trial.state.name
    attrs = trial.user_attrs
    if state in ("COMPLETE", "PRUNED"):
        return "reused" if "duplicate_of" in attrs else state.lower()
    if state in ("RUNNING", "WAITING"):
        return state.lower()
    reason = str(attrs.get("status_reason") or "")
    if reason.startswith(NOT_TRAINED):
        return "not_trained"
    if reason.startswith(LOST):
        return "lost"
    if reason.startswith(INTERRUPTED):
        return "interrupted"
    return "failed"


@dataclass
class Counts:
    """Trials of a study by what happened to them (see the module docstring)."""

    complete: int = 0
    pruned: int = 0
    reused: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0
    lost: int = 0
    interrupted: int = 0
    not_trained: int = 0
    archs: int = 0  # groups (architectures) finished: what counts when an architecture trains several runs
    per_arch: int = 1  # runs per architecture (learning rates x seeds)

    @property
    def runs(self) -> int:
        """Distinct settings trained to COMPLETE or PRUNED."""
        return self.complete + self.pruned

    @property
    def finished(self) -> int:
        """What counts toward ``n_trials``: runs trained, or with replicates the architectures finished."""
        return self.archs if self.per_arch > 1 else self.runs

    @property
    def unit(self) -> str:
        return "architectures" if self.per_arch > 1 else "trials"

    def line(self, n_trials: int) -> str:
        """``3 of 10 trials finished (2 complete, 1 pruned), 1 failed, 2 running`` (+ the rarer kinds when present);
        with replicates ``1 of 4 architectures finished, 6 runs each (7 complete, 1 pruned), ...``."""
        each = f", {self.per_arch} runs each" if self.per_arch > 1 else ""
        return f"{self.finished} of {n_trials} {self.unit} finished{each} {self.detail()}"

    def detail(self) -> str:
        runs = " runs" if self.per_arch > 1 else ""
        text = f"({self.complete}{runs} complete, {self.pruned} pruned), {self.failed} failed, {self.running} running"
        extra = [
            f"{n} {label}"
            for n, label in (
                (self.waiting, "queued for retry"),
                (self.lost, "lost with their worker"),
                (self.interrupted, "interrupted"),
                (self.reused, "reused a finished twin"),
                (self.not_trained, "not trained (surplus or duplicate)"),
            )
            if n
        ]
        return text + (f"; {', '.join(extra)}" if extra else "")


def count(trials: Iterable[Any], per_arch: int = 1) -> Counts:
    trials = list(trials)
    c = Counts(per_arch=per_arch)
    for t in trials:
        k = kind(t)
        setattr(c, k, getattr(c, k) + 1)
    c.archs = sum(u.finished for u in units(trials).values())
    return c


# ---- groups: what n_trials counts ----------------------------------------------------------------------------------
def group_of(t: Any) -> int:
    """The architecture group of a trial: its ``group`` attribute (replicates), else the trial alone."""
    g = t.user_attrs.get("group")
    return g if isinstance(g, int) and not isinstance(g, bool) else t.number


@dataclass
class Unit:
    """One group's trials: ``first`` is its lowest trial number."""

    first: int
    trials: list[Any]

    @property
    def pending(self) -> bool:
        return any(t.state.name in ("RUNNING", "WAITING") for t in self.trials)

    @property
    def finished(self) -> bool:
        """Counts toward ``n_trials``: nothing left to run, and at least one run trained."""
        return not self.pending and any(counts_toward(t) for t in self.trials)

    @property
    def holds_slot(self) -> bool:
        """Counts toward ``n_trials`` or may still (see :func:`holds_slot`)."""
        return self.finished or any(holds_slot(t) for t in self.trials)


def units(trials: Iterable[Any]) -> dict[int, Unit]:
    """The study's trials by group (a trial without replicates is a group of its own)."""
    out: dict[int, Unit] = {}
    for t in trials:
        g = group_of(t)
        u = out.get(g)
        if u is None:
            out[g] = Unit(t.number, [t])
        else:
            u.trials.append(t)
            u.first = min(u.first, t.number)
    return out


def failures_since(trials: Iterable[Any], since: datetime) -> int:
    """Trials that failed on their own (not lost, interrupted or never trained) and ended after ``since``."""
    return sum(
        kind(t) == "failed" and t.datetime_complete is not None and t.datetime_complete >= since
        for t in trials
    )


def holds_slot(t: Any) -> bool:
    """Counts toward ``n_trials`` or may still: finished and counted, running (not just waiting for a twin), or
    queued as a retry."""
    k = kind(t)
    if k == "running":
        return not t.user_attrs.get("waiting_for")
    return k in ("complete", "pruned", "waiting")


def counts_toward(trial: Any) -> bool:
    """Whether a finished trial counts toward ``n_trials``."""
    return kind(trial) in ("complete", "pruned")
