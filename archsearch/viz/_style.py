"""Shared drawing helpers: one colour per registered layer symbol, axes creation, labels that do not overlap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from archsearch.pattern import registry

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

# Fixed colours for the known symbols so every plot and report agrees: Mamba blues, attention-like reds/oranges,
# MLP a light grey (it is half of most stacks and should recede), MoE brown.
_FIXED = {
    "M": "#1f77b4",
    "m": "#9ecae1",
    "*": "#d62728",
    "+": "#ff7f0e",
    "D": "#e377c2",
    "G": "#2ca02c",
    "P": "#9467bd",
    "-": "#c7c7c7",
    "E": "#8c564b",
}
_SPARE = ["#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]

QUALITY_CMAP = "viridis"


def symbol_color(symbol: str) -> str:
    """The colour of a layer symbol; symbols registered later get spare colours in registry order."""
    if symbol in _FIXED:
        return _FIXED[symbol]
    others = [s.symbol for s in registry.all_specs() if s.symbol not in _FIXED]
    idx = others.index(symbol) if symbol in others else len(others)
    return _SPARE[idx % len(_SPARE)]


def line_color(symbol: str) -> str:
    """The symbol's colour, darkened when too light to read as a line or marker on white (the MLP's grey)."""
    from matplotlib.colors import to_hex, to_rgb

    r, g, b = to_rgb(symbol_color(symbol))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    if luminance < 0.6:
        return symbol_color(symbol)
    k = 0.45 / luminance
    return to_hex((r * k, g * k, b * k))


def symbol_name(symbol: str) -> str:
    """The registry's name for a symbol (``"*"`` -> ``"attention"``), or the symbol when unknown."""
    return symbol_name_or(symbol, symbol)


def symbol_name_or(symbol: str, default: str) -> str:
    try:
        return registry.get(symbol).name
    except Exception:
        return default


def fraction_label(symbol: str) -> str:
    return f"{symbol_name(symbol)} fraction ({symbol!r} layers / all layers)"


def n_trials(n: int) -> str:
    """ "1 trial", "3 trials"."""
    return f"{n} trial" if n == 1 else f"{n} trials"


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.8)) -> Axes:
    """``ax`` itself, or the axes of a new figure of ``figsize``."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def cmap_for(minimize: bool) -> str:
    """Best values always get the bright end of the colour map."""
    return QUALITY_CMAP + ("_r" if minimize else "")


def fmt_value(v: float) -> str:
    """Short text for a value in a cell or label (3 significant digits)."""
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def place_labels(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    fontsize: float = 8,
    **kwargs: Any,
) -> list[Any]:
    """Annotate points with texts, nudging each label to the first nearby spot that overlaps no earlier label.

    A small greedy placer (adjustText is not a dependency): candidate offsets ring each point at growing distance;
    a label is placed at the first candidate whose box stays inside the axes and clear of placed labels and of the
    labelled points themselves. A thin leader line joins a label that had to move away from its point.
    """
    fig = ax.figure
    fig.canvas.draw()  # a renderer and final axes limits are needed to measure text boxes
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    pts = ax.transData.transform(list(zip(xs, ys, strict=True))) if len(xs) else []
    placed: list[Any] = []
    legend = ax.get_legend()
    if legend is not None:  # labels must not hide under the legend either
        placed.append(legend.get_window_extent(renderer))
    annotations = []
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for i, text in enumerate(texts):
        chosen = None
        for radius in (6, 14, 24, 36, 50, 66):
            for dx, dy in directions:
                off = (dx * radius, dy * radius)
                ann = ax.annotate(
                    text,
                    (xs[i], ys[i]),
                    xytext=off,
                    textcoords="offset points",
                    fontsize=fontsize,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    **kwargs,
                )
                box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
                inside = (
                    box.x0 >= ax_box.x0
                    and box.x1 <= ax_box.x1
                    and box.y0 >= ax_box.y0
                    and box.y1 <= ax_box.y1
                )
                clear = not any(box.overlaps(b) for b in placed)
                off_points = not any(box.contains(px, py) for j, (px, py) in enumerate(pts) if j != i)
                if inside and clear and off_points:
                    chosen = (ann, box, radius)
                    break
                ann.remove()
            if chosen:
                break
        if chosen is None:  # nowhere clear: keep the nearest spot rather than dropping the label
            ann = ax.annotate(
                text, (xs[i], ys[i]), xytext=(6, 6), textcoords="offset points", fontsize=fontsize, **kwargs
            )
            chosen = (ann, ann.get_window_extent(renderer), 6)
        ann, box, radius = chosen
        if radius > 14:  # moved away from its point: redraw with a leader line
            ann.remove()
            ann = ax.annotate(
                text,
                (xs[i], ys[i]),
                xytext=ann.xyann,
                textcoords="offset points",
                fontsize=fontsize,
                ha=ann.get_ha(),
                va=ann.get_va(),
                arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 1, "shrinkB": 3},
                **kwargs,
            )
        placed.append(box)
        annotations.append(ann)
    return annotations


def draw_strip(
    ax: Axes,
    groups: dict[str, list[float]],
    minimize: bool,
    color: str = "#1f77b4",
    *,
    pruned: dict[str, list[float]] | None = None,
    reused: dict[str, list[float]] | None = None,
) -> None:
    """Categories on x: every value as a jittered dot, the mean as a bar-like tick with its 95% t-interval, n under
    each label; pruned trials hollow at their last reported value and reused results as crosses (neither in n).

    The best category mean is outlined so the winner reads at a glance.
    """
    import numpy as np

    from archsearch.stats import mean_interval

    names = list(groups)
    ivs = [mean_interval(groups[n]) if groups[n] else None for n in names]
    means = [iv.mean if iv is not None else np.nan for iv in ivs]
    best = int(np.nanargmin(means) if minimize else np.nanargmax(means)) if any(iv for iv in ivs) else -1
    rng = np.random.default_rng(0)  # fixed jitter: the same study always draws the same picture
    labelled: set[str] = set()

    def scatter(i: int, vals: list[float], what: str, **kwargs: Any) -> None:
        jitter = rng.uniform(-0.12, 0.12, size=len(vals)) if len(vals) > 1 else np.zeros(len(vals))
        label = None if what in labelled else what
        labelled.add(what)
        ax.scatter(i + jitter, vals, label=label, **kwargs)

    for i, name in enumerate(names):
        vals = np.asarray(groups[name], dtype=float)
        iv = ivs[i]
        if len(vals):
            scatter(i, list(vals), "trial", s=18, color=color, alpha=0.55, linewidths=0, zorder=2)
        if iv is not None:
            ax.hlines(
                iv.mean,
                i - 0.3,
                i + 0.3,
                color="black" if i == best else "0.35",
                lw=2.2 if i == best else 1.4,
                zorder=3,
            )
            if iv.lo is not None and iv.hi is not None:
                ax.vlines(i, iv.lo, iv.hi, color="0.35", lw=1.0, zorder=1)
                ax.hlines([iv.lo, iv.hi], i - 0.08, i + 0.08, color="0.35", lw=1.0, zorder=1)
        if pruned and pruned.get(name):
            scatter(i, pruned[name], "pruned: last reported value", s=34, facecolors="none", edgecolors=color,
                    linewidths=1.2, zorder=4)  # fmt: skip
        if reused and reused.get(name):
            scatter(i, reused[name], "reused result (not counted)", s=30, marker="x", color="0.35", zorder=4)
    ax.set_xticks(range(len(names)), [f"{n}\nn={len(groups[n])}" for n in names], fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(True, axis="y", alpha=0.3)
    if any(iv is not None and iv.has_interval for iv in ivs):
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color="0.35", marker="_", ms=8, lw=1.0))
        labels.append("mean, 95% interval")
        ax.legend(handles, labels, fontsize=8, loc="best")
    elif labelled - {"trial"}:
        ax.legend(fontsize=8, loc="best")
