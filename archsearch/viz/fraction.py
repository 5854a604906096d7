"""An objective against one searched layer fraction, with the spread over trials that share the fraction.

Trials with the same fraction (other seeds, other values of the remaining dimensions) are grouped: the line joins
the group means, bars are 95% t-intervals (none for a single trial), and every trial is drawn as a faint dot so the
spread stays visible. Only the trials the report scores are in the means (each architecture at its best learning
rate, reused results left out); pruned trials are drawn hollow at their last reported value, reused ones as crosses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.stats import Interval
from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._replicates import (
    draw_others,
    group_intervals,
    interval_errors,
    mean_label,
    titled,
    trial_points,
)
from archsearch.viz._style import fraction_label, line_color, n_trials, new_axes, symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes


def plot_objective_vs_fraction(
    study: optuna.Study | StudyRecords,
    symbol: str = "*",
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw the objective against the fraction of ``symbol`` layers.

    Args:
        study: the study or its records.
        symbol: the layer symbol whose fraction is the x axis (``*`` attention by default).
        objective: objective or metric name; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: the fraction was not searched or no trial has a value.
    """
    rec = as_records(study)
    obj = rec.objective(objective)
    pool = [t for t in rec.trials if t.state in ("COMPLETE", "PRUNED")]
    if symbol not in rec.searched_fractions(pool):
        raise PlotNotApplicable(
            f"the {symbol_name(symbol)} fraction ({symbol!r}) does not vary in this study"
        )
    points = trial_points(rec, obj)
    frac = lambda t: t.fractions.get(symbol, 0.0)
    pairs = [(frac(t), v) for t, v in points.counted]
    if not pairs and not points.pruned:
        raise PlotNotApplicable(f"no complete or pruned trial has a value for {obj.name!r}")
    ax = new_axes(ax, (6.4, 4.4))
    color = line_color(symbol)
    if pairs:
        xs = np.array([p[0] for p in pairs])
        vs = np.array([p[1] for p in pairs])
        ax.scatter(xs, vs, s=14, color=color, alpha=0.35, linewidths=0, label="trial", zorder=2)
    g = group_intervals(pairs)
    # a fraction with only pruned trials breaks the line instead of being skipped over (issue 20: the pure Mamba-2
    # point vanished and the line read "more attention is better")
    lost = sorted({round(frac(t), 6) for t, _ in points.pruned} - {x for x, _ in g})
    rows = sorted([(x, iv) for x, iv in g] + [(x, None) for x in lost], key=lambda r: r[0])
    gx = np.array([x for x, _ in rows])
    gm = np.array([iv.mean if iv is not None else np.nan for _, iv in rows])
    ivs = [iv for _, iv in rows if iv is not None]
    if ivs:
        err = interval_errors([iv if iv is not None else Interval(np.nan, None, None, 0) for _, iv in rows])
        ax.errorbar(
            gx,
            gm,
            yerr=err if any(iv.has_interval for iv in ivs) else None,
            fmt="-o",
            color=color,
            ecolor="0.35",
            elinewidth=1,
            capsize=3,
            markersize=5,
            label=mean_label(ivs),
            zorder=3,
        )
    draw_others(ax, points, frac, color)
    if ivs:
        means = np.array([iv.mean for iv in ivs])
        xs_valued = np.array([x for x, iv in rows if iv is not None])
        best_i = int(np.argmin(means) if obj.minimize else np.argmax(means))
        bx, bm = xs_valued[best_i], means[best_i]
        right_half = len(gx) > 1 and bx > (gx.min() + gx.max()) / 2  # keep the note inside the axes
        ax.annotate(
            f"best mean {bm:.3g} at {bx:.3g}",
            (bx, bm),
            xytext=(-10 if right_half else 10, -16 if obj.minimize else 10),
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=8,
        )
    ax.set_xlabel(fraction_label(symbol))
    ax.set_ylabel(obj.label)
    ax.set_title(
        titled(
            f"{obj.name} against {symbol_name(symbol)} fraction ({n_trials(len(pairs))}, {len(rows)} fractions)",
            points,
        )
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(y=0.12)
    return ax
