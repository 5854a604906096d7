"""Ratio map: one layer fraction against another (attention x MLP by default), coloured by an objective.

The paper's hybrid ablation (Waleffe et al. 2024, attention and MLP ratios of the 8B hybrid) in one picture: a grid
study is drawn as annotated cells (mean over the trials sharing a cell: each architecture at its best learning
rate, reused results not counted twice), anything else as a coloured scatter. Cells and points whose trials were all
pruned or failed are marked so the missing corner is explained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._replicates import trial_points
from archsearch.viz._style import cmap_for, fmt_value, fraction_label, n_trials, new_axes, symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

MAX_GRID_VALUES = 12  # more distinct values than this per axis: a scatter reads better than a grid


def default_axes_symbols(records: StudyRecords) -> tuple[str, str]:
    """``("*", "-")`` when both were searched, else the two searched fractions (attention-like first)."""
    searched = [s for s in records.searched_fractions() if s != "M"]  # Mamba is the remainder of the others
    if "*" in searched and "-" in searched:
        return "*", "-"
    if len(searched) < 2:
        raise PlotNotApplicable(
            f"ratio map needs two searched layer fractions; this study varies {len(searched)}"
            + (f" ({', '.join(searched)})" if searched else "")
        )
    order = ["*", "+", "D", "G", "m", "P", "E", "-", "M"]
    searched.sort(key=lambda s: order.index(s) if s in order else len(order))
    return searched[0], searched[1]


def plot_ratio_map(
    study: optuna.Study | StudyRecords,
    x: str | None = None,
    y: str | None = None,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw the objective over two layer fractions.

    Args:
        study: the study or its records.
        x: symbol on the horizontal axis (default ``*``, attention).
        y: symbol on the vertical axis (default ``-``, MLP).
        objective: objective or metric name; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: fewer than two searched fractions or no complete trial.
    """
    rec = as_records(study)
    if x is None or y is None:
        dx, dy = default_axes_symbols(rec)
        x, y = x or dx, y or dy
    obj = rec.objective(objective)
    points = trial_points(rec, obj)
    valued = points.counted  # each architecture at its best learning rate; reused results not counted twice
    if not valued:
        raise PlotNotApplicable(f"ratio map: no complete trial has a value for {obj.name!r}")
    pts = [(t.fractions.get(x, 0.0), t.fractions.get(y, 0.0), v) for t, v in valued]
    others = [
        (t.fractions.get(x, 0.0), t.fractions.get(y, 0.0), t.state)
        for t in rec.by_state("PRUNED", "FAIL")
        if t.fractions
    ]
    xs_u = sorted({round(p[0], 6) for p in pts} | {round(o[0], 6) for o in others})
    ys_u = sorted({round(p[1], 6) for p in pts} | {round(o[1], 6) for o in others})
    grid = len(xs_u) <= MAX_GRID_VALUES and len(ys_u) <= MAX_GRID_VALUES and len(pts) + len(others) >= 2
    ax = new_axes(ax, (7.0, 5.6) if grid else (6.8, 5.2))
    cmap = cmap_for(obj.minimize)
    if grid:
        _draw_grid(ax, pts, others, xs_u, ys_u, cmap, obj.label)
    else:
        _draw_scatter(ax, pts, others, cmap, obj.label)
    ax.set_xlabel(fraction_label(x))
    ax.set_ylabel(fraction_label(y))
    title = f"{obj.name} by {symbol_name(x)} and {symbol_name(y)} fraction ({n_trials(len(valued))})"
    if points.reused:
        title += f"\n({len(points.reused)} reused results not counted)"
    ax.set_title(title)
    return ax


def _draw_grid(ax, pts, others, xs_u, ys_u, cmap, label) -> None:
    from matplotlib.patches import Rectangle

    minimize = cmap.endswith("_r")
    cell = np.full((len(ys_u), len(xs_u)), np.nan)
    count = np.zeros_like(cell)
    sums = np.zeros_like(cell)
    for fx, fy, v in pts:
        i, j = ys_u.index(round(fy, 6)), xs_u.index(round(fx, 6))
        sums[i, j] += v
        count[i, j] += 1
    with np.errstate(invalid="ignore"):
        cell = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    mesh = ax.imshow(cell, origin="lower", cmap=cmap, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(mesh, ax=ax, label=label)
    finite = cell[np.isfinite(cell)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fontsize = 9 if max(len(xs_u), len(ys_u)) <= 6 else 7
    lost: dict[tuple[int, int], list[str]] = {}
    for fx, fy, state in others:
        lost.setdefault((ys_u.index(round(fy, 6)), xs_u.index(round(fx, 6))), []).append(state)
    for i in range(len(ys_u)):
        for j in range(len(xs_u)):
            gone = lost.get((i, j), [])
            note = ", ".join(
                f"{gone.count(s)} {w}" for s, w in (("PRUNED", "pruned"), ("FAIL", "failed")) if s in gone
            )
            if count[i, j]:
                # text colour against the cell: dark text on the bright end of the map
                bright = (cell[i, j] - lo) / (hi - lo + 1e-12)
                if cmap.endswith("_r"):
                    bright = 1 - bright
                lines = [fmt_value(cell[i, j])]
                if count[i, j] > 1:
                    lines.append(f"n={int(count[i, j])}")
                if note:
                    lines.append(f"(+{note})")
                color = "black" if bright > 0.55 else "white"
                ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize=fontsize, color=color)
            elif note:
                ax.text(j, i, note, ha="center", va="center", fontsize=fontsize - 1, color="0.35")
    if finite.size:  # outline the best cell
        flat = np.where(np.isfinite(cell), cell, np.inf if minimize else -np.inf)
        bi, bj = np.unravel_index(np.argmin(flat) if minimize else np.argmax(flat), cell.shape)
        ax.add_patch(
            Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.2, zorder=4)
        )
    ax.set_xticks(range(len(xs_u)), [f"{v:.3g}" for v in xs_u])
    ax.set_yticks(range(len(ys_u)), [f"{v:.3g}" for v in ys_u])
    ax.set_xticks(np.arange(-0.5, len(xs_u)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(ys_u)), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)


def _draw_scatter(ax, pts, others, cmap, label) -> None:
    arr = np.array(pts, dtype=float)
    sc = ax.scatter(
        arr[:, 0], arr[:, 1], c=arr[:, 2], cmap=cmap, s=60, edgecolors="0.2", linewidths=0.5, zorder=3
    )
    ax.figure.colorbar(sc, ax=ax, label=label)
    if others:
        o = np.array([(a, b) for a, b, _ in others], dtype=float)
        ax.scatter(o[:, 0], o[:, 1], marker="x", color="0.55", s=30, label="pruned / failed", zorder=2)
        ax.legend(loc="best", fontsize=8)
    ax.grid(True, alpha=0.3)
