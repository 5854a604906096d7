"""RoPE on/off: does a hybrid need position embeddings? (the paper's hybrids drop them when a Mamba layer comes first)

With the attention fraction varying too, both settings are drawn against it (mean and 95% t-interval per fraction);
otherwise the two groups are compared side by side. Pruned and reused trials are drawn, not counted.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._records import PlotNotApplicable, StudyRecords, TrialRecord, as_records
from archsearch.viz._replicates import (
    draw_others,
    group_intervals,
    interval_errors,
    mean_label,
    titled,
    trial_points,
)
from archsearch.viz._style import draw_strip, fraction_label, n_trials, new_axes

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

ROPE_COLORS = {True: "#d62728", False: "#1f77b4"}


def _has_rope(t: TrialRecord, on: bool) -> bool:
    return t.rope is on


def plot_rope(
    study: optuna.Study | StudyRecords,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Compare the objective with RoPE on and off.

    Args:
        study: the study or its records.
        objective: objective or metric name; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: complete trials do not cover both settings.
    """
    rec = as_records(study)
    obj = rec.objective(objective)
    points = trial_points(rec, obj).only(lambda t: t.rope is not None)
    valued = points.counted
    settings = {t.rope for t, _ in valued}
    if settings != {True, False}:
        raise PlotNotApplicable("RoPE comparison needs complete trials with RoPE both on and off")
    att = {round(t.fractions.get("*", 0.0), 6) for t, _ in valued}
    ax = new_axes(ax, (6.4, 4.4))
    if len(att) > 1:
        span = max(att) - min(att) or 1
        for on in (True, False):
            pairs = [(t.fractions.get("*", 0.0), v) for t, v in valued if t.rope is on]
            g = group_intervals(pairs)
            ivs = [iv for _, iv in g]
            # nudge the two series apart so overlapping bars stay readable
            dx = (1 if on else -1) * 0.004 * span
            ax.errorbar(
                np.array([x for x, _ in g]) + dx,
                [iv.mean for iv in ivs],
                yerr=interval_errors(ivs) if any(iv.has_interval for iv in ivs) else None,
                fmt="-o",
                color=ROPE_COLORS[on],
                capsize=3,
                ms=5,
                elinewidth=1,
                label=f"RoPE {'on' if on else 'off'} ({n_trials(len(pairs))}; {mean_label(ivs)})",
            )
            mine = points.only(functools.partial(_has_rope, on=on))
            draw_others(ax, mine, lambda t: t.fractions.get("*", 0.0), ROPE_COLORS[on], offset=dx)
        ax.set_xlabel(fraction_label("*"))
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # the pruned/reused entries of both series once
        ax.legend(list(unique.values()), list(unique), fontsize=8)
        ax.grid(True, alpha=0.3)
    else:
        name = lambda on: f"RoPE {'on' if on else 'off'}"
        split = lambda pairs: {name(on): [v for t, v in pairs if t.rope is on] for on in (True, False)}
        draw_strip(
            ax,
            split(valued),
            obj.minimize,
            color="#d62728",
            pruned=split(points.pruned),
            reused=split(points.reused),
        )
    ax.set_ylabel(obj.label)
    ax.set_title(titled(f"{obj.name} with and without RoPE ({n_trials(len(valued))})", points))
    return ax
