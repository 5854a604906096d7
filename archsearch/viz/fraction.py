"""An objective against one searched layer fraction, with the spread over trials that share the fraction.

Trials with the same fraction (other seeds, other values of the remaining dimensions) are grouped: the line joins
the group means, bars span min to max, and every trial is drawn as a faint dot so the spread stays visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._style import fraction_label, line_color, n_trials, new_axes, symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes


def grouped(pairs: list[tuple[float, float]]) -> list[tuple[float, float, float, float, int]]:
    """(x, mean, min, max, n) per distinct x (rounded to 1e-6), sorted by x."""
    groups: dict[float, list[float]] = {}
    for x, v in pairs:
        groups.setdefault(round(x, 6), []).append(v)
    return [(x, float(np.mean(vs)), min(vs), max(vs), len(vs)) for x, vs in sorted(groups.items())]


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
        PlotNotApplicable: the fraction was not searched or no complete trial has a value.
    """
    rec = as_records(study)
    obj = rec.objective(objective)
    if symbol not in rec.searched_fractions():
        raise PlotNotApplicable(
            f"the {symbol_name(symbol)} fraction ({symbol!r}) does not vary in this study"
        )
    pairs = [(t.fractions.get(symbol, 0.0), v) for t, v in rec.valued(obj)]
    if not pairs:
        raise PlotNotApplicable(f"no complete trial has a value for {obj.name!r}")
    ax = new_axes(ax, (6.4, 4.4))
    color = line_color(symbol)
    xs = np.array([p[0] for p in pairs])
    vs = np.array([p[1] for p in pairs])
    ax.scatter(xs, vs, s=14, color=color, alpha=0.35, linewidths=0, label="trial", zorder=2)
    g = grouped(pairs)
    gx = np.array([r[0] for r in g])
    gm = np.array([r[1] for r in g])
    err = np.array([[r[1] - r[2] for r in g], [r[3] - r[1] for r in g]])
    shared = any(r[4] > 1 for r in g)
    ax.errorbar(
        gx,
        gm,
        yerr=err if shared else None,
        fmt="-o",
        color=color,
        ecolor="0.35",
        elinewidth=1,
        capsize=3,
        markersize=5,
        label="mean, min-max" if shared else "trial value",
        zorder=3,
    )
    best_i = int(np.argmin(gm) if obj.minimize else np.argmax(gm))
    right_half = len(gx) > 1 and gx[best_i] > (gx.min() + gx.max()) / 2  # keep the note inside the axes
    ax.annotate(
        f"best mean {gm[best_i]:.3g} at {gx[best_i]:.3g}",
        (gx[best_i], gm[best_i]),
        xytext=(-10 if right_half else 10, -16 if obj.minimize else 10),
        textcoords="offset points",
        ha="right" if right_half else "left",
        fontsize=8,
    )
    ax.set_xlabel(fraction_label(symbol))
    ax.set_ylabel(obj.label)
    ax.set_title(
        f"{obj.name} against {symbol_name(symbol)} fraction ({n_trials(len(pairs))}, {len(g)} fractions)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.margins(y=0.12)
    return ax
