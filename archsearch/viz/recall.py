"""Recall against memory (Zoology's figure) and against the number of key-value pairs, per architecture.

Architectures, their best learning rate and their replicates come from :mod:`archsearch.viz.analysis` (as the report
scores them: the ``arch`` attribute, else the pattern plus the searched parameters other than seed and learning rate;
the mean over seeds at the best rate, reused results never counted); the plots draw that mean with its 95%
t-interval (bars, or a band per level). Chance and the book-guessing baseline (the model knows the book's values,
not which key they belong to) come from the task itself. The state axis is what decoding must keep per sequence:
SSM and conv states plus the KV cache at the longest evaluated context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.errors import ArchsearchError
from archsearch.stats import Interval, mean_interval
from archsearch.viz._patterns import short_label
from archsearch.viz._records import Objective, PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._replicates import interval_errors
from archsearch.viz._style import fmt_bytes, new_axes
from archsearch.viz.analysis import architectures

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes

_TASK_ACC = re.compile(r"val/(?P<task>[^/]+)/acc")
_MARKERS = "osD^vP*Xph"
_BASELINE_LABELS = ("chance", "guess a value from the book")


# ---- extract ------------------------------------------------------------------------------------------------------
@dataclass
class ArchScore:
    """One architecture at its best learning rate.

    Attributes:
        label: its name in plots (the analysis's label); ``pattern`` its layer pattern.
        lr: the chosen learning rate (None when the study does not vary or record one); ``n_lrs`` how many were tried.
        score: the mean accuracy over its seeds at ``lr``, with its 95% interval.
        levels: per level (pairs), the same over its seeds.
        state_bytes: decode state per sequence at the evaluated context (SSM/conv state + KV cache).
    """

    label: str
    pattern: str
    lr: float | None
    n_lrs: int
    score: Interval
    levels: dict[int, Interval] = field(default_factory=dict)
    state_bytes: float | None = None


def recall_metric(rec: StudyRecords, objective: str | None = None) -> str:
    """``objective`` (default: the first objective) when it is a task accuracy ``val/<task>/acc``, else the first
    such accuracy complete trials record.

    Raises:
        PlotNotApplicable: no complete trial records a task accuracy.
    """
    names = {k for t in rec.complete for k in t.metrics if _TASK_ACC.fullmatch(str(k))}
    wanted = objective or (rec.objectives[0].name if rec.objectives else None)
    if wanted in names:
        return str(wanted)
    if not names:
        raise PlotNotApplicable("no complete trial records a task accuracy (val/<task>/acc)")
    return sorted(names)[0]


def held_out_task(rec: StudyRecords, task: str) -> Any:
    """The task of the study's held-out set, rebuilt from its space (seq_len, task and eval options), or None."""
    from archsearch.data.tasks import TASKS, make_task

    if task not in TASKS or not rec.space:
        return None
    options = (
        ((rec.space.get("train") or {}).get("data_options") or {}) if isinstance(rec.space, dict) else {}
    )
    train_opts = dict((options.get("task_options") or {}).get(task) or {})
    opts = {**train_opts, **((options.get("eval_task_options") or {}).get(task) or {})}
    seq_len = int(rec.space.get("seq_len") or 256)
    try:
        return make_task(task, TASKS[task].fit_seq_len(seq_len, opts), "byte", opts)
    except ArchsearchError:  # a space this code cannot rebuild only loses the baselines
        return None


def evaluated_context(task: Any, rec: StudyRecords) -> int:
    """The longest context the held-out set asks about (the KV cache a decoder must hold for it)."""
    if task is not None and hasattr(task, "context_length"):
        return max(task.context_length(n) for n in task.levels)
    if task is not None:
        return int(task.config.seq_len)
    return int(rec.space.get("seq_len") or 0) if isinstance(rec.space, dict) else 0


def score_architectures(rec: StudyRecords, metric: str, context: int) -> list[ArchScore]:
    """Each architecture with a complete trial, at its best learning rate (:func:`analysis.architectures`)."""
    out = []
    for a in architectures(rec, Objective(metric, "maximize")):
        if a.score is None:
            continue
        trials = [rec.trial(r.number) for r in a.best_runs]
        per_level: dict[int, list[float]] = {}
        for t in trials:
            for level, v in t.level_metrics.get(metric, {}).items():
                per_level.setdefault(level, []).append(v)
        state, kv = trials[0].get("state_bytes"), trials[0].get("kv_bytes_per_token")
        total = None if state is None and kv is None else (state or 0.0) + (kv or 0.0) * context
        out.append(
            ArchScore(
                label=a.label,
                pattern=a.pattern or a.label,
                lr=a.best_lr,
                n_lrs=len(a.intervals),
                score=a.score,
                levels={n: mean_interval(v) for n, v in sorted(per_level.items())},
                state_bytes=total,
            )
        )
    return sorted(out, key=lambda s: (s.state_bytes or 0.0, s.label))


def task_baselines(task: Any, levels: list[int]) -> tuple[float | None, dict[int, float]]:
    """(chance, book guessing per level) from the task, or (None, {}) when it has none."""
    if task is None or not levels:
        return None, {}
    per = {n: task.baselines(n) for n in levels}
    if not all(per.values()):
        return None, {}
    return per[levels[0]].get("chance"), {n: b["book"] for n, b in per.items() if "book" in b}


def _overall_book(book: dict[int, float]) -> float | None:
    """Book guessing over a balanced mix of levels, weighted by queries as the metric is (n queries at level n)."""
    if not book:
        return None
    return sum(n * b for n, b in book.items()) / sum(book)


def _prepare(study: Any, objective: str | None) -> tuple[StudyRecords, str, Any, int, list[ArchScore]]:
    rec = as_records(study)
    metric = recall_metric(rec, objective)
    m = _TASK_ACC.fullmatch(metric)
    task = held_out_task(rec, m["task"]) if m else None
    context = evaluated_context(task, rec)
    scores = score_architectures(rec, metric, context)
    if not scores:
        raise PlotNotApplicable(f"no complete trial records {metric}")
    return rec, metric, task, context, scores


def _label(s: ArchScore) -> str:
    extra = s.label[len(s.pattern) :].strip() if s.label.startswith(s.pattern) else ""
    text = short_label(s.pattern) + (f" {extra}" if extra else "")
    if s.n_lrs > 1 and s.lr is not None:
        text += f", lr {s.lr:g}"
    return text + f" (n={s.score.n})"


def _clipped(iv: Interval) -> tuple[float, float]:
    """The interval's ends within [0, 1], where an accuracy lives (the mean itself when there is no interval)."""
    lo = iv.mean if iv.lo is None else iv.lo
    hi = iv.mean if iv.hi is None else iv.hi
    return max(0.0, lo), min(1.0, hi)


def _family_colors(families: list[str]) -> dict[str, str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10"]
    return {f: to_hex(cmap(i % 10)) for i, f in enumerate(families)}


def _draw_baselines(
    ax: Axes, chance: float | None, book: float | list[float] | None, xs: list[float]
) -> None:
    if chance is not None:
        ax.axhline(chance, color="0.4", ls=":", lw=1.2, label=f"chance ({chance:.2g})", zorder=1)
    if isinstance(book, float):
        label = f"guess a value from the book ({book:.2g})"
        ax.axhline(book, color="0.4", ls="--", lw=1.2, label=label, zorder=1)
    elif book:
        ax.plot(xs, book, color="0.4", ls="--", lw=1.2, label="guess a value from the book", zorder=1)


def _legend(ax: Axes) -> None:
    """Architectures first, the baselines last, whatever order matplotlib collected them in."""
    pairs = list(zip(*ax.get_legend_handles_labels(), strict=True))
    pairs.sort(key=lambda hl: hl[1].startswith(_BASELINE_LABELS))
    ax.legend([h for h, _ in pairs], [lab for _, lab in pairs], fontsize=7)


# ---- draw ---------------------------------------------------------------------------------------------------------
def plot_recall_state(
    study: optuna.Study | StudyRecords, objective: str | None = None, *, ax: Axes | None = None
) -> Axes:
    """Accuracy against decode state per sequence, one marker per architecture, lines joining a pattern's sizes.

    Args:
        study: the study or its records.
        objective: the task accuracy to draw (default: the first objective, else the first ``val/<task>/acc``).
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: no task accuracy, or no trial with a cost record (state or KV bytes).
    """
    rec, metric, task, context, scores = _prepare(study, objective)
    scores = [s for s in scores if s.state_bytes]
    if not scores:
        raise PlotNotApplicable("no trial records its decode state (state_bytes, kv_bytes_per_token)")
    ax = new_axes(ax, (6.6, 4.6))
    families = list(dict.fromkeys(s.pattern for s in scores))
    colors = _family_colors(families)
    for i, fam in enumerate(families):
        pts = sorted((s for s in scores if s.pattern == fam), key=lambda s: s.state_bytes or 0.0)
        xs = [s.state_bytes for s in pts]
        ax.plot(xs, [s.score.mean for s in pts], "-", color=colors[fam], lw=1, alpha=0.6, zorder=2)
        for s in pts:
            lo, hi = _clipped(s.score)
            err = (
                interval_errors([Interval(s.score.mean, lo, hi, s.score.n)]) if s.score.has_interval else None
            )
            if err is not None:
                err = np.clip(err, 0.0, None)  # float noise when every seed agrees
            ax.errorbar(
                [s.state_bytes], [s.score.mean], yerr=err, fmt=_MARKERS[i % len(_MARKERS)], color=colors[fam],
                capsize=3, markersize=6, label=_label(s), zorder=3,
            )  # fmt: skip
    levels = sorted({n for s in scores for n in s.levels})
    chance, book = task_baselines(task, levels)
    _draw_baselines(ax, chance, _overall_book(book), [])
    ax.set_xscale("log", base=2)
    ticks = sorted({s.state_bytes for s in scores if s.state_bytes})
    ax.set_xticks(ticks, [fmt_bytes(x) for x in ticks], rotation=30, fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel(f"decode state per sequence at {context} tokens (SSM/conv state + KV cache)")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{metric} against decode state: best learning rate, mean and 95% interval", fontsize=9)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return ax


def plot_recall_pairs(
    study: optuna.Study | StudyRecords, objective: str | None = None, *, ax: Axes | None = None
) -> Axes:
    """Per-level accuracy (MQAR: key-value pairs) per architecture at its best learning rate, seeds as a band.

    Args:
        study: the study or its records.
        objective: the task accuracy to draw (default: the first objective, else the first ``val/<task>/acc``).
        ax: axes to draw into; a new figure when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: no task accuracy per level.
    """
    rec, metric, task, _, scores = _prepare(study, objective)
    scores = [s for s in scores if s.levels]
    if not scores:
        raise PlotNotApplicable(f"no complete trial records {metric} per level")
    ax = new_axes(ax, (6.6, 4.6))
    families = list(dict.fromkeys(s.pattern for s in scores))
    colors = _family_colors(families)
    styles = ["-", "--", "-.", ":"]
    seen: dict[str, int] = {}
    for s in scores:
        k = seen[s.pattern] = seen.get(s.pattern, -1) + 1
        xs = list(s.levels)
        color = colors[s.pattern]
        ax.plot(xs, [iv.mean for iv in s.levels.values()], styles[k % 4],
                marker=_MARKERS[families.index(s.pattern) % len(_MARKERS)], color=color, markersize=4,
                label=_label(s), zorder=3)  # fmt: skip
        if any(iv.has_interval for iv in s.levels.values()):
            ends = [_clipped(iv) for iv in s.levels.values()]
            ax.fill_between(xs, [lo for lo, _ in ends], [hi for _, hi in ends], color=color, alpha=0.15, lw=0,
                            zorder=2)  # fmt: skip
    xs = sorted({n for s in scores for n in s.levels})
    chance, book = task_baselines(task, xs)
    _draw_baselines(ax, chance, [book[n] for n in xs] if book else None, xs)
    if all(x > 0 and x & (x - 1) == 0 for x in xs) and len(xs) > 1:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("key-value pairs (level)" if metric.startswith("val/mqar/") else "difficulty level")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{metric} per level: best learning rate, mean and 95% interval", fontsize=9)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return ax
