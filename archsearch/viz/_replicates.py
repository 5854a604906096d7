"""Which trials a plot's means may count, and how the others are drawn so that nothing silently disappears.

A plot's means and 95% intervals use the trials the report scores (:mod:`archsearch.viz.analysis`): complete, not a
reused duplicate, at the architecture's best learning rate. Pruned trials are drawn hollow at their last reported
value, reused ones as crosses (not counted in n), other learning rates as small grey dots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.stats import Interval, mean_interval
from archsearch.viz._records import Objective, StudyRecords, TrialRecord
from archsearch.viz.analysis import architectures, is_reused, last_reported

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

PRUNED_LABEL = "pruned: last reported value"
REUSED_LABEL = "reused result (not counted)"
OTHER_LR_LABEL = "other learning rates (not in the mean)"


@dataclass
class TrialPoints:
    """A study's trials for one objective, split by how a plot treats them."""

    counted: list[tuple[TrialRecord, float]] = field(default_factory=list)
    other_lr: list[tuple[TrialRecord, float]] = field(default_factory=list)
    reused: list[tuple[TrialRecord, float]] = field(default_factory=list)
    pruned: list[tuple[TrialRecord, float]] = field(default_factory=list)  # last reported value

    def only(self, keep: Callable[[TrialRecord], bool]) -> TrialPoints:
        pick = lambda pairs: [(t, v) for t, v in pairs if keep(t)]
        return TrialPoints(pick(self.counted), pick(self.other_lr), pick(self.reused), pick(self.pruned))


def trial_points(rec: StudyRecords, obj: Objective) -> TrialPoints:
    counted = set().union(*(a.counted for a in architectures(rec, obj)))
    out = TrialPoints()
    for t, v in rec.valued(obj):
        if t.number in counted:
            out.counted.append((t, v))
        elif is_reused(t):
            out.reused.append((t, v))
        else:
            out.other_lr.append((t, v))
    for t in rec.by_state("PRUNED"):
        if (last := last_reported(t)) is not None:
            out.pruned.append((t, last[1]))
    return out


def group_intervals(pairs: Sequence[tuple[float, float]]) -> list[tuple[float, Interval]]:
    """(x, mean and 95% interval of the values at x) per distinct x (rounded to 1e-6), sorted by x."""
    groups: dict[float, list[float]] = {}
    for x, v in pairs:
        groups.setdefault(round(x, 6), []).append(v)
    return [(x, mean_interval(vs)) for x, vs in sorted(groups.items())]


def interval_errors(ivs: Sequence[Interval]) -> np.ndarray:
    """The (2, n) ``yerr`` of ``errorbar`` for intervals; NaN (no bar) where n = 1."""
    return np.array(
        [
            [iv.mean - iv.lo if iv.lo is not None else np.nan for iv in ivs],
            [iv.hi - iv.mean if iv.hi is not None else np.nan for iv in ivs],
        ]
    )


def mean_label(ivs: Sequence[Interval]) -> str:
    if not any(iv.has_interval for iv in ivs):
        return "trial value (one per point: no interval)"
    if all(iv.has_interval for iv in ivs):
        return "mean, 95% interval"
    return "mean, 95% interval (none where n=1)"


def draw_others(
    ax: Axes, points: TrialPoints, x_of: Callable[[TrialRecord], Any], color: str, *, offset: float = 0.0
) -> None:
    """Pruned (hollow), reused (crosses) and other-learning-rate (grey dots) trials at ``x_of(trial)``."""
    styles: tuple[tuple[list[tuple[TrialRecord, float]], dict[str, Any]], ...] = (
        (points.other_lr, {"s": 10, "color": "0.6", "alpha": 0.6, "linewidths": 0, "label": OTHER_LR_LABEL}),
        (points.reused, {"s": 30, "marker": "x", "color": "0.35", "linewidths": 1.0, "label": REUSED_LABEL}),
        (
            points.pruned,
            {"s": 34, "facecolors": "none", "edgecolors": color, "linewidths": 1.2, "label": PRUNED_LABEL},
        ),
    )
    for pairs, kwargs in styles:
        if pairs:
            xs = [x_of(t) + offset for t, _ in pairs]
            ax.scatter(xs, [v for _, v in pairs], zorder=4, **kwargs)


def titled(title: str, points: TrialPoints) -> str:
    """``title``, with a second line "(+2 pruned, 1 reused not counted)" when there are such trials."""
    parts = []
    if points.pruned:
        parts.append(f"+{len(points.pruned)} pruned")
    if points.reused:
        parts.append(f"{len(points.reused)} reused not counted")
    return f"{title}\n({', '.join(parts)})" if parts else title
