"""RoPE on/off: does a hybrid need position embeddings? (the paper's hybrids drop them when a Mamba layer comes first)

With the attention fraction varying too, both settings are drawn against it (mean and min-max per fraction);
otherwise the two groups are compared side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._style import draw_strip, fraction_label, n_trials, new_axes
from archsearch.viz.fraction import grouped

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

ROPE_COLORS = {True: "#d62728", False: "#1f77b4"}


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
    valued = [(t, v) for t, v in rec.valued(obj) if t.rope is not None]
    settings = {t.rope for t, _ in valued}
    if settings != {True, False}:
        raise PlotNotApplicable("RoPE comparison needs complete trials with RoPE both on and off")
    att = {round(t.fractions.get("*", 0.0), 6) for t, _ in valued}
    ax = new_axes(ax, (6.4, 4.4))
    if len(att) > 1:
        for on in (True, False):
            pairs = [(t.fractions.get("*", 0.0), v) for t, v in valued if t.rope is on]
            g = grouped(pairs)
            gx = np.array([r[0] for r in g])
            gm = np.array([r[1] for r in g])
            err = np.array([[r[1] - r[2] for r in g], [r[3] - r[1] for r in g]])
            # nudge the two series apart so overlapping bars stay readable
            dx = (1 if on else -1) * 0.004 * (max(att) - min(att) or 1)
            ax.errorbar(
                gx + dx,
                gm,
                yerr=err,
                fmt="-o",
                color=ROPE_COLORS[on],
                capsize=3,
                ms=5,
                elinewidth=1,
                label=f"RoPE {'on' if on else 'off'} ({n_trials(len(pairs))})",
            )
        ax.set_xlabel(fraction_label("*"))
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    else:
        groups = {
            f"RoPE {'on' if on else 'off'}": [v for t, v in valued if t.rope is on] for on in (True, False)
        }
        draw_strip(ax, groups, obj.minimize, color="#d62728")
    ax.set_ylabel(obj.label)
    ax.set_title(f"{obj.name} with and without RoPE ({n_trials(len(valued))})")
    return ax
