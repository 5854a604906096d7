"""Pattern ribbons: the top-k stacks as coloured strips, one cell per layer, so placement differences show at once.

Colours come from the layer registry (one per symbol, names in the legend); a cell with per-layer attributes
(``*{rope=off}``) is hatched. Rows are labelled with the trial number, which the Pareto labels and the report use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archsearch.viz._patterns import layer_cells
from archsearch.viz._records import PlotNotApplicable, StudyRecords, as_records
from archsearch.viz._style import fmt_value, new_axes, symbol_color, symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes


def plot_ribbons(
    study: optuna.Study | StudyRecords,
    top_k: int = 10,
    objective: str | None = None,
    *,
    ax: Axes | None = None,
) -> Axes:
    """Draw the best ``top_k`` trials' stacks, best at the top.

    Args:
        study: the study or its records.
        top_k: how many trials to draw.
        objective: objective or metric to rank by; the study's first objective by default.
        ax: axes to draw into; a new figure sized to the stacks when None.

    Returns:
        The axes.

    Raises:
        PlotNotApplicable: no complete trial with a pattern.
    """
    from matplotlib.patches import Patch, Rectangle

    rec = as_records(study)
    obj = rec.objective(objective)
    rows = [(t, v) for t, v in rec.ranked(obj) if t.pattern][:top_k]
    if not rows:
        raise PlotNotApplicable("no complete trial records a pattern")
    cells = [layer_cells(t.pattern or "") for t, _ in rows]
    n_max = max(len(c) for c in cells)
    ax = new_axes(ax, (min(16.0, 3.2 + 0.19 * n_max), 1.4 + 0.38 * len(rows)))
    used: dict[str, None] = {}
    any_attrs = False
    for r, row in enumerate(cells):
        y = len(rows) - 1 - r
        for i, cell in enumerate(row):
            used.setdefault(cell.symbol)
            any_attrs |= cell.has_attrs
            ax.add_patch(
                Rectangle(
                    (i, y + 0.1),
                    1,
                    0.8,
                    facecolor=symbol_color(cell.symbol),
                    edgecolor="white",
                    linewidth=0.8,
                    hatch="////" if cell.has_attrs else None,
                )
            )
    ax.set_xlim(0, n_max)
    ax.set_ylim(0, len(rows))
    ax.set_yticks(
        [len(rows) - 1 - r + 0.5 for r in range(len(rows))],
        [f"#{t.number}  {fmt_value(v)}" for t, v in rows],
        fontfamily="monospace",
        fontsize=8,
    )
    step = 1 if n_max <= 24 else 4 if n_max <= 64 else 8
    ax.set_xticks(
        [i + 0.5 for i in range(0, n_max, step)], [str(i) for i in range(0, n_max, step)], fontsize=8
    )
    ax.set_xlabel("layer index (input at 0)")
    ax.set_ylabel(f"trial  {obj.name}")
    ax.tick_params(length=0)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    handles = [Patch(facecolor=symbol_color(s), label=f"{s}  {symbol_name(s)}") for s in used]
    if any_attrs:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="////", label="per-layer attributes"))
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="layer",
        title_fontsize=8,
    )
    ax.set_title(f"top {len(rows)} stacks by {obj.name} (best first)", loc="left")
    return ax
