"""Placement sensitivity: the objective per spread strategy (or per set of attention positions).

When the attention fraction also varies, raw values would mostly show the fraction's effect; the plot then shows
each trial's difference from the mean of the trials with the same attention-like fraction, which isolates placement.
Means carry 95% t-intervals over the trials the report scores; pruned and reused trials are drawn but not counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._patterns import main_symbols
from archsearch.viz._records import PlotNotApplicable, StudyRecords, TrialRecord, as_records
from archsearch.viz._replicates import titled, trial_points
from archsearch.viz._style import draw_strip, line_color, n_trials, new_axes, symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

ATTENTION_LIKE = ("*", "+", "D")


def _attention_symbol(rec: StudyRecords) -> str:
    for s in ATTENTION_LIKE:
        if any(s in (t.pattern or "") for t in rec.complete):
            return s
    return "*"


def _positions(t: TrialRecord, symbol: str) -> str:
    syms = main_symbols(t.pattern or "")
    return ",".join(str(i) for i, s in enumerate(syms) if s == symbol) or "none"


def plot_placement(
    study: optuna.Study | StudyRecords,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw the objective per placement: per spread when spreads were searched, else per attention positions.

    Args:
        study: the study or its records.
        objective: objective or metric name; the study's first objective by default.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: neither the spread nor the positions of attention layers vary among complete trials.
    """
    rec = as_records(study)
    obj = rec.objective(objective)
    points = trial_points(rec, obj)
    valued = points.counted
    sym = _attention_symbol(rec)
    spreads = {t.spread for t, _ in valued if t.spread is not None}
    if len(spreads) > 1:
        key, what = (lambda t: t.spread or "?"), "spread"
    else:
        by_count: dict[int, set[str]] = {}
        for t, _ in valued:
            by_count.setdefault(main_symbols(t.pattern or "").count(sym), set()).add(_positions(t, sym))
        if not any(
            len(p) > 1 for p in by_count.values()
        ):  # positions that differ only with the count are no placement study
            raise PlotNotApplicable(
                "neither the spread nor the attention positions (at equal count) vary among complete trials"
            )
        key, what = (lambda t: _positions(t, sym)), f"{symbol_name(sym)} positions (layer indices)"

    frac = lambda t: round(t.fractions.get(sym, 0.0), 6)
    relative = len({frac(t) for t, _ in valued}) > 1
    base: dict[float, float] = {}
    if relative:
        by_frac: dict[float, list[float]] = {}
        for t, v in valued:
            by_frac.setdefault(frac(t), []).append(v)
        base = {f: float(np.mean(vs)) for f, vs in by_frac.items()}
    shift = lambda t, v: v - base[frac(t)] if relative else v

    def by_key(pairs: list[tuple[TrialRecord, float]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for t, v in sorted(pairs, key=lambda tv: str(key(tv[0]))):
            if not relative or frac(t) in base:
                out.setdefault(key(t), []).append(shift(t, v))
        return out

    groups = by_key(valued)
    if len(groups) < 2:
        raise PlotNotApplicable(f"only one {what} among complete trials")
    means = {k: float(np.mean(v)) for k, v in groups.items()}
    groups = dict(sorted(groups.items(), key=lambda kv: means[kv[0]] * (1 if obj.minimize else -1)))
    pruned, reused = by_key(points.pruned), by_key(points.reused)
    for k in pruned:  # a placement whose trials were all pruned still gets its column
        groups.setdefault(k, [])

    ax = new_axes(ax, (max(6.0, 1.1 * len(groups) + 2.5), 4.6))
    draw_strip(ax, groups, obj.minimize, color=line_color(sym), pruned=pruned, reused=reused)
    if relative:
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
        ax.set_ylabel(
            f"{obj.name} minus mean at the same {symbol_name(sym)} fraction\n({'lower' if obj.minimize else 'higher'} is better)"
        )
    else:
        ax.set_ylabel(obj.label)
    ax.set_xlabel(f"{what} (best mean first)")
    ax.set_title(titled(f"placement sensitivity: {obj.name} by {what} ({n_trials(len(valued))})", points))
    return ax
