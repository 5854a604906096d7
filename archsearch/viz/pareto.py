"""Pareto front of quality against inference cost (KV cache, decode state or estimated decode time).

All complete trials are drawn faintly; the non-dominated ones are joined by a step line and labelled with their
pattern (shortened: itself when short, grammar repetition when that helps, else ``#trial`` and a layer census that
the ribbons plot and the report use as well).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._patterns import short_label
from archsearch.viz._records import PlotNotApplicable, StudyRecords, TrialRecord, as_records
from archsearch.viz._style import new_axes, place_labels

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

COST_AXES = {
    "kv_bytes_per_token": "KV cache per token of context",
    "state_bytes": "decode state per sequence",
    "decode_ms_est": "estimated decode time per token (ms)",
    "params": "parameters",
    "non_embedding_params": "non-embedding parameters",
}
MAX_LABELS = 14


def pareto_front(points: list[tuple[float, float]], minimize: tuple[bool, bool]) -> list[int]:
    """Indices of the non-dominated points (two objectives with their directions), sorted by the first."""
    sign = np.array([1.0 if m else -1.0 for m in minimize])
    arr = np.asarray(points, dtype=float) * sign
    front = []
    for i, p in enumerate(arr):
        dominated = np.any(np.all(arr <= p, axis=1) & np.any(arr < p, axis=1))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def _unit(cost: str, largest: float) -> tuple[str, float]:
    """Axis unit and divisor so tick labels stay short (bytes in B/KiB/MiB/GiB, counts in M/B)."""
    if "bytes" in cost:
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if largest >= size:
                return unit, float(size)
        return "bytes", 1.0
    if "params" in cost:
        return ("billions", 1e9) if largest >= 1e9 else ("millions", 1e6)
    return "", 1.0


def available_costs(records: StudyRecords) -> list[str]:
    """Cost axes with at least two distinct values among complete trials (KV and decode time first)."""
    out = []
    for name in COST_AXES:
        vals = {records_value for t in records.complete if (records_value := t.get(name)) is not None}
        if len(vals) > 1:
            out.append(name)
    return out


def plot_pareto(
    study: optuna.Study | StudyRecords,
    cost: str = "kv_bytes_per_token",
    quality: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw quality against an inference cost and mark the Pareto front.

    Args:
        study: the study or its records.
        cost: a trial attribute or objective minimised on the x axis (``kv_bytes_per_token``, ``state_bytes``,
            ``decode_ms_est``, ``params``...).
        quality: objective or metric on the y axis; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: fewer than two complete trials carry both values.
    """
    rec = as_records(study)
    q = rec.objective(quality)
    rows: list[tuple[TrialRecord, float, float]] = []
    for t, v in rec.valued(q):
        x = t.get(cost)
        if x is not None:
            rows.append((t, x, v))
    if len(rows) < 2:
        raise PlotNotApplicable(f"Pareto front needs two complete trials with {cost!r} and {q.name!r}")
    ax = new_axes(ax, (7.6, 5.4))
    unit, scale = _unit(cost, max(r[1] for r in rows))
    xs = np.array([r[1] / scale for r in rows])
    ys = np.array([r[2] for r in rows])
    front = pareto_front(list(zip(xs, ys, strict=True)), (True, q.minimize))
    ax.scatter(xs, ys, s=22, color="0.65", alpha=0.7, linewidths=0, label="trial", zorder=2)
    fx, fy = xs[front], ys[front]
    ax.step(fx, fy, where="post", color="#d62728", lw=1.2, alpha=0.8, zorder=3)
    ax.scatter(
        fx, fy, s=46, color="#d62728", edgecolors="black", linewidths=0.6, label="Pareto front", zorder=4
    )
    ax.set_xlabel(COST_AXES.get(cost, cost) + (f", {unit}" if unit else "") + " (lower is better)")
    ax.set_ylabel(q.label)
    ax.set_title(
        f"{q.name} against {COST_AXES.get(cost, cost)}: {len(front)} of {len(rows)} trials on the front"
    )
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)
    ax.legend(fontsize=8, loc="upper right" if q.minimize else "lower right")
    shown = front if len(front) <= MAX_LABELS else front[:: int(np.ceil(len(front) / MAX_LABELS))]
    labels = [short_label(rows[i][0].pattern or "?", number=rows[i][0].number) for i in shown]
    place_labels(ax, [xs[i] for i in shown], [ys[i] for i in shown], labels, fontsize=7.5, family="monospace")
    return ax
