"""The figure catalogue: which plots apply to a study, and writing them as files (for the CLI and the report).

Library plot functions never save; this module is the one place that does, with the headless Agg backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError
from archsearch.viz._records import PlotNotApplicable, StudyRecords, records_from_study
from archsearch.viz._style import symbol_name

if TYPE_CHECKING:  # pragma: no cover
    import optuna

FAMILIES = (
    "ratio_map",
    "fraction",
    "levels",
    "recall",
    "pareto",
    "ribbons",
    "placement",
    "rope",
    "curves",
    "importance",
)
FORMATS = ("png", "svg", "pdf")
_STABLE_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}  # byte-stable files across reruns
_COST_STEMS = {"kv_bytes_per_token": "kv", "state_bytes": "state", "decode_ms_est": "decode"}


@dataclass(frozen=True)
class FigureSpec:
    """One figure to draw: its file stem, family, a caption for reports, and the drawing call."""

    stem: str
    family: str
    caption: str
    draw: Callable[[], Any]


@dataclass
class RenderResult:
    written: dict[str, list[Path]] = field(default_factory=dict)  # stem -> files
    captions: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (stem or family, reason)


def figure_specs(
    study: optuna.Study,
    records: StudyRecords | None = None,
    *,
    objective: str | None = None,
    top_k: int = 10,
) -> list[FigureSpec]:
    """Every figure that could apply to ``study``, in report order (applicability is decided when drawing)."""
    from archsearch.viz.curves import plot_learning_curves
    from archsearch.viz.fraction import plot_objective_vs_fraction
    from archsearch.viz.importance import plot_importances
    from archsearch.viz.levels import plot_levels
    from archsearch.viz.pareto import COST_AXES, available_costs, plot_pareto
    from archsearch.viz.placement import plot_placement
    from archsearch.viz.ratio_map import plot_ratio_map
    from archsearch.viz.recall import plot_recall_pairs, plot_recall_state
    from archsearch.viz.ribbons import plot_ribbons
    from archsearch.viz.rope import plot_rope

    rec = records or records_from_study(study)
    obj = rec.objective(objective)
    specs = [
        FigureSpec(
            "ratio_map",
            "ratio_map",
            f"{obj.name} over two layer fractions",
            lambda: plot_ratio_map(rec, objective=objective),
        ),
    ]
    searched = rec.searched_fractions()
    if len(searched) > 1 and "M" in searched:
        searched.remove("M")  # Mamba is the remainder: its fraction is implied by the others
    for sym in searched or ["*"]:
        specs.append(
            FigureSpec(
                f"fraction_{symbol_name(sym)}",
                "fraction",
                f"{obj.name} against the {symbol_name(sym)} fraction",
                lambda sym=sym: plot_objective_vs_fraction(rec, sym, objective=objective),
            )
        )
    specs.append(
        FigureSpec(
            "levels",
            "levels",
            "task accuracy against difficulty level, one line per pattern",
            lambda: plot_levels(rec, objective),
        )
    )
    specs += [
        FigureSpec(
            "recall_state",
            "recall",
            "recall against decode state per architecture, best learning rate, seeds as bars (Zoology's figure)",
            lambda: plot_recall_state(rec, objective),
        ),
        FigureSpec(
            "recall_pairs",
            "recall",
            "recall per level per architecture at its best learning rate, seeds as a band",
            lambda: plot_recall_pairs(rec, objective),
        ),
    ]
    costs = [c for c in available_costs(rec) if c in _COST_STEMS and c != obj.name]
    costs += [o.name for o in rec.objectives if o.name != obj.name and o.name not in costs]
    if not costs:
        costs = ["kv_bytes_per_token"]
    for cost in costs:
        stem = "pareto_" + _COST_STEMS.get(cost, cost.replace("/", "_"))
        specs.append(
            FigureSpec(
                stem,
                "pareto",
                f"Pareto front: {obj.name} against {COST_AXES.get(cost, cost)}",
                lambda cost=cost: plot_pareto(rec, cost=cost, quality=objective),
            )
        )
    specs += [
        FigureSpec(
            "ribbons",
            "ribbons",
            f"the top {top_k} stacks by {obj.name}",
            lambda: plot_ribbons(rec, top_k, objective),
        ),
        FigureSpec(
            "placement", "placement", f"{obj.name} by placement", lambda: plot_placement(rec, objective)
        ),
        FigureSpec("rope", "rope", f"{obj.name} with RoPE on and off", lambda: plot_rope(rec, objective)),
        FigureSpec(
            "curves",
            "curves",
            "learning curves (pruned in grey)",
            lambda: plot_learning_curves(rec, objective),
        ),
        FigureSpec(
            "importance",
            "importance",
            f"parameter importances for {obj.name}",
            lambda: plot_importances(study, objective),
        ),
    ]
    return specs


def render_figures(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    records: StudyRecords | None = None,
    objective: str | None = None,
    top_k: int = 10,
    formats: Sequence[str] = ("png", "svg"),
    only: Sequence[str] | None = None,
    dpi: int = 150,
) -> RenderResult:
    """Draw every applicable figure and write it to ``out_dir/<stem>.<format>``.

    Args:
        study: the study.
        out_dir: created when missing.
        records: already-extracted records (extracted here when None).
        objective: objective or metric the plots show; the first objective by default.
        top_k: stacks in the ribbons plot.
        formats: file formats, from ``png``, ``svg``, ``pdf``.
        only: plot families to draw (see ``FAMILIES``); all when None.
        dpi: resolution of raster formats.

    Returns:
        Files written per figure, captions, and the figures skipped with the reason.

    Raises:
        ConfigError: an unknown format or family.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI must work on machines without a display
    import matplotlib.pyplot as plt

    from archsearch.errors import did_you_mean

    for f in formats:
        if f not in FORMATS:
            raise ConfigError(
                f"unknown figure format {f!r} (expected {', '.join(FORMATS)})",
                key="--format",
                hint=did_you_mean(f, FORMATS),
            )
    for fam in only or ():
        if fam not in FAMILIES:
            raise ConfigError(
                f"unknown plot {fam!r} (expected {', '.join(FAMILIES)})",
                key="--only",
                hint=did_you_mean(fam, FAMILIES),
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = RenderResult()
    for spec in figure_specs(study, records, objective=objective, top_k=top_k):
        if only and spec.family not in only:
            continue
        before = set(plt.get_fignums())
        try:
            ax = spec.draw()
        except PlotNotApplicable as exc:
            for num in set(plt.get_fignums()) - before:  # a half-drawn figure must not leak into the next
                plt.close(num)
            result.skipped.append((spec.stem, str(exc)))
            continue
        fig = ax.figure
        files = []
        for fmt in formats:
            path = out / f"{spec.stem}.{fmt}"
            fig.savefig(path, dpi=dpi, metadata=_STABLE_METADATA.get(fmt))
            files.append(path)
        plt.close(fig)
        result.written[spec.stem] = files
        result.captions[spec.stem] = spec.caption
    return result
