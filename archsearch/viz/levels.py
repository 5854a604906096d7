"""Task accuracy against difficulty level, one line per pattern: does recall hold as the book grows?

Recall tasks record one validation metric per difficulty level (``val/mqar/acc_L16``: the accuracy on samples with
16 key-value pairs; phonebook entries, tokens to copy or gaps for the other tasks). The paper's figure: a pure SSM's
recall falls with the book size while the hybrid holds near attention. Trials of the same pattern (other seeds or
learning rates) are grouped: the line joins their means and bars span min to max.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.viz._patterns import short_label
from archsearch.viz._records import (
    Objective,
    PlotNotApplicable,
    StudyRecords,
    TrialRecord,
    as_records,
    guess_direction,
)
from archsearch.viz._style import n_trials, new_axes, symbol_color
from archsearch.viz.fraction import grouped

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

LEVEL_NAMES = {
    "mqar": "key-value pairs",
    "phonebook": "phonebook entries",
    "selective_copy": "tokens to copy",
    "induction": "gap (tokens)",
}
_TASK_ACC = re.compile(r"val/(?P<task>[^/]+)/acc")
_MARKERS = "osD^vP*Xph"


def levelled_metric(rec: StudyRecords, objective: str | None = None) -> str:
    """The metric drawn per level: ``objective`` (the first objective by default) when complete trials record it
    per level (``<objective>_L<n>``), else the first task accuracy ``val/<task>/acc`` (by name) that they do.

    Raises:
        PlotNotApplicable: no complete trial records a per-level metric.
    """
    names = {name for t in rec.complete for name in t.level_metrics}
    wanted = objective if objective in names else rec.objective(objective).name
    if wanted in names:
        return wanted
    accs = sorted(n for n in names if _TASK_ACC.fullmatch(n))
    if not accs:
        raise PlotNotApplicable(
            f"no complete trial records per-level metrics ({wanted}_L<n> or val/<task>/acc_L<n>)"
        )
    return accs[0]


def mqar_chance(rec: StudyRecords) -> float | None:
    """MQAR's chance accuracy per query, 1 / the number of values, when the study's space sets ``value_range``.

    The default range is half the tokenizer's vocabulary, which the study does not record: None then.
    """
    node: Any = rec.space
    for key in ("train", "data_options", "task_options", "mqar", "value_range"):
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, (list, tuple)) and len(node) == 2 and all(isinstance(v, int) for v in node):
        if node[1] > node[0]:
            return 1.0 / (node[1] - node[0])
    return None


def book_guess(pairs: int, values: int) -> float:
    """MQAR accuracy per query of guessing uniformly among the book's ``pairs`` values, each drawn uniformly from
    ``values`` ids: the right one plus, on average, ``(pairs - 1) / values`` copies of it among the ``pairs``."""
    return (1 + (pairs - 1) / values) / pairs


def _line_colors(n: int) -> list[str]:
    """``n`` colours from attention red to Mamba blue (lines come in decreasing attention fraction); a lone line
    gets the neutral middle."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex

    ends = [symbol_color("*"), "#9467bd", symbol_color("M")]
    cmap = LinearSegmentedColormap.from_list("mamba_attention", ends)
    return [to_hex(cmap(i / (n - 1) if n > 1 else 0.5)) for i in range(n)]


def plot_levels(
    study: optuna.Study | StudyRecords,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw a task's per-level accuracy, one line per distinct pattern (mean and min-max over its trials).

    Args:
        study: the study or its records.
        objective: objective or metric name; the study's first objective by default. When it has no per-level
            values, the first ``val/<task>/acc`` that has them is drawn.
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: no complete trial records per-level metrics.
    """
    rec = as_records(study)
    metric = levelled_metric(rec, objective)
    declared = [o for o in rec.objectives if o.name == metric]
    obj = declared[0] if declared else Objective(metric, guess_direction(metric))
    trials = [t for t in rec.complete if t.level_metrics.get(metric)]
    by_pattern: dict[str, list[TrialRecord]] = {}
    for t in trials:
        by_pattern.setdefault(t.pattern or f"trial #{t.number}", []).append(t)
    # attention-heavy first: the legend then reads top-down like the lines usually do
    order = sorted(by_pattern, key=lambda p: (-by_pattern[p][0].fractions.get("*", 0.0), p))
    ax = new_axes(ax, (6.4, 4.4))
    levels: set[int] = set()
    values: list[float] = []
    for i, (pattern, color) in enumerate(zip(order, _line_colors(len(order)), strict=True)):
        group = by_pattern[pattern]
        pairs = [(float(lvl), v) for t in group for lvl, v in t.level_metrics[metric].items()]
        g = grouped(pairs)
        levels |= {int(x) for x, *_ in g}
        values += [v for _, v in pairs]
        shared = any(r[4] > 1 for r in g)
        err = np.array([[r[1] - r[2] for r in g], [r[3] - r[1] for r in g]])
        att = group[0].fractions.get("*", 0.0)
        n = f", {len(group)} trials" if len(group) > 1 else ""
        ax.errorbar(
            [r[0] for r in g],
            [r[1] for r in g],
            yerr=err if shared else None,
            fmt="-" + _MARKERS[i % len(_MARKERS)],
            color=color,
            ecolor=color,
            elinewidth=1,
            capsize=3,
            markersize=5,
            label=f"{short_label(pattern, number=group[0].number)} ({att:.0%} attention{n})",
            zorder=3,
        )
    task = m["task"] if (m := _TASK_ACC.fullmatch(metric)) else None
    chance = mqar_chance(rec) if task == "mqar" else None
    xs = sorted(levels)
    baselines = 0
    if chance is not None:
        label = f"chance (1/{round(1 / chance)} values)"
        ax.axhline(chance, color="0.4", ls=":", lw=1.2, label=label, zorder=1)
        # No recall, but knowing which values are in the book: guess one of its n values (drawn with replacement).
        book = [book_guess(n, round(1 / chance)) for n in xs]
        ax.plot(xs, book, color="0.4", ls="--", lw=1.2, label="guess a value from the book", zorder=1)
        baselines = 2
    if len(xs) > 1 and all(x > 0 and x & (x - 1) == 0 for x in xs):  # powers of two: a log2 axis
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(f"{LEVEL_NAMES.get(task or '', 'difficulty level')} (level)")
    ax.set_ylabel(obj.label)
    ax.set_title(f"{metric} per level ({n_trials(len(trials))})")
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.12)
    if min(values) >= 0:
        ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    first = baselines  # the baselines are drawn first but listed last
    ax.legend(handles[first:] + handles[:first], labels[first:] + labels[:first], fontsize=8, loc="best")
    return ax
