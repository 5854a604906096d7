"""The sweep's progress line on stderr: what finished, the tally, the best so far and the time left.

``[worker 1] trial 7 COMPLETE in 12s: val_loss=3.21 M-*-M- | 5/10 done (4 complete, 1 pruned, 0 failed, 2 running)
| best val_loss=3.10 (#3) | ETA 1m05s``
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

from archsearch.search.accounting import Counts, count
from archsearch.search.objectives import format_values
from archsearch.search.space import SearchSpace

log = logging.getLogger("archsearch.search")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def tally(c: Counts, n_trials: int) -> str:
    """``5/10 done (4 complete, 1 pruned, 0 failed, 2 running)``: what counts toward ``n_trials`` first; with
    replicates ``1/4 architectures done (5 complete, ...)``, the states counting runs."""
    unit = " architectures" if c.per_arch > 1 else ""
    return f"{c.finished}/{n_trials}{unit} done ({c.complete} complete, {c.pruned} pruned, {c.failed} failed, {c.running} running)"


def best_so_far(study: Any, space: SearchSpace) -> str | None:
    """``best val_loss=3.10 (#3)``, or the size of the Pareto front with several objectives."""
    from archsearch.search.results import best_trials

    best = best_trials(study, space)
    if not best:
        return None
    if space.multi_objective:
        return f"Pareto front {len(best)} trials"
    return f"best {format_values(space, best[0].values)} (#{best[0].number})"


def eta(started: datetime, done_at_start: int, done_now: int, n_trials: int) -> str | None:
    """Time left at this session's pace (None until a trial finished in this session)."""
    finished_here = done_now - done_at_start
    if finished_here <= 0 or done_now >= n_trials:
        return None
    per_trial = (datetime.now() - started).total_seconds() / finished_here
    return f"ETA {duration(per_trial * (n_trials - done_now))}"


def progress_line(
    study: Any, space: SearchSpace, n_trials: int, started: datetime, done_at_start: int, head: str
) -> str:
    from archsearch.search.replicates import runs_per_architecture

    trials = study.get_trials(deepcopy=False)
    c = count(trials, runs_per_architecture(space))
    parts = [head, tally(c, n_trials)]
    # the pace is per run: with replicates an architecture finishes only with its last run
    for extra in (best_so_far(study, space), eta(started, done_at_start, c.runs, n_trials * c.per_arch)):
        if extra:
            parts.append(extra)
    return " | ".join(parts)


def trial_head(tag: str, frozen: Any, space: SearchSpace, seconds: float) -> str:
    """``[sweep] trial 7 COMPLETE in 12s: val_loss=3.21 M-*-M-`` (with the reason of a trial that did not finish)."""
    attrs = frozen.user_attrs
    what = format_values(space, frozen.values) if frozen.values and frozen.state.name == "COMPLETE" else ""
    reason = attrs.get("status_reason") or ""
    if frozen.state.name != "COMPLETE" and reason:
        what = reason if len(reason) <= 160 else reason[:157] + "..."
    pattern = attrs.get("arch") or attrs.get("pattern") or ""
    if isinstance(attrs.get("replicate"), dict):  # one run of an architecture's replicates
        pattern += f" lr={attrs.get('lr', 0.0):g} seed={attrs.get('seed')}"
    if "duplicate_of" in attrs:
        pattern += f" (reused trial {attrs['duplicate_of']})"
    return (
        f"{tag} trial {frozen.number} {frozen.state.name} in {duration(seconds)}: {what} {pattern}".rstrip()
    )


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
