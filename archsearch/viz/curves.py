"""Learning curves: every trial's intermediate values (``trial.report(val_loss, step)``) against the step.

Complete trials are coloured by their final value (bright = better), pruned ones grey and dashed (ending where the
pruner stopped them), and the best trial drawn thick. An architecture with several replicates (the trials the report
scores: best learning rate, reused results left out) also gets a band: the 95% t-interval of its mean curve at
every step all its replicates reported. Reused results repeat their twin's curve and are not drawn again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.stats import mean_interval
from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._style import cmap_for, new_axes
from archsearch.viz.analysis import Architecture, architectures, is_reused

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes


def plot_learning_curves(
    study: optuna.Study | StudyRecords,
    objective: str | None = None,
    *,
    log_y: bool | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Draw all trials' intermediate values by step.

    Args:
        study: the study or its records.
        objective: what the final colouring ranks by; the study's first objective by default (the reported
            intermediate value is whatever the sweep reported, normally the validation loss).
        log_y: log scale for the values; by default when they span more than a factor of 4.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: no trial reported intermediate values.
    """
    import matplotlib as mpl
    import matplotlib.patheffects as pe
    from matplotlib.lines import Line2D

    rec = as_records(study)
    with_curves = [t for t in rec.trials if len(t.curve) >= 1 and not is_reused(t)]
    n_reused = sum(1 for t in rec.trials if len(t.curve) >= 1 and is_reused(t))
    if not with_curves:
        raise PlotNotApplicable("no trial reported intermediate values (learning curves)")
    obj = rec.objective(objective)
    final = {t.number: v for t, v in rec.valued(obj)}
    ax = new_axes(ax, (7.2, 4.8))
    cmap = mpl.colormaps[cmap_for(obj.minimize)]
    if final:
        lo, hi = min(final.values()), max(final.values())
        norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1e-9)
    best = rec.best(obj).number if final else None
    n_pruned = n_other = 0
    for t in sorted(with_curves, key=lambda t: (t.state == "COMPLETE", t.number == best)):
        steps = [s for s, _ in t.curve]
        vals = [v for _, v in t.curve]
        if t.state == "PRUNED":
            n_pruned += 1
            ax.plot(steps, vals, color="0.6", ls="--", lw=0.9, alpha=0.8, zorder=1)
            ax.plot(steps[-1:], vals[-1:], marker="x", color="0.45", ms=5, zorder=1)
        elif t.number in final:
            thick = t.number == best
            ax.plot(
                steps,
                vals,
                color=cmap(norm(final[t.number])),
                lw=2.6 if thick else 1.1,
                alpha=1 if thick else 0.85,
                zorder=3 if thick else 2,
                path_effects=[pe.Stroke(linewidth=4.2, foreground="black"), pe.Normal()] if thick else None,
            )
        else:
            n_other += 1
            ax.plot(steps, vals, color="#ff9896", lw=0.9, alpha=0.8, zorder=1)
    n_bands = 0
    if final:
        for arch in architectures(rec, obj):
            band = _band(rec, arch)
            if band is None or arch.score is None:
                continue
            b_steps, b_lo, b_hi = band
            ax.fill_between(
                b_steps, b_lo, b_hi, color=cmap(norm(arch.score.mean)), alpha=0.22, lw=0, zorder=1
            )
            n_bands += 1
    vals_all = np.array([v for t in with_curves for _, v in t.curve])
    finite = vals_all[np.isfinite(vals_all)]
    if log_y is None:
        log_y = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 4)
    if log_y:
        ax.set_yscale("log")
    if final:
        sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
        ax.figure.colorbar(sm, ax=ax, label=f"final {obj.label}")
    handles: list[Any] = []
    if best is not None:
        handles.append(
            Line2D(
                [],
                [],
                color=cmap(norm(final[best])),
                lw=2.6,
                label=f"best (#{best})",
                path_effects=[pe.Stroke(linewidth=4.2, foreground="black"), pe.Normal()],
            )
        )
    if n_pruned:
        handles.append(Line2D([], [], color="0.6", ls="--", marker="x", label=f"pruned ({n_pruned})"))
    if n_other:
        handles.append(Line2D([], [], color="#ff9896", label=f"failed / running ({n_other})"))
    if n_bands:
        from matplotlib.patches import Patch

        handles.append(
            Patch(color="0.6", alpha=0.35, label=f"95% band over replicates ({n_bands} architectures)")
        )
    if n_reused:
        handles.append(Line2D([], [], color="none", label=f"reused results not drawn again ({n_reused})"))
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper right")
    ax.set_xlabel("training step")
    ax.set_ylabel("reported value (validation loss)")
    ax.set_title(f"learning curves of {len(with_curves)} trials")
    ax.grid(True, alpha=0.3, which="both")
    return ax


def _band(rec: StudyRecords, arch: Architecture) -> tuple[list[int], list[float], list[float]] | None:
    """(steps, lower, upper) of the 95% interval of an architecture's mean curve over its replicates, at the steps
    every replicate reported; None with fewer than two replicates."""
    curves = [dict(rec.trial(r.number).curve) for r in arch.best_runs]
    curves = [c for c in curves if c]
    if len(curves) < 2:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    ivs = [mean_interval([c[s] for c in curves]) for s in steps]
    if len(steps) < 2 or any(not np.isfinite(iv.mean) for iv in ivs):
        return None
    return (
        steps,
        [iv.mean - (iv.half_width or 0.0) for iv in ivs],
        [iv.mean + (iv.half_width or 0.0) for iv in ivs],
    )
