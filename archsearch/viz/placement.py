"""Placement sensitivity: the objective per spread strategy (or per set of attention positions).

When the attention fraction also varies, raw values would mostly show the fraction's effect; the plot then shows
each trial's difference from the mean of the trials with the same attention-like fraction, which isolates placement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from archsearch.viz._patterns import main_symbols
from archsearch.viz._records import PlotNotApplicable, StudyRecords, TrialRecord, as_records
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
    valued = rec.valued(obj)
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

    frac_of = {t.number: round(t.fractions.get(sym, 0.0), 6) for t, _ in valued}
    relative = len(set(frac_of.values())) > 1
    base: dict[float, float] = {}
    if relative:
        by_frac: dict[float, list[float]] = {}
        for t, v in valued:
            by_frac.setdefault(frac_of[t.number], []).append(v)
        base = {f: float(np.mean(vs)) for f, vs in by_frac.items()}
    groups: dict[str, list[float]] = {}
    for t, v in sorted(valued, key=lambda tv: str(key(tv[0]))):
        groups.setdefault(key(t), []).append(v - base[frac_of[t.number]] if relative else v)
    if len(groups) < 2:
        raise PlotNotApplicable(f"only one {what} among complete trials")
    means = {k: float(np.mean(v)) for k, v in groups.items()}
    groups = dict(sorted(groups.items(), key=lambda kv: means[kv[0]] * (1 if obj.minimize else -1)))

    ax = new_axes(ax, (max(6.0, 1.1 * len(groups) + 2.5), 4.6))
    draw_strip(ax, groups, obj.minimize, color=line_color(sym))
    if relative:
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
        ax.set_ylabel(
            f"{obj.name} minus mean at the same {symbol_name(sym)} fraction\n({'lower' if obj.minimize else 'higher'} is better)"
        )
    else:
        ax.set_ylabel(obj.label)
    ax.set_xlabel(f"{what} (best mean first)")
    ax.set_title(f"placement sensitivity: {obj.name} by {what} ({n_trials(len(valued))})")
    return ax
