"""Task accuracy against difficulty level, one line per pattern: does recall hold as the book grows?

Recall tasks record one validation metric per difficulty level (``val/mqar/acc_L16``: the accuracy on samples with
16 key-value pairs; phonebook entries, tokens to copy or gaps for the other tasks). The paper's figure: a pure SSM's
recall falls with the book size while the hybrid holds near attention. Trials of one architecture are grouped as the
report groups them (archsearch.viz.analysis): the line joins the means over its replicates at its best learning rate,
bars are 95% t-intervals. For MQAR the bar that matters is not chance but guessing one of the book's values: a model
that knows which values a sample holds, but not which key each belongs to, reaches it without any retrieval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.errors import ArchsearchError
from archsearch.stats import Interval, mean_interval
from archsearch.viz._patterns import short_label
from archsearch.viz._records import (
    Objective,
    PlotNotApplicable,
    StudyRecords,
    as_records,
    guess_direction,
)
from archsearch.viz._style import n_trials, new_axes, symbol_color
from archsearch.viz.analysis import Architecture, architectures

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


def mqar_baselines(
    rec: StudyRecords, task: str | None, levels: list[int]
) -> tuple[float, dict[int, float]] | None:
    """(chance, book guessing per level) for an MQAR metric, or None when unknown.

    A space that sets ``value_range`` is an older study whose values were drawn with replacement
    (:func:`book_guess`); otherwise the task is rebuilt from the stored space and asked
    (:meth:`archsearch.data.tasks.mqar.MQAR.baselines`: distinct values, Zoology's sampler, 1 / pairs).
    """
    if task != "mqar" or not levels:
        return None
    chance = mqar_chance(rec)
    if chance is not None:
        return chance, {n: book_guess(n, round(1 / chance)) for n in levels}
    from archsearch.viz.recall import held_out_task, task_baselines

    chance, book = task_baselines(held_out_task(rec, task), levels)
    if chance is None or set(book) != set(levels):
        return None
    return chance, book


def book_guess(pairs: int, values: int) -> float:
    """MQAR accuracy per query of guessing uniformly among the book's ``pairs`` values, each drawn uniformly from
    ``values`` ids: the right one plus, on average, ``(pairs - 1) / values`` copies of it among the ``pairs``."""
    return (1 + (pairs - 1) / values) / pairs


def book_guess_overall(levels: list[int], values: int) -> float:
    """The book-guessing accuracy over a mix of levels, weighted by queries as the overall metric is: every level
    has as many samples (levels cycle with the sample index) and a sample at level n asks n queries."""
    return sum(n * book_guess(n, values) for n in levels) / sum(levels)


@dataclass
class LevelSeries:
    """One architecture's per-level values over its counted replicates, and its pruned trials' last values."""

    arch: Architecture
    levels: dict[int, Interval]
    pruned: list[dict[int, float]]


def level_series(rec: StudyRecords, metric: str, objective: str | None = None) -> list[LevelSeries]:
    """Per architecture (best learning rate, reused results left out), the per-level mean and 95% interval of
    ``metric``; attention-heavy architectures first."""
    obj = Objective(metric, guess_direction(metric))
    for name in (
        objective,
        None,
    ):  # the best learning rate is chosen by the objective, else the study's first
        try:
            obj = rec.objective(name)
            break
        except ArchsearchError:
            continue
    out = []
    for a in architectures(rec, obj):
        per_level: dict[int, list[float]] = {}
        for r in a.best_runs:
            for lvl, v in rec.trial(r.number).level_metrics.get(metric, {}).items():
                per_level.setdefault(lvl, []).append(v)
        pruned = [t.level_metrics[metric] for t in a.pruned if t.level_metrics.get(metric)]
        if per_level or pruned:
            out.append(
                LevelSeries(a, {lvl: mean_interval(vs) for lvl, vs in sorted(per_level.items())}, pruned)
            )
    first = {t.number: t for t in rec.trials}
    att = lambda s: (first[s.arch.best_runs[0].number] if s.arch.best_runs else s.arch.pruned[0]).fractions
    return sorted(out, key=lambda s: (not s.levels, -att(s).get("*", 0.0), s.arch.label))


@dataclass(frozen=True)
class BaselineCheck:
    """Which architectures rose above MQAR's book-guessing baseline, at which levels.

    A level counts when the mean over replicates exceeds the accuracy of guessing one of the book's values (the bar
    a model that has not learned retrieval reaches); ``clears`` holds the levels where the lower end of the 95%
    interval does too (never with one replicate, which has no interval).
    """

    metric: str
    values: int
    above: dict[str, list[int]]
    clears: dict[str, list[int]]
    replicates: dict[str, int]
    closest: tuple[str, int, float, float] | None  # label, level, mean, baseline

    @property
    def nothing_above(self) -> bool:
        return not any(self.above.values())

    def sentence(self) -> str:
        if self.nothing_above:
            text = f"No architecture rose above the book-guessing baseline of {self.metric} at any level"
            if self.closest is not None:
                label, lvl, v, base = self.closest
                text += f" (closest: `{label}` at level {lvl}, {v:.3f} against {base:.3f})"
            return (
                text
                + ": none has shown that it retrieves the value of a key rather than guessing among the book."
            )
        parts = []
        for k, levels in self.above.items():
            if not levels:
                continue
            part = f"`{k}` at levels {', '.join(map(str, levels))}"
            if self.replicates.get(k, 1) < 2:
                part += " (one run: no interval)"
            elif self.clears.get(k):
                part += f" (its 95% interval clears it at {', '.join(map(str, self.clears[k]))})"
            else:
                part += " (its 95% interval does not clear it at any level)"
            parts.append(part)
        below = [f"`{k}`" for k, v in self.above.items() if not v]
        text = "Mean accuracy above the book-guessing baseline: " + "; ".join(parts)
        return text + (f"; at no level: {', '.join(below)}." if below else ".")


def book_baseline_check(rec: StudyRecords, objective: str | None = None) -> BaselineCheck | None:
    """The baseline check of the levels plot; None when it does not apply (no MQAR levels or unknown values)."""
    try:
        metric = levelled_metric(rec, objective)
    except PlotNotApplicable:
        return None
    task = m["task"] if (m := _TASK_ACC.fullmatch(metric)) else None
    series = level_series(rec, metric, objective)
    baselines = mqar_baselines(rec, task, sorted({lvl for s in series for lvl in s.levels}))
    if baselines is None:
        return None
    chance, book = baselines
    n_values = round(1 / chance)
    above: dict[str, list[int]] = {}
    clears: dict[str, list[int]] = {}
    replicates: dict[str, int] = {}
    closest = None
    for s in series:
        if not s.levels:
            continue
        label = s.arch.label
        above[label], clears[label] = [], []
        for lvl, iv in s.levels.items():
            base = book[lvl]
            replicates[label] = iv.n
            if iv.mean > base:
                above[label].append(lvl)
            if iv.lo is not None and iv.lo > base:
                clears[label].append(lvl)
            if closest is None or iv.mean - base > closest[2] - closest[3]:
                closest = (label, lvl, iv.mean, base)
    return BaselineCheck(metric, n_values, above, clears, replicates, closest)


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
    """Draw a task's per-level accuracy, one line per architecture: the mean over its replicates with a 95%
    t-interval (clipped to [0, 1] for accuracies), pruned trials as hollow markers at their last values, and for MQAR
    the chance and book-guessing baselines (with a note in the axes when nothing rose above the latter).

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
    series = level_series(rec, metric, objective)
    drawn = [s for s in series if s.levels]
    ax = new_axes(ax, (6.4, 4.4))
    levels: set[int] = set()
    values: list[float] = []
    bounded = "acc" in metric.rsplit("/", 1)[-1]  # accuracies live in [0, 1]: so do their intervals
    n_counted = n_pruned = n_reused = 0
    for i, (s, color) in enumerate(zip(series, _line_colors(len(series)), strict=True)):
        marker = _MARKERS[i % len(_MARKERS)]
        n_pruned += len(s.pruned)
        n_reused += len(s.arch.reused)
        for p in s.pruned:
            xs = sorted(p)
            ax.plot(xs, [p[x] for x in xs], ls="none", marker=marker, mfc="none", mec=color, ms=6, zorder=2)
            levels |= set(xs)
        if not s.levels:
            continue
        xs = sorted(s.levels)
        ivs = [s.levels[x] for x in xs]
        n = ivs[0].n
        n_counted += n
        levels |= set(xs)
        values += [iv.mean for iv in ivs]
        shared = any(iv.has_interval for iv in ivs)
        lo = [max(0.0, iv.lo) if bounded and iv.lo is not None else iv.lo for iv in ivs]
        hi = [min(1.0, iv.hi) if bounded and iv.hi is not None else iv.hi for iv in ivs]
        err = np.array(
            [
                [iv.mean - l if l is not None else np.nan for iv, l in zip(ivs, lo, strict=True)],
                [h - iv.mean if h is not None else np.nan for iv, h in zip(ivs, hi, strict=True)],
            ]
        )
        att = rec.trial(s.arch.best_runs[0].number).fractions.get("*", 0.0)
        label = f"{short_label(s.arch.label, number=s.arch.best_runs[0].number)} ({att:.0%} attention"
        ax.errorbar(
            xs,
            [iv.mean for iv in ivs],
            yerr=err if shared else None,
            fmt="-" + marker,
            color=color,
            ecolor=color,
            elinewidth=1,
            capsize=3,
            markersize=5,
            label=label + (f", {n} trials)" if n > 1 else ")"),
            zorder=3,
        )
    if not drawn:
        raise PlotNotApplicable(f"no complete trial records {metric} per level")
    series_handles, series_labels = ax.get_legend_handles_labels()
    extra = []
    if n_pruned:
        from matplotlib.lines import Line2D

        extra.append(
            (
                Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3"),
                f"pruned ({n_pruned}): last values",
            )
        )
    task = m["task"] if (m := _TASK_ACC.fullmatch(metric)) else None
    xs = sorted(levels)
    baselines = mqar_baselines(rec, task, xs)
    if baselines is not None:
        chance, by_level = baselines
        label = f"chance (1/{round(1 / chance)} values)"
        extra.append((ax.axhline(chance, color="0.4", ls=":", lw=1.2, zorder=1), label))
        # No recall, but knowing which values are in the book: guess one of its n values.
        book = [by_level[n] for n in xs]
        (line,) = ax.plot(xs, book, color="0.4", ls="--", lw=1.2, zorder=1)
        extra.append((line, "guess a value from the book"))
        check = book_baseline_check(rec, objective)
        if check is not None and check.nothing_above:
            ax.text(
                0.5, 0.97, "nothing rose above the book-guessing baseline", transform=ax.transAxes,
                ha="center", va="top", fontsize=9, color="#b22222",
                bbox={"boxstyle": "round", "fc": "white", "ec": "#b22222", "alpha": 0.9},
            )  # fmt: skip
    if len(xs) > 1 and all(x > 0 and x & (x - 1) == 0 for x in xs):  # powers of two: a log2 axis
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(f"{LEVEL_NAMES.get(task or '', 'difficulty level')} (level)")
    ax.set_ylabel(obj.label)
    note = f", mean and 95% interval; {n_reused} reused not counted" if n_reused else ""
    ax.set_title(f"{metric} per level ({n_trials(n_counted)}{note})")
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.12)
    if values and min(values) >= 0:
        ax.set_ylim(bottom=0)
    ax.legend(
        series_handles + [h for h, _ in extra],
        series_labels + [lbl for _, lbl in extra],
        fontsize=8,
        loc="best",
    )
    return ax
