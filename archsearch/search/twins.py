"""Which trial trains a setting when several trials hold it (see :mod:`archsearch.search.identity`).

Trials are ordered by ``priority``: the number of the trial they retry (a retry resumes that trial's checkpoint),
then their own number. Each trial publishes its setting before it decides, and the earliest trial of a setting
trains it; every later one reuses its result. Waiting only ever goes from a later trial to an earlier one, so no two
trials wait for each other; a trial also waits for earlier trials that have not published their setting yet (they
could be about to train the same one), which takes a moment, or the grace period when their worker died.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archsearch.search.accounting import holds_slot, kind  # noqa: F401 - holds_slot: imported from here too


@dataclass(frozen=True)
class Decision:
    """``train``; ``reuse`` ``twin`` (finished); ``wait`` (for ``twin``, or for earlier trials to publish);
    ``step_aside`` for ``twin``, a queued retry of the setting that will train it from its checkpoint."""

    action: str
    twin: Any = None


def priority(t: Any) -> tuple[int, int]:
    return (t.system_attrs.get("failed_trial", t.number), t.number)


def decide(trials: list[Any], number: int, setting: str, prio: tuple[int, int]) -> Decision:
    """What trial ``number`` (priority ``prio``) does about ``setting``, given every trial of the study."""
    same = [t for t in trials if t.number != number and t.user_attrs.get("setting") == setting]
    done = [t for t in same if kind(t) in ("complete", "pruned")]
    if done:
        return Decision("reuse", min(done, key=lambda t: t.number))
    ahead = [t for t in same if t.state.name in ("RUNNING", "WAITING") and priority(t) < prio]
    running = [t for t in ahead if t.state.name == "RUNNING"]
    if running:
        return Decision("wait", min(running, key=priority))
    if ahead:
        return Decision("step_aside", min(ahead, key=priority))
    unpublished = [
        t
        for t in trials
        if t.state.name == "RUNNING" and "setting" not in t.user_attrs and priority(t) < prio
    ]
    return Decision("wait") if unpublished else Decision("train")


def reuse(trial: Any, twin: Any) -> Any:
    """Copy a finished twin's results onto ``trial`` (marked ``duplicate_of``); returns its values, or raises
    TrialPruned for a pruned twin."""
    import optuna

    for key in ("run_dir", "metrics", "tokens_per_s", "curve"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duplicate_of", twin.number)
    trial.set_user_attr("waiting_for", None)
    if len(trial.study.directions) == 1:  # Optuna takes reports only in single-objective studies
        for step, value in sorted(twin.intermediate_values.items()):
            trial.report(value, step)
    if twin.state.name == "PRUNED":
        reason = f"reused trial {twin.number}: {twin.user_attrs.get('status_reason') or 'pruned'}"
        trial.set_user_attr("status_reason", reason)
        raise optuna.TrialPruned(reason)
    trial.set_user_attr("status_reason", None)
    return list(twin.values)
