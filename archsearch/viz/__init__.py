"""Figures and reports of a study: each ``plot_*`` takes the study (or its records), draws into ``ax`` (a new
figure when None) and returns the Axes; only :func:`render_figures` and the CLI write files."""

from archsearch.viz._records import (
    STORAGE_FILES,
    PlotNotApplicable,
    StudyRecords,
    TrialRecord,
    load_records,
    load_study,
    records_from_study,
)
from archsearch.viz.curves import plot_learning_curves
from archsearch.viz.fraction import plot_objective_vs_fraction
from archsearch.viz.importance import param_importances, plot_importances
from archsearch.viz.levels import plot_levels
from archsearch.viz.pareto import pareto_front, plot_pareto
from archsearch.viz.placement import plot_placement
from archsearch.viz.ratio_map import plot_ratio_map
from archsearch.viz.recall import plot_recall_pairs, plot_recall_state
from archsearch.viz.render import FAMILIES, render_figures
from archsearch.viz.report import write_report
from archsearch.viz.ribbons import plot_ribbons
from archsearch.viz.rope import plot_rope

__all__ = [
    "FAMILIES",
    "STORAGE_FILES",
    "PlotNotApplicable",
    "StudyRecords",
    "TrialRecord",
    "load_records",
    "load_study",
    "pareto_front",
    "param_importances",
    "plot_importances",
    "plot_learning_curves",
    "plot_levels",
    "plot_objective_vs_fraction",
    "plot_pareto",
    "plot_placement",
    "plot_ratio_map",
    "plot_recall_pairs",
    "plot_recall_state",
    "plot_ribbons",
    "plot_rope",
    "records_from_study",
    "render_figures",
    "write_report",
]
