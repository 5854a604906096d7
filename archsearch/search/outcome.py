"""How a trial's training ends up on its Optuna trial, shared by a worker's own trial and the runs it trains fused
(:mod:`archsearch.search.fused_group`): the failure that ends a trial, the reporter and curve, a crash's reason."""

from __future__ import annotations

from typing import Any


class TrialFailed(Exception):
    """Ends a trial as FAIL with ``reason`` (``study.optimize`` catches it; the reason is the trial's
    ``status_reason``)."""


def reporter(trial: Any, space: Any, metric: str | None) -> Any:
    """Reports ``metric`` by step (single objective; the NopPruner never prunes) and records a learning curve."""
    from archsearch.search.pruning import TrialReporter

    extra = ("val/loss", *(f"val/{t}/acc" for t in (space.tasks or {}) if t != "lm"))
    return TrialReporter(trial, metric, report=metric is not None, extra=extra)


def record_curve(trial: Any, reporter: Any) -> None:
    """The learning curve a reporter saw, as the trial's ``curve`` attribute."""
    if reporter.curve:
        trial.set_user_attr("curve", {str(k): v for k, v in sorted(reporter.curve.items())})


def describe_crash(exc: BaseException) -> str:
    """A crash as a one-line reason (out-of-memory errors say so first)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {text[:200]}"
    return f"{type(exc).__name__}: {text[:300]}"
